//! Writes a synthetic event stream to stdout, for whole-process benchmarks:
//! `cargo run --release -p swarmtel --example synthetic_stream -- WORKERS REQUESTS > stream.ndjson`
//! (defaults: 4 workers, 1,000,000 requests). The stream is
//! [`swarmtel::sources::synthetic::request_stream`]: the same every time.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |name: &str, default: usize| match args.next() {
        None => Ok(default),
        Some(text) => text.parse::<usize>().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name} must be a whole number, not {text:?}"),
            )
        }),
    };
    let workers = number("WORKERS", 4)?;
    let requests = number("REQUESTS", 1_000_000)?;
    std::io::stdout()
        .lock()
        .write_all(&swarmtel::sources::synthetic::request_stream(
            workers, requests,
        ))
}
