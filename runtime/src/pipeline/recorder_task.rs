//! Recorder tasks: each recorder instance is a task with its own bounded queue of batches,
//! run by a fixed pool of threads ([`RecorderPool`]), so a slow guest delays only itself
//! while the others go on receiving, and the number of host threads does not grow with the
//! number of recorders times nodes.
//!
//! A task runs on at most one pool thread at a time and takes its jobs in order; after each
//! job it goes to the back of the pool's queue, so one busy recorder cannot starve the rest.
//! The task also applies the fault policy (restart after a backoff, disable after too many
//! faults in a window). The policy reads only event times, never the clock, so a replay makes
//! the same decisions every time. Results go back in order through a channel of their own; the
//! pipeline emits them in the order the batches were handed over, which keeps output
//! deterministic.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
    /// The recorder returned telemetry and metric points; `restarted` when this was its first
    /// success after a fault.
    Items {
        /// The telemetry and metric points, not yet validated.
        items: wit::RecorderOutput,
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

/// Most threads a pool runs, whatever the machine: `recorder_threads` in SECURITY.md.
pub const MAX_POOL_THREADS: usize = 16;

/// The pool size for this machine: one thread per core, at least 2 (so one slow guest never
/// holds up every other recorder) and at most [`MAX_POOL_THREADS`].
pub fn default_pool_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, MAX_POOL_THREADS)
}

/// Locks a mutex, taking over the data of a thread that panicked while holding it: the
/// task and pool state stay consistent at every unlock, and a panic must not spread.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fixed set of threads that run every recorder task of a pipeline.
pub struct RecorderPool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
}

struct PoolShared {
    queue: Mutex<PoolQueue>,
    work: Condvar,
}

#[derive(Default)]
struct PoolQueue {
    runnable: VecDeque<Arc<TaskShared>>,
    shutdown: bool,
}

impl RecorderPool {
    /// Starts `threads` pool threads (at least 1).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(PoolShared {
            queue: Mutex::new(PoolQueue::default()),
            work: Condvar::new(),
        });
        let mut handles = Vec::new();
        for index in 0..threads.max(1) {
            let shared = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("swarmtel-recorders-{index}"))
                    .spawn(move || run_pool_thread(&shared))?,
            );
        }
        Ok(Self {
            shared,
            threads: handles,
        })
    }

    /// How many threads it runs.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Makes a task running `backend` under `limits`' fault policy.
    pub fn spawn(&self, backend: Box<dyn RecorderBackend>, limits: Limits) -> RecorderTask {
        let (done_sender, done) = std::sync::mpsc::channel::<Done>();
        RecorderTask {
            shared: Arc::new(TaskShared {
                state: Mutex::new(TaskState {
                    jobs: VecDeque::new(),
                    scheduled: false,
                    runner: Some(Runner {
                        backend,
                        policy: FaultPolicy::new(limits),
                    }),
                }),
                changed: Condvar::new(),
                done: done_sender,
            }),
            pool: self.shared.clone(),
            done,
            stopped: false,
        }
    }
}

