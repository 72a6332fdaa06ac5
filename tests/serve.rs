//! `swarmtel serve` against real sockets: the hello, tokens, bad frames, back-pressure,
//! the drain on SIGTERM, and the Unix socket's permissions. Each test runs the real binary
//! and talks to it the way the bridge does (docs/wire-protocol.md).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// A running `swarmtel serve`.
struct Server {
    child: Child,
    /// stderr lines as they arrive.
    stderr: mpsc::Receiver<String>,
    /// stderr so far.
    log: Vec<String>,
    /// The TCP address or Unix socket it announced first.
    endpoint: String,
}

impl Server {
    /// Starts `swarmtel serve --config CONFIG ARGS` and waits for its "serving on" line.
    fn start(config: &Path, args: &[&str], env: &[(&str, &Path)]) -> Server {
        let env: Vec<(&str, &std::ffi::OsStr)> = env
            .iter()
            .map(|(key, value)| (*key, value.as_os_str()))
            .collect();
        Self::start_with_env(config, args, &env)
    }

    /// [`Server::start`] with any environment values.
    fn start_with_env<V: AsRef<std::ffi::OsStr>>(
        config: &Path,
        args: &[&str],
        env: &[(&str, V)],
    ) -> Server {
        let mut command = swarmtel();
        command
            .args(["serve", "--status", "off", "--config"])
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start swarmtel serve");
        let (sender, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            stderr,
            log: Vec::new(),
            endpoint: String::new(),
        };
        let line = server.wait_for("serving on");
        let listed = line
            .split("serving on ")
            .nth(1)
            .and_then(|rest| rest.split([';', ',']).next())
            .unwrap();
        server.endpoint = listed.trim_end_matches(" (owner only)").to_owned();
        server
    }

    /// Waits (up to 30 s) for a stderr line containing `text`, and returns it.
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no `{text}` on stderr; so far:\n{}", self.log.join("\n")),
            }
        }
    }

    fn tcp_port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("not a TCP endpoint: {}", self.endpoint))
    }

    fn connect(&self) -> Connection {
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.tcp_port())).unwrap();
        Connection::new(Box::new(stream.try_clone().unwrap()), Box::new(stream))
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Sends SIGTERM, waits, checks the exit code is 0, and returns the whole stderr.
    fn stop_ok(self) -> String {
        let (code, _, stderr) = self.stop();
        assert_eq!(code, 0, "{stderr}");
        stderr
    }

    /// Sends SIGTERM and waits: (exit code, stdout, the whole stderr).
    fn stop(mut self) -> (i32, Vec<u8>, String) {
        self.signal(libc::SIGTERM);
        let mut stdout = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (status.code().unwrap_or(-1), stdout, self.log.join("\n"))
    }
}

impl Drop for Server {
    /// A test that fails must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client connection.
struct Connection {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
}

impl Connection {
    fn new(reader: Box<dyn Read + Send>, writer: Box<dyn Write + Send>) -> Self {
        Self {
            reader: BufReader::new(reader),
            writer,
        }
    }

    fn unix(path: &Path) -> Connection {
        let stream = UnixStream::connect(path).unwrap();
        Connection::new(Box::new(stream.try_clone().unwrap()), Box::new(stream))
    }

    /// Sends a hello and returns the reply.
    fn hello(&mut self, hello: Value) -> Value {
        self.send(format!("{hello}\n").as_bytes());
        self.reply()
    }

    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }
}

fn hello(role: &str, node: &str) -> Value {
    json!({"hello": "swarmtel", "version": 1, "role": role, "node": node, "client": "test"})
}

fn example_config(workspace: &Workspace, output: &Path) -> PathBuf {
    workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"swarmtel-example\"\nrun_id = \"example-run\"\n\
             [output]\npath = {}\ndead_letter = \"-\"\n\
             [[plugins]]\npath = {}\nroles = [\"master\", \"worker\"]\n\
             [plugins.options]\ncustom-option = \"from-config\"\n\
             [[plugins]]\npath = {}\n",
            toml_path(output),
            toml_path(&guest("custom_telemetry")),
            toml_path(&guest("request_stats")),
        ),
    )
}

/// A server with the example plugins, writing telemetry to a file: (its folder, that file,
/// the server).
fn example_server(args: &[&str]) -> (Workspace, PathBuf, Server) {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = example_config(&workspace, &output);
    let server = Server::start(&config, args, &[]);
    (workspace, output, server)
}

/// The sample stream's lines, per (role, node), in order.
fn sample_by_node() -> BTreeMap<(String, String), Vec<u8>> {
    let mut by_node: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for line in sample_stream().split_inclusive(|b| *b == b'\n') {
        let record: Value = serde_json::from_slice(line).unwrap();
        let key = (
            record["role"].as_str().unwrap().to_owned(),
            record["node"].as_str().unwrap().to_owned(),
        );
        by_node.entry(key).or_default().extend_from_slice(line);
    }
    by_node
}

fn sorted_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

