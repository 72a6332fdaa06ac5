//! Recorder tasks: each recorder instance runs on a thread of its own, fed batches through a
//! bounded channel, so a slow guest delays only itself while the others go on receiving.
//!
//! The task also applies the fault policy (restart after a backoff, disable after too many
//! faults in a window). The policy reads only event times, never the clock, so a replay makes
//! the same decisions every time. Results go back in order through a channel of their own; the
//! pipeline emits them in the order the batches were handed over, which keeps output
//! deterministic.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use crate::bindings::types as wit;
use crate::config::Limits;
use crate::sandbox::{Fault, RecorderBackend};

/// Batches a task may have waiting before handing over another blocks the pipeline.
const QUEUE_DEPTH: usize = 64;

/// Work for a recorder task. (A batch is a few vectors' headers: moving it once per batch is
/// cheaper than boxing it.)
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// Deliver a batch.
    Handle {
        /// The batch.
        batch: wit::EventBatch,
        /// Event time of its latest event.
        time: f64,
        /// Stream events in it (requests and events, not ticks), for accounting.
        delivered: u64,
    },
    /// The stream ended: call `finish`.
    Finish {
        /// Event time of the node's latest event.
        time: f64,
    },
}

/// What became of a job.
pub enum Outcome {
    /// The recorder returned telemetry; `restarted` when this was its first success after a
    /// fault.
    Items {
        /// The telemetry, not yet validated.
        items: Vec<wit::Telemetry>,
        /// The instance was rebuilt after a fault and this call succeeded.
        restarted: bool,
    },
    /// The call faulted; the instance is gone.
    Fault {
        /// What happened.
        fault: Fault,
        /// Faults within the window, this one included.
        faults: u32,
        /// The recorder is now disabled for the rest of the run.
        disabled: bool,
        /// The wait before its next call, in ms of event time (0 when disabled).
        backoff_ms: u64,
    },
    /// Not delivered: the recorder is disabled or waiting out its backoff.
    Skipped,
}

/// A finished job.
pub struct Done {
    /// What became of it.
    pub outcome: Outcome,
    /// The job's event time.
    pub time: f64,
    /// Stream events in the job's batch.
    pub delivered: u64,
    /// The batch, handed back for reuse.
    pub batch: Option<wit::EventBatch>,
    /// The backend's dropped stdio bytes so far.
    pub stdio_dropped_bytes: u64,
}

/// Restart backoff and disabling, in event time.
struct FaultPolicy {
    limits: Limits,
    fault_times: VecDeque<f64>,
    faults_in_a_row: u32,
    restart_at: f64,
    restarting: bool,
    disabled: bool,
}

impl FaultPolicy {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            fault_times: VecDeque::new(),
            faults_in_a_row: 0,
            restart_at: f64::NEG_INFINITY,
            restarting: false,
            disabled: false,
        }
    }

    /// Whether a batch whose latest event is at `time` may be delivered.
    fn admits(&self, time: f64) -> bool {
        !self.disabled && time >= self.restart_at
    }

    /// A call succeeded; returns whether it was the first since a fault.
    fn succeeded(&mut self) -> bool {
        self.faults_in_a_row = 0;
        std::mem::take(&mut self.restarting)
    }

    /// A call at `time` faulted: count it in the window, then disable or set the backoff.
    fn faulted(&mut self, time: f64) -> (u32, bool, u64) {
        let window = self.limits.fault_window_seconds as f64;
        self.fault_times.push_back(time);
        while self
            .fault_times
            .front()
            .is_some_and(|first| time - first > window)
        {
            self.fault_times.pop_front();
        }
        self.faults_in_a_row += 1;
        let faults = self.fault_times.len() as u32;
        if faults >= self.limits.max_faults {
            self.disabled = true;
            return (faults, true, 0);
        }
        let backoff_ms = self
            .limits
            .restart_backoff_ms
            .saturating_mul(1 << (self.faults_in_a_row - 1).min(20))
            .min(self.limits.restart_backoff_max_ms);
        self.restart_at = time + backoff_ms as f64 / 1_000.0;
        self.restarting = true;
        (faults, false, backoff_ms)
    }
}

