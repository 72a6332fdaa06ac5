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

/// The `swarmtel` binary, with a clean environment of our variables.
pub fn swarmtel() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmtel"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SWARMTEL_") || key == "LOCUST_CUSTOM_OPTION" || key == "MISBEHAVE_MODE"
        {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `swarmtel replay --config CONFIG -` with `events` on stdin.
pub fn replay(config: &Path, events: &[u8], extra_args: &[&str]) -> Output {
    let mut child = swarmtel()
        .args(["replay", "--config"])
        .arg(config)
        .args(extra_args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start swarmtel");
    let mut stdin = child.stdin.take().unwrap();
    let events = events.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&events);
    });
    let output = child.wait_with_output().expect("wait for swarmtel");
    writer.join().unwrap();
    output
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
