//! The pipeline thread: takes what connections read, decodes each connection's lines in
//! order, processes them, and keeps the connection accounting.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::status::{Live, role_index};
use super::{BAD_FRAMES_REPORTED, ConnectionTotals, ServeError, ServeReport};
use crate::pipeline::enrich::RunContext;
use crate::pipeline::{Pipeline, ProcessError, RunError, RunHandle, SourceCounters};
use crate::sources::ingest::{self, DecodeError};
use crate::sources::wire::{self, Peer};

/// What a connection's task counts on its side, read by the pipeline thread when the
/// connection ends (or when the server stops first).
#[derive(Debug, Default)]
pub(super) struct ConnectionCounters {
    /// Event lines dropped by the server (`--overload drop`, or queued work cut at shutdown).
    pub dropped_here: AtomicU64,
    /// For a client that asked for acks: the sequence number of its first line not yet
    /// processed, published by the pipeline thread after each chunk.
    pub acked: AtomicU64,
    /// Signalled when `acked` moves.
    pub ack_moved: tokio::sync::Notify,
}

/// What connection tasks hand the pipeline thread.
pub(super) enum Inbound {
    /// A hello was accepted.
    Open {
        conn: u64,
        peer: Box<Peer>,
        counters: Arc<ConnectionCounters>,
    },
    /// Whole lines, each ending in `\n`, holding their share of the queue's byte budget.
    Lines {
        conn: u64,
        lines: Vec<u8>,
        permit: OwnedSemaphorePermit,
    },
    /// A line longer than the frame cap was skipped unread.
    Overlong { conn: u64, bytes: usize },
    /// Whole lines dropped unread under `--overload drop` (counted by the connection): they
    /// still take their place in the connection's sequence.
    Dropped { conn: u64, lines: u64 },
    /// The stream ended in the middle of a line; those bytes are not an event.
    Truncated { conn: u64, bytes: usize },
    /// The connection ended.
    Close { conn: u64, reason: Option<String> },
    /// Nothing new: emit finished results and flush the outputs.
    Idle,
}

/// A connection's state on the pipeline thread.
struct ConnectionState {
    peer: Box<Peer>,
    run: RunHandle,
    counters: Arc<ConnectionCounters>,
    /// Lines read so far (the hello is line 1), for messages.
    line: u64,
    received: u64,
    bad_frames: u64,
    bye: Option<wire::Bye>,
    /// The node sent `quit`: when the connection closes, its recorders are finished.
    quit: bool,
    /// For a client that asked for acks: the sequence number of its next line.
    position: Option<u64>,
    /// Lines it sent that were processed already (skipped): they arrived all the same.
    duplicates: u64,
}

/// The sequence numbers of a node's lines this server has dealt with, `low..high`, over all
/// its connections (for clients that ask for acks). A line whose number falls inside was
/// processed already (a client resending what it was not sure arrived): it is skipped.
#[derive(Debug, Clone, Copy)]
struct SeenRange {
    low: u64,
    high: u64,
}

impl SeenRange {
    /// The range for a connection whose first line is `first`: the node's range when `first`
    /// continues it or falls inside it; a fresh, empty one when the client's numbering does
    /// not fit (it restarted, or an earlier connection claimed numbers it never reached).
    fn for_connection(known: Option<SeenRange>, first: u64) -> (SeenRange, bool) {
        match known {
            Some(range) if (range.low..=range.high).contains(&first) => (range, false),
            Some(_) => (
                SeenRange {
                    low: first,
                    high: first,
                },
                true,
            ),
            None => (
                SeenRange {
                    low: first,
                    high: first,
                },
                false,
            ),
        }
    }
}

/// The pipeline thread's loop: runs until every sender is gone (or the run must stop), then
/// finishes the run.
/// The connections' shared byte budget, as the pipeline thread sees it: to tell how full the
/// queue is.
pub(super) struct Queue {
    pub budget: std::sync::Arc<tokio::sync::Semaphore>,
    /// Its size, in [`super::connection::BUDGET_UNIT`]s.
    pub units: usize,
}

impl Queue {
    fn bytes(units: usize) -> u64 {
        (units as u64).saturating_mul(super::connection::BUDGET_UNIT as u64)
    }
}

