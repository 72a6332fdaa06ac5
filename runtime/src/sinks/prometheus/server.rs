//! The scrape endpoint's transport: an HTTP/1.1 server (hyper) on its own thread that
//! answers `GET /metrics` with the latest exposition.
//!
//! Bounds ([`Limits`], each tested by hitting it): at most 16 connections at once and 4 from
//! one address; a connection past the first cap waits up to 1 s for a slot (at most 16
//! wait), past the second it is closed at once; request headers of at most 8 KiB that must
//! arrive within 2 s; a connection is shut down (gracefully: a response in flight is
//! finished) after 60 s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::exposition::{self, Snapshot};

/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoint lets its clients take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Connections served at once from one IP address.
    pub connections_per_address: usize,
    /// How long a connection past `connections` waits for a slot (at most `connections`
    /// wait; more are closed at once).
    pub slot_wait: Duration,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Longest a connection is kept, keep-alive included.
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 16,
            connections_per_address: 4,
            slot_wait: Duration::from_secs(1),
            header_timeout: Duration::from_secs(2),
            connection_lifetime: Duration::from_secs(60),
        }
    }
}

/// A running scrape endpoint; stopped when dropped.
pub struct ScrapeServer {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScrapeServer {
    /// Binds `listen` now (so a taken port fails the start) and serves `snapshot` from a
    /// thread of its own, within `limits`.
    pub fn start(
        listen: &str,
        snapshot: Arc<Mutex<Arc<Snapshot>>>,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("swarmtel-prometheus".into())
            .spawn(move || runtime.block_on(serve(listener, snapshot, stopped, limits)))?;
        Ok(Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port the kernel picked, for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for ScrapeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connections per client address, released when a connection ends.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back when dropped (also when its task
/// ends by a panic).
struct AddressSlot {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.counts.release(self.address);
    }
}

impl PerAddress {
    fn try_take(self: &Arc<Self>, address: IpAddr, most: usize) -> Option<AddressSlot> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(address).or_insert(0);
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }

    fn release(&self, address: IpAddr) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&address);
            }
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    limits: Limits,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            crate::diag!("swarmtel: the prometheus endpoint cannot serve: {error}");
            return;
        }
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let waiting = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let per_address = Arc::new(PerAddress::default());
    let mut accept_error_reported = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors, say: wait a little rather than spin.
                Err(error) => {
                    if !std::mem::replace(&mut accept_error_reported, true) {
                        crate::diag!("swarmtel: the prometheus endpoint cannot accept: {error}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_address.try_take(peer.ip(), limits.connections_per_address) else {
            // Past the per-address cap: closed at once.
            continue;
        };
        let Ok(waiter) = waiting.clone().try_acquire_owned() else {
            continue;
        };
        let (snapshot, permits) = (snapshot.clone(), permits.clone());
        tokio::spawn(async move {
            let permit = tokio::time::timeout(limits.slot_wait, permits.acquire_owned()).await;
            drop(waiter);
            if let Ok(Ok(_permit)) = permit {
                serve_connection(stream, snapshot, limits).await;
            }
            drop(slot);
        });
    }
}

/// Serves one connection until it closes, fails or outlives `limits.connection_lifetime`.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    limits: Limits,
) {
    let service = hyper::service::service_fn(move |request| {
        let snapshot = snapshot.clone();
        async move { Ok::<_, Infallible>(respond(&request, &snapshot)) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(8192)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = tokio::time::sleep(limits.connection_lifetime) => {}
    }
    // Past its lifetime: finish a response in flight, take no more requests.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.header_timeout, connection).await;
}

fn respond(request: &Request<Incoming>, snapshot: &Mutex<Arc<Snapshot>>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    // A panic elsewhere while holding it: the last counters are still the best answer.
    let snapshot = snapshot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    match exposition::encode(&snapshot) {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "the metrics could not be encoded\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    /// Short limits, so tests hit them quickly.
    fn test_limits() -> Limits {
        Limits {
            connections: 6,
            connections_per_address: 3,
            slot_wait: Duration::from_millis(300),
            header_timeout: Duration::from_secs(2),
            connection_lifetime: Duration::from_secs(3),
        }
    }

    fn server(limits: Limits) -> ScrapeServer {
        let snapshot = Snapshot {
            runtime: crate::pipeline::Summary::default().metrics(3),
            ..Snapshot::default()
        };
        ScrapeServer::start(
            "127.0.0.1:0",
            Arc::new(Mutex::new(Arc::new(snapshot))),
            limits,
        )
        .unwrap()
    }

    /// Connects from `source` (any 127.x.y.z address is this host) to `to`.
    fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
        // SAFETY: plain socket calls on a descriptor this function owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut local: libc::sockaddr_in = std::mem::zeroed();
            local.sin_family = libc::AF_INET as libc::sa_family_t;
            local.sin_addr.s_addr = u32::from_ne_bytes(source);
            assert_eq!(
                libc::bind(
                    fd,
                    (&local as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32
                ),
                0
            );
            let mut remote: libc::sockaddr_in = std::mem::zeroed();
            remote.sin_family = libc::AF_INET as libc::sa_family_t;
            remote.sin_port = to.port().to_be();
            remote.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            assert_eq!(
                libc::connect(
                    fd,
                    (&remote as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32
                ),
                0
            );
            std::os::fd::FromRawFd::from_raw_fd(fd)
        }
    }

    /// Sends `request` on `stream` and reads the whole response (the server closes after it).
    fn exchange_on(mut stream: TcpStream, request: &[u8]) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    fn exchange(address: SocketAddr, request: &[u8]) -> String {
        exchange_on(TcpStream::connect(address).unwrap(), request)
    }

    const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    fn get(address: SocketAddr, path: &str) -> String {
        exchange(
            address,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// Whether the server closed `stream` (end of file or reset) within `within`.
    fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        stream.set_read_timeout(Some(within)).unwrap();
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return true,
                // A response (to a request sent before): read on to the close.
                Ok(_) => continue,
                Err(error) => {
                    return !matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }

    #[test]
    fn metrics_are_served_as_openmetrics_and_nothing_else_is() {
        let server = server(Limits::default());
        let response = get(server.address(), "/metrics");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains(&format!("content-type: {CONTENT_TYPE}\r\n")),
            "{response}"
        );
        assert!(
            response.contains("\nswarmtel_live_instances 3\n"),
            "{response}"
        );
        assert!(response.ends_with("# EOF\n"), "{response}");
        assert!(get(server.address(), "/").starts_with("HTTP/1.1 404"));
        let post = exchange(
            server.address(),
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let address = server.address();
        drop(server);
        assert!(TcpStream::connect(address).is_err(), "still listening");
    }

    #[test]
    fn request_headers_past_8_kib_are_refused() {
        let server = server(Limits::default());
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 64 * 1024));
        request.extend(b"\r\n\r\n");
        let response = exchange(server.address(), &request);
        assert!(!response.contains("200 OK"), "{response}");
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 431"),
            "{response}"
        );
        // And the server goes on.
        assert!(exchange(server.address(), GET).starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn one_address_gets_a_few_connections_and_silent_ones_time_out() {
        let limits = test_limits();
        let server = server(limits);
        let opened = Instant::now();
        let mut silent: Vec<TcpStream> = (0..limits.connections_per_address)
            .map(|_| connect_from([127, 0, 0, 2], server.address()))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut past_cap = connect_from([127, 0, 0, 2], server.address());
        assert!(
            closed_within(&mut past_cap, Duration::from_millis(500)),
            "a connection past the per-address cap was kept"
        );
        // Another address is served meanwhile.
        assert!(
            exchange_on(connect_from([127, 0, 0, 3], server.address()), GET)
                .starts_with("HTTP/1.1 200 OK")
        );
        // The silent ones are closed once their headers are late, not before.
        assert!(closed_within(&mut silent[0], Duration::from_secs(10)));
        let waited = opened.elapsed();
        assert!(
            waited >= limits.header_timeout,
            "closed after {waited:?}, before the header timeout"
        );
        for stream in &mut silent[1..] {
            assert!(closed_within(stream, Duration::from_secs(2)));
        }
        assert!(
            exchange_on(connect_from([127, 0, 0, 2], server.address()), GET)
                .starts_with("HTTP/1.1 200 OK")
        );
    }

    #[test]
    fn connections_past_the_cap_wait_for_a_slot_then_are_closed() {
        let limits = test_limits();
        let server = server(limits);
        // Every slot taken by silent clients of two addresses...
        let _silent: Vec<TcpStream> = (0..limits.connections)
            .map(|index| connect_from([127, 0, 1, 1 + (index % 2) as u8], server.address()))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // ...so a newcomer waits for one, then is closed unserved.
        let started = Instant::now();
        let response = exchange_on(connect_from([127, 0, 1, 9], server.address()), GET);
        assert_eq!(response, "", "served past the cap");
        let waited = started.elapsed();
        assert!(
            waited >= limits.slot_wait && waited < limits.header_timeout,
            "closed after {waited:?}: not after waiting {:?} for a slot",
            limits.slot_wait
        );
        // Once the silent ones time out, newcomers are served.
        std::thread::sleep(limits.header_timeout + Duration::from_millis(500));
        assert!(
            exchange_on(connect_from([127, 0, 1, 9], server.address()), GET)
                .starts_with("HTTP/1.1 200 OK")
        );
    }

    /// Reads one response from a kept-alive connection: its status line, or `None` when the
    /// connection was closed.
    fn read_response(stream: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8(head).unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).ok()?;
        Some(head.lines().next().unwrap().to_owned())
    }

    #[test]
    fn a_kept_alive_connection_ends_after_its_lifetime() {
        let limits = test_limits();
        let server = server(limits);
        let mut stream = TcpStream::connect(server.address()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        // Keep it busy with scrapes, each well within the header timeout, until it closes.
        let mut served = 0;
        loop {
            if stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .is_err()
            {
                break;
            }
            match read_response(&mut stream) {
                Some(status) => assert_eq!(status, "HTTP/1.1 200 OK"),
                None => break,
            }
            served += 1;
            assert!(
                started.elapsed() < limits.connection_lifetime * 3,
                "still open after {:?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let lived = started.elapsed();
        assert!(served > 1, "{served} responses");
        assert!(
            lived >= limits.connection_lifetime,
            "the connection lasted {lived:?}"
        );
    }
}