// The sample run, sent live by three connections at once (a master and two workers), gives
// exactly the telemetry its replay gives: the same lines, in an order that may differ across
// nodes.
#[test]
fn live_connections_give_the_replays_telemetry() {
    let workspace = Workspace::new();
    let live_output = workspace.path("live.ndjson");
    let config = example_config(&workspace, &live_output);
    let server = Server::start(&config, &["--listen", "127.0.0.1:0"], &[]);
    let senders: Vec<_> = sample_by_node()
        .into_iter()
        .map(|((role, node), lines)| {
            let mut connection = server.connect();
            std::thread::spawn(move || {
                let mut hello = hello(&role, &node);
                hello["run_id"] = "example-run".into();
                let reply = connection.hello(hello);
                assert_eq!(reply["ok"], true, "{reply}");
                assert_eq!(reply["run_id"], "example-run");
                assert_eq!(reply["testplan"], "swarmtel-example");
                let count = lines.iter().filter(|b| **b == b'\n').count();
                connection.send(&lines);
                connection.send(format!("{}\n", json!({"bye": true, "sent": count})).as_bytes());
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let mut server = server;
    for _ in 0..3 {
        server.wait_for(") closed: ");
    }
    let stderr = server.stop_ok();
    assert!(
        stderr
            .contains("3 connections (1 master, 2 worker, 0 standalone), 0 refused; 0 bad frames"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0 by bridges, 0 here, 0 lost in transit"),
        "{stderr}"
    );

    let replay_output = workspace.path("replay.ndjson");
    let replay_config = example_config(&workspace, &replay_output);
    let replayed = replay(&replay_config, &sample_stream(), &[]);
    assert!(replayed.status.success());
    let live = std::fs::read(&live_output).unwrap();
    // The same lines, but for serve's own accounting of its connections.
    let (serve_summary, live_lines): (Vec<String>, Vec<String>) = sorted_lines(&live)
        .into_iter()
        .partition(|line| line.contains("\"SERVE_SUMMARY\""));
    assert_eq!(serve_summary.len(), 1);
    assert_eq!(
        live_lines,
        sorted_lines(&std::fs::read(&replay_output).unwrap())
    );
    assert_eq!(
        json_lines(&live).len(),
        6 + 36 + 2 + 6 + 1,
        "6 custom, 36 stats, 2 plugin summaries, 6 request summaries (5 endpoints and Aggregated), 1 serve summary"
    );
}

// Each connection's telemetry carries the run id its hello named; a hello without one gets
// the server's.
#[test]
fn every_connection_keeps_its_own_run_id() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let start = "{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":1}\n";
    let mut named = server.connect();
    let mut hello_named = hello("worker", "worker-0");
    hello_named["run_id"] = "run-a".into();
    hello_named["testplan"] = "plan-a".into();
    let reply = named.hello(hello_named);
    assert_eq!(
        (reply["run_id"].clone(), reply["testplan"].clone()),
        (json!("run-a"), json!("plan-a"))
    );
    named.send(start.as_bytes());
    let mut unnamed = server.connect();
    let reply = unnamed.hello(hello("worker", "worker-0"));
    assert_eq!(reply["run_id"], "example-run");
    unnamed.send(start.as_bytes());
    drop((named, unnamed));
    server.wait_for(") closed: ");
    server.wait_for(") closed: ");
    server.stop_ok();
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let starts: Vec<(String, String)> = from_plugin(&lines, "custom-telemetry")
        .iter()
        .map(|line| {
            (
                line["telemetry"]["run_id"].as_str().unwrap().to_owned(),
                line["telemetry"]["testplan"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut starts = starts;
    starts.sort();
    assert_eq!(
        starts,
        [
            ("example-run".to_owned(), "swarmtel-example".to_owned()),
            ("run-a".to_owned(), "plan-a".to_owned())
        ],
        "one recorder instance per (run, node), each stamped with its run"
    );
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, &workspace.path("out.ndjson"));
    let output = swarmtel()
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tcp:0.0.0.0:0 is reachable from other machines: set a token"),
        "{stderr}"
    );
}

// With a token, every connection (loopback too) must present it; one without is refused with
// the reason, in the reply and in the server's log.
#[test]
fn a_connection_without_the_token_is_refused_and_logged() {
    let (_workspace, _, mut server) =
        example_server(&["--listen", "0.0.0.0:0", "--token", "s3cret"]);
    for token in [None, Some("wrong")] {
        let mut connection = server.connect();
        let mut hello = hello("worker", "worker-0");
        if let Some(token) = token {
            hello["token"] = token.into();
        }
        let reply = connection.hello(hello);
        assert_eq!(reply["ok"], false);
        assert_eq!(reply["error"], "token missing or wrong");
        let mut rest = String::new();
        connection.reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "the server closes a refused connection");
        server.wait_for("refused: token missing or wrong");
    }
    let mut connection = server.connect();
    let mut good = hello("worker", "worker-0");
    good["token"] = "s3cret".into();
    assert_eq!(connection.hello(good)["ok"], true);
    connection
        .send(b"{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":1}\n");
    drop(connection);
    server.wait_for(") closed: 1 events");
    let stderr = server.stop_ok();
    assert!(
        stderr.contains("1 connections (0 master, 1 worker, 0 standalone), 2 refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "the token is never logged");
}

#[test]
fn hellos_that_are_wrong_or_late_are_refused() {
    let (_workspace, _, mut server) =
        example_server(&["--listen", "127.0.0.1:0", "--hello-timeout", "300ms"]);
    let cases = [
        (json!({"event": "test_start"}), "not a hello frame"),
        (
            json!({"hello": "swarmtel", "version": 2, "role": "worker", "node": "w"}),
            "unsupported protocol version 2; this server speaks version 1",
        ),
        (
            json!({"hello": "swarmtel", "version": 1, "role": "boss", "node": "w"}),
            "unknown role `boss`",
        ),
    ];
    for (hello, reason) in cases {
        let reply = server.connect().hello(hello);
        assert_eq!(reply["ok"], false);
        assert!(reply["error"].as_str().unwrap().contains(reason), "{reply}");
        server.wait_for(reason);
    }
    // Silent for longer than the hello timeout.
    let mut silent = server.connect();
    let reply = silent.reply();
    assert_eq!(reply["error"], "no hello within 300ms");
    let stderr = server.stop_ok();
    assert!(stderr.contains("4 refused"), "{stderr}");
}

// Frames that do not parse, name another node, or run past the line cap are reported (the
// first ten per connection), counted and skipped; the connection goes on and its good events
// all count.
#[test]
fn bad_frames_are_counted_and_the_connection_goes_on() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    let request = |time: u32| {
        format!(
            "{{\"event\":\"request\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":{time},\"request_type\":\"GET\",\"name\":\"/\",\"response_time\":5}}\n"
        )
    };
    let mut stream = String::from(
        "{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":1}\n",
    );
    for index in 0..12 {
        stream.push_str(&format!("not json {index}\n"));
        stream.push_str(&request(2 + index));
    }
    stream.push_str(
        "{\"event\":\"request\",\"role\":\"worker\",\"node\":\"worker-1\",\"time\":20}\n",
    );
    connection.send(stream.as_bytes());
    connection.send(&vec![b'x'; swarmtel::sources::wire::MAX_FRAME_BYTES + 10]);
    connection.send(b"\n");
    connection.send(request(30).as_bytes());
    connection
        .send(b"{\"event\":\"test_stop\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":31}\n");
    drop(connection);
    let closed = server.wait_for(") closed: ");
    assert!(closed.contains("15 events, 14 bad frames"), "{closed}");
    let stderr = server.stop_ok();
    let shown = stderr.matches("frame skipped").count();
    assert_eq!(shown, 10, "the first ten are shown:\n{stderr}");
    assert!(stderr.contains("further bad frames on this connection are counted, not shown"));
    assert!(
        stderr.contains("14 bad frames, 1 over-long lines"),
        "{stderr}"
    );
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let finals: Vec<_> = from_plugin(&lines, "request-stats")
        .into_iter()
        .filter(|line| line["telemetry"]["final"] == true && line["telemetry"]["endpoint"] == "/")
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0]["telemetry"]["requests"], 13,
        "every good request counted"
    );
}

// The default endpoint: a Unix socket in a 0700 folder, itself 0600, removed at exit; a
// second server on the same socket is refused, a stale socket file is replaced.
#[test]
fn the_default_unix_socket_is_owner_only() {
    let workspace = Workspace::new();
    let runtime_dir = workspace.dir.path().join("xdg");
    let config = example_config(&workspace, &workspace.path("out.ndjson"));
    let env = [("XDG_RUNTIME_DIR", runtime_dir.as_path())];
    let server = Server::start(&config, &[], &env);
    let socket = runtime_dir.join("swarmtel/serve.sock");
    assert_eq!(server.endpoint, format!("unix:{}", socket.display()));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let second = swarmtel()
        .args(["serve", "--config"])
        .arg(&config)
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another swarmtel serve is listening"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let mut connection = Connection::unix(&socket);
    assert_eq!(connection.hello(hello("standalone", "local"))["ok"], true);
    drop(connection);
    server.stop_ok();
    assert!(!socket.exists(), "the socket is removed at exit");

    // A socket file nobody listens on is stale: replaced.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    assert!(socket.exists());
    let server = Server::start(&config, &[], &env);
    server.stop_ok();
}

// SIGTERM: no new connections; an open one may go on until the drain timeout, then it is
// closed; the recorders still finish and the telemetry of everything received is written.
#[test]
fn sigterm_drains_open_connections_then_finishes() {
    let (_workspace, output, mut server) =
        example_server(&["--listen", "127.0.0.1:0", "--drain-timeout", "1s"]);
    let port = server.tcp_port();
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    let mut events = String::new();
    for time in 1..=50 {
        events.push_str(&format!(
            "{{\"event\":\"request\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":{time},\"request_type\":\"GET\",\"name\":\"/a\",\"response_time\":3}}\n"
        ));
    }
    connection.send(events.as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    server.wait_for("waiting up to 1s for 1 open connection(s)");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no new connections while draining"
    );
    // Still read while draining.
    connection.send(
        b"{\"event\":\"request\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":51,\"request_type\":\"GET\",\"name\":\"/a\",\"response_time\":3}\n",
    );
    server.wait_for("closing 1 connection(s) still open at the drain deadline");
    let stderr = server.stop_ok();
    assert!(stderr.contains("closed: 51 events"), "{stderr}");
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let last = from_plugin(&lines, "request-stats")
        .last()
        .map(|line| line["telemetry"]["requests"].clone());
    assert_eq!(last, Some(json!(51)), "finish reported everything received");
}

/// A config with the lifecycle guest, slow on every call (for back-pressure).
fn slow_config(workspace: &Workspace, output: &Path) -> PathBuf {
    workspace.write(
        "slow.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\nbatch_size = 1\n\
             [output]\npath = {}\n\
             [[plugins]]\npath = {}\n\
             [plugins.options]\nmode = \"slow-on-worker-0\"\nspin = 3000000\n\
             [plugins.limits]\ncpu_ms_per_call = 2000\n",
            toml_path(output),
            toml_path(&guest("lifecycle")),
        ),
    )
}

fn request_lines(count: u32) -> Vec<u8> {
    request_lines_for("worker-0", count)
}

/// `count` requests of worker `node`.
fn request_lines_for(node: &str, count: u32) -> Vec<u8> {
    let mut lines = String::new();
    for index in 0..count {
        lines.push_str(&format!(
            "{{\"event\":\"request\",\"role\":\"worker\",\"node\":\"{node}\",\"time\":{},\"request_type\":\"GET\",\"name\":\"/\",\"response_time\":1}}\n",
            f64::from(index) / 1000.0
        ));
    }
    lines.into_bytes()
}

/// Sends `count` requests through a slow recorder under `overload`; returns the server's
/// stderr once the connection has closed.
fn overload_run(overload: &str, count: u32) -> String {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = slow_config(&workspace, &output);
    let mut server = Server::start(
        &config,
        &[
            "--listen",
            "127.0.0.1:0",
            "--overload",
            overload,
            "--queue-mib",
            "1",
        ],
        &[],
    );
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    connection.send(&request_lines(count));
    // `dropped: 1` shows in the server's log only if the bye arrived.
    connection.send(format!("{}\n", json!({"bye": true, "sent": count, "dropped": 1})).as_bytes());
    drop(connection);
    server.wait_for(") closed: ");
    server.stop_ok()
}

fn closed_counts(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|line| line.contains(") closed: "))
        .unwrap();
    let number = |after: &str, before: &str| -> u64 {
        line.split(before)
            .next()
            .and_then(|head| head.rsplit(after).next())
            .map_or(0, |n| n.trim().parse().unwrap_or(0))
    };
    let received = number("closed: ", " events");
    let dropped = if line.contains("events dropped here") {
        number("; ", " events dropped here")
    } else {
        0
    };
    (received, dropped)
}

