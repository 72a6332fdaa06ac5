//! The bridge wire protocol, version 1 (`docs/wire-protocol.md`): endpoints, and the hello,
//! hello-reply and bye frames around the event lines.
//!
//! Event lines themselves are the replay stream's lines and are decoded by [`crate::sources::ingest`].

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::RoleName;
use crate::sources::ingest::check_label;

/// The protocol version this runtime speaks.
pub const VERSION: u32 = 1;

/// Longest frame, newline excluded (the same cap as the replay reader's).
pub const MAX_FRAME_BYTES: usize = crate::sources::ingest::MAX_LINE_BYTES;

/// Longest node name.
pub const MAX_NODE_CHARS: usize = crate::sources::ingest::MAX_LABEL_CHARS;

/// Where a server listens, or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket.
    Unix(PathBuf),
    /// TCP, as written (`host:port`); resolved when bound.
    Tcp(String),
}

/// An endpoint that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// Not `unix:PATH`, `tcp:HOST:PORT` or `HOST:PORT`.
    #[error("endpoint `{0}`: expected unix:/path, tcp:host:port or host:port")]
    Malformed(String),
    /// The host does not resolve.
    #[error("endpoint `{endpoint}`: {message}")]
    Unresolved {
        /// The endpoint as written.
        endpoint: String,
        /// Why.
        message: String,
    },
}

impl Endpoint {
    /// Parses `unix:/path`, `tcp:host:port` or `host:port`.
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let malformed = || EndpointError::Malformed(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(malformed());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let address = text.strip_prefix("tcp:").unwrap_or(text);
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(address.to_owned()))
            }
            _ => Err(malformed()),
        }
    }

    /// The default endpoint: `unix:$XDG_RUNTIME_DIR/swarmtel/serve.sock`, or
    /// `unix:/tmp/swarmtel-<uid>/serve.sock` without `XDG_RUNTIME_DIR`.
    pub fn default_for(env: &dyn Fn(&str) -> Option<String>) -> Endpoint {
        let dir = match env("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("swarmtel"),
            // SAFETY: getuid has no preconditions and cannot fail.
            None => PathBuf::from(format!("/tmp/swarmtel-{}", unsafe { libc::getuid() })),
        };
        Endpoint::Unix(dir.join("serve.sock"))
    }

    /// The TCP addresses the endpoint resolves to.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, EndpointError> {
        let Endpoint::Tcp(address) = self else {
            return Ok(Vec::new());
        };
        let addresses: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|error| EndpointError::Unresolved {
                endpoint: self.to_string(),
                message: error.to_string(),
            })?
            .collect();
        if addresses.is_empty() {
            return Err(EndpointError::Unresolved {
                endpoint: self.to_string(),
                message: "no address".to_owned(),
            });
        }
        Ok(addresses)
    }
}

/// Whether only this machine can reach all of `addresses` (resolved once by the caller, so
/// the addresses checked are the addresses bound).
pub fn all_loopback(addresses: &[SocketAddr]) -> bool {
    addresses.iter().all(|address| is_loopback(address.ip()))
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 included).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// The first frame of a connection: who the client is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Hello {
    /// The string `swarmtel`.
    pub hello: String,
    /// The protocol version the client speaks.
    pub version: u32,
    /// `master`, `worker` or `standalone`.
    pub role: String,
    /// `master`, `worker-<index>` or `local`.
    pub node: String,
    /// The run this process belongs to.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The test plan's name.
    #[serde(default)]
    pub testplan: Option<String>,
    /// The shared secret, when the server has one.
    #[serde(default)]
    pub token: Option<String>,
    /// Events the client dropped before this connection.
    #[serde(default)]
    pub dropped: u64,
    /// The client's name and version.
    #[serde(default)]
    pub client: Option<String>,
    /// Asks for acknowledgements: the sequence number of this connection's first line, counted
    /// over the node's life in this run (see [`Ack`]).
    #[serde(default)]
    pub seq: Option<u64>,
}

