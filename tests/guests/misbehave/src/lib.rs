//! Test guest: a recorder that misbehaves as its `mode` option says, so tests can show the
//! runtime contains it while healthy recorders beside it lose nothing.
//!
//! Every mode misbehaves only in event handlers, never while described or created (except
//! `refuse`), and every recorder still logs `REQUESTS_SEEN` at test stop if it gets there.
//!
//! Faults, on every request batch:
//! - `panic-on-request`: panics (a wasm trap).
//! - `unreachable-on-request`: executes the wasm `unreachable` instruction.
//! - `loop-on-request`: spins forever (the epoch deadline stops it).
//! - `recurse-on-request`: recurses without end; each frame keeps values alive across the call
//!   and goes through `black_box`, so it stays a real recursion that exhausts the wasm stack.
//! - `recurse-big-frames-on-request`: the same with 4 KiB frames, which exhaust the guest's own
//!   shadow stack (in linear memory, 1 MiB for Rust) before the wasm stack.
//! - `grow-memory`: allocates 1 MiB blocks until the memory cap.
//!
//! Bad telemetry, at test start:
//! - `bad-telemetry`: one valid item and one of each kind of invalid item.
//! - `huge-item`: one item with 2 MB of fields.
//! - `flood-items`: 100,000 small items from one call.
//! - `invalid-json`: one item whose fields are not JSON.
//! - `schema-break`: one `CHECKED` item whose fields break the declared schema.
//! - `forge-host-keys`: one item per host-owned key (`run_id`, `source`, ...), each setting it
//!   to `forged-<key>`.
//!
//! Escape attempts, at test start, each reported as an event with what the guest got back:
//! - `fs-probe` (`FS_PROBE`): lists `/`, reads `/etc/passwd`, writes `./x` and
//!   `/tmp/swarmtel-hostile-<count>`, creates `/tmp/swarmtel-hostile-<count>-dir`, opens `.`.
//! - `env-probe` (`ENV_PROBE`): counts environment variables and arguments, reads
//!   `SWARMTEL_HOSTILE_PROBE`, `HOME` and the current directory.
//! - `net-probe` (`NET_PROBE`): connects to TCP port `<count>` on 127.0.0.1, binds TCP and UDP
//!   sockets, sends a UDP datagram to that port, resolves `localhost`.
//! - `stdio-flood`: writes 5 MiB to stdout and 5 MiB to stderr at test start and in every
//!   request batch; at test stop logs `STDIO_FLOOD` with the calls, the bytes written and the
//!   first write error.
//!
//! - `escape-telemetry`: at test start, one valid `CHECKED` item and one invalid one (not
//!   JSON), both with terminal escape sequences (ESC, BEL, a C1 CSI, DEL) in the message and
//!   fields.
//!
//! Host-side amplification:
//! - `alias-flood`: at test start, returns [`ALIAS_ITEMS`] items whose messages all point at
//!   one [`ALIAS_BYTES`] buffer in guest memory: little guest memory, 120 MB if the host
//!   copied every string.
//! - `refuse-escape`: refuses to be created on every node but the load-time probe, with a
//!   message of `count` MB full of terminal escape sequences.
//!
//! Others: `refuse` (refuses to be created), `healthy` (counts requests, reports at test stop).

use std::io::Write;

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    Requests, Role, TelemetryData, Timestamp, export_plugin,
};

/// The plugin.
pub struct Misbehave;

impl Plugin for Misbehave {
    fn describe() -> PluginInfo {
        PluginInfo::new("misbehave", "0.1.0", "Misbehaves on purpose, for tests")
            .option(
                OptionSpec::text("mode")
                    .default_text("healthy")
                    .help("What to do wrong")
                    .env_var("SWARMTEL_MISBEHAVE_MODE"),
            )
            .option(
                OptionSpec::integer("count")
                    .default_integer(1)
                    .help("A number"),
            )
            .recorder(
                RecorderSpec::new("misbehaving_recorder")
                    .roles([Role::Worker, Role::Standalone])
                    .events([
                        EventKind::Request,
                        EventKind::TestStart,
                        EventKind::TestStop,
                    ]),
            )
            .schema(
                "CHECKED",
                serde_json::json!({
                    "type": "object",
                    "required": ["count"],
                    "properties": {"count": {"type": "integer"}}
                }),
            )
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        let mode = ctx.options().text("mode").unwrap_or("healthy").to_owned();
        if mode == "refuse" {
            return Err("mode `refuse`: this recorder refuses to start".into());
        }
        if mode == "refuse-escape" && ctx.node() != "probe" {
            let megabytes = ctx.options().integer("count").unwrap_or(1).clamp(0, 100) as usize;
            return Err("\u{1b}[2J\u{1b}]0;pwned\u{7}".repeat(megabytes * 1_000_000 / 16));
        }
        Ok(Box::new(Misbehaving {
            mode,
            count: ctx.options().integer("count").unwrap_or(1),
            requests: 0,
            hoard: Vec::new(),
            flood: FloodReport::default(),
        }))
    }
}

