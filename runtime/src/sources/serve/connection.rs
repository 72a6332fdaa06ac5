//! One connection's task: the hello, then the event lines, in chunks of whole lines, to the
//! pipeline thread under the queue's byte budget.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::intake::{ConnectionCounters, Inbound, line_count};
use super::status::{Live, role_index};
use super::{MAX_AWAITING_HELLO, MAX_AWAITING_HELLO_PER_PEER, Overload, Readiness};
use crate::config::RoleName;
use crate::pipeline::enrich::RunContext;
use crate::sources::wire::{self, HelloReply, Notice, Refusal};

/// How much a connection reads at a time.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// The queue's byte budget is counted in units of this many bytes.
pub(super) const BUDGET_UNIT: usize = 1024;

/// What every connection task shares.
pub(super) struct Shared {
    pub sender: mpsc::UnboundedSender<Inbound>,
    /// The queue's byte budget, in [`BUDGET_UNIT`]s.
    pub budget: Arc<Semaphore>,
    pub budget_units: usize,
    pub token: Option<String>,
    pub hello_timeout: Duration,
    pub overload: Overload,
    pub default_run: RunContext,
    pub live: Arc<Live>,
    /// Refused hellos.
    pub refused: AtomicU64,
    /// (run id, node) of every connection past its hello: one connection per node and run.
    pub connected: Mutex<HashMap<(String, String), Holder>>,
    /// Connection tasks not yet ended.
    pub active: AtomicUsize,
    /// Connections that have not sent their hello yet, oldest first.
    pub awaiting_hello: Mutex<VecDeque<Awaiting>>,
    /// Connections closed before their hello to make room for newer ones.
    pub evicted: AtomicU64,
    /// Whether the plugins are loaded yet.
    pub readiness: watch::Receiver<Readiness>,
}

/// A connection waiting for its hello, and how to close it to make room.
pub(super) struct Awaiting {
    conn: u64,
    /// Its TCP peer's address; `None` on the owner-only Unix socket.
    peer: Option<IpAddr>,
    /// When it was accepted.
    since: Instant,
    evict: Arc<Notify>,
}

/// Counts a connection as active from accept until its task ends.
pub(super) struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    /// Counts one more active connection.
    pub(super) fn enter(shared: &Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registers a connection as awaiting its hello from accept until the hello is read (or not).
///
/// Waiting connections are bounded without locking anyone out: when [`MAX_AWAITING_HELLO`]
/// are waiting (or [`MAX_AWAITING_HELLO_PER_PEER`] from the new one's address), the one that
/// has waited longest is closed to make room, provided it has waited at least
/// [`EVICTION_GRACE`]. A bridge sends its hello at once, so it waits for a round trip; a peer
/// that dribbles its hello out, or says nothing, is the one that has waited longest, and it
/// can no longer keep real bridges out. Only when every waiting connection is younger than the
/// grace (a flood of new connections) is the newcomer refused, with `retry`.
pub(super) struct AwaitingHelloGuard {
    shared: Arc<Shared>,
    conn: u64,
    /// Fires when this connection is closed to make room.
    pub(super) evicted: Arc<Notify>,
}

/// How long a connection may wait for its hello before a newer one may take its place.
pub(super) const EVICTION_GRACE: Duration = Duration::from_millis(250);

impl AwaitingHelloGuard {
    /// Registers `conn` (from `peer`), closing the longest-waiting connection if there is no
    /// room; refuses `conn` when no waiting connection is past [`EVICTION_GRACE`].
    pub(super) fn enter(
        shared: &Arc<Shared>,
        conn: u64,
        peer: Option<IpAddr>,
    ) -> Result<Self, Refusal> {
        let mut awaiting = lock(&shared.awaiting_hello);
        let same_peer = |entry: &Awaiting| peer.is_some() && entry.peer == peer;
        let per_peer_full =
            awaiting.iter().filter(|entry| same_peer(entry)).count() >= MAX_AWAITING_HELLO_PER_PEER;
        if per_peer_full || awaiting.len() >= MAX_AWAITING_HELLO {
            let victim = awaiting.iter().position(|entry| {
                (!per_peer_full || same_peer(entry)) && entry.since.elapsed() >= EVICTION_GRACE
            });
            let Some(entry) = victim.and_then(|index| awaiting.remove(index)) else {
                return Err(Refusal::TooManyAwaitingHello(if per_peer_full {
                    MAX_AWAITING_HELLO_PER_PEER
                } else {
                    MAX_AWAITING_HELLO
                }));
            };
            // A stored permit: the victim sees it even if it is not waiting yet.
            entry.evict.notify_one();
        }
        let evicted = Arc::new(Notify::new());
        awaiting.push_back(Awaiting {
            conn,
            peer,
            since: Instant::now(),
            evict: evicted.clone(),
        });
        Ok(Self {
            shared: shared.clone(),
            conn,
            evicted,
        })
    }
}

impl Drop for AwaitingHelloGuard {
    fn drop(&mut self) {
        lock(&self.shared.awaiting_hello).retain(|entry| entry.conn != self.conn);
    }
}

/// Locks a mutex whose data stays consistent at every unlock, taking it over from a task
/// that panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The connection that speaks for a (run, node), and how to make it let go.
pub(super) struct Holder {
    conn: u64,
    /// Tells the connection a newer one of the same node replaces it.
    evict: Arc<Notify>,
    /// Fires when it has handed over what it read and ended.
    released: Option<oneshot::Receiver<()>>,
}

/// Holds a (run, node) for a connection until it ends.
struct NodeGuard<'a> {
    shared: &'a Shared,
    key: (String, String),
    conn: u64,
    released: Option<oneshot::Sender<()>>,
}