/// A hello the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's role.
    pub role: RoleName,
    /// The node's name.
    pub node: String,
    /// The run id the client asked for.
    pub run_id: Option<String>,
    /// The test plan the client named.
    pub testplan: Option<String>,
    /// Events the client dropped before connecting.
    pub dropped_before: u64,
    /// The client's name, for the log.
    pub client: String,
    /// The sequence number of the connection's first line, when the client asked for acks.
    pub first_seq: Option<u64>,
}

/// Why a hello was refused; the message goes back to the client and into the server's log.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// The first line is not a hello.
    #[error("not a hello frame: {0}")]
    NotHello(String),
    /// A version this server does not speak.
    #[error("unsupported protocol version {0}; this server speaks version {VERSION}")]
    Version(u32),
    /// A role that does not exist.
    #[error("unknown role `{0}`; expected master, worker or standalone")]
    Role(String),
    /// An empty, overlong or unprintable node name.
    #[error("bad node name: {0}")]
    Node(String),
    /// The token is missing or wrong.
    #[error("token missing or wrong")]
    Token,
    /// As many connections are open as the server allows.
    #[error("too many connections: this server takes {0} at a time")]
    TooManyConnections(usize),
    /// As many connections are waiting to say hello as the server allows.
    #[error("too many connections waiting to say hello: this server takes {0} at a time")]
    TooManyAwaitingHello(usize),
    /// A run id or test plan that cannot be stamped on telemetry.
    #[error("bad {field}: {reason}")]
    Field {
        /// `run_id` or `testplan`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No hello within the time allowed.
    #[error("no hello within {}", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
}

/// Checks a hello line against the server's token.
pub fn accept_hello(line: &[u8], token: Option<&str>) -> Result<Peer, Refusal> {
    // The error names the position, never the input: a hello can carry the token.
    let hello: Hello = serde_json::from_slice(line).map_err(|error| {
        let what = match error.classify() {
            serde_json::error::Category::Data => "a key is missing or has the wrong type",
            serde_json::error::Category::Eof => "the JSON ends early",
            _ => "not JSON",
        };
        Refusal::NotHello(format!("{what} (column {})", error.column()))
    })?;
    if hello.hello != "swarmtel" {
        return Err(Refusal::NotHello(format!(
            "`hello` is `{}`, not `swarmtel`",
            hello.hello.escape_debug()
        )));
    }
    if hello.version != VERSION {
        return Err(Refusal::Version(hello.version));
    }
    // The token first: a client without it learns nothing else about the server.
    if let Some(expected) = token
        && !tokens_equal(hello.token.as_deref().unwrap_or(""), expected)
    {
        return Err(Refusal::Token);
    }
    let role = RoleName::parse(&hello.role)
        .ok_or_else(|| Refusal::Role(hello.role.escape_debug().to_string()))?;
    check_node(&hello.node)?;
    for (field, value) in [("run_id", &hello.run_id), ("testplan", &hello.testplan)] {
        if let Some(value) = value {
            check_label(value).map_err(|reason| Refusal::Field { field, reason })?;
        }
    }
    Ok(Peer {
        role,
        node: hello.node,
        run_id: hello.run_id.filter(|id| !id.is_empty()),
        testplan: hello.testplan.filter(|plan| !plan.is_empty()),
        dropped_before: hello.dropped,
        client: hello
            .client
            .map(|client| client.chars().take(64).collect::<String>())
            .unwrap_or_else(|| "unknown client".to_owned()),
        first_seq: hello.seq,
    })
}

fn check_node(node: &str) -> Result<(), Refusal> {
    if node.is_empty() {
        return Err(Refusal::Node("empty".to_owned()));
    }
    check_label(node).map_err(Refusal::Node)
}

/// Compares tokens in time independent of where they differ: both are hashed first, so the
/// comparison's timing says nothing about the expected token.
fn tokens_equal(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// What the recorders of a connection's role, and the runtime's own request metrics, need
/// from its bridge: request events at all, and which of their optional fields. Sent with
/// `"ready":true` (in the hello reply, or in the `ready` frame when the plugins were still
/// loading). A bridge sends every event and field until it knows, then only what is wanted:
/// a run whose recorders take no requests costs Locust nothing per request.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Wants {
    /// `request` events: some recorder of the role subscribes to them, or the runtime's
    /// own request metrics are on (`[request_metrics]`, on unless the config turns it off).
    pub requests: bool,
    /// Each request's `url`: some recorder of the role asked for it.
    pub url: bool,
    /// Each request's `context`: some recorder of the role asked for it.
    pub context: bool,
}