// When the recorders cannot keep up, `--overload drop` drops whole chunks and counts every
// line it dropped: received + dropped = sent, nothing unaccounted.
#[test]
fn overload_drop_counts_every_dropped_event() {
    let sent = 40_000;
    let stderr = overload_run("drop", sent);
    let (received, dropped) = closed_counts(&stderr);
    assert!(
        dropped > 0,
        "the slow recorder made the server drop:\n{stderr}"
    );
    assert_eq!(received + dropped, u64::from(sent), "{stderr}");
    assert!(
        stderr.contains("the bridge dropped 1 events"),
        "the bye frame is never dropped:\n{stderr}"
    );
    assert!(stderr.contains("dropping and counting this connection's events (--overload drop)"));
    assert!(
        stderr.contains(&format!("1 by bridges, {dropped} here, 0 lost in transit")),
        "{stderr}"
    );
}

// `--overload block` (the default) loses nothing: the connection waits instead.
#[test]
fn overload_block_loses_nothing() {
    let sent = 2_000;
    let stderr = overload_run("block", sent);
    assert_eq!(closed_counts(&stderr), (u64::from(sent), 0), "{stderr}");
    assert!(
        stderr.contains("1 by bridges, 0 here, 0 lost in transit"),
        "{stderr}"
    );
}

// A bye that counts more events than arrived reports the difference as lost in transit.
#[test]
fn a_bye_with_more_than_arrived_counts_events_lost_in_transit() {
    let (_workspace, _, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let mut connection = server.connect();
    let mut first = hello("worker", "worker-0");
    first["dropped"] = 4.into();
    assert_eq!(connection.hello(first)["ok"], true);
    connection.send(&request_lines(10));
    connection.send(b"{\"bye\":true,\"sent\":13,\"dropped\":9}\n");
    drop(connection);
    let closed = server.wait_for(") closed: ");
    assert!(
        closed.contains(
            "10 events, 0 bad frames; 3 sent events never arrived; the bridge dropped 9 events"
        ),
        "{closed}"
    );
    let stderr = server.stop_ok();
    assert!(
        stderr.contains("events dropped: 9 by bridges, 0 here, 3 lost in transit"),
        "{stderr}"
    );
}

// The connection cap: past it a connection is refused with the reason, before its hello is
// read; once one closes, a new one is taken again.
#[test]
fn connections_past_the_cap_are_refused() {
    let (_workspace, _, mut server) =
        example_server(&["--listen", "127.0.0.1:0", "--max-connections", "2"]);
    let mut first = server.connect();
    assert_eq!(first.hello(hello("worker", "worker-0"))["ok"], true);
    let mut second = server.connect();
    assert_eq!(second.hello(hello("worker", "worker-1"))["ok"], true);
    let reply = server.connect().reply();
    assert_eq!(reply["ok"], false);
    assert_eq!(
        reply["error"],
        "too many connections: this server takes 2 at a time"
    );
    server.wait_for("refused: too many connections");
    drop(first);
    server.wait_for("(worker-0) closed");
    let mut third = server.connect();
    assert_eq!(third.hello(hello("worker", "worker-2"))["ok"], true);
    drop((second, third));
    let stderr = server.stop_ok();
    assert!(
        stderr.contains("3 connections (0 master, 3 worker, 0 standalone), 1 refused"),
        "{stderr}"
    );
}

// A connection blocked behind a full queue at the drain deadline stops, counts the lines it
// could not queue as dropped here, and the server still finishes and exits 0.
#[test]
fn the_drain_deadline_counts_what_a_blocked_connection_could_not_queue() {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = slow_config(&workspace, &output);
    let mut server = Server::start(
        &config,
        &[
            "--listen",
            "127.0.0.1:0",
            "--queue-mib",
            "1",
            "--drain-timeout",
            "500ms",
        ],
        &[],
    );
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    let writer = std::thread::spawn(move || {
        // Far more than the slow recorder gets through before the deadline; the write
        // blocks once the server stops reading, and fails when it closes.
        let _ = connection.writer.write_all(&request_lines(200_000));
    });
    server.wait_for("the recorders are behind");
    let started = std::time::Instant::now();
    let (code, _, stderr) = server.stop();
    writer.join().unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the drain is bounded"
    );
    assert!(
        stderr.contains("closing 1 connection(s) still open at the drain deadline"),
        "{stderr}"
    );
    let (received, dropped) = closed_counts(&stderr);
    assert!(received > 0 && dropped > 0, "{stderr}");
    assert!(
        stderr.contains(&format!("0 by bridges, {dropped} here, 0 lost in transit")),
        "{stderr}"
    );
}