pub(super) fn run(
    mut pipeline: Pipeline,
    mut receiver: mpsc::UnboundedReceiver<Inbound>,
    live: &Live,
    queue: &Queue,
) -> Result<ServeReport, ServeError> {
    let mut intake = Intake::default();
    let mut last_poll = Instant::now();
    let mut failure: Option<RunError> = None;
    while let Some(message) = receiver.blocking_recv() {
        if matches!(message, Inbound::Idle) {
            // Published by the poll it leads to.
            pipeline.set_source_counters(intake.source_counters(live, queue));
        }
        let result = intake.handle(&mut pipeline, message);
        if last_poll.elapsed() >= Duration::from_millis(200) {
            last_poll = Instant::now();
            pipeline.set_source_counters(intake.source_counters(live, queue));
            if let Err(error) = intake.poll(&mut pipeline) {
                failure.get_or_insert(error);
            }
        }
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
        if failure.is_some() || pipeline.has_required_failure() {
            break;
        }
        let now = pipeline.totals();
        live.events.store(now.events, Ordering::Relaxed);
        live.telemetry_out
            .store(now.telemetry_out, Ordering::Relaxed);
        live.rejected.store(now.rejected, Ordering::Relaxed);
        live.faults.store(now.faults, Ordering::Relaxed);
        live.bad_frames
            .store(intake.totals.bad_frames, Ordering::Relaxed);
    }
    // Whatever is still queued when the run must stop is not processed: say how much.
    receiver.close();
    let mut unprocessed = 0u64;
    while let Ok(message) = receiver.try_recv() {
        if let Inbound::Lines { lines, .. } = message {
            unprocessed += line_count(&lines);
        }
    }
    if unprocessed > 0 {
        crate::diag!("swarmtel: {unprocessed} queued event lines not processed: the run stopped");
    }
    let open: Vec<u64> = intake.states.keys().copied().collect();
    for conn in open {
        // Their recorders finish with everyone else's below.
        intake.close(
            conn,
            Some("still open when the server stopped".to_owned()),
            None,
        )?;
    }
    // The final counters, published when the pipeline finishes.
    pipeline.set_source_counters(intake.source_counters(live, queue));
    let totals = intake.finish_totals();
    if failure.is_none() {
        // The connections' accounting, where the telemetry goes too: every event a bridge
        // said it dropped (hello and bye, lifetime counts, once per node), dropped here, or
        // lost in transit.
        let [master, worker, standalone] = totals.accepted;
        if let Err(error) = pipeline.record_run_summary(
            "SERVE_SUMMARY",
            totals.render().trim_end().to_owned(),
            serde_json::json!({
                "connections": master + worker + standalone,
                "bad_frames": totals.bad_frames,
                "overlong_lines": totals.overlong,
                "dropped_by_bridges": totals.dropped_by_clients,
                "dropped_here": totals.dropped_here,
                "lost_in_transit": totals.lost_in_transit,
                "duplicates_skipped": totals.duplicates_skipped,
            }),
        ) {
            failure = Some(error);
        }
    }
    if let Some(error) = failure {
        // Keep what was delivered: finish and flush before reporting.
        let _ = pipeline.finish();
        return Err(error.into());
    }
    let summary = pipeline.finish()?;
    if let Some(error) = pipeline.required_failure() {
        crate::diag_text!("{}", summary.render());
        crate::diag_text!("{}", totals.render());
        return Err(error.into());
    }
    Ok(ServeReport {
        summary,
        connections: totals,
    })
}

#[derive(Default)]
struct Intake {
    states: HashMap<u64, ConnectionState>,
    totals: ConnectionTotals,
    /// Per (run, node): the most events its bridge said it dropped over its life. Hellos and
    /// byes carry lifetime counts, so a reconnecting bridge is counted once.
    client_drops: HashMap<(RunHandle, String), u64>,
    /// Drops of nodes that quit (their entries above are gone).
    client_drops_of_finished_nodes: u64,
    /// Per (run, node) whose client asked for acks: the lines dealt with, over all its
    /// connections. Forgotten when the node quits.
    seen: HashMap<(RunHandle, String), SeenRange>,
}