impl NodeGuard<'_> {
    /// Takes the (run, node) for `conn`. A connection already holding it (the same bridge
    /// before a reconnect, possibly a half-open TCP connection that will never close) is told
    /// to stop; once it has handed over what it read (or after 5 s), the new one goes on, so
    /// the node's events stay in order.
    async fn take<'a>(
        shared: &'a Shared,
        key: (String, String),
        conn: u64,
        evict: Arc<Notify>,
    ) -> NodeGuard<'a> {
        let (released, released_rx) = oneshot::channel();
        let previous = shared.connected.lock().ok().and_then(|mut connected| {
            connected.insert(
                key.clone(),
                Holder {
                    conn,
                    evict,
                    released: Some(released_rx),
                },
            )
        });
        if let Some(mut previous) = previous {
            previous.evict.notify_one();
            if let Some(released) = previous.released.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), released).await;
            }
        }
        NodeGuard {
            shared,
            key,
            conn,
            released: Some(released),
        }
    }
}

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut connected) = self.shared.connected.lock()
            && connected
                .get(&self.key)
                .is_some_and(|holder| holder.conn == self.conn)
        {
            connected.remove(&self.key);
        }
        if let Some(released) = self.released.take() {
            let _ = released.send(());
        }
    }
}

/// Answers a connection past a cap without reading its hello: the refusal, then our side
/// closed, then what the client sends is read and discarded (one small buffer, at most 1 s)
/// so the close does not reset the connection before the client has read the reply.
pub(super) async fn refuse_over_cap<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    conn: u64,
    peer_name: String,
    shared: Arc<Shared>,
    refusal: Refusal,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    refuse(&mut writer, conn, &peer_name, &refusal, &shared).await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(reader.read(&mut discard).await, Ok(read) if read > 0) {}
    })
    .await;
}