// A stream that ends in the middle of a line: those bytes are a bad frame, not an event
// (the bridge sends a cut line again on its next connection).
#[test]
fn a_line_cut_by_the_end_of_the_stream_is_not_processed() {
    let (_workspace, _, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    connection.send(&request_lines(3));
    // A complete JSON object, but no newline: it may be the start of a longer line.
    connection
        .send(b"{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":1}");
    drop(connection);
    let closed = server.wait_for(") closed: ");
    assert!(closed.contains("3 events, 1 bad frames"), "{closed}");
    let stderr = server.stop_ok();
    assert!(
        stderr.contains(
            "line 5: the connection ended in the middle of a line (65 bytes without a newline)"
        ),
        "{stderr}"
    );
}

// Hellos and byes carry the bridge's lifetime drop count: a bridge that reconnects is
// counted once, at its highest count.
#[test]
fn a_reconnecting_bridges_drops_are_counted_once() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let mut first = server.connect();
    let mut hello_first = hello("worker", "worker-0");
    hello_first["run_id"] = "r".into();
    hello_first["dropped"] = 5.into();
    assert_eq!(first.hello(hello_first.clone())["ok"], true);
    drop(first);
    server.wait_for(") closed: ");
    let mut second = server.connect();
    hello_first["dropped"] = 8.into();
    assert_eq!(second.hello(hello_first)["ok"], true);
    second.send(b"{\"bye\":true,\"sent\":0,\"dropped\":9}\n");
    drop(second);
    server.wait_for("the bridge dropped 9 events");
    let stderr = server.stop_ok();
    assert!(stderr.contains("events dropped: 9 by bridges"), "{stderr}");
    // And in self-telemetry, beside the recorders' telemetry.
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let summary = self_telemetry(&lines, "SERVE_SUMMARY");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["telemetry"]["dropped_by_bridges"], 9);
    assert_eq!(summary[0]["telemetry"]["connections"], 2);
    // No node sent an event: the record belongs to the server's own run.
    assert_eq!(summary[0]["telemetry"]["run_id"], "example-run");
}

// One connection per node and run. A bridge that reconnects while its old connection is
// still open on the server (it may be half-open and never close) takes over: the old one
// hands over what it read and is closed, then the new one goes on, so nothing is lost and the
// node's events stay in order.
#[test]
fn a_reconnecting_node_takes_over_its_old_connection() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let mut old = server.connect();
    assert_eq!(old.hello(hello("worker", "worker-0"))["ok"], true);
    old.send(&request_lines(4));
    let mut new = server.connect();
    assert_eq!(new.hello(hello("worker", "worker-0"))["ok"], true);
    let replaced = server.wait_for("replaced by a newer connection of the same node");
    assert!(replaced.contains("closed: 4 events"), "{replaced}");
    server.log.clear();
    // The server closed the old connection.
    let mut rest = String::new();
    old.reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    new.send(&request_lines(3));
    new.send(b"{\"event\":\"test_stop\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":9}\n");
    let mut other_run = hello("worker", "worker-0");
    other_run["run_id"] = "another-run".into();
    assert_eq!(
        server.connect().hello(other_run)["ok"],
        true,
        "another run's node is another node"
    );
    drop(new);
    let closed = server.wait_for("closed: 4 events, 0 bad frames");
    assert!(!closed.contains("replaced"), "{closed}");
    server.stop_ok();
    let lines = json_lines(&std::fs::read(&output).unwrap());
    assert!(
        from_plugin(&lines, "request-stats").iter().any(|line| {
            line["telemetry"]["endpoint"] == "/" && line["telemetry"]["requests"] == 7
        }),
        "one recorder saw both connections' requests"
    );
}

// A socket folder others can write is refused: they could swap the socket.
#[test]
fn a_socket_folder_others_can_write_is_refused() {
    let workspace = Workspace::new();
    let runtime_dir = workspace.dir.path().join("xdg");
    let folder = runtime_dir.join("swarmtel");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = example_config(&workspace, &workspace.path("out.ndjson"));
    let output = swarmtel()
        .args(["serve", "--config"])
        .arg(&config)
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: group or others can write it (mode 777), so they could replace the socket",
            folder.display()
        )),
        "{stderr}"
    );
}

/// Threads of process `pid`.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap()
}

// A node that quit and closed its connection has its recorders finished right away and
// their threads freed, so a long-lived server does not pile up finished runs; the same node
// name in a later connection starts afresh.
#[test]
fn a_node_that_quit_frees_its_recorders_when_it_disconnects() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let pid = server.child.id();
    let run = |server: &mut Server, quit: bool| {
        server.log.clear();
        let mut connection = server.connect();
        assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
        connection.send(
            b"{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":1}\n",
        );
        connection.send(&request_lines(5));
        if quit {
            connection.send(b"{\"event\":\"quit\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":2,\"exit_code\":0}\n");
        }
        drop(connection);
        server.wait_for(if quit {
            "the node quit: its recorders finished"
        } else {
            ") closed: "
        });
    };
    run(&mut server, false);
    let with_recorders = threads(pid);
    run(&mut server, true);
    // Recorders run on the pipeline's fixed pool: finishing them frees no thread, and the
    // next node's recorders start none.
    assert_eq!(threads(pid), with_recorders, "recorders own no threads");
    // Their final telemetry is out before the server stops.
    std::thread::sleep(Duration::from_millis(500));
    let lines = json_lines(&std::fs::read(&output).unwrap());
    assert!(
        from_plugin(&lines, "request-stats").iter().any(|line| {
            line["telemetry"]["endpoint"] == "/" && line["telemetry"]["requests"] == 10
        }),
        "the finished recorder reported all ten requests"
    );
    run(&mut server, false);
    assert_eq!(
        threads(pid),
        with_recorders,
        "a later connection starts new instances"
    );
    server.stop_ok();
}

