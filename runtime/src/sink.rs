//! Sinks: JSON lines to stdout, stderr or a file, buffered and flushed on exit.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;

/// Where a sink writes when its path is `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A JSON-lines writer.
pub struct JsonLinesSink {
    out: BufWriter<Box<dyn Write + Send>>,
    lines: u64,
}

impl JsonLinesSink {
    /// Opens `path` (created or truncated), or the console when it is `-`.
    pub fn open(path: &Path, console: Console) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            match console {
                Console::Stdout => Box::new(io::stdout()),
                Console::Stderr => Box::new(io::stderr()),
            }
        } else {
            Box::new(File::create(path)?)
        };
        Ok(Self::new(out))
    }

    /// Wraps any writer (tests, benchmarks).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, out),
            lines: 0,
        }
    }

    /// Writes one value as one line.
    pub fn write<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
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

impl Drop for JsonLinesSink {
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
    fn writes_one_line_per_value_and_flushes_on_drop() {
        let shared = Shared::default();
        {
            let mut sink = JsonLinesSink::new(Box::new(shared.clone()));
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
