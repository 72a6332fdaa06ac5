//! Sinks: where validated telemetry goes.
//!
//! A config lists any number of outputs (`[[outputs]]`), each a [`Sink`] of one type with an
//! optional [`filter`]. [`Outputs`] holds them all and the dead-letter output, hands every
//! record to each output whose filter takes it, and counts what each one wrote.
//!
//! To add a sink: a folder `sinks/<type>/` with its settings in `config.rs` (a variant of
//! [`config::OutputConfig`]) and a type that implements [`Sink`]; [`Outputs::from_config`]
//! opens it. Encoding stays apart from transport, as in [`json_lines`].

pub mod config;
pub mod filter;
pub mod json_lines;
pub mod otlp;
pub mod prometheus;

use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::pipeline::Summary;
use crate::pipeline::counters::OutputRecords;
use crate::pipeline::enrich::{Level, Origin, RunContext};
use crate::pipeline::metrics::RunMetrics;
use crate::pipeline::validate::ValidItem;
use config::OutputConfig;
use filter::FilterConfig;
use json_lines::{Console, Existing, JsonLinesSink, JsonLinesWriter};

/// One validated piece of telemetry with the context the host adds, on its way out.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The run it belongs to.
    pub run: &'a RunContext,
    /// Plugin, recorder, node, role and event time.
    pub origin: &'a Origin<'a>,
    /// What the recorder returned, validated.
    pub item: &'a ValidItem,
    /// Severity (the runtime's own records may warn).
    pub level: Level,
}

/// An output: takes records, writes them somewhere.
pub trait Sink: Send {
    /// Takes one record. May buffer; an error stops the run (the output is gone).
    fn write(&mut self, record: &Record<'_>) -> io::Result<()>;
    /// Makes what was written so far visible.
    fn flush(&mut self) -> io::Result<()>;
    /// Whether the sink takes telemetry records at all (the Prometheus endpoint shows only
    /// counters, so records are neither handed to it nor counted for it).
    fn takes_records(&self) -> bool {
        true
    }
    /// Takes the runtime's own counters and the built-in request metrics of every run,
    /// published after each flush of the outputs.
    fn publish_counters(
        &mut self,
        _counters: &Summary,
        _live_instances: u64,
        _metrics: &Arc<Vec<RunMetrics>>,
    ) {
    }
    /// The run finished: the counters just published are the final ones.
    fn finish(&mut self) {}
    /// Records it took but could not deliver (a remote receiver that stayed down).
    fn dropped(&self) -> u64 {
        0
    }
}

/// An output could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("output {output}: {source}")]
pub struct SinkError {
    /// The output's name (its path, for a file).
    pub output: String,
    /// Why.
    pub source: io::Error,
}

/// One configured output.
struct Output {
    /// `outputs[i]`: its place in the config, the same from run to run (a metrics label).
    key: String,
    /// What it writes (a path, a URL), for messages and the summary.
    name: String,
    filter: FilterConfig,
    takes_records: bool,
    sink: Box<dyn Sink>,
    records: u64,
}

/// Every output of a run, and the dead-letter output.
pub struct Outputs {
    outputs: Vec<Output>,
    dead_letter: JsonLinesWriter,
    dead_letter_name: String,
}

impl Outputs {
    /// No outputs yet; rejected items go to `dead_letter`, named `dead_letter_name` in
    /// errors.
    pub fn new(dead_letter: JsonLinesWriter, dead_letter_name: impl Into<String>) -> Self {
        Self {
            outputs: Vec::new(),
            dead_letter,
            dead_letter_name: dead_letter_name.into(),
        }
    }

    /// One unfiltered JSON-lines output to `output` and dead letters to `dead_letter`
    /// (tests and benchmarks).
    pub fn json_lines(output: Box<dyn Write + Send>, dead_letter: Box<dyn Write + Send>) -> Self {
        Self::new(JsonLinesWriter::new(dead_letter), "dead letter").with_sink(
            "output",
            FilterConfig::default(),
            Box::new(JsonLinesSink::new(JsonLinesWriter::new(output))),
        )
    }

    /// Adds an output.
    pub fn with_sink(
        mut self,
        name: impl Into<String>,
        filter: FilterConfig,
        sink: Box<dyn Sink>,
    ) -> Self {
        self.outputs.push(Output {
            key: format!("outputs[{}]", self.outputs.len()),
            name: name.into(),
            filter,
            takes_records: sink.takes_records(),
            sink,
            records: 0,
        });
        self
    }