// The live status line (forced here; `auto` picks it on a terminal): connections by role,
// rates, rejected, faults, bad frames and drops, redrawn in place every second.
#[test]
fn the_status_line_shows_connections_by_role() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, &workspace.path("out.ndjson"));
    let mut command = swarmtel();
    command
        .args([
            "serve",
            "--status",
            "line",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // The status line has no newline: read bytes, not lines.
    let (sender, received) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stderr.read(&mut buffer) {
            if read == 0 || sender.send(buffer[..read].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&seen).contains(text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match received.recv_timeout(left) {
                Ok(bytes) => seen.extend(bytes),
                Err(_) => panic!("no `{text}` in:\n{}", String::from_utf8_lossy(&seen)),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    let text = wait_for("; run ");
    let port: u16 = text
        .split("serving on tcp:127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut master = Connection::new(Box::new(stream.try_clone().unwrap()), Box::new(stream));
    assert_eq!(master.hello(hello("master", "master"))["ok"], true);
    let shown = wait_for("connections: 1 master, 0 worker, 0 standalone | in ");
    assert!(
        shown.contains("\r\x1b[2Kswarmtel: "),
        "redrawn in place: {shown:?}"
    );
    assert!(
        shown.contains("| rejected 0 | faults 0 | bad frames 0 | dropped 0"),
        "{shown}"
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    drop(master);
    assert!(child.wait().unwrap().success());
}

// Without a terminal (`auto` when stderr is a pipe) the status is a plain log line every 10 s.
#[test]
fn without_a_terminal_the_status_is_a_log_line_every_ten_seconds() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, &workspace.path("out.ndjson"));
    let mut command = swarmtel();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = std::time::Instant::now();
    let mut status = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("connections: 0 master, 0 worker, 0 standalone") {
            status = Some(line);
            break;
        }
    }
    let elapsed = started.elapsed();
    let status = status.expect("a status log line");
    assert!(
        !status.contains('\x1b'),
        "no terminal codes in a log: {status:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(9),
        "the first log line comes after about 10 s, not every second ({elapsed:?})"
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
}

// `swarmtel serve 2>&1 | head`: stderr closes early. Log lines are lost, telemetry is not,
// and the server still drains and exits 0.
#[test]
fn a_closed_stderr_loses_log_lines_not_telemetry() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    // Stop reading stderr: the reader thread ends at the next line and closes the pipe, so
    // every later write to it fails (EPIPE).
    server.stderr = mpsc::channel().1;
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    connection.send(b"not json\n");
    connection.send(&request_lines(7));
    connection
        .send(b"{\"event\":\"test_stop\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":9}\n");
    drop(connection);
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, _) = server.stop();
    assert_eq!(code, 0, "the server survives its stderr closing");
    let lines = json_lines(&std::fs::read(&output).unwrap());
    assert!(
        from_plugin(&lines, "request-stats")
            .iter()
            .any(|line| line["telemetry"]["endpoint"] == "/" && line["telemetry"]["requests"] == 7),
        "telemetry written"
    );
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (another "peer").
fn connect_from(source: [u8; 4], port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let address = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own; the addresses outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let local = address(source, 0);
        assert_eq!(libc::bind(fd, (&raw const local).cast(), length), 0);
        let remote = address([127, 0, 0, 1], port);
        assert_eq!(libc::connect(fd, (&raw const remote).cast(), length), 0);
        std::net::TcpStream::from_raw_fd(fd)
    }
}

// Connections that say nothing, or dribble their hello out a byte at a time and reconnect
// whenever they are closed, cannot keep bridges out: the longest-waiting one is closed to
// make room, and one address can hold at most 8 of the 32 waiting places.
#[test]
fn slow_or_silent_hellos_cannot_keep_bridges_out() {
    let (_workspace, _, server) = example_server(&["--listen", "127.0.0.1:0"]);
    let port = server.tcp_port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 40 attackers on 5 addresses (8 each, the per-address cap, so together they fill the
    // 32 places and the global eviction acts too): a byte of hello every 100 ms,
    // reconnecting when closed.
    let attackers: Vec<_> = (0..40u8)
        .map(|index| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reconnects = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut stream = connect_from([127, 0, 0, 2 + index % 5], port);
                    for byte in b"{\"hello\":\"swarmtel\",\"version\":1".iter().cycle() {
                        if stop.load(std::sync::atomic::Ordering::Relaxed)
                            || stream.write_all(&[*byte]).is_err()
                        {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    reconnects += 1;
                }
                reconnects
            })
        })
        .collect();
    // 32 silent connections on a sixth address.
    let silent: Vec<_> = (0..swarmtel::sources::serve::MAX_AWAITING_HELLO)
        .map(|_| connect_from([127, 0, 0, 7], port))
        .collect();
    // Long enough for the refused and the closed attackers to come back, several times.
    std::thread::sleep(Duration::from_millis(3_000));
    // Bridges get in every time, at once.
    for index in 0..10 {
        let reply = server
            .connect()
            .hello(hello("worker", &format!("worker-{index}")));
        assert_eq!(reply["ok"], true, "attempt {index}: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reconnects: u32 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(
        reconnects > 40,
        "attackers were closed to make room: {reconnects}"
    );
    drop(silent);
    let stderr = server.stop_ok();
    assert!(
        stderr.contains("closed before its hello to make room for newer connections (at most 32 may wait, 8 per address)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("closed before their hello to make room"),
        "{stderr}"
    );
}

/// A test_start line for `node`, at `time`.
fn test_start(node: &str, time: f64) -> Vec<u8> {
    format!(
        "{{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"{node}\",\"time\":{time}}}\n"
    )
    .into_bytes()
}

// Nodes without end: live recorder instances are capped (`max_live_instances`), a node that
// goes quiet is retired after `node_idle_seconds`, and a node that quit frees its instances
// (the cap would refuse the next node otherwise). Each is counted and reported.
#[test]
fn nodes_are_capped_retired_when_idle_and_freed_after_quit() {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    // request-stats alone: one recorder instance per worker, and room for two.
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\nmax_live_instances = 2\nnode_idle_seconds = 1\n\
             [output]\npath = {}\n[[plugins]]\npath = {}\n",
            toml_path(&output),
            toml_path(&guest("request_stats")),
        ),
    );
    let mut server = Server::start(&config, &["--listen", "127.0.0.1:0"], &[]);
    // Two nodes fill the cap, quit and free it, several times over.
    for round in 0..3 {
        let mut connections: Vec<Connection> = (0..2)
            .map(|index| {
                let node = format!("worker-{round}-{index}");
                let mut connection = server.connect();
                assert_eq!(connection.hello(hello("worker", &node))["ok"], true);
                connection.send(&test_start(&node, 1.0));
                connection
            })
            .collect();
        for (index, connection) in connections.iter_mut().enumerate() {
            let node = format!("worker-{round}-{index}");
            connection.send(
                format!("{{\"event\":\"quit\",\"role\":\"worker\",\"node\":\"{node}\",\"time\":2,\"exit_code\":0}}\n")
                    .as_bytes(),
            );
        }
        drop(connections);
        for index in 0..2 {
            server.wait_for(&format!("(worker-{round}-{index}) closed: "));
        }
    }
    // A node that keeps its connection but goes quiet is retired after a second...
    let mut quiet = server.connect();
    assert_eq!(quiet.hello(hello("worker", "quiet"))["ok"], true);
    quiet.send(&test_start("quiet", 3.0));
    let mut busy = server.connect();
    assert_eq!(busy.hello(hello("worker", "busy"))["ok"], true);
    busy.send(&test_start("busy", 3.0));
    // ...while the cap is full, a third node is refused, counted and reported.
    let mut third = server.connect();
    assert_eq!(third.hello(hello("worker", "third"))["ok"], true);
    third.send(&test_start("third", 3.0));
    let refused = server.wait_for("(third) line 2:");
    assert!(
        refused.contains("cap of 2 live recorder instances (max_live_instances)"),
        "{refused}"
    );
    server.wait_for("node quiet sent nothing for 1 s (node_idle_seconds)");
    server.wait_for("node busy sent nothing for 1 s (node_idle_seconds)");
    // With room again, the third node starts.
    third.send(&test_start("third", 4.0));
    third.send(&request_lines_for("third", 3));
    drop((quiet, busy, third));
    server.wait_for("(third) closed: ");
    let stderr = server.stop_ok();
    assert!(
        stderr.contains("nodes retired after node_idle_seconds without events: 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("events refused at the max_live_instances cap: 1"),
        "{stderr}"
    );
    assert!(stderr.contains("1 bad frames"), "{stderr}");
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let retired: Vec<&str> = self_telemetry(&lines, "NODE_IDLE_RETIRED")
        .iter()
        .map(|line| line["telemetry"]["source_id"].as_str().unwrap())
        .collect();
    assert_eq!(retired.len(), 2, "{retired:?}");
    let refused = self_telemetry(&lines, "NODE_REFUSED");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["telemetry"]["source_id"], "third");
    assert_eq!(refused[0]["telemetry"]["limit"], "max_live_instances");
    // The third node's recorder ran once there was room.
    assert!(
        from_plugin(&lines, "request-stats")
            .iter()
            .any(|line| line["telemetry"]["source_id"] == "third"
                && line["telemetry"]["endpoint"] == "/"
                && line["telemetry"]["requests"] == 3),
        "{lines:?}"
    );
}

// One bad frame, however out of range its numbers, costs only itself: `time` past the year
// 9999 used to panic the server and lose every connection's telemetry.
#[test]
fn out_of_range_times_are_bad_frames_not_a_crash() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    for time in ["1e12", "1e17", "1e300", "-1"] {
        connection.send(
            format!("{{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-0\",\"time\":{time}}}\n")
                .as_bytes(),
        );
    }
    connection.send(&test_start("worker-0", 5.0));
    connection.send(&request_lines(4));
    drop(connection);
    server.wait_for("(worker-0) closed: ");
    let stderr = server.stop_ok();
    assert!(stderr.contains("4 bad frames"), "{stderr}");
    assert!(
        stderr.contains("line 2: `time`: must be Unix seconds from 0 to 253402300799"),
        "{stderr}"
    );
    let lines = json_lines(&std::fs::read(&output).unwrap());
    assert!(
        from_plugin(&lines, "request-stats")
            .iter()
            .any(|line| line["telemetry"]["endpoint"] == "/" && line["telemetry"]["requests"] == 4),
        "the lines around the bad ones were processed"
    );
}