struct Misbehaving {
    mode: String,
    count: i64,
    requests: u64,
    hoard: Vec<Vec<u8>>,
    flood: FloodReport,
}

/// The host-owned keys `forge-host-keys` tries to set.
pub const HOST_OWNED_KEYS: [&str; 8] = [
    "run_id",
    "source",
    "source_id",
    "testplan",
    "time",
    "plugin",
    "telemetry_type",
    "telemetry_name",
];

/// Items `flood-items` returns from one call.
pub const FLOOD_ITEMS: usize = 100_000;

/// Items `alias-flood` returns from one call.
pub const ALIAS_ITEMS: usize = 1_200;

/// Bytes of the one buffer every `alias-flood` item's message points at.
pub const ALIAS_BYTES: usize = 100_000;

/// Bytes `stdio-flood` writes to each of stdout and stderr per call.
pub const FLOOD_BYTES: usize = 5 * 1024 * 1024;

/// What `stdio-flood` wrote, and the first error it got.
#[derive(Default)]
struct FloodReport {
    calls: u64,
    bytes_written: u64,
    first_error: Option<String>,
}

impl Misbehaving {
    fn flood_stdio(&mut self) {
        self.flood.calls += 1;
        let line = b"HOSTILE-STDIO-FLOOD {\"not\":\"telemetry\"}\n";
        let chunk: Vec<u8> = line.iter().copied().cycle().take(FLOOD_BYTES).collect();
        let results = [
            std::io::stdout().write_all(&chunk),
            std::io::stderr().write_all(&chunk),
        ];
        for result in results {
            match result {
                Ok(()) => self.flood.bytes_written += chunk.len() as u64,
                Err(error) => {
                    self.flood.first_error.get_or_insert(error.to_string());
                }
            }
        }
    }
}

/// Recurses until a stack runs out, with `N` words of locals per frame. The locals live across
/// the call and `black_box` hides every value, so the compiler can neither turn this into a
/// loop nor drop the frames.
fn recurse<const N: usize>(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let frame: [u64; N] = std::array::from_fn(|i| std::hint::black_box(depth ^ i as u64));
    let below = recurse::<N>(std::hint::black_box(depth + 1));
    frame
        .iter()
        .fold(below, |sum, value| sum.wrapping_add(*value))
}

/// `Ok` or the error, as text.
fn outcome<T: std::fmt::Debug>(result: std::io::Result<T>) -> String {
    match result {
        Ok(value) => format!("ok: {value:?}"),
        Err(error) => format!("err: {:?}: {error}", error.kind()),
    }
}

fn fs_probe(nonce: i64) -> serde_json::Value {
    let tmp = format!("/tmp/swarmtel-hostile-{nonce}");
    serde_json::json!({
        "read_dir_root": outcome(std::fs::read_dir("/").map(|entries| entries.count())),
        "read_etc_passwd": outcome(std::fs::read("/etc/passwd").map(|bytes| bytes.len())),
        "write_relative": outcome(std::fs::write("./x", b"hostile")),
        "write_tmp": outcome(std::fs::write(&tmp, b"hostile")),
        "create_dir_tmp": outcome(std::fs::create_dir(format!("{tmp}-dir"))),
        "open_dot": outcome(std::fs::File::open(".").map(|_| ())),
    })
}

fn env_probe() -> serde_json::Value {
    serde_json::json!({
        "vars": std::env::vars_os().count(),
        "args": std::env::args_os().count(),
        "probe_var": format!("{:?}", std::env::var("SWARMTEL_HOSTILE_PROBE")),
        "home": format!("{:?}", std::env::var("HOME")),
        "current_dir": outcome(std::env::current_dir()),
    })
}

fn net_probe(port: i64) -> serde_json::Value {
    use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
    let port = u16::try_from(port).unwrap_or(0);
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    serde_json::json!({
        "tcp_connect": outcome(TcpStream::connect(target).map(|_| ())),
        "tcp_connect_timeout": outcome(
            TcpStream::connect_timeout(&target, std::time::Duration::from_millis(50)).map(|_| ())
        ),
        "tcp_listen": outcome(TcpListener::bind("127.0.0.1:0").map(|_| ())),
        "udp_bind": outcome(UdpSocket::bind("127.0.0.1:0").map(|_| ())),
        "udp_send": outcome(
            UdpSocket::bind("0.0.0.0:0").and_then(|socket| socket.send_to(b"hostile", target))
        ),
        "resolve_localhost": outcome(
            ("localhost", 80).to_socket_addrs().map(|addrs| addrs.collect::<Vec<_>>())
        ),
    })
}

