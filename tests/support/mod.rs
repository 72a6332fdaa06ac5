//! Shared helpers for the integration tests: build the guests from source once, write
//! configs into temporary folders, run the real `swarmtel` binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_owned()
}

/// Builds every guest from source (once per test binary) and returns their folder.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_root().join("scripts/build-guests.sh"))
            .output()
            .expect("run scripts/build-guests.sh");
        assert!(
            output.status.success(),
            "building guests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// The path of a guest built from source, by crate name with underscores.
pub fn guest(name: &str) -> PathBuf {
    let path = guests_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "guest {} was not built", path.display());
    path
}

/// A temporary folder holding a config file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes `name` in the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The `swarmtel` binary, with a clean environment of our variables and a compile cache
/// shared by the tests (under target/, so it never touches the user's).
pub fn swarmtel() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmtel"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SWARMTEL_") || key.starts_with("LOCUST_") {
            command.env_remove(key);
        }
    }
    command.env("SWARMTEL_CACHE_DIR", test_cache_dir());
    command
}

/// The compile cache folder the tests share.
pub fn test_cache_dir() -> PathBuf {
    repo_root().join("target").join("test-compile-cache")
}

/// Runs `swarmtel replay --config CONFIG -` with `events` on stdin.
pub fn replay(config: &Path, events: &[u8], extra_args: &[&str]) -> Output {
    replay_with(config, events, |command| {
        command.args(extra_args);
    })
    .output
}

/// A finished `swarmtel replay`.
pub struct Run {
    /// Its exit status, stdout and stderr.
    pub output: Output,
    /// The most resident memory the process had, in KiB, read from `/proc` while it ran (0
    /// where there is no `/proc`).
    pub peak_rss_kib: u64,
    /// The most threads it had at once, read the same way.
    pub peak_threads: u64,
}

/// Runs `swarmtel replay --config CONFIG [..] -` with `events` on stdin, after `customize` has
/// added arguments, environment variables or a working folder to the command.
pub fn replay_with(config: &Path, events: &[u8], customize: impl FnOnce(&mut Command)) -> Run {
    let mut command = swarmtel();
    command.args(["replay", "--config"]).arg(config);
    customize(&mut command);
    let mut child = command
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start swarmtel");
    let pid = child.id();
    let watcher = std::thread::spawn(move || peaks(pid));
    let mut stdin = child.stdin.take().unwrap();
    let events = events.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&events);
    });
    let output = child.wait_with_output().expect("wait for swarmtel");
    writer.join().unwrap();
    let (peak_rss_kib, peak_threads) = watcher.join().unwrap();
    Run {
        output,
        peak_rss_kib,
        peak_threads,
    }
}

/// Polls the `VmHWM` (peak resident set, KiB) and `Threads` of process `pid` until it has
/// exited; returns the highest values read.
pub fn peaks(pid: u32) -> (u64, u64) {
    let status = format!("/proc/{pid}/status");
    let (mut rss, mut threads) = (0, 0);
    let field = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find(|line| line.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    loop {
        let Ok(text) = std::fs::read_to_string(&status) else {
            return (rss, threads);
        };
        // A process that has exited (a zombie) has no memory lines.
        let Some(kib) = field(&text, "VmHWM:") else {
            return (rss, threads);
        };
        rss = rss.max(kib);
        threads = threads.max(field(&text, "Threads:").unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// stdout as parsed JSON lines.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Lines whose `telemetry.plugin` is `plugin`.
pub fn from_plugin<'a>(lines: &'a [Value], plugin: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| line["telemetry"]["plugin"] == plugin)
        .collect()
}

/// The runtime's own lines named `name`.
pub fn self_telemetry<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| {
            line["telemetry"]["plugin"] == "swarmtel" && line["telemetry"]["telemetry_name"] == name
        })
        .collect()
}

/// The sample capture of a real Locust run.
pub fn sample_stream() -> Vec<u8> {
    std::fs::read(repo_root().join("examples/locust-run.ndjson")).expect("sample stream")
}

/// A TOML string literal.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The stream the side-by-side runs replay: 2 workers, 20,000 requests, `test_start` and
/// `test_stop` on each worker.
pub fn side_by_side_stream() -> &'static [u8] {
    static STREAM: OnceLock<Vec<u8>> = OnceLock::new();
    STREAM.get_or_init(|| swarmtel::sources::synthetic::request_stream(2, 20_000))
}

/// Events per worker in [`side_by_side_stream`]: its requests, `test_start` and `test_stop`.
pub const EVENTS_PER_WORKER: u64 = 10_000 + 2;

