//! The JSON-lines transport: a buffered writer to stdout, stderr or a file (appended to,
//! numbered or truncated when it exists), flushed on drop.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where a sink writes when its path is `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A JSON-lines writer: one value a line, encoded by [`super::encode`].
pub struct JsonLinesWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    lines: u64,
}

/// What to do with an output file that already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Add to its end (after a newline, if a crash cut its last line): a restarted runtime
    /// never loses what the previous one wrote.
    #[default]
    Append,
    /// Leave it alone and write `NAME.1.EXT` (or `.2`, ...), the first that does not exist.
    New,
    /// Empty it first.
    Truncate,
}

impl JsonLinesWriter {
    /// Opens `path` as `existing` says, or the console when it is `-`. Returns the sink and
    /// the file it writes (which differs from `path` with [`Existing::New`]).
    pub fn open(path: &Path, console: Console, existing: Existing) -> io::Result<(Self, PathBuf)> {
        if path == Path::new("-") {
            let out: Box<dyn Write + Send> = match console {
                Console::Stdout => Box::new(io::stdout()),
                Console::Stderr => Box::new(io::stderr()),
            };
            return Ok((Self::new(out), path.to_owned()));
        }
        let (file, written) = match existing {
            Existing::Truncate => (File::create(path)?, path.to_owned()),
            Existing::Append => (open_append(path)?, path.to_owned()),
            Existing::New => create_next_free(path)?,
        };
        Ok((Self::new(Box::new(file)), written))
    }

    /// Wraps any writer (tests, benchmarks).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, out),
            lines: 0,
        }
    }

    /// Writes one value as one line, escaped for a terminal too (see [`super::encode`]).
    pub fn write<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        super::encode::write_line(&mut self.out, value)?;
        self.lines += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Opens `path` for appending; when it ends in the middle of a line (a writer killed before
/// its newline), starts a new line so every later line stands alone.
fn open_append(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let length = file.metadata()?.len();
    if length > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(length - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// Creates `path`, or `STEM.N.EXT` for the first N from 1 that does not exist yet.
fn create_next_free(path: &Path) -> io::Result<(File, PathBuf)> {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()));
    for index in 0..10_000u32 {
        let candidate = if index == 0 {
            path.to_owned()
        } else {
            path.with_file_name(format!(
                "{stem}.{index}{}",
                extension.as_deref().unwrap_or("")
            ))
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((file, candidate)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} and 9,999 numbered files beside it exist",
            path.display()
        ),
    ))
}

impl Drop for JsonLinesWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_existing_file_is_appended_to_numbered_or_truncated_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        // A previous writer killed in the middle of its second line.
        std::fs::write(&path, "{\"a\":1}\n{\"cut").unwrap();
        let (mut sink, written) =
            JsonLinesWriter::open(&path, Console::Stdout, Existing::Append).unwrap();
        assert_eq!(written, path);
        sink.write(&serde_json::json!({"b": 2})).unwrap();
        drop(sink);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"cut\n{\"b\":2}\n"
        );
        for expected in ["out.1.ndjson", "out.2.ndjson"] {
            let (mut sink, written) =
                JsonLinesWriter::open(&path, Console::Stdout, Existing::New).unwrap();
            assert_eq!(written, dir.path().join(expected));
            sink.write(&serde_json::json!({"n": expected})).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("{\"a\":1}")
        );
        let (sink, _) = JsonLinesWriter::open(&path, Console::Stdout, Existing::Truncate).unwrap();
        drop(sink);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn no_control_character_reaches_the_line_raw() {
        let shared = Shared::default();
        {
            let mut sink = JsonLinesWriter::new(Box::new(shared.clone()));
            let evil = "a\u{1b}[2J\u{7}b\u{9b}31m\u{7f}c\u{85}é";
            sink.write(&serde_json::json!({ "message": evil, evil: 1 }))
                .unwrap();
        }
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        assert!(!text.trim_end().chars().any(char::is_control), "{text:?}");
        assert_eq!(
            text,
            "{\"a\\u001b[2J\\u0007b\\u009b31m\\u007fc\\u0085é\":1,\"message\":\"a\\u001b[2J\\u0007b\\u009b31m\\u007fc\\u0085é\"}\n"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["message"], "a\u{1b}[2J\u{7}b\u{9b}31m\u{7f}c\u{85}é");
    }

    #[test]
    fn writes_one_line_per_value_and_flushes_on_drop() {
        let shared = Shared::default();
        {
            let mut sink = JsonLinesWriter::new(Box::new(shared.clone()));
            sink.write(&serde_json::json!({"a": 1})).unwrap();
            sink.write(&serde_json::json!({"b": 2})).unwrap();
            assert_eq!(sink.lines(), 2);
        }
        assert_eq!(
            String::from_utf8(shared.0.lock().unwrap().clone()).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
    }
}
