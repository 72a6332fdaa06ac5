//! The scrape endpoint's transport: an HTTP/1.1 server (hyper) on its own thread that
//! answers `GET /metrics` with the latest exposition.
//!
//! Bounds, each tested by hitting it: at most [`MAX_CONNECTIONS`] connections at once (more
//! are closed at once), request headers of at most 8 KiB that must arrive within
//! [`HEADER_TIMEOUT`], and each connection closed after [`CONNECTION_LIFETIME`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::exposition::{self, Snapshot};

/// Most scrape connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running scrape endpoint; stopped when dropped.
pub struct ScrapeServer {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScrapeServer {
    /// Binds `listen` now (so a taken port fails the start) and serves `snapshot` from a
    /// thread of its own.
    pub fn start(listen: &str, snapshot: Arc<Mutex<Snapshot>>) -> std::io::Result<Self> {
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
            .spawn(move || runtime.block_on(serve(listener, snapshot, stopped)))?;
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

async fn serve(
    listener: std::net::TcpListener,
    snapshot: Arc<Mutex<Snapshot>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Past the cap: closed at once.
            drop(stream);
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let snapshot = snapshot.clone();
                async move { Ok::<_, Infallible>(respond(&request, &snapshot)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(8192)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

fn respond(request: &Request<Incoming>, snapshot: &Mutex<Snapshot>) -> Response<Full<Bytes>> {
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
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let snapshot = match snapshot.lock() {
        Ok(snapshot) => snapshot.clone(),
        // A panic elsewhere while holding it: the last counters are still the best answer.
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    reply(StatusCode::OK, CONTENT_TYPE, exposition::encode(&snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn server() -> ScrapeServer {
        let snapshot = Snapshot {
            live_instances: 3,
            ..Snapshot::default()
        };
        ScrapeServer::start("127.0.0.1:0", Arc::new(Mutex::new(snapshot))).unwrap()
    }

    /// Sends `request` and reads the whole response (the server closes after it).
    fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    fn get(address: SocketAddr, path: &str) -> String {
        exchange(
            address,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    /// Whether the server closed `stream` (end of file or reset) within `within`.
    fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        stream.set_read_timeout(Some(within)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn metrics_are_served_as_openmetrics_and_nothing_else_is() {
        let server = server();
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
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let address = server.address();
        drop(server);
        assert!(TcpStream::connect(address).is_err(), "still listening");
    }

    #[test]
    fn request_headers_past_8_kib_are_refused() {
        let server = server();
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 64 * 1024));
        request.extend(b"\r\n\r\n");
        let response = exchange(server.address(), &request);
        assert!(!response.contains("200 OK"), "{response}");
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 431"),
            "{response}"
        );
    }

    #[test]
    fn connections_past_the_cap_are_closed_and_silent_ones_time_out() {
        let server = server();
        let mut silent: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(server.address()).unwrap())
            .collect();
        // Let the server accept all of them.
        std::thread::sleep(Duration::from_millis(300));
        let mut past_cap = TcpStream::connect(server.address()).unwrap();
        assert!(
            closed_within(&mut past_cap, Duration::from_secs(2)),
            "the connection past the cap was kept"
        );
        // The silent ones are closed once their headers are late.
        let started = Instant::now();
        assert!(closed_within(
            &mut silent[0],
            HEADER_TIMEOUT + Duration::from_secs(3)
        ));
        assert!(
            started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500),
            "closed after {:?}, before the header timeout",
            started.elapsed()
        );
        for stream in &mut silent[1..] {
            assert!(closed_within(stream, Duration::from_secs(2)));
        }
        assert!(get(server.address(), "/metrics").starts_with("HTTP/1.1 200 OK"));
    }
}