/// The healthy `request_stats` guest alone over [`side_by_side_stream`], run once per test
/// binary: its stdout lines, and its peak memory.
pub fn healthy_alone() -> &'static (Vec<Value>, u64) {
    static ALONE: OnceLock<(Vec<Value>, u64)> = OnceLock::new();
    ALONE.get_or_init(|| {
        let workspace = Workspace::new();
        let config = workspace.write(
            "alone.toml",
            format!(
                "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n[[plugins]]\npath = {}\n",
                toml_path(&guest("request_stats"))
            ),
        );
        let run = replay_with(&config, side_by_side_stream(), |_| {});
        assert!(
            run.output.status.success(),
            "{}",
            String::from_utf8_lossy(&run.output.stderr)
        );
        (json_lines(&run.output.stdout), run.peak_rss_kib)
    })
}

/// A run of `request_stats` and a misbehaving guest side by side.
pub struct Beside {
    /// The folder of the config and the dead-letter file.
    pub workspace: Workspace,
    /// Telemetry lines (stdout).
    pub lines: Vec<Value>,
    /// stdout as it was.
    pub stdout: Vec<u8>,
    /// stderr: diagnostics and the summary.
    pub stderr: String,
    /// The dead-letter lines.
    pub dead_letters: Vec<Value>,
    /// The process's peak memory, in KiB.
    pub peak_rss_kib: u64,
    /// The most threads it had at once.
    pub peak_threads: u64,
}

/// Runs `request_stats` next to the guest `guest_name` over [`side_by_side_stream`]; the
/// hostile plugin's entry gets `plugin_toml` after its `path` (options, limits), and the
/// command goes through `customize`. Dead letters go to `rejected.jsonl`. Asserts that the run
/// exits with 0: a faulty plugin must not fail the run.
pub fn beside(guest_name: &str, plugin_toml: &str, customize: impl FnOnce(&mut Command)) -> Beside {
    let workspace = Workspace::new();
    let config = workspace.write(
        "together.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n[output]\ndead_letter = \"rejected.jsonl\"\n\
             [[plugins]]\npath = {stats}\n[[plugins]]\npath = {bad}\n{plugin_toml}\n",
            stats = toml_path(&guest("request_stats")),
            bad = toml_path(&guest(guest_name)),
        ),
    );
    let run = replay_with(&config, side_by_side_stream(), customize);
    let stderr = String::from_utf8_lossy(&run.output.stderr).into_owned();
    assert_eq!(
        run.output.status.code(),
        Some(0),
        "a faulty plugin must not fail the run: {stderr}"
    );
    let dead_letters = match std::fs::read(workspace.path("rejected.jsonl")) {
        Ok(bytes) => json_lines(&bytes),
        Err(_) => Vec::new(),
    };
    Beside {
        lines: json_lines(&run.output.stdout),
        stdout: run.output.stdout,
        stderr,
        dead_letters,
        peak_rss_kib: run.peak_rss_kib,
        peak_threads: run.peak_threads,
        workspace,
    }
}

/// Runs request-stats alone, then next to the misbehave guest in `mode` with `limits`, and
/// returns both outputs and the second run's stderr.
pub fn healthy_beside(mode: &str, limits: &str) -> (Vec<Value>, Vec<Value>, String) {
    let run = beside(
        "misbehave",
        &format!("[plugins.options]\nmode = \"{mode}\"\n[plugins.limits]\n{limits}\n"),
        |_| {},
    );
    (healthy_alone().0.clone(), run.lines, run.stderr)
}

/// The healthy recorder's lines are the same with and without the misbehaving one beside it.
pub fn assert_healthy_output_unchanged(alone: &[Value], together: &[Value]) {
    let expected = from_plugin(alone, "request-stats");
    assert!(!expected.is_empty());
    assert_eq!(expected, from_plugin(together, "request-stats"));
}

/// The `fault_kind` of every `PLUGIN_FAULT` line, in order.
pub fn fault_kinds(lines: &[Value]) -> Vec<String> {
    self_telemetry(lines, "PLUGIN_FAULT")
        .iter()
        .map(|line| line["telemetry"]["fault_kind"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /metrics` from a scrape endpoint (`HOST:PORT`): the body, after checking the status.
pub fn scrape(address: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: swarmtel\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

/// The value of one series in an exposition, such as `swarmtel_events_total` or
/// `swarmtel_plugin_events_in_total{plugin="request-stats"}`.
pub fn series(exposition: &str, name: &str) -> Option<u64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The address a server announced with "prometheus metrics at http://ADDRESS/metrics".
pub fn metrics_address(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .expect("an http:// address")
        .trim_end_matches("/metrics")
        .to_owned()
}