impl Intake {
    fn handle(&mut self, pipeline: &mut Pipeline, message: Inbound) -> Result<(), RunError> {
        match message {
            Inbound::Open {
                conn,
                peer,
                counters,
            } => {
                let default = pipeline.run_context().clone();
                let run = pipeline.add_run(RunContext {
                    run_id: peer.run_id.clone().unwrap_or(default.run_id),
                    testplan: peer.testplan.clone().unwrap_or(default.testplan),
                });
                self.totals.accepted[role_index(peer.role)] += 1;
                self.note_client_drops(run, &peer.node, peer.dropped_before);
                let position = peer.first_seq;
                if let Some(first) = position {
                    let key = (run, peer.node.clone());
                    let (range, reset) =
                        SeenRange::for_connection(self.seen.get(&key).copied(), first);
                    if reset {
                        crate::diag!(
                            "swarmtel: connection {conn} ({}): its lines start at {first}, outside the {}..{} this server has seen for the node: numbering starts afresh (nothing skipped)",
                            peer.node.escape_debug(),
                            self.seen[&key].low,
                            self.seen[&key].high,
                        );
                    }
                    self.seen.insert(key, range);
                    counters.acked.store(first, Ordering::Relaxed);
                }
                self.states.insert(
                    conn,
                    ConnectionState {
                        peer,
                        run,
                        counters,
                        line: 1,
                        received: 0,
                        bad_frames: 0,
                        bye: None,
                        quit: false,
                        position,
                        duplicates: 0,
                    },
                );
            }
            Inbound::Lines {
                conn,
                lines,
                permit,
            } => {
                let result = self.lines(pipeline, conn, &lines);
                // The byte budget comes back once the lines are processed.
                drop(permit);
                result?;
            }
            Inbound::Overlong { conn, bytes } => {
                // A duplicate was counted when it first came.
                if self.take_position(conn) != Some(true) {
                    self.totals.overlong += 1;
                    self.bad_frame(pipeline, conn, &overlong_message(bytes), true);
                }
            }
            Inbound::Dropped { conn, lines } => {
                for _ in 0..lines {
                    self.take_position(conn);
                }
            }
            Inbound::Truncated { conn, bytes } => {
                let message = format!(
                    "the connection ended in the middle of a line ({bytes} bytes without a newline)"
                );
                self.bad_frame(pipeline, conn, &message, true);
            }
            Inbound::Close { conn, reason } => self.close(conn, reason, Some(pipeline))?,
            Inbound::Idle => {
                self.poll(pipeline)?;
                pipeline.retire_idle_nodes(Instant::now())?;
            }
        }
        Ok(())
    }

    fn lines(&mut self, pipeline: &mut Pipeline, conn: u64, lines: &[u8]) -> Result<(), RunError> {
        let body = lines.strip_suffix(b"\n").unwrap_or(lines);
        for raw in body.split(|b| *b == b'\n') {
            let Some(state) = self.states.get_mut(&conn) else {
                return Ok(());
            };
            state.line += 1;
            pipeline.count_lines(1);
            let sequenced = state.position.is_some()
                && !(raw.len() <= wire::MAX_FRAME_BYTES
                    && std::str::from_utf8(raw).is_ok_and(|line| wire::parse_bye(line).is_some()));
            if sequenced && self.take_position(conn) == Some(true) {
                continue;
            }
            let Some(state) = self.states.get_mut(&conn) else {
                return Ok(());
            };
            let result = if raw.len() > wire::MAX_FRAME_BYTES {
                self.totals.overlong += 1;
                Err(FrameError::Bad(overlong_message(raw.len())))
            } else {
                process_frame(pipeline, state, raw)
            };
            match result {
                Ok(Frame::Event { quit }) => {
                    state.received += 1;
                    state.quit |= quit;
                }
                Ok(Frame::Blank) => {}
                Ok(Frame::Bye(bye)) => {
                    state.bye = Some(bye);
                    let (run, node) = (state.run, state.peer.node.clone());
                    self.note_client_drops(run, &node, bye.dropped);
                }
                Err(FrameError::Bad(message)) => {
                    self.bad_frame(pipeline, conn, &message, false);
                }
                Err(FrameError::Run(error)) => return Err(error),
            }
        }
        Ok(())
    }