/// One connection, from hello to end of stream (or the drain deadline).
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    conn: u64,
    peer_name: String,
    shared: Arc<Shared>,
    closing: watch::Receiver<bool>,
    awaiting_hello: AwaitingHelloGuard,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let evicted = awaiting_hello.evicted.clone();
    let hello = tokio::select! {
        // A hello already read wins over an eviction that came in the same instant.
        biased;
        hello = tokio::time::timeout(shared.hello_timeout, read_line(&mut reader, &mut buffer)) => hello,
        () = evicted.notified() => {
            let evictions = shared.evicted.fetch_add(1, Ordering::Relaxed) + 1;
            // Reported while rare; a flood is counted, with a line at each power of two.
            if evictions <= 10 || evictions.is_power_of_two() {
                crate::diag!(
                    "swarmtel: connection {conn} from {}: closed before its hello to make room for newer connections (at most {MAX_AWAITING_HELLO} may wait, {MAX_AWAITING_HELLO_PER_PEER} per address); {evictions} so far",
                    peer_name.escape_debug()
                );
            }
            return;
        }
    };
    drop(awaiting_hello);
    let refusal = match hello {
        Ok(Ok(Some(_))) => None,
        Ok(Ok(None)) => return, // closed before saying anything: a port probe
        Ok(Err(error)) => Some(Refusal::NotHello(error)),
        Err(_) => Some(Refusal::Timeout(shared.hello_timeout)),
    };
    if let Some(refusal) = refusal {
        refuse(&mut writer, conn, &peer_name, &refusal, &shared).await;
        return;
    }
    let end = buffer
        .iter()
        .position(|b| *b == b'\n')
        .expect("read_line found a newline");
    let peer = match wire::accept_hello(&buffer[..end], shared.token.as_deref()) {
        Ok(peer) => peer,
        Err(refusal) => {
            refuse(&mut writer, conn, &peer_name, &refusal, &shared).await;
            return;
        }
    };
    buffer.drain(..=end);
    let run_id = peer
        .run_id
        .clone()
        .unwrap_or_else(|| shared.default_run.run_id.clone());
    let testplan = peer
        .testplan
        .clone()
        .unwrap_or_else(|| shared.default_run.testplan.clone());
    let key = (run_id.clone(), peer.node.clone());
    let evict = Arc::new(Notify::new());
    let _node = NodeGuard::take(&shared, key, conn, evict.clone()).await;
    let acks = peer.first_seq.is_some();
    let mut readiness = shared.readiness.clone();
    let ready = match &*readiness.borrow_and_update() {
        Readiness::Ready(wants) => Some(wants.get(peer.role)),
        _ => None,
    };
    if writer
        .write_all(&HelloReply::accepted(&run_id, &testplan, acks, ready).to_line())
        .await
        .is_err()
    {
        return;
    }
    crate::diag!(
        "swarmtel: connection {conn} from {peer_name}: {} {} ({}), run {}",
        peer.role.as_str(),
        peer.node.escape_debug(),
        peer.client.escape_debug(),
        run_id.escape_debug(),
    );
    let role = peer.role;
    let counters = Arc::new(ConnectionCounters::default());
    shared.live.open[role_index(role)].fetch_add(1, Ordering::Relaxed);
    let opened = shared.sender.send(Inbound::Open {
        conn,
        peer: Box::new(peer),
        counters: counters.clone(),
    });
    let reason = match opened {
        Ok(()) => {
            let stop = Stop { closing, evict };
            let reading = read_lines(&mut reader, buffer, conn, &shared, &counters, stop);
            let told_loading = acks && ready.is_none();
            let (reason, writing_done) = {
                let acking = write_to_client(
                    &mut writer,
                    &counters,
                    told_loading.then_some(readiness),
                    role,
                );
                tokio::pin!(reading, acking);
                // A client that stops reading acks only stops getting them.
                let mut acking_done = !acks;
                loop {
                    tokio::select! {
                        reason = &mut reading => break (reason, acking_done),
                        () = &mut acking, if !acking_done => acking_done = true,
                    }
                }
            };
            // The server stopped because the plugins failed to load, before the writer got to
            // say so: say it now, so the client can show the runtime's error.
            let failed = match &*shared.readiness.borrow() {
                Readiness::Failed(error) => Some(error.clone()),
                _ => None,
            };
            if let Some(error) = failed.filter(|_| told_loading && !writing_done) {
                let _ = writer.write_all(&Notice::Failed(error).to_line()).await;
                let _ = writer.flush().await;
            }
            reason
        }
        Err(_) => Some("server stopping".to_owned()),
    };
    shared.live.open[role_index(role)].fetch_sub(1, Ordering::Relaxed);
    let _ = shared.sender.send(Inbound::Close { conn, reason });
}

/// How long acknowledgements are gathered before one is written: at most about 50 a second
/// per connection, however fast the lines are processed.
const ACK_INTERVAL: Duration = Duration::from_millis(20);

/// Writes an [`wire::Ack`] whenever the pipeline thread has processed more of the connection's
/// lines, and, to a client told the plugins were still loading (`readiness` given), one
/// [`Notice`] when they are loaded or failed to; returns when the client can no longer be
/// written to, or after a [`Notice::Failed`].
async fn write_to_client<W: AsyncWrite + Unpin>(
    writer: &mut W,
    counters: &ConnectionCounters,
    mut readiness: Option<watch::Receiver<Readiness>>,
    role: RoleName,
) {
    let mut sent = None;
    loop {
        let notice = async {
            match readiness.as_mut() {
                Some(readiness) => readiness
                    .wait_for(|state| *state != Readiness::Loading)
                    .await
                    .map(|state| state.clone())
                    // The pipeline thread is gone without a word: nothing to tell.
                    .unwrap_or(Readiness::Loading),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = counters.ack_moved.notified() => {}
            state = notice => {
                readiness = None;
                let notice = match state {
                    Readiness::Ready(wants) => Notice::Ready(wants.get(role)),
                    Readiness::Failed(error) => Notice::Failed(error),
                    Readiness::Loading => continue,
                };
                let failed = matches!(notice, Notice::Failed(_));
                if writer.write_all(&notice.to_line()).await.is_err() || failed {
                    let _ = writer.flush().await;
                    return;
                }
                continue;
            }
        }
        tokio::time::sleep(ACK_INTERVAL).await;
        let ack = counters.acked.load(Ordering::Relaxed);
        if sent == Some(ack) {
            continue;
        }
        if writer
            .write_all(&wire::Ack { ack }.to_line())
            .await
            .is_err()
        {
            return;
        }
        sent = Some(ack);
    }
}

/// Why a connection must stop reading before its stream ends.
struct Stop {
    /// The drain deadline passed.
    closing: watch::Receiver<bool>,
    /// A newer connection of the same node replaces this one.
    evict: Arc<Notify>,
}

impl Stop {
    /// Resolves when the connection must stop, with the reason.
    async fn signalled(&mut self) -> &'static str {
        tokio::select! {
            _ = self.closing.wait_for(|closing| *closing) => "closed at the drain deadline",
            () = self.evict.notified() => "replaced by a newer connection of the same node",
        }
    }
}

