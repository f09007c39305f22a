use std::sync::Arc;
use std::time::Duration;

use crate::report::ShutdownReason;
use crate::{Outcome, ShutdownReport};

/// A state change of a shutdown, broadcast to every
/// [`subscribe`](crate::Compactor::subscribe)r.
///
/// Per task, the events arrive in order: `TaskStarted` (once per attempt),
/// `TaskRetrying` between attempts, and exactly one `TaskFinished`, also for
/// tasks that never started. `ShutdownStarted` comes first and
/// `ShutdownFinished` last. A subscriber that falls more than the channel's
/// capacity (4096 events) behind
/// misses the oldest events and is told so by `RecvError::Lagged`; the
/// shutdown itself never waits for subscribers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The run began; the shutdown token has fired and registration is closed.
    #[non_exhaustive]
    ShutdownStarted {
        /// What started it.
        reason: ShutdownReason,
        /// How many tasks the run will account for.
        tasks: usize,
    },
    /// An attempt of a task started.
    #[non_exhaustive]
    TaskStarted {
        /// The task.
        name: Arc<str>,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// An attempt failed or timed out, and another follows after `delay`.
    #[non_exhaustive]
    TaskRetrying {
        /// The task.
        name: Arc<str>,
        /// The attempt that failed.
        attempt: u32,
        /// The backoff before the next attempt.
        delay: Duration,
        /// What went wrong.
        error: String,
    },
    /// A [restartable](crate::TaskBuilder::restartable) service failed
    /// before any shutdown and is restarted after `delay`.
    #[non_exhaustive]
    ServiceRestarting {
        /// The service's path (`scope/name`).
        name: Arc<str>,
        /// Which restart this is (1 for the first).
        restart: u32,
        /// The backoff before it.
        delay: Duration,
        /// How it failed.
        error: String,
    },
    /// A weakly registered value was still alive after its cleanup: someone
    /// else holds it, possibly a leak. Comes before the task's `TaskFinished`.
    #[non_exhaustive]
    LeakSuspected {
        /// The task.
        name: Arc<str>,
        /// The strong references left.
        strong_count: usize,
    },
    /// A task reached its final outcome (once per task).
    #[non_exhaustive]
    TaskFinished {
        /// The task.
        name: Arc<str>,
        /// How it ended.
        outcome: Outcome,
        /// How many attempts it took.
        attempts: u32,
        /// From its first attempt to its end; zero if it never started.
        elapsed: Duration,
    },
    /// The run is over; the report is the one every caller gets.
    #[non_exhaustive]
    ShutdownFinished {
        /// The report of the run.
        report: ShutdownReport,
    },
}