// Acknowledgements: a client that names the sequence number of its first line gets acks as
// its lines are processed; after a reconnect it sends again what was not acknowledged, and
// the lines the server had already processed are skipped, not counted twice.
#[test]
fn acked_lines_are_forgotten_and_lines_sent_again_are_not_counted_twice() {
    let (_workspace, output, mut server) = example_server(&["--listen", "127.0.0.1:0"]);
    let lines: Vec<Vec<u8>> = request_lines(8)
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let wait_for_ack = |connection: &mut Connection, wanted: u64| loop {
        let ack = connection.reply();
        if ack["ready"] == true {
            continue; // the hello came while the plugins were still loading
        }
        assert!(ack["ack"].as_u64().unwrap() <= wanted, "{ack}");
        if ack["ack"] == wanted {
            break;
        }
    };
    let mut first = server.connect();
    let mut hello_0 = hello("worker", "worker-0");
    hello_0["seq"] = 0.into();
    let reply = first.hello(hello_0);
    assert_eq!(reply["acks"], true, "{reply}");
    first.send(&test_start("worker-0", 0.0));
    for line in &lines[..5] {
        first.send(line);
    }
    wait_for_ack(&mut first, 6);
    // The client did not see that ack (say), reconnects and resends from line 4 on.
    let mut second = server.connect();
    let mut hello_4 = hello("worker", "worker-0");
    hello_4["seq"] = 4.into();
    assert_eq!(second.hello(hello_4)["acks"], true);
    for line in &lines[3..] {
        second.send(line);
    }
    wait_for_ack(&mut second, 9);
    // Its bye counts every line it wrote, the two skipped ones included: they arrived.
    server.log.clear();
    second.send(b"{\"bye\":true,\"sent\":5,\"dropped\":0}\n");
    drop(second);
    let closed = server.wait_for("connection 2 (worker-0) closed: ");
    assert!(closed.contains("closed: 3 events"), "{closed}");
    assert!(!closed.contains("never arrived"), "{closed}");
    // A connection claiming numbers far ahead for the same node cannot make the server skip
    // the node's real lines later: numbering that does not fit starts afresh.
    let mut impostor = server.connect();
    let mut hello_far = hello("worker", "worker-0");
    hello_far["seq"] = 1_000_000_000_000u64.into();
    assert_eq!(impostor.hello(hello_far)["acks"], true);
    impostor.send(&test_start("worker-0", 1.0));
    wait_for_ack(&mut impostor, 1_000_000_000_001);
    let mut third = server.connect();
    let mut hello_9 = hello("worker", "worker-0");
    hello_9["seq"] = 9.into();
    assert_eq!(third.hello(hello_9)["acks"], true);
    third.send(&request_lines_for("worker-0", 2));
    wait_for_ack(&mut third, 11);
    server.wait_for("numbering starts afresh (nothing skipped)");
    // A client that never asked gets no acks and sends as before.
    let mut plain = server.connect();
    let reply = plain.hello(hello("worker", "worker-9"));
    assert!(reply.get("acks").is_none(), "{reply}");
    drop((first, impostor, third, plain));
    server.wait_for("(worker-0) closed: ");
    let stderr = server.stop_ok();
    assert!(
        stderr.contains("2 lines sent again after a reconnect were already processed: skipped"),
        "{stderr}"
    );
    assert!(stderr.contains(", 0 lost in transit"), "{stderr}");
    assert!(!stderr.contains("never arrived"), "{stderr}");
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let finals: Vec<&Value> = from_plugin(&lines, "request-stats")
        .into_iter()
        .filter(|line| line["telemetry"]["endpoint"] == "/" && line["telemetry"]["final"] == true)
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0]["telemetry"]["requests"], 10,
        "each request once, the third connection's two included"
    );
}