impl Drop for RecorderPool {
    fn drop(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn run_pool_thread(pool: &PoolShared) {
    loop {
        let task = {
            let mut queue = lock(&pool.queue);
            loop {
                if let Some(task) = queue.runnable.pop_front() {
                    break task;
                }
                if queue.shutdown {
                    return;
                }
                queue = pool.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        if run_one_job(&task) {
            lock(&pool.queue).runnable.push_back(task);
            pool.work.notify_one();
        }
    }
}

/// Runs the task's next job; returns whether it has more (it stays scheduled then).
fn run_one_job(task: &TaskShared) -> bool {
    let (job, mut runner) = {
        let mut state = lock(&task.state);
        // A scheduled task is queued once and holds its runner; check both before taking
        // either, so a job is never taken without being run.
        if state.jobs.is_empty() || state.runner.is_none() {
            state.scheduled = false;
            task.changed.notify_all();
            return false;
        }
        let job = state.jobs.pop_front().expect("checked above");
        let runner = state.runner.take().expect("checked above");
        (job, runner)
    };
    // A job that made room in a full queue lets a blocked submitter go on.
    task.changed.notify_all();
    let done = run_job(job, &mut runner);
    // The pipeline may have gone (it dropped the task): nobody wants the result then.
    let _ = task.done.send(done);
    let mut state = lock(&task.state);
    state.runner = Some(runner);
    let more = !state.jobs.is_empty();
    if !more {
        state.scheduled = false;
    }
    task.changed.notify_all();
    more
}

/// Runs one job on a backend under the fault policy. A panic in the host while running it (a
/// bug, never a guest's doing) is a fault of that recorder, not of the pool thread.
fn run_job(job: Job, runner: &mut Runner) -> Done {
    let Runner { backend, policy } = runner;
    let (time, delivered, batch, result) = match job {
        Job::Handle {
            batch,
            time,
            delivered,
        } => {
            let result = policy
                .admits(time)
                .then(|| guarded(AssertUnwindSafe(|| backend.handle(&batch))));
            (time, delivered, Some(batch), result)
        }
        Job::Finish { time } => {
            let result = policy
                .admits(time)
                .then(|| guarded(AssertUnwindSafe(|| backend.finish())));
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
    Done {
        outcome,
        time,
        delivered,
        batch,
        stdio_dropped_bytes: backend.stdio_dropped_bytes(),
    }
}

fn guarded(
    call: AssertUnwindSafe<impl FnOnce() -> Result<wit::RecorderOutput, Fault>>,
) -> Result<wit::RecorderOutput, Fault> {
    std::panic::catch_unwind(call).unwrap_or_else(|_| {
        Err(Fault::new(
            crate::sandbox::FaultKind::Trap,
            "the host failed while running this recorder (a swarmtel bug; see stderr)",
        ))
    })
}

/// One recorder instance: its queue of jobs, run by a [`RecorderPool`].
pub struct RecorderTask {
    shared: Arc<TaskShared>,
    pool: Arc<PoolShared>,
    done: Receiver<Done>,
    stopped: bool,
}

struct TaskShared {
    state: Mutex<TaskState>,
    /// Signalled when a job is taken or finished: room in the queue, or the task went idle.
    changed: Condvar,
    done: Sender<Done>,
}

struct TaskState {
    jobs: VecDeque<Job>,
    /// In the pool's queue, or running on a pool thread.
    scheduled: bool,
    /// The recorder and its fault policy; taken by the pool thread while it runs a job.
    runner: Option<Runner>,
}

struct Runner {
    backend: Box<dyn RecorderBackend>,
    policy: FaultPolicy,
}

impl RecorderTask {
    /// Hands over a job; blocks while the task has [`QUEUE_DEPTH`] jobs waiting.
    pub fn submit(&self, job: Job) {
        assert!(!self.stopped, "submit after stop");
        let mut state = lock(&self.shared.state);
        while state.jobs.len() >= QUEUE_DEPTH {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.jobs.push_back(job);
        if !state.scheduled {
            state.scheduled = true;
            drop(state);
            lock(&self.pool.queue)
                .runnable
                .push_back(self.shared.clone());
            self.pool.work.notify_one();
        }
    }

    /// The next finished job, if one is ready.
    pub fn try_done(&self) -> Option<Done> {
        // The task holds its own sender: the channel is never disconnected here.
        self.done.try_recv().ok()
    }

    /// The next finished job, waiting for it. Only for a job that was submitted: every
    /// submitted job produces exactly one result.
    pub fn wait_done(&self) -> Done {
        self.done
            .recv()
            .expect("the task holds its own result sender")
    }

    /// Ends the task: waits until its queued jobs have run, then drops the recorder (and its
    /// sandbox). Results not yet taken are lost; nothing may be submitted after.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let backend = {
            let mut state = lock(&self.shared.state);
            while state.scheduled {
                state = self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            state.runner.take()
        };
        drop(backend);
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
    use crate::sandbox::FaultKind;

    /// A backend that counts its calls and sleeps in each, or panics when told to.
    struct Counting {
        calls: Arc<std::sync::atomic::AtomicU64>,
        sleep: std::time::Duration,
        panic: bool,
    }

    impl RecorderBackend for Counting {
        fn handle(&mut self, _batch: &wit::EventBatch) -> Result<wit::RecorderOutput, Fault> {
            assert!(!self.panic, "a host bug");
            std::thread::sleep(self.sleep);
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(wit::RecorderOutput {
                telemetry: vec![wit::Telemetry {
                    telemetry_type: wit::TelemetryType::Event,
                    name: format!("call-{call}"),
                    message: String::new(),
                    fields: String::new(),
                }],
                metrics: Vec::new(),
            })
        }

        fn finish(&mut self) -> Result<wit::RecorderOutput, Fault> {
            Ok(wit::RecorderOutput {
                telemetry: Vec::new(),
                metrics: Vec::new(),
            })
        }
    }

    fn handle_job(time: f64) -> Job {
        Job::Handle {
            batch: crate::pipeline::route::BatchBuilder::empty_batch(),
            time,
            delivered: 1,
        }
    }

    #[test]
    fn a_thousand_tasks_run_on_the_pools_threads_in_order() {
        let pool = RecorderPool::new(3).unwrap();
        let tasks: Vec<RecorderTask> = (0..1_000)
            .map(|_| {
                pool.spawn(
                    Box::new(Counting {
                        calls: Arc::default(),
                        sleep: std::time::Duration::ZERO,
                        panic: false,
                    }),
                    Limits::default(),
                )
            })
            .collect();
        for round in 0..5 {
            for task in &tasks {
                task.submit(handle_job(f64::from(round)));
            }
        }
        for task in &tasks {
            for round in 0..5 {
                let done = task.wait_done();
                let Outcome::Items { items, .. } = done.outcome else {
                    panic!("not items")
                };
                assert_eq!(items.telemetry[0].name, format!("call-{round}"), "in order");
            }
        }
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn a_slow_task_holds_up_only_itself() {
        let pool = RecorderPool::new(2).unwrap();
        let slow_calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let slow = pool.spawn(
            Box::new(Counting {
                calls: slow_calls.clone(),
                sleep: std::time::Duration::from_millis(300),
                panic: false,
            }),
            Limits::default(),
        );
        let fast = pool.spawn(
            Box::new(Counting {
                calls: Arc::default(),
                sleep: std::time::Duration::ZERO,
                panic: false,
            }),
            Limits::default(),
        );
        slow.submit(handle_job(0.0));
        slow.submit(handle_job(1.0));
        for round in 0..50 {
            fast.submit(handle_job(f64::from(round)));
        }
        for _ in 0..50 {
            fast.wait_done();
        }
        assert_eq!(
            slow_calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the fast task's 50 calls all ran inside the slow task's first call"
        );
        slow.wait_done();
        slow.wait_done();
    }

    #[test]
    fn a_host_panic_in_a_call_is_that_recorders_fault() {
        let pool = RecorderPool::new(1).unwrap();
        let task = pool.spawn(
            Box::new(Counting {
                calls: Arc::default(),
                sleep: std::time::Duration::ZERO,
                panic: true,
            }),
            Limits::default(),
        );
        task.submit(handle_job(0.0));
        let Outcome::Fault { fault, .. } = task.wait_done().outcome else {
            panic!("not a fault")
        };
        assert_eq!(fault.kind, FaultKind::Trap);
        // The pool thread survived: the next job runs.
        task.submit(handle_job(10.0));
        assert!(matches!(task.wait_done().outcome, Outcome::Fault { .. }));
    }

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