/// The server's answer to a hello.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HelloReply {
    /// The string `swarmtel`.
    pub hello: String,
    /// The version the server speaks.
    pub version: u32,
    /// Accepted or not.
    pub ok: bool,
    /// The run id stamped on this connection's telemetry (when accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The test plan stamped on this connection's telemetry (when accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testplan: Option<String>,
    /// Why not (when refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The refusal is temporary: the same hello may succeed after a backoff.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
    /// The server will acknowledge this connection's lines with [`Ack`] frames (the hello
    /// asked with `seq`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acks: bool,
    /// Whether the server's plugins are loaded (when accepted). `false`: they are still
    /// loading (compiling, on a cold cache); lines are held until they are, and a client that
    /// asked for acks gets a [`Notice::Ready`] or [`Notice::Failed`] frame then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// What to send (when accepted and ready); see [`Wants`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wants: Option<Wants>,
}

/// Server to client, once a client asked with `seq`: every line of the node's stream before
/// sequence number `ack` (events, blank and bad lines; not bye frames) has been processed (or
/// dropped and counted here) and the telemetry the recorders returned for it written and
/// flushed, so the client may forget them. Lines after it are resent on
/// the next connection, whose hello names the first one; the server skips those it has seen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    /// The sequence number of the first line not yet processed.
    pub ack: u64,
}

impl Ack {
    /// The frame as one line, newline included.
    pub fn to_line(self) -> Vec<u8> {
        format!("{{\"ack\":{}}}\n", self.ack).into_bytes()
    }
}

/// Server to client, once, to a client that asked for acks and was told `"ready":false`: the
/// plugins finished loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `{"ready":true,"wants":{...}}`: the held lines are being processed; from now on the
    /// connection's role needs only what [`Wants`] says.
    Ready(Wants),
    /// `{"error":"..."}`: the plugins could not be loaded; the server exits with this error.
    Failed(String),
}

impl Notice {
    /// The frame as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = match self {
            Notice::Ready(wants) => serde_json::json!({ "ready": true, "wants": wants }),
            Notice::Failed(error) => serde_json::json!({ "error": error }),
        }
        .to_string()
        .into_bytes();
        line.push(b'\n');
        line
    }
}

impl HelloReply {
    /// An acceptance, naming the run the connection's telemetry belongs to; `ready` is what
    /// the role wants once the plugins are loaded, `None` while they load.
    pub fn accepted(run_id: &str, testplan: &str, acks: bool, ready: Option<Wants>) -> Self {
        Self {
            hello: "swarmtel".to_owned(),
            version: VERSION,
            ok: true,
            run_id: Some(run_id.to_owned()),
            testplan: Some(testplan.to_owned()),
            error: None,
            retry: false,
            acks,
            ready: Some(ready.is_some()),
            wants: ready,
        }
    }

    /// A refusal.
    pub fn refused(refusal: &Refusal) -> Self {
        Self {
            hello: "swarmtel".to_owned(),
            version: VERSION,
            ok: false,
            run_id: None,
            testplan: None,
            error: Some(refusal.to_string()),
            acks: false,
            ready: None,
            wants: None,
            retry: matches!(
                refusal,
                Refusal::TooManyConnections(_) | Refusal::TooManyAwaitingHello(_)
            ),
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a reply serializes");
        line.push(b'\n');
        line
    }
}

/// The optional last frame: what the client sent and dropped.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Bye {
    /// Always true.
    pub bye: bool,
    /// Event lines the client wrote on this connection.
    pub sent: u64,
    /// Events the client dropped over its life.
    #[serde(default)]
    pub dropped: u64,
}