    /// Takes the connection's next sequence number for a line it is dealing with; returns
    /// whether the node's range says that line was dealt with already (a duplicate), or
    /// `None` when the client did not ask for acks.
    fn take_position(&mut self, conn: u64) -> Option<bool> {
        let state = self.states.get_mut(&conn)?;
        let position = state.position.as_mut()?;
        let line = *position;
        *position = position.saturating_add(1);
        let range = self.seen.get_mut(&(state.run, state.peer.node.clone()))?;
        if (range.low..range.high).contains(&line) {
            state.duplicates += 1;
            self.totals.duplicates_skipped += 1;
            return Some(true);
        }
        range.high = range.high.max(line.saturating_add(1));
        Some(false)
    }

    /// Emits finished telemetry and flushes the outputs. When some client asked for acks,
    /// first makes everything processed visible ([`Pipeline::checkpoint`]) and then
    /// acknowledges it: an acknowledged line has reached its recorders, and what they wrote
    /// for it is on disk.
    fn poll(&mut self, pipeline: &mut Pipeline) -> Result<(), RunError> {
        if !self.states.values().any(|state| state.position.is_some()) {
            return pipeline.poll();
        }
        pipeline.checkpoint()?;
        for state in self.states.values() {
            if let Some(position) = state.position
                && state.counters.acked.swap(position, Ordering::Relaxed) != position
            {
                state.counters.ack_moved.notify_one();
            }
        }
        Ok(())
    }

    /// Counts and reports a bad frame; `new_line` when it was not counted as a line yet
    /// (skipped unread).
    fn bad_frame(&mut self, pipeline: &mut Pipeline, conn: u64, message: &str, new_line: bool) {
        let Some(state) = self.states.get_mut(&conn) else {
            return;
        };
        if new_line {
            state.line += 1;
            pipeline.count_lines(1);
        }
        state.bad_frames += 1;
        self.totals.bad_frames += 1;
        pipeline.count_bad_line();
        if state.bad_frames <= BAD_FRAMES_REPORTED {
            crate::diag!(
                "swarmtel: connection {conn} ({}) line {}: {message}; frame skipped{}",
                state.peer.node.escape_debug(),
                state.line,
                if state.bad_frames == BAD_FRAMES_REPORTED {
                    "; further bad frames on this connection are counted, not shown"
                } else {
                    ""
                }
            );
        }
    }

    fn note_client_drops(&mut self, run: RunHandle, node: &str, lifetime: u64) {
        let most = self.client_drops.entry((run, node.to_owned())).or_insert(0);
        *most = (*most).max(lifetime);
    }

    /// Ends a connection's accounting and logs its line. When the node had quit, its
    /// recorders are finished and freed first (with `pipeline`; at the end of the run they
    /// finish with everyone else's).
    fn close(
        &mut self,
        conn: u64,
        reason: Option<String>,
        pipeline: Option<&mut Pipeline>,
    ) -> Result<(), RunError> {
        let Some(state) = self.states.remove(&conn) else {
            return Ok(());
        };
        let finished = match pipeline {
            Some(pipeline) if state.quit => {
                pipeline.finish_node(state.run, &state.peer.node)?;
                let key = (state.run, state.peer.node.clone());
                self.seen.remove(&key);
                if let Some(dropped) = self.client_drops.remove(&key) {
                    self.client_drops_of_finished_nodes =
                        self.client_drops_of_finished_nodes.saturating_add(dropped);
                }
                true
            }
            _ => false,
        };
        let dropped_here = state.counters.dropped_here.load(Ordering::Relaxed);
        self.totals.dropped_here = self.totals.dropped_here.saturating_add(dropped_here);
        let mut notes = Vec::new();
        if let Some(bye) = state.bye {
            let arrived = state
                .received
                .saturating_add(state.bad_frames)
                .saturating_add(state.duplicates)
                .saturating_add(dropped_here);
            if bye.sent > arrived {
                let lost = bye.sent - arrived;
                self.totals.lost_in_transit = self.totals.lost_in_transit.saturating_add(lost);
                notes.push(format!("{lost} sent events never arrived"));
            }
            if bye.dropped > 0 {
                notes.push(format!("the bridge dropped {} events", bye.dropped));
            }
        }
        if dropped_here > 0 {
            notes.push(format!("{dropped_here} events dropped here"));
        }
        if let Some(reason) = reason {
            notes.push(reason);
        }
        if finished {
            notes.push("the node quit: its recorders finished".to_owned());
        }
        crate::diag!(
            "swarmtel: connection {conn} ({}) closed: {} events, {} bad frames{}",
            state.peer.node.escape_debug(),
            state.received,
            state.bad_frames,
            if notes.is_empty() {
                String::new()
            } else {
                format!("; {}", notes.join("; "))
            }
        );
        Ok(())
    }