impl Recorder for Misbehaving {
    fn on_requests(&mut self, requests: &Requests<'_>, _out: &mut Output) {
        self.requests += requests.len() as u64;
        match self.mode.as_str() {
            "panic-on-request" => panic!("misbehave: panic on request"),
            "unreachable-on-request" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                std::process::abort();
            }
            "loop-on-request" => {
                let mut spin = 0u64;
                loop {
                    spin = std::hint::black_box(spin.wrapping_add(1));
                }
            }
            "recurse-on-request" => {
                std::hint::black_box(recurse::<8>(0));
            }
            "recurse-big-frames-on-request" => {
                std::hint::black_box(recurse::<512>(0));
            }
            "grow-memory" => loop {
                self.hoard.push(vec![1u8; 1024 * 1024]);
            },
            "stdio-flood" => self.flood_stdio(),
            _ => {}
        }
    }

    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        let checked = TelemetryData::metric("CHECKED");
        match self.mode.as_str() {
            "bad-telemetry" => bad_telemetry(out),
            "alias-flood" => alias_flood(out),
            "escape-telemetry" => {
                let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{7f}";
                out.log_telemetry_with(
                    TelemetryData::metric("CHECKED"),
                    format!("message {evil}"),
                    serde_json::json!({ "count": 1, "note": evil }),
                );
                out.log_telemetry_raw(
                    TelemetryData::metric("CHECKED"),
                    format!("bad {evil}"),
                    format!("{{\"note\": \"{evil}"),
                );
            }
            "huge-item" => {
                out.log_telemetry_with(
                    checked,
                    "huge",
                    serde_json::json!({"count": 1, "pad": "x".repeat(2_000_000)}),
                );
            }
            "flood-items" => {
                for index in 0..FLOOD_ITEMS {
                    out.log_telemetry_with(
                        TelemetryData::event("FLOOD"),
                        "flood",
                        serde_json::json!({ "index": index }),
                    );
                }
            }
            "invalid-json" => {
                out.log_telemetry_raw(checked, "not json", "{\"count\": 1,".into());
            }
            "schema-break" => {
                out.log_telemetry_with(checked, "schema", serde_json::json!({"count": "one"}));
            }
            "forge-host-keys" => {
                for key in HOST_OWNED_KEYS {
                    let mut fields = serde_json::Map::new();
                    fields.insert("count".into(), 1.into());
                    fields.insert(key.into(), format!("forged-{key}").into());
                    out.log_telemetry_with(checked.clone(), format!("forge {key}"), fields);
                }
            }
            "fs-probe" => {
                out.log_telemetry_with(TelemetryData::event("FS_PROBE"), "fs", fs_probe(self.count))
            }
            "env-probe" => {
                out.log_telemetry_with(TelemetryData::event("ENV_PROBE"), "env", env_probe())
            }
            "net-probe" => out.log_telemetry_with(
                TelemetryData::event("NET_PROBE"),
                "net",
                net_probe(self.count),
            ),
            "stdio-flood" => self.flood_stdio(),
            _ => {}
        }
    }

    fn on_test_stop(&mut self, _time: Timestamp, out: &mut Output) {
        if self.mode == "stdio-flood" {
            out.log_telemetry_with(
                TelemetryData::metric("STDIO_FLOOD"),
                "stdio flood",
                serde_json::json!({
                    "calls": self.flood.calls,
                    "bytes_written": self.flood.bytes_written,
                    "first_error": self.flood.first_error,
                }),
            );
        }
        out.log_telemetry_with(
            TelemetryData::metric("REQUESTS_SEEN"),
            "requests seen",
            serde_json::json!({"requests": self.requests, "mode": self.mode}),
        );
    }
}

/// One valid item, then one of each kind of invalid item.
/// Hands back [`ALIAS_ITEMS`] items whose messages share one buffer. The strings alias each
/// other, so freeing them after the call would be a double free: the host must refuse the
/// results before copying them, and then never lets this instance run again.
fn alias_flood(out: &mut Output) {
    let buffer: &'static mut [u8] = Vec::leak(vec![b'x'; ALIAS_BYTES]);
    let pointer = buffer.as_mut_ptr();
    for _ in 0..ALIAS_ITEMS {
        // SAFETY: deliberately unsound (aliasing owners of one buffer), to show the host's
        // copy is bounded; the instance is torn down before anything frees these strings.
        let message = unsafe { String::from_raw_parts(pointer, ALIAS_BYTES, ALIAS_BYTES) };
        out.log_telemetry_raw(TelemetryData::event("ALIAS"), message, "{}".to_owned());
    }
}

fn bad_telemetry(out: &mut Output) {
    let checked = TelemetryData::metric("CHECKED");
    out.log_telemetry_with(checked.clone(), "valid", serde_json::json!({"count": 1}));
    out.log_telemetry_raw(checked.clone(), "not json", "{\"count\":".into());
    out.log_telemetry_raw(checked.clone(), "not an object", "[1,2]".into());
    out.log_telemetry_with(
        checked.clone(),
        "schema",
        serde_json::json!({"count": "one"}),
    );
    out.log_telemetry_with(
        checked.clone(),
        "host key",
        serde_json::json!({"count": 1, "run_id": "forged"}),
    );
    out.log_telemetry_with(
        checked,
        "too large",
        serde_json::json!({"count": 1, "pad": "x".repeat(20_000)}),
    );
    out.log_telemetry(TelemetryData::event("bad name!"), "envelope");
}

export_plugin!(Misbehave);