// A plugin that asks for the server's own token through an option is refused at load in
// serve as in replay and check, and the token, passed by environment as documented, is
// never printed.
#[test]
fn serve_refuses_a_plugin_that_names_its_token() {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[output]\npath = {}\n[[plugins]]\npath = {}\n[[plugins]]\npath = {}\n",
            toml_path(&output),
            toml_path(&guest("request_stats")),
            toml_path(&guest("secret_thief")),
        ),
    );
    let mut server = Server::start_with_env(
        &config,
        &["--listen", "127.0.0.1:0"],
        &[
            ("SWARMTEL_TOKEN", "tok-serve-secret"),
            ("LOCUST_WEB_AUTH", "user:pw-serve-secret"),
        ],
    );
    server.wait_for("which holds a secret of swarmtel");
    let mut connection = server.connect();
    let mut hello = hello("worker", "worker-0");
    hello["token"] = "tok-serve-secret".into();
    assert_eq!(connection.hello(hello)["ok"], true);
    connection.send(&test_start("worker-0", 1.0));
    drop(connection);
    server.wait_for("(worker-0) closed: ");
    let stderr = server.stop_ok();
    let telemetry = std::fs::read_to_string(&output).unwrap();
    assert!(
        telemetry.contains("\"fault_kind\":\"secret_env_var\""),
        "{telemetry}"
    );
    for text in [&stderr, &telemetry] {
        assert!(!text.contains("serve-secret"), "{text}");
    }
}

/// A config whose one plugin (the lifecycle guest) takes a while to load: its start-up probe
/// spins in `create-recorder` (`mode`, `spin`), as compiling a big Python or JavaScript
/// component does on a cold cache; `extra` adds to its `[[plugins]]` table.
// The hello reply tells each role what its recorders (and the server's own request metrics)
// need: requests only where a recorder of the role takes them or a metrics output counts
// them, and the request extras those recorders asked for (a 0.1.0 plugin's too).
#[test]
fn each_role_is_told_what_to_send() {
    let workspace = Workspace::new();
    let wants =
        |requests: bool, url: bool| json!({"requests": requests, "url": url, "context": false});
    let told = |config: &Path| {
        let server = Server::start(config, &["--listen", "127.0.0.1:0"], &[]);
        let replies: Vec<Value> = ["master", "worker", "standalone"]
            .iter()
            .map(|role| {
                let mut connection = server.connect();
                let mut hello_seq = hello(role, &format!("{role}-0"));
                hello_seq["seq"] = 0.into();
                let mut reply = connection.hello(hello_seq);
                if reply["ready"] == false {
                    // Still compiling: the wants come with the ready frame.
                    assert_eq!(reply.get("wants"), None, "{reply}");
                    reply = connection.reply();
                }
                assert_eq!(reply["ready"], true, "{reply}");
                reply["wants"].clone()
            })
            .collect();
        server.stop();
        replies
    };
    // custom-telemetry (master, worker) takes test starts and stops; request-stats (worker,
    // standalone) takes requests; the request metrics are off.
    let example = example_config(&workspace, &workspace.path("plain.ndjson"));
    let plain = workspace.write(
        "plain.toml",
        std::fs::read_to_string(&example).unwrap() + "[request_metrics]\nenabled = false\n",
    );
    assert_eq!(
        told(&plain),
        [wants(false, false), wants(true, false), wants(true, false)]
    );
    // A 0.1.0 plugin asking for URLs, on workers only, and the request metrics on (the
    // default): they need every role's requests.
    let metrics = workspace.write(
        "metrics.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n\
             [[outputs]]\ntype = \"json_lines\"\npath = {}\n\
             [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\nlinger_seconds = 0\n\
             [[plugins]]\npath = {}\nroles = [\"worker\"]\n",
            toml_path(&workspace.path("metrics.ndjson")),
            toml_path(&guest("frozen_v0_1")),
        ),
    );
    assert_eq!(
        told(&metrics),
        [wants(true, false), wants(true, true), wants(true, false)]
    );
}

fn slow_load_config(workspace: &Workspace, output: &Path, mode: &str, extra: &str) -> PathBuf {
    workspace.write(
        "slow-load.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n\
             [output]\npath = {}\n\
             [[plugins]]\npath = {}\n{extra}\n\
             [plugins.options]\nmode = \"{mode}\"\nspin = 2000000000\n\
             [plugins.limits]\ncpu_ms_per_call = 30000\n",
            toml_path(output),
            toml_path(&guest("lifecycle")),
        ),
    )
}