    /// Opens every output a config lists, and its dead-letter output. Listeners are bound
    /// first, so a taken port fails the start before any file is created or truncated; two
    /// outputs that turn out to open one file (through a link) are refused.
    pub fn from_config(config: &Config) -> Result<Self, SinkError> {
        let mut listeners = Vec::new();
        for (index, output) in config.outputs.iter().enumerate() {
            if let OutputConfig::Prometheus(settings) = output {
                let sink =
                    prometheus::PrometheusSink::start(settings).map_err(|source| SinkError {
                        output: format!("outputs[{index}] (prometheus on {})", settings.listen),
                        source,
                    })?;
                listeners.push(sink);
            }
        }
        let mut listeners = listeners.into_iter();
        let mut files = OpenedFiles::default();
        let dead_letter = &config.dead_letter;
        let (writer, name) = open_json_lines(
            config,
            &dead_letter.path,
            Console::Stderr,
            dead_letter.existing,
            &mut files,
        )?;
        let mut outputs = Self::new(writer, name);
        for output in &config.outputs {
            match output {
                OutputConfig::JsonLines(settings) => {
                    let (writer, name) = open_json_lines(
                        config,
                        &settings.path,
                        Console::Stdout,
                        settings.existing,
                        &mut files,
                    )?;
                    outputs = outputs.with_sink(
                        name,
                        settings.filter.clone(),
                        Box::new(JsonLinesSink::with_envelope(writer, settings.envelope)),
                    );
                }
                OutputConfig::Otlp(settings) => {
                    let sink = otlp::OtlpSink::start(settings).map_err(|source| SinkError {
                        output: format!("outputs[{}] (otlp)", outputs.outputs.len()),
                        source,
                    })?;
                    let name = sink.name().to_owned();
                    crate::diag!("swarmtel: otlp metrics and logs to {name}");
                    outputs = outputs.with_sink(name, settings.filter.clone(), Box::new(sink));
                }
                OutputConfig::Prometheus(_) => {
                    let sink = listeners.next().expect("bound above, in order");
                    let name = format!("http://{}/metrics", sink.address());
                    crate::diag!("swarmtel: prometheus metrics at {name}");
                    if !sink.address().ip().is_loopback() {
                        crate::diag!(
                            "swarmtel: warning: the metrics at {name} are open to whoever reaches that address; they name plugins and outputs"
                        );
                    }
                    outputs = outputs.with_sink(name, FilterConfig::default(), Box::new(sink));
                }
            }
        }
        if !outputs.outputs.iter().any(|output| output.takes_records) {
            crate::diag!(
                "swarmtel: warning: no output takes telemetry: every item is validated, then dropped"
            );
        }
        Ok(outputs)
    }

    /// Hands a record to every output whose filter takes it.
    pub fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError> {
        for output in &mut self.outputs {
            if output.takes_records && output.filter.accepts(record) {
                output.sink.write(record).map_err(|source| SinkError {
                    output: output.name.clone(),
                    source,
                })?;
                output.records += 1;
            }
        }
        Ok(())
    }

    /// Writes one dead-letter line.
    pub fn write_dead_letter<T: Serialize>(&mut self, line: &T) -> Result<(), SinkError> {
        self.dead_letter.write(line).map_err(|source| SinkError {
            output: self.dead_letter_name.clone(),
            source,
        })
    }

    /// Flushes every output and the dead-letter output.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        for output in &mut self.outputs {
            output.sink.flush().map_err(|source| SinkError {
                output: output.name.clone(),
                source,
            })?;
        }
        self.dead_letter.flush().map_err(|source| SinkError {
            output: self.dead_letter_name.clone(),
            source,
        })
    }

    /// Tells every output the run finished (after the final flush and publish).
    pub fn finish(&mut self) {
        for output in &mut self.outputs {
            output.sink.finish();
        }
    }

    /// Hands the runtime's own counters to every output that shows them.
    pub fn publish_counters(
        &mut self,
        counters: &Summary,
        live_instances: u64,
        metrics: &Arc<Vec<RunMetrics>>,
    ) {
        for output in &mut self.outputs {
            output
                .sink
                .publish_counters(counters, live_instances, metrics);
        }
    }

    /// Updates `counts` to the records written per output that takes records, in config
    /// order (allocating only the first time).
    pub fn records_written(&self, counts: &mut Vec<OutputRecords>) {
        let outputs = self.outputs.iter().filter(|output| output.takes_records);
        if counts.len() != outputs.clone().count() {
            *counts = outputs
                .map(|output| OutputRecords {
                    key: output.key.clone(),
                    name: output.name.clone(),
                    records: output.records,
                    dropped: output.sink.dropped(),
                })
                .collect();
            return;
        }
        for (count, output) in counts.iter_mut().zip(outputs) {
            count.records = output.records;
            count.dropped = output.sink.dropped();
        }
    }
}

/// The files the outputs opened, by device and inode: two names for one file (a link) are
/// refused before the second is opened (so before it could truncate the first), as two
/// outputs on one path are when the config is read.
#[derive(Default)]
struct OpenedFiles(Vec<((u64, u64), String)>);

impl OpenedFiles {
    /// Checks `path` (not opened yet) against the files opened so far.
    fn check_before_opening(&self, path: &std::path::Path) -> Result<(), SinkError> {
        if let Some(id) = file_id(path)
            && let Some((_, first)) = self.0.iter().find(|(other, _)| *other == id)
        {
            return Err(SinkError {
                output: path.display().to_string(),
                source: io::Error::other(format!(
                    "the same file as {first}: two outputs on one file would cut each other's lines"
                )),
            });
        }
        Ok(())
    }

    /// Records a file just opened.
    fn opened(&mut self, path: &std::path::Path) {
        if let Some(id) = file_id(path) {
            self.0.push((id, path.display().to_string()));
        }
    }
}

/// A regular file's device and inode (links followed); none for anything else (a FIFO or a
/// device is the user's business) or a file that does not exist.
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    metadata.is_file().then(|| (metadata.dev(), metadata.ino()))
}

/// Opens a JSON-lines file (or console stream, for `-`) named in the config; returns the
/// writer and the name of what it writes.
fn open_json_lines(
    config: &Config,
    path: &str,
    console: Console,
    existing: Existing,
    files: &mut OpenedFiles,
) -> Result<(JsonLinesWriter, String), SinkError> {
    let resolved = config.resolve(std::path::Path::new(path));
    if path != "-" && existing != Existing::New {
        files.check_before_opening(&resolved)?;
    }
    let (writer, written) =
        JsonLinesWriter::open(&resolved, console, existing).map_err(|source| SinkError {
            output: resolved.display().to_string(),
            source,
        })?;
    if path != "-" {
        files.opened(&written);
    }
    if written != resolved {
        crate::diag!(
            "swarmtel: {} exists: writing {} instead (existing = \"new\")",
            resolved.display(),
            written.display()
        );
    }
    Ok((writer, written.display().to_string()))
}