/// Reads a bye frame, if `line` is one: an object with `"bye": true` and `sent`, keys in any
/// order. Event lines are told apart cheaply: they have no `"bye"` key.
pub fn parse_bye(line: &str) -> Option<Bye> {
    if !line.contains("\"bye\"") {
        return None;
    }
    serde_json::from_str::<Bye>(line).ok().filter(|bye| bye.bye)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(extra: &str) -> Vec<u8> {
        format!(r#"{{"hello":"swarmtel","version":1,"role":"worker","node":"worker-0"{extra}}}"#)
            .into_bytes()
    }

    #[test]
    fn endpoints_parse_and_print() {
        assert_eq!(
            Endpoint::parse("unix:/run/s.sock").unwrap(),
            Endpoint::Unix("/run/s.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp:127.0.0.1:7070").unwrap(),
            Endpoint::Tcp("127.0.0.1:7070".into())
        );
        assert_eq!(
            Endpoint::parse("[::1]:7070").unwrap().to_string(),
            "tcp:[::1]:7070"
        );
        for bad in ["unix:", "127.0.0.1", "host:port", ":80", "tcp:host:99999"] {
            assert_eq!(
                Endpoint::parse(bad),
                Err(EndpointError::Malformed(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn default_endpoint_follows_xdg_runtime_dir() {
        let with = Endpoint::default_for(&|name| {
            (name == "XDG_RUNTIME_DIR").then(|| "/run/user/7".to_owned())
        });
        assert_eq!(
            with,
            Endpoint::Unix("/run/user/7/swarmtel/serve.sock".into())
        );
        let without = Endpoint::default_for(&|_| None);
        let uid = unsafe { libc::getuid() };
        assert_eq!(
            without,
            Endpoint::Unix(format!("/tmp/swarmtel-{uid}/serve.sock").into())
        );
    }

    #[test]
    fn loopback_is_local_and_other_addresses_are_not() {
        let local = |text: &str| all_loopback(&Endpoint::parse(text).unwrap().resolve().unwrap());
        assert!(local("127.0.0.1:1"));
        assert!(local("[::1]:1"));
        assert!(local("localhost:1"));
        assert!(!local("0.0.0.0:1"));
        assert!(!local("10.1.2.3:1"));
        assert!(
            Endpoint::parse("unix:/x")
                .unwrap()
                .resolve()
                .unwrap()
                .is_empty(),
            "a Unix socket resolves to no network address"
        );
    }

    #[test]
    fn a_good_hello_is_accepted_with_its_run() {
        let peer =
            accept_hello(&hello(r#","run_id":"r1","testplan":"","dropped":3"#), None).unwrap();
        assert_eq!(peer.role, RoleName::Worker);
        assert_eq!(peer.node, "worker-0");
        assert_eq!(peer.run_id.as_deref(), Some("r1"));
        assert_eq!(peer.testplan, None, "an empty test plan means the server's");
        assert_eq!(peer.dropped_before, 3);
    }

    #[test]
    fn bad_hellos_are_refused_with_the_reason() {
        assert!(matches!(
            accept_hello(b"{\"event\":\"test_start\"}", None),
            Err(Refusal::NotHello(_))
        ));
        assert!(matches!(
            accept_hello(b"nonsense", None),
            Err(Refusal::NotHello(_))
        ));
        assert_eq!(
            accept_hello(
                br#"{"hello":"swarmtel","version":2,"role":"worker","node":"w"}"#,
                None
            ),
            Err(Refusal::Version(2))
        );
        assert_eq!(
            accept_hello(
                br#"{"hello":"swarmtel","version":1,"role":"boss","node":"w"}"#,
                None
            ),
            Err(Refusal::Role("boss".into()))
        );
        assert!(matches!(
            accept_hello(
                br#"{"hello":"swarmtel","version":1,"role":"worker","node":""}"#,
                None
            ),
            Err(Refusal::Node(_))
        ));
        let long = "w".repeat(MAX_NODE_CHARS + 1);
        let line = format!(r#"{{"hello":"swarmtel","version":1,"role":"worker","node":"{long}"}}"#);
        assert!(matches!(
            accept_hello(line.as_bytes(), None),
            Err(Refusal::Node(_))
        ));
    }

    #[test]
    fn a_refused_hello_never_echoes_its_input() {
        // A wrong type next to the token: the message must not repeat the token.
        let line =
            br#"{"hello":"swarmtel","token":"s3cret","version":"1","role":"worker","node":"w"}"#;
        let message = accept_hello(line, Some("s3cret")).unwrap_err().to_string();
        assert!(
            message.starts_with("not a hello frame: a key is missing or has the wrong type"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn run_ids_and_test_plans_are_checked_like_node_names() {
        assert!(matches!(
            accept_hello(&hello(r#","run_id":"a\u001b[2Jb""#), None),
            Err(Refusal::Field {
                field: "run_id",
                ..
            })
        ));
        let long_plan = format!(r#","testplan":"{}""#, "p".repeat(MAX_NODE_CHARS + 1));
        assert!(matches!(
            accept_hello(&hello(&long_plan), None),
            Err(Refusal::Field {
                field: "testplan",
                ..
            })
        ));
    }

    #[test]
    fn the_token_must_match_when_the_server_has_one() {
        assert_eq!(
            accept_hello(&hello(""), Some("s3cret")),
            Err(Refusal::Token)
        );
        assert_eq!(
            accept_hello(&hello(r#","token":"s3cre""#), Some("s3cret")),
            Err(Refusal::Token)
        );
        assert!(accept_hello(&hello(r#","token":"s3cret""#), Some("s3cret")).is_ok());
        assert!(
            accept_hello(&hello(r#","token":"anything""#), None).is_ok(),
            "a server without a token ignores one"
        );
    }

    #[test]
    fn replies_are_one_json_line() {
        let wants = Wants {
            requests: true,
            url: false,
            context: true,
        };
        let line = HelloReply::accepted("r", "t", false, Some(wants)).to_line();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"hello\":\"swarmtel\",\"version\":1,\"ok\":true,\"run_id\":\"r\",\"testplan\":\"t\",\"ready\":true,\
             \"wants\":{\"requests\":true,\"url\":false,\"context\":true}}\n"
        );
        let loading = HelloReply::accepted("r", "t", true, None).to_line();
        assert!(
            String::from_utf8(loading)
                .unwrap()
                .ends_with(",\"acks\":true,\"ready\":false}\n"),
            "no wants before the plugins are loaded"
        );
        assert_eq!(
            String::from_utf8(Notice::Ready(Wants::default()).to_line()).unwrap(),
            "{\"ready\":true,\"wants\":{\"context\":false,\"requests\":false,\"url\":false}}\n"
        );
        assert_eq!(
            Notice::Failed("plugin \"x\": gone".into()).to_line(),
            b"{\"error\":\"plugin \\\"x\\\": gone\"}\n"
        );
        let refused = HelloReply::refused(&Refusal::Token).to_line();
        assert_eq!(
            refused,
            b"{\"hello\":\"swarmtel\",\"version\":1,\"ok\":false,\"error\":\"token missing or wrong\"}\n"
        );
        let busy = HelloReply::refused(&Refusal::TooManyConnections(2));
        assert!(busy.retry, "a full server is worth retrying");
        assert!(
            String::from_utf8(busy.to_line())
                .unwrap()
                .ends_with(",\"retry\":true}\n")
        );
    }

    #[test]
    fn bye_frames_are_told_apart_from_events() {
        assert_eq!(
            parse_bye(r#"{"bye":true,"sent":10,"dropped":2}"#),
            Some(Bye {
                bye: true,
                sent: 10,
                dropped: 2
            })
        );
        assert_eq!(
            parse_bye(r#"{ "sent": 3, "bye" : true }"#).map(|bye| bye.sent),
            Some(3),
            "any key order and spacing"
        );
        assert_eq!(parse_bye(r#"{"event":"quit","role":"master"}"#), None);
        assert_eq!(
            parse_bye(r#"{"event":"request","name":"bye","role":"worker"}"#),
            None,
            "an event that mentions bye is still an event"
        );
        assert_eq!(parse_bye(r#"{"bye":false,"sent":1}"#), None);
    }
}