// Plugins that take long to load do not keep bridges waiting: serve listens and answers the
// hello at once with `"ready":false`, holds the lines sent meanwhile, says `{"ready":true}`
// to a client that asked for acks once the plugins are loaded, and then processes every line.
#[test]
fn lines_sent_while_the_plugins_load_are_held_then_processed() {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = slow_load_config(&workspace, &output, "slow-load", "");
    let mut server = Server::start(&config, &["--listen", "127.0.0.1:0"], &[]);
    let mut client = server.connect();
    let mut hello_seq = hello("worker", "worker-0");
    hello_seq["seq"] = 0.into();
    let reply = client.hello(hello_seq);
    assert_eq!(
        (&reply["ok"], &reply["ready"]),
        (&json!(true), &json!(false)),
        "{reply}"
    );
    // A client without acks is answered too, and told the same.
    let mut plain = server.connect();
    let plain_reply = plain.hello(hello("worker", "worker-1"));
    assert_eq!(plain_reply["ready"], false, "{plain_reply}");
    plain.send(&test_start("worker-1", 0.0));
    plain.send(&request_lines_for("worker-1", 3));
    client.send(&test_start("worker-0", 0.0));
    client.send(&request_lines_for("worker-0", 5));
    // The lifecycle recorder (workers) takes requests, without extras.
    assert_eq!(
        client.reply(),
        json!({"ready": true, "wants": {"requests": true, "url": false, "context": false}})
    );
    server.wait_for("plugins ready after");
    loop {
        let ack = client.reply();
        assert!(ack["ack"].as_u64().unwrap() <= 6, "{ack}");
        if ack["ack"] == 6 {
            break;
        }
    }
    drop((client, plain));
    server.wait_for("(worker-1) closed: ");
    server.wait_for("(worker-0) closed: ");
    let stderr = server.stop_ok();
    assert!(stderr.contains("0 here, 0 lost in transit"), "{stderr}");
    let lines = json_lines(&std::fs::read(&output).unwrap());
    let mut seen: Vec<(String, u64)> = from_plugin(&lines, "lifecycle")
        .into_iter()
        .filter(|line| line["telemetry"]["telemetry_name"] == "BATCH")
        .map(|line| {
            (
                line["telemetry"]["source_id"].as_str().unwrap().to_owned(),
                line["telemetry"]["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("worker-0".to_owned(), 5), ("worker-1".to_owned(), 3)],
        "every line sent while loading was processed"
    );
}

// A plugin that fails to load after the server started listening (a `required` one whose
// recorder never returns from `create-recorder`) stops the server with exit code 1 and its
// error, and a client still waiting for the plugins hears that error first.
#[test]
fn plugins_that_fail_to_load_after_the_hello_stop_the_server_and_tell_the_client() {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = slow_load_config(&workspace, &output, "loop-on-create", "required = true");
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("cpu_ms_per_call = 30000", "cpu_ms_per_call = 1500");
    std::fs::write(&config, config_text).unwrap();
    let mut server = Server::start(&config, &["--listen", "127.0.0.1:0"], &[]);
    let mut client = server.connect();
    let mut hello_seq = hello("worker", "worker-0");
    hello_seq["seq"] = 0.into();
    assert_eq!(client.hello(hello_seq)["ready"], false);
    client.send(&test_start("worker-0", 0.0));
    let notice = client.reply();
    let error = notice["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{notice}"));
    assert!(
        error.starts_with("required plugin ") && error.contains("deadline"),
        "{error}"
    );
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let stderr = server.wait_for("swarmtel: error: required plugin");
    assert!(stderr.contains("deadline"), "{stderr}");
}

// The Prometheus output serves the runtime's own counters while `serve` runs, and they end
// equal to the summary's.
#[test]
fn the_prometheus_output_shows_the_runtime_counters_while_serving() {
    let workspace = Workspace::new();
    let output = workspace.path("out.ndjson");
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"swarmtel-example\"\nrun_id = \"example-run\"\n\
             [[outputs]]\ntype = \"json_lines\"\npath = {}\n\
             [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n\
             [[plugins]]\npath = {}\nroles = [\"master\", \"worker\"]\n\
             [plugins.options]\ncustom-option = \"from-config\"\n\
             [[plugins]]\npath = {}\n",
            toml_path(&output),
            toml_path(&guest("custom_telemetry")),
            toml_path(&guest("request_stats")),
        ),
    );
    let mut server = Server::start(&config, &["--listen", "127.0.0.1:0"], &[]);
    let line = server.wait_for("prometheus metrics at http://");
    let address = metrics_address(&line);
    assert_eq!(series(&scrape(&address), "swarmtel_events_total"), Some(0));

    for ((role, node), lines) in sample_by_node() {
        let mut connection = server.connect();
        let reply = connection.hello(hello(&role, &node));
        assert_eq!(reply["ok"], true, "{reply}");
        let count = lines.iter().filter(|b| **b == b'\n').count();
        connection.send(&lines);
        connection.send(format!("{}\n", json!({"bye": true, "sent": count})).as_bytes());
    }
    for _ in 0..3 {
        server.wait_for(") closed: ");
    }
    // Published when the server is next idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exposition = loop {
        let exposition = scrape(&address);
        if series(&exposition, "swarmtel_events_total") == Some(5436)
            || std::time::Instant::now() > deadline
        {
            break exposition;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        series(&exposition, "swarmtel_events_total"),
        Some(5436),
        "{exposition}"
    );
    assert_eq!(series(&exposition, "swarmtel_nodes_started_total"), Some(3));
    assert_eq!(series(&exposition, "swarmtel_bad_lines_total"), Some(0));
    // serve's own: connections by role, none open now, nothing dropped, an empty queue.
    for (role, accepted) in [("master", 1), ("worker", 2), ("standalone", 0)] {
        let labels = format!("{{role=\"{role}\"}}");
        assert_eq!(
            series(
                &exposition,
                &format!("swarmtel_serve_connections_total{labels}")
            ),
            Some(accepted),
            "{exposition}"
        );
        assert_eq!(
            series(
                &exposition,
                &format!("swarmtel_serve_open_connections{labels}")
            ),
            Some(0),
            "{exposition}"
        );
    }
    for place in ["bridges", "here", "in_transit"] {
        assert_eq!(
            series(
                &exposition,
                &format!("swarmtel_serve_events_dropped_total{{where=\"{place}\"}}")
            ),
            Some(0)
        );
    }
    assert_eq!(series(&exposition, "swarmtel_serve_queue_bytes"), Some(0));
    assert_eq!(
        series(&exposition, "swarmtel_serve_queue_capacity_bytes"),
        Some(64 << 20)
    );
    let stats_in = series(
        &exposition,
        "swarmtel_plugin_events_in_total{plugin=\"request-stats\"}",
    )
    .expect("request-stats events in");
    let custom_in = series(
        &exposition,
        "swarmtel_plugin_events_in_total{plugin=\"custom-telemetry\"}",
    )
    .expect("custom-telemetry events in");
    let written = series(
        &exposition,
        "swarmtel_output_records_total{output=\"outputs[0]\"}",
    )
    .expect("records of the JSON-lines output");
    assert!(written > 0);

    let stderr = server.stop_ok();
    let row = |plugin: &str| -> Vec<u64> {
        let line = stderr
            .lines()
            .find(|line| line.starts_with(plugin))
            .unwrap_or_else(|| panic!("no {plugin} row in\n{stderr}"));
        line.split_whitespace()
            .skip(1)
            .map(|cell| cell.parse().unwrap())
            .collect()
    };
    assert_eq!(row("request-stats")[0], stats_in, "{stderr}");
    assert_eq!(row("custom-telemetry")[0], custom_in, "{stderr}");
    // Nothing of the telemetry is counted for the scrape endpoint: it takes no records.
    assert!(!stderr.contains("output http://"), "{stderr}");
}

// After a run that ends well, serve keeps its metrics up for linger_seconds, after its
// summary; another SIGTERM ends the wait.
#[test]
fn serve_lingers_on_its_final_metrics_until_a_signal() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        "[run]\ntestplan = \"t\"\n\
         [[outputs]]\ntype = \"json_lines\"\npath = \"out.ndjson\"\n\
         [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\nlinger_seconds = 120\n",
    );
    let mut server = Server::start(&config, &["--listen", "127.0.0.1:0"], &[]);
    let address = metrics_address(&server.wait_for("prometheus metrics at http://"));
    let mut connection = server.connect();
    assert_eq!(connection.hello(hello("worker", "worker-0"))["ok"], true);
    connection.send(&request_lines(10));
    connection.send(b"{\"bye\":true,\"sent\":10}\n");
    drop(connection);
    server.wait_for(") closed: ");
    server.signal(libc::SIGTERM);
    server.wait_for("swarmtel serve: 1 connections");
    server.wait_for("serving the final metrics");
    assert_eq!(series(&scrape(&address), "swarmtel_events_total"), Some(10));
    let signalled = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the linger went on {:?} after the signal",
        signalled.elapsed()
    );
}