/// Reads event lines until the end of the stream; returns why it stopped early, if it did.
async fn read_lines<R: AsyncRead + Unpin>(
    reader: &mut R,
    mut buffer: Vec<u8>,
    conn: u64,
    shared: &Shared,
    counters: &ConnectionCounters,
    mut stop: Stop,
) -> Option<String> {
    let mut skipping = false;
    let mut warned = false;
    loop {
        if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
            buffer.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            read = reader.read_buf(&mut buffer) => read,
            reason = stop.signalled() => return Some(reason.to_owned()),
        };
        let end_of_stream = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => return Some(error.to_string()),
        };
        if skipping {
            match buffer.iter().position(|b| *b == b'\n') {
                Some(newline) => {
                    buffer.drain(..=newline);
                    skipping = false;
                }
                None => {
                    buffer.clear();
                    if end_of_stream {
                        return None;
                    }
                    continue;
                }
            }
        }
        // Whole lines go to the pipeline; a partial last line waits for more.
        let cut = buffer
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if cut > 0 {
            let rest = buffer.split_off(cut);
            let lines = std::mem::replace(&mut buffer, rest);
            // Charged by capacity: what the chunk really holds in memory.
            let units = lines
                .capacity()
                .div_ceil(BUDGET_UNIT)
                .clamp(1, shared.budget_units);
            let permit = match shared.overload {
                Overload::Block => {
                    let ready = shared
                        .budget
                        .clone()
                        .try_acquire_many_owned(units as u32)
                        .ok();
                    if ready.is_none() && !warned {
                        warned = true;
                        crate::diag!(
                            "swarmtel: connection {conn}: the recorders are behind; reading this connection only as fast as they go (--overload block)"
                        );
                    }
                    let acquired = if ready.is_some() {
                        ready
                    } else {
                        // Only the drain deadline stops the wait: lines already read are
                        // still queued when a newer connection replaces this one.
                        tokio::select! {
                            permit = shared.budget.clone().acquire_many_owned(units as u32) => permit.ok(),
                            _ = stop.closing.wait_for(|closing| *closing) => None,
                        }
                    };
                    match acquired {
                        Some(permit) => Some(permit),
                        None => {
                            drop_lines(
                                &lines,
                                conn,
                                shared,
                                counters,
                                &mut warned,
                                "the server stopped",
                            );
                            return Some("closed at the drain deadline".to_owned());
                        }
                    }
                }
                Overload::Drop => shared
                    .budget
                    .clone()
                    .try_acquire_many_owned(units as u32)
                    .ok(),
            };
            match permit {
                Some(permit) => {
                    if !send_lines(shared, conn, lines, permit) {
                        return Some("server stopping".to_owned());
                    }
                }
                None => {
                    // Events are dropped; a bye frame is not (it carries the accounting).
                    let (events, bye) = split_trailing_bye(lines);
                    drop_lines(
                        &events,
                        conn,
                        shared,
                        counters,
                        &mut warned,
                        "--overload drop",
                    );
                    // Dropped by policy, and counted: acknowledged in their turn, so a client
                    // does not send them again.
                    let dropped = line_count(&events);
                    if dropped > 0
                        && shared
                            .sender
                            .send(Inbound::Dropped {
                                conn,
                                lines: dropped,
                            })
                            .is_err()
                    {
                        return Some("server stopping".to_owned());
                    }
                    if let Some(bye) = bye {
                        let permit = shared.budget.clone().acquire_many_owned(1).await.ok();
                        if let Some(permit) = permit
                            && !send_lines(shared, conn, bye, permit)
                        {
                            return Some("server stopping".to_owned());
                        }
                    }
                }
            }
        }
        if end_of_stream {
            if !buffer.is_empty() {
                let bytes = buffer.len();
                let _ = shared.sender.send(Inbound::Truncated { conn, bytes });
            }
            return None;
        }
        if buffer.len() > wire::MAX_FRAME_BYTES {
            let bytes = buffer.len();
            buffer = Vec::with_capacity(READ_CHUNK);
            skipping = true;
            if shared
                .sender
                .send(Inbound::Overlong { conn, bytes })
                .is_err()
            {
                return Some("server stopping".to_owned());
            }
        }
    }
}

