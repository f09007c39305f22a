//! The runner's state in named parts: each task's place in the run, the
//! phases and their ready tasks, the clock, the books, the lanes, what the
//! run stopped that is not yet gone, and what reaches it from outside.

use std::collections::BinaryHeap;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clock::Timers;
use super::lane::Lane;
use super::mailbox::Mailbox;
use super::record::{Head, Record};
use super::{EarlyRun, SnapshotRequest, Ticker};
use crate::report::{Interruption, TaskReport};

pub(super) enum State {
    Waiting,
    Running {
        attempt: u32,
        /// When its timeout runs out (`None`: never).
        due: Option<Instant>,
        stop: Option<Stopper>,
        token: Option<CancellationToken>,
        /// Timed out, its token cancelled: waiting out the grace.
        grace: bool,
    },
    /// Between a failed attempt and the next.
    Retrying {
        attempt: u32,
    },
    Finished,
}

/// How a running attempt is stopped.
pub(super) enum Stopper {
    /// An async attempt, handed to a lane (none for one started alone in
    /// its turn): dropped (see [`super::lane::LaneCell::stop`]).
    Lane(Option<Arc<Lane>>),
    /// A blocking attempt: abandoned (a thread cannot be stopped from
    /// outside), which lets its stand-in on the blocking pool go.
    Thread(mpsc::Sender<()>),
}

/// A task's place in the run.
pub(super) struct TaskRun {
    pub(super) state: State,
    pub(super) blocking: bool,
    pub(super) observes_token: bool,
    pub(super) span: tracing::Span,
    /// A scope's task: the scope, halted if the task is cut off.
    pub(super) scope: Option<crate::Compactor>,
}

pub(super) struct Phase {
    pub(super) unfinished: usize,
    /// Ready tasks; the latest registered (highest index) first.
    pub(super) ready: Ready,
    pub(super) budget: Option<Duration>,
}

/// A phase's ready tasks, the latest registered (highest index) first:
/// those ready from the start in a list in index order (most tasks of most
/// runs, taken from its end at no cost), those a finished task freed in a
/// heap.
#[derive(Default)]
pub(super) struct Ready {
    /// Ascending: pushed in index order as the run is set up.
    initial: Vec<u32>,
    freed: BinaryHeap<u32>,
}

impl Ready {
    /// A task ready as the run begins (called in index order).
    pub(super) fn push_initial(&mut self, index: u32) {
        debug_assert!(self.initial.last().is_none_or(|&last| last < index));
        self.initial.push(index);
    }

    /// A task a finished task freed.
    pub(super) fn push(&mut self, index: u32) {
        self.freed.push(index);
    }

    pub(super) fn pop(&mut self) -> Option<u32> {
        match (self.initial.last(), self.freed.peek()) {
            (Some(&a), Some(&b)) if b > a => self.freed.pop(),
            (Some(_), _) => self.initial.pop(),
            (None, _) => self.freed.pop(),
        }
    }
}

/// Why an attempt did not succeed.
pub(super) enum Failure {
    Error(crate::report::CleanupError),
    TimedOut(Interruption),
}

/// The run's time limits, and when the runner is next due.
pub(super) struct Clock {
    /// When the run began.
    pub(super) t0: Instant,
    pub(super) deadline: Option<Instant>,
    /// Where the final phase's time begins: the tasks before it are
    /// stopped then, so the final ones have theirs before the deadline
    /// (the final phase, and that moment).
    pub(super) finals: Option<(usize, Instant)>,
    /// The phase whose budget is counting, and when it runs out.
    pub(super) budget: Option<(usize, Option<Instant>)>,
    /// The attempts' timeouts, graces and backoffs.
    pub(super) timers: Timers,
    /// Shows the progress, and when it next does.
    pub(super) ticker: Option<(Ticker, Option<Instant>)>,
    /// When the parked runner's alarm is set for: an attempt booking its
    /// end that brings a limit sooner wakes it.
    pub(super) armed: Option<Instant>,
}

/// What the report is made of.
pub(super) struct Books {
    pub(super) head: Head,
    pub(super) record: Record,
    /// The tasks of the early runs the run waited for.
    pub(super) early_run_tasks: Vec<TaskReport>,
    /// How many of `early_run_tasks` are reports scopes left, not an early
    /// run's tasks (those come after).
    pub(super) left: usize,
    /// The running tasks' gauge (feature `metrics`).
    pub(super) running: crate::telemetry::Running,
}

/// The lanes attempts are handed to (see [`super::lane`]).
#[derive(Default)]
pub(super) struct Lanes {
    /// The lane being filled this turn.
    pub(super) open: Option<Arc<Lane>>,
    /// Whether this turn's first async attempt went out (on a task of its
    /// own: most turns start one, as a chain's do).
    pub(super) first_out: bool,
    /// The lanes not yet idle, looked at for a take-over: with the first
    /// poll under way at the last look, and the one it was last taken over
    /// at (see [`super::lane::key`]).
    pub(super) watched: Vec<(Arc<Lane>, u64, u64)>,
    /// When to look at them next.
    pub(super) check: Option<Instant>,
}

/// What the run stopped and waits for, at its end, to be gone.
#[derive(Default)]
pub(super) struct Stopped {
    /// Async attempts stopped (task index, attempt) whose future is not yet
    /// known to be gone: their end, sent as the future is dropped, says so.
    /// A set: at a deadline every running attempt may be in it.
    pub(super) attempts: std::collections::HashSet<(u32, u32), PairHash>,
    /// Cleanups left to the runner, being dropped on tasks of their own:
    /// (task index, the task dropping it).
    pub(super) disposing: Vec<super::finish::Disposal>,
    /// Finished tasks whose cleanup may still be there, to let go
    /// of at the end of the turn (see [`super::scheduler::Runner::dispose`]).
    pub(super) undisposed: Vec<u32>,
    /// Scopes whose task was cut off or skipped, halted: (task index, the
    /// scope), until their own report is out.
    pub(super) scopes: Vec<(u32, crate::Compactor)>,
    /// The tasks of attempts just stopped, to abort. At a deadline they
    /// are aborted once all are marked stopped, before any is booked:
    /// aborting as it went, the runner met, at each next task's state, the
    /// workers dropping the ones before (100,000 attempts stopped at a
    /// deadline: the report 54 ms late against 84, in turns, one noisy
    /// sitting).
    pub(super) aborting: Vec<tokio::task::AbortHandle>,
}

/// A hasher for the run's own pairs of numbers (task, attempt): a multiply
/// and a rotate each, where the default is keyed against untrusted keys.
pub(super) type PairHash = std::hash::BuildHasherDefault<Mix>;

#[derive(Default)]
pub(super) struct Mix(u64);

impl std::hash::Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.write_u32(u32::from(b)));
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(29) ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// What reaches the run from outside it.
pub(super) struct Outside {
    /// Requests for the report so far; the whole shutdown serves them.
    pub(super) snapshots: Option<Arc<Mailbox<SnapshotRequest>>>,
    /// Ends the run as its deadline would (a category's early run, when the
    /// instance's shutdown runs out of time).
    pub(super) halt: Option<CancellationToken>,
    /// Set to end the run at once, its unstarted tasks skipped as halted
    /// (a scope, when its parent cuts its task off); the setter nudges the
    /// mailbox.
    pub(super) halted_flag: Option<Arc<std::sync::atomic::AtomicU8>>,
    pub(super) services: Option<Arc<super::live::LiveServices>>,
    /// Early runs under way when the run began: waited for, and
    /// their tasks added to the report.
    pub(super) early_runs: Vec<EarlyRun>,
}