    fn finish_totals(&mut self) -> ConnectionTotals {
        let dropped_by_clients = self.dropped_by_clients();
        let mut totals = std::mem::take(&mut self.totals);
        totals.dropped_by_clients = dropped_by_clients;
        totals
    }

    /// Events the bridges said they dropped, over every node seen.
    fn dropped_by_clients(&self) -> u64 {
        self.client_drops
            .values()
            .fold(self.client_drops_of_finished_nodes, |sum, dropped| {
                sum.saturating_add(*dropped)
            })
    }

    /// The counters so far, for the metrics outputs.
    fn source_counters(&self, live: &Live, queue: &Queue) -> SourceCounters {
        let mut connections = self.totals.clone();
        connections.dropped_by_clients = self.dropped_by_clients();
        let free = queue.budget.available_permits().min(queue.units);
        SourceCounters {
            connections,
            open: std::array::from_fn(|role| live.open[role].load(Ordering::Relaxed)),
            queued_bytes: Queue::bytes(queue.units - free),
            queue_capacity_bytes: Queue::bytes(queue.units),
        }
    }
}

/// What one line turned out to be.
enum Frame {
    /// An event, processed; `quit` when it was Locust's `quit`.
    Event {
        quit: bool,
    },
    Blank,
    Bye(wire::Bye),
}

enum FrameError {
    Bad(String),
    Run(RunError),
}

fn overlong_message(bytes: usize) -> String {
    format!(
        "line of {bytes} bytes or more is longer than the {} byte limit",
        wire::MAX_FRAME_BYTES
    )
}

fn process_frame(
    pipeline: &mut Pipeline,
    state: &mut ConnectionState,
    raw: &[u8],
) -> Result<Frame, FrameError> {
    let line = std::str::from_utf8(raw)
        .map_err(|error| {
            FrameError::Bad(DecodeError::Json(format!("not UTF-8: {error}")).to_string())
        })?
        .trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(Frame::Blank);
    }
    if let Some(bye) = wire::parse_bye(line) {
        return Ok(Frame::Bye(bye));
    }
    let record = ingest::decode_line(line).map_err(|error| FrameError::Bad(error.to_string()))?;
    if record.node != state.peer.node || record.role != state.peer.role {
        return Err(FrameError::Bad(format!(
            "event from {} {} on the connection of {} {}",
            record.role.as_str(),
            record.node.escape_debug(),
            state.peer.role.as_str(),
            state.peer.node.escape_debug()
        )));
    }
    let quit = record.body.kind() == crate::bindings::types::EventKind::Quit;
    match pipeline.process_in_run(state.run, &record) {
        Ok(()) => Ok(Frame::Event { quit }),
        Err(ProcessError::BadRecord(message)) => Err(FrameError::Bad(message)),
        Err(ProcessError::Run(error)) => Err(FrameError::Run(error)),
    }
}

/// Lines in a chunk, a last line without its newline included.
pub(super) fn line_count(lines: &[u8]) -> u64 {
    let newlines = lines.iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(lines.last().is_some_and(|b| *b != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_continues_the_nodes_range_only_when_its_numbering_fits() {
        let range = |low, high| Some(SeenRange { low, high });
        for (known, first, kept) in [
            (None, 7, false),
            (range(0, 10), 4, true),
            (range(0, 10), 10, true),
            (range(5, 10), 4, false),
            (range(0, 10), 11, false),
        ] {
            let (got, reset) = SeenRange::for_connection(known, first);
            assert_eq!(reset, known.is_some() && !kept, "{known:?} {first}");
            let expected = if kept {
                known.unwrap()
            } else {
                SeenRange {
                    low: first,
                    high: first,
                }
            };
            assert_eq!(
                (got.low, got.high),
                (expected.low, expected.high),
                "{known:?} {first}"
            );
        }
    }

    #[test]
    fn line_counts_include_a_partial_last_line() {
        assert_eq!(line_count(b""), 0);
        assert_eq!(line_count(b"a\nb\n"), 2);
        assert_eq!(line_count(b"a\nb"), 2);
        assert_eq!(line_count(b"\n\n"), 2);
    }
}