fn send_lines(shared: &Shared, conn: u64, lines: Vec<u8>, permit: OwnedSemaphorePermit) -> bool {
    shared
        .sender
        .send(Inbound::Lines {
            conn,
            lines,
            permit,
        })
        .is_ok()
}

/// Counts lines the server could not queue.
fn drop_lines(
    lines: &[u8],
    conn: u64,
    shared: &Shared,
    counters: &ConnectionCounters,
    warned: &mut bool,
    why: &str,
) {
    let count = line_count(lines);
    if count == 0 {
        return;
    }
    if !*warned {
        *warned = true;
        crate::diag!(
            "swarmtel: connection {conn}: the recorders are behind; dropping and counting this connection's events ({why})"
        );
    }
    counters.dropped_here.fetch_add(count, Ordering::Relaxed);
    shared.live.dropped.fetch_add(count, Ordering::Relaxed);
}

/// Splits a chunk's last non-blank line off when it is a bye frame.
fn split_trailing_bye(mut lines: Vec<u8>) -> (Vec<u8>, Option<Vec<u8>>) {
    let trimmed = lines
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let start = lines[..trimmed]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let is_bye = std::str::from_utf8(&lines[start..trimmed])
        .ok()
        .and_then(wire::parse_bye)
        .is_some();
    if !is_bye {
        return (lines, None);
    }
    let bye = lines.split_off(start);
    (lines, Some(bye))
}

/// Reads until the first newline; returns its index, `None` at a clean end of stream before
/// any byte, or why the line is unusable.
pub(super) async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<Option<usize>, String> {
    loop {
        if let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            return Ok(Some(newline));
        }
        if buffer.len() > wire::MAX_FRAME_BYTES {
            return Err(format!(
                "no newline in the first {} bytes",
                wire::MAX_FRAME_BYTES
            ));
        }
        buffer.reserve(READ_CHUNK);
        match reader.read_buf(buffer).await {
            Ok(0) if buffer.is_empty() => return Ok(None),
            Ok(0) => return Err("connection closed in the middle of the hello".to_owned()),
            Ok(_) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
}

async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    conn: u64,
    peer_name: &str,
    refusal: &Refusal,
    shared: &Shared,
) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    crate::diag!("swarmtel: connection {conn} from {peer_name} refused: {refusal}");
    let _ = writer
        .write_all(&HelloReply::refused(refusal).to_line())
        .await;
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_bye_is_split_off() {
        let (events, bye) =
            split_trailing_bye(b"{\"event\":1}\n{\"bye\":true,\"sent\":1}\n\n".to_vec());
        assert_eq!(events, b"{\"event\":1}\n");
        assert_eq!(bye.unwrap(), b"{\"bye\":true,\"sent\":1}\n\n");
        let input = b"{\"bye\":true,\"sent\":1}\n{\"e\":1}\n".to_vec();
        let (events, bye) = split_trailing_bye(input.clone());
        assert_eq!(events, input, "a bye that is not last is left in place");
        assert!(bye.is_none());
    }

    #[tokio::test]
    async fn read_line_finds_the_hello_and_refuses_overlong_ones() {
        let mut buffer = Vec::new();
        let mut input: &[u8] = b"{\"hello\":1}\nrest";
        assert_eq!(read_line(&mut input, &mut buffer).await, Ok(Some(11)));
        let mut empty: &[u8] = b"";
        assert_eq!(read_line(&mut empty, &mut Vec::new()).await, Ok(None));
        let mut cut: &[u8] = b"{\"hel";
        assert!(read_line(&mut cut, &mut Vec::new()).await.is_err());
        let long = vec![b'x'; wire::MAX_FRAME_BYTES + 2];
        let mut long_input: &[u8] = &long;
        assert!(
            read_line(&mut long_input, &mut Vec::new())
                .await
                .unwrap_err()
                .contains("no newline")
        );
    }
}
