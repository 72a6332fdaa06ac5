//! What the server shows while it runs: a live status line on a terminal, a log line every
//! 10 s otherwise, from counters the other parts update.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::StatusMode;
use crate::config::RoleName;

/// Counters shared between the network side, the pipeline thread and the status display.
#[derive(Default)]
pub(super) struct Live {
    /// Open connections by role (see [`role_index`]).
    pub open: [AtomicU64; 3],
    pub events: AtomicU64,
    pub telemetry_out: AtomicU64,
    pub rejected: AtomicU64,
    pub faults: AtomicU64,
    pub bad_frames: AtomicU64,
    pub dropped: AtomicU64,
}

/// The index of a role in per-role arrays: master, worker, standalone.
pub(super) fn role_index(role: RoleName) -> usize {
    match role {
        RoleName::Master => 0,
        RoleName::Worker => 1,
        RoleName::Standalone => 2,
    }
}

/// The status display on stderr.
pub(super) struct Status {
    line: bool,
    log: bool,
    live: Arc<Live>,
    started: Instant,
    last: std::cell::Cell<(Instant, u64, u64)>,
    shown: std::cell::Cell<bool>,
}

impl Status {
    pub(super) fn new(mode: StatusMode, live: Arc<Live>) -> Self {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let (line, log) = match mode {
            StatusMode::Auto => (terminal, !terminal),
            StatusMode::Line => (true, false),
            StatusMode::Log => (false, true),
            StatusMode::Off => (false, false),
        };
        let now = Instant::now();
        Self {
            line,
            log,
            live,
            started: now,
            last: std::cell::Cell::new((now, 0, 0)),
            shown: std::cell::Cell::new(false),
        }
    }

    /// Called every second: redraws the line, or logs every 10 s.
    pub(super) fn show(&self) {
        if !self.line && !self.log {
            return;
        }
        let now = Instant::now();
        let (then, events_then, out_then) = self.last.get();
        let elapsed = now.duration_since(then).as_secs_f64();
        if self.log && elapsed < 10.0 {
            return;
        }
        let live = &self.live;
        let events = live.events.load(Ordering::Relaxed);
        let out = live.telemetry_out.load(Ordering::Relaxed);
        let rate = |now: u64, then: u64| (now.saturating_sub(then)) as f64 / elapsed.max(0.001);
        let open: Vec<u64> = live
            .open
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        let text = format!(
            "swarmtel: {}s | connections: {} master, {} worker, {} standalone | in {:.0} events/s | out {:.0} telemetry/s | rejected {} | faults {} | bad frames {} | dropped {}",
            self.started.elapsed().as_secs(),
            open[0],
            open[1],
            open[2],
            rate(events, events_then),
            rate(out, out_then),
            live.rejected.load(Ordering::Relaxed),
            live.faults.load(Ordering::Relaxed),
            live.bad_frames.load(Ordering::Relaxed),
            live.dropped.load(Ordering::Relaxed),
        );
        self.last.set((now, events, out));
        let mut stderr = std::io::stderr().lock();
        if self.line {
            let _ = write!(stderr, "\r\x1b[2K{text}");
            self.shown.set(true);
        } else {
            let _ = writeln!(stderr, "{text}");
        }
        let _ = stderr.flush();
    }

    /// The escape that clears the status line before another message, if one is shown.
    pub(super) fn clear_code(&self) -> &'static str {
        if self.shown.get() { "\r\x1b[2K" } else { "" }
    }

    /// Ends the status line so the summary starts on a line of its own.
    pub(super) fn finish(&self) {
        if self.shown.get() {
            crate::diag!();
        }
    }
}