/// One recorder instance on its own thread.
pub struct RecorderTask {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl RecorderTask {
    /// Starts a task running `backend` under `limits`' fault policy.
    pub fn spawn(mut backend: Box<dyn RecorderBackend>, limits: Limits, name: &str) -> Self {
        let (jobs, job_receiver) = std::sync::mpsc::sync_channel::<Job>(QUEUE_DEPTH);
        let (done_sender, done) = std::sync::mpsc::channel::<Done>();
        let thread = std::thread::Builder::new()
            .name(format!("swarmtel-{name}"))
            .spawn(move || {
                let mut policy = FaultPolicy::new(limits);
                for job in job_receiver {
                    let (time, delivered, batch, result) = match job {
                        Job::Handle {
                            batch,
                            time,
                            delivered,
                        } => {
                            let result = policy.admits(time).then(|| backend.handle(&batch));
                            (time, delivered, Some(batch), result)
                        }
                        Job::Finish { time } => {
                            let result = policy.admits(time).then(|| backend.finish());
                            (time, 0, None, result)
                        }
                    };
                    let outcome = match result {
                        None => Outcome::Skipped,
                        Some(Ok(items)) => Outcome::Items {
                            items,
                            restarted: policy.succeeded(),
                        },
                        Some(Err(fault)) => {
                            let (faults, disabled, backoff_ms) = policy.faulted(time);
                            Outcome::Fault {
                                fault,
                                faults,
                                disabled,
                                backoff_ms,
                            }
                        }
                    };
                    let done = Done {
                        outcome,
                        time,
                        delivered,
                        batch,
                        stdio_dropped_bytes: backend.stdio_dropped_bytes(),
                    };
                    if done_sender.send(done).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn recorder task");
        Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        }
    }

    /// Hands over a job; blocks while the task has [`QUEUE_DEPTH`] jobs waiting.
    pub fn submit(&self, job: Job) {
        self.jobs
            .as_ref()
            .expect("task running")
            .send(job)
            .expect("recorder task ended unexpectedly");
    }

    /// The next finished job, if one is ready.
    pub fn try_done(&self) -> Option<Done> {
        match self.done.try_recv() {
            Ok(done) => Some(done),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => panic!("recorder task ended unexpectedly"),
        }
    }

    /// The next finished job, waiting for it.
    pub fn wait_done(&self) -> Done {
        self.done.recv().expect("recorder task ended unexpectedly")
    }
}

impl RecorderTask {
    /// Ends the task: closes its queue and waits for its thread, which drops the recorder
    /// (and its sandbox). Results not yet taken are lost; nothing may be submitted after.
    pub fn stop(&mut self) {
        // Closing the queue ends the thread's loop.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RecorderTask {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_faults: u32) -> Limits {
        Limits {
            max_faults,
            fault_window_seconds: 60,
            restart_backoff_ms: 100,
            restart_backoff_max_ms: 350,
            ..Limits::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_on_success() {
        let mut policy = FaultPolicy::new(limits(10));
        assert_eq!(policy.faulted(0.0), (1, false, 100));
        assert!(!policy.admits(0.05));
        assert!(policy.admits(0.1));
        assert_eq!(policy.faulted(1.0), (2, false, 200));
        assert_eq!(policy.faulted(2.0), (3, false, 350));
        assert!(
            policy.succeeded(),
            "first success after faults is a restart"
        );
        assert!(!policy.succeeded());
        assert_eq!(policy.faulted(3.0), (4, false, 100));
    }

    #[test]
    fn faults_in_the_window_disable_and_old_ones_expire() {
        let mut policy = FaultPolicy::new(limits(2));
        assert!(!policy.faulted(0.0).1);
        assert_eq!(
            policy.faulted(100.0),
            (1, false, 200),
            "the first fault expired"
        );
        assert_eq!(policy.faulted(110.0), (2, true, 0));
        assert!(!policy.admits(1_000.0));
    }
}
