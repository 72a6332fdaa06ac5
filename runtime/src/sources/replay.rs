//! The replay source: a recorded event stream (NDJSON, from a file or stdin) read to its end.

use std::io::Read;
use std::sync::atomic::AtomicBool;

use crate::pipeline::{Pipeline, ProcessError, RunError, Summary};
use crate::sources::ingest::{self, DecodeError};

/// How often a replay hands its counters to the metrics outputs, and how long a pause in the
/// stream is before what was done so far is flushed.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Reads an NDJSON stream to its end (or until `stop` is set: lines already read are still
/// processed), then finishes the run.
/// Malformed lines are reported on stderr with their number and skipped, or end the run
/// with `strict`.
pub fn run_stream(
    mut pipeline: Pipeline,
    input: Box<dyn Read + Send>,
    source_name: &str,
    strict: bool,
    stop: &AtomicBool,
) -> Result<Summary, RunError> {
    let chunks = ingest::ChunkReader::spawn(input);
    let mut line_number = 0u64;
    let mut last_publish = std::time::Instant::now();
    loop {
        let chunk = match chunks.next_chunk_within(stop, PUBLISH_EVERY) {
            ingest::Chunk::Data(chunk) => {
                if last_publish.elapsed() >= PUBLISH_EVERY {
                    // For a metrics output scraped during a long replay.
                    pipeline.set_lines_read(line_number);
                    pipeline.publish_counters();
                    last_publish = std::time::Instant::now();
                }
                chunk
            }
            ingest::Chunk::Idle => {
                // A stream that pauses (stdin from a live source): what the recorders have
                // returned so far is written and flushed, and the counters published (a
                // partly filled batch waits for more events, so batches, and a replay's
                // output, do not depend on pauses).
                pipeline.set_lines_read(line_number);
                pipeline.poll()?;
                last_publish = std::time::Instant::now();
                if pipeline.has_required_failure() {
                    break;
                }
                continue;
            }
            ingest::Chunk::Overlong(bytes) => {
                line_number += 1;
                let error = format!(
                    "line of {bytes} bytes is longer than the {} byte limit",
                    ingest::MAX_LINE_BYTES
                );
                bad_line(&mut pipeline, source_name, line_number, error, strict)?;
                continue;
            }
            ingest::Chunk::End => break,
            ingest::Chunk::Stopped => {
                pipeline.mark_interrupted();
                break;
            }
            ingest::Chunk::Failed(source) => {
                // Keep what was delivered: finish and flush, then report.
                pipeline.set_lines_read(line_number);
                pipeline.finish()?;
                return Err(RunError::Input {
                    source_name: source_name.to_owned(),
                    source,
                });
            }
        };
        for raw in lines(chunk.lines()) {
            line_number += 1;
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let result = std::str::from_utf8(raw)
                .map_err(|e| DecodeError::Json(format!("not UTF-8: {e}")))
                .and_then(|line| ingest::decode_line(line.trim_end_matches('\r')));
            let outcome = match result {
                Ok(record) => match pipeline.process(&record) {
                    Ok(()) => Ok(()),
                    Err(ProcessError::BadRecord(error)) => Err(error),
                    Err(ProcessError::Run(error)) => return Err(error),
                },
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = outcome {
                bad_line(&mut pipeline, source_name, line_number, error, strict)?;
            }
            if pipeline.has_required_failure() {
                break;
            }
        }
        chunks.recycle(chunk);
        if pipeline.has_required_failure() {
            break;
        }
    }
    pipeline.set_lines_read(line_number);
    let summary = pipeline.finish()?;
    match pipeline.required_failure() {
        Some(error) => {
            crate::diag_text!("{}", summary.render());
            Err(error)
        }
        None => Ok(summary),
    }
}

/// The lines of a chunk (split at `\n`, found with memchr rather than byte by byte), the
/// last one included even when empty, as `split` gives them.
fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', chunk).chain(std::iter::once(chunk.len()));
    ends.map(move |end| {
        let line = &chunk[start..end];
        start = end + 1;
        line
    })
}

/// Counts a bad line and reports it on stderr; with `strict`, finishes the run (flushing
/// what came before) and returns the line as the run's error.
fn bad_line(
    pipeline: &mut Pipeline,
    source_name: &str,
    line: u64,
    error: String,
    strict: bool,
) -> Result<(), RunError> {
    pipeline.count_bad_line();
    if !strict {
        crate::diag!("swarmtel: {source_name}:{line}: {error}; line skipped");
        return Ok(());
    }
    pipeline.set_lines_read(line);
    pipeline.finish()?;
    Err(RunError::BadLine {
        source_name: source_name.to_owned(),
        line,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_as_split_does() {
        for chunk in [&b""[..], b"\n", b"a", b"a\n", b"a\nb", b"\n\na\n\nbc\n"] {
            let ours: Vec<&[u8]> = lines(chunk).collect();
            let std: Vec<&[u8]> = chunk.split(|b| *b == b'\n').collect();
            assert_eq!(ours, std, "{chunk:?}");
        }
    }

    mod fuzz {
        //! Property test: any mix of good, bad and binary lines is counted line by line, and
        //! the stream's reader never panics.

        use super::*;
        use crate::config::Config;
        use crate::pipeline::BackendFactory;
        use crate::sinks::Outputs;
        use proptest::prelude::*;
        use std::path::Path;

        fn empty_pipeline() -> Pipeline {
            // Every bad line would be reported on stderr, which the test harness shows.
            crate::silence_diagnostics(true);
            let config = Config::parse(
                "[run]\ntestplan = \"t\"\n",
                Path::new("t.toml"),
                Path::new("."),
            )
            .unwrap();
            let outputs = Outputs::json_lines(Box::new(std::io::sink()), Box::new(std::io::sink()));
            let factory: Box<BackendFactory> = Box::new(|_, _, _, _| unreachable!("no plugins"));
            Pipeline::with_backends(&config, Vec::new(), outputs, factory).unwrap()
        }

        fn line() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(br#"{"event":"test_start","role":"worker","node":"w","time":1}"#.to_vec()),
                Just(br#"{"event":"request","role":"worker","node":"w","time":1,"request_type":"GET","name":"/","response_time":1}"#.to_vec()),
                Just(br#"{"event":"request","role":"worker","node":"w","time":1}"#.to_vec()),
                Just(br#"{"event":"test_stop","role":"master","node":"w","time":1}"#.to_vec()),
                proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..40),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            #[test]
            fn every_line_is_an_event_or_a_bad_line(lines in proptest::collection::vec(line(), 0..200)) {
                let non_blank = lines
                    .iter()
                    .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                    .count() as u64;
                let mut input = lines.join(&b'\n');
                input.push(b'\n');
                let summary = run_stream(empty_pipeline(), Box::new(std::io::Cursor::new(input)), "fuzz", false, &AtomicBool::new(false))
                    .unwrap();
                prop_assert_eq!(summary.events + summary.bad_lines, non_blank);
            }
        }
    }
}
