//! One task's record in the report: how it ended, its attempts and times.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::{CleanupError, Freed};
use crate::priority::{Category, Priority};

/// How a task ended.
///
/// As JSON (feature `serde`): `{"kind": "failed", "detail": "a: b"}`, with
/// `"causes": ["a", "b"]` for an error with sources; `{"kind":
/// "succeeded"}` for the outcomes without a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The cleanup returned `()` or `Ok(())`.
    Succeeded,
    /// The last attempt returned an error, kept with its causes.
    Failed(CleanupError),
    /// The last attempt ran out of its per-attempt timeout. See
    /// [`TaskReport::interruption`] for how it was stopped.
    TimedOut,
    /// The cleanup panicked (the panic message).
    Panicked(String),
    /// A weakly held value was already dropped: nothing to clean up, the
    /// closure was not called.
    Released,
    /// The task never started.
    Skipped(SkipReason),
    /// The task was running when the shutdown deadline or its phase budget
    /// ran out, and was stopped.
    Cancelled,
    /// The task has not finished yet. Only in the report a cleanup gets when
    /// it calls `shutdown()` on its own instance (see
    /// [`Compactor::shutdown`](crate::Compactor::shutdown)).
    Pending,
}

impl Outcome {
    /// Whether this outcome leaves the report clean (`Succeeded` or `Released`).
    pub fn is_clean(&self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Released)
    }

    /// The outcome's kind as a metric's attribute and the JSON write it
    /// (`timed_out`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Outcome::TimedOut => "timed_out",
            other => other.label(),
        }
    }

    pub(super) fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Panicked(_) => "panicked",
            Outcome::Released => "released",
            Outcome::Skipped(_) => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Pending => "pending",
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        match self {
            Outcome::Failed(error) => {
                map.serialize_entry("detail", error.as_str())?;
                if error.chain().count() > 1 {
                    map.serialize_entry("causes", &error.chain().collect::<Vec<_>>())?;
                }
            }
            Outcome::Panicked(message) => map.serialize_entry("detail", message)?,
            Outcome::Skipped(reason) => map.serialize_entry("detail", reason)?,
            _ => {}
        }
        map.end()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::Panicked(m) => write!(f, "panicked: {m}"),
            Outcome::Skipped(r) => write!(f, "skipped: {r}"),
            other => f.write_str(other.label()),
        }
    }
}

/// Why a task never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum SkipReason {
    /// The whole-shutdown deadline passed first.
    Deadline,
    /// The budget of its priority phase ran out first.
    PhaseBudget,
    /// Its instance is a scope whose task its parent cut off or skipped.
    Halted,
    /// Its instance was [aborted](crate::Compactor::abort).
    Aborted,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Deadline => "shutdown deadline passed",
            SkipReason::PhaseBudget => "phase budget ran out",
            SkipReason::Halted => "its scope was cut off by its parent",
            SkipReason::Aborted => "aborted",
        })
    }
}

/// How a task that ran out of time was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Interruption {
    /// Its cancellation token fired and it returned within the grace period.
    Stopped,
    /// Its future was dropped (it ignored its token, or had none).
    Dropped,
    /// Left running: a blocking cleanup's thread, or an async cleanup whose
    /// future was not gone by the report (its code held its thread).
    Abandoned,
    /// It returned only after its time ran out (its timeout, the deadline),
    /// before the runner could stop it, typically because its code held
    /// the thread the time limits are kept on (a current-thread runtime's):
    /// what it returned does not count, and no retry follows.
    Overran,
    /// Its future was dropped, and the child process it owned was killed
    /// (`SIGKILL`) and reaped: how that process ended. A child not reaped
    /// by the report leaves its task [`Abandoned`](Interruption::Abandoned).
    Killed {
        /// The child's process id.
        pid: Option<u32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that ended it (9 for the kill), if one did.
        signal: Option<i32>,
    },
}

impl Interruption {
    /// A killed child's end, from its exit status.
    pub(crate) fn killed(pid: Option<u32>, status: std::process::ExitStatus) -> Interruption {
        #[cfg(unix)]
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        #[cfg(not(unix))]
        let signal = None;
        Interruption::Killed {
            pid,
            code: status.code(),
            signal,
        }
    }
}

/// The record of one task in a [`ShutdownReport`](super::ShutdownReport).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TaskReport {
    pub(crate) name: Arc<str>,
    pub(crate) outcome: Outcome,
    pub(crate) attempts: u32,
    pub(crate) priority: Priority,
    pub(crate) effective_priority: Priority,
    pub(crate) category: Category,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "started_at_ms", serialize_with = "optional_millis")
    )]
    pub(crate) started_at: Option<Duration>,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "duration_ms", serialize_with = "super::millis")
    )]
    pub(crate) duration: Duration,
    pub(crate) interruption: Option<Interruption>,
    pub(crate) leaked: Option<NonZeroUsize>,
    pub(crate) freed: Option<Freed>,
    pub(crate) waited_for: Option<Arc<str>>,
    /// For a scope's task that did not end clean: the scope's report.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub(crate) scope: Option<super::ShutdownReport>,
}

impl TaskReport {
    /// The entry of a task that has not run: `outcome` (pending, or what
    /// stands for it), no attempt, no time.
    pub(crate) fn unrun(
        name: Arc<str>,
        outcome: Outcome,
        priority: Priority,
        effective_priority: Priority,
        category: Category,
    ) -> TaskReport {
        TaskReport {
            name,
            outcome,
            attempts: 0,
            priority,
            effective_priority,
            category,
            started_at: None,
            duration: Duration::ZERO,
            interruption: None,
            leaked: None,
            freed: None,
            waited_for: None,
            scope: None,
        }
    }

    /// The entry with its start moved `by` later (a task of another run,
    /// reported in this one).
    pub(crate) fn shifted(&self, by: Duration) -> TaskReport {
        let mut entry = self.clone();
        if let Some(at) = entry.started_at {
            entry.started_at = Some(at.saturating_add(by));
        }
        entry
    }
}

impl TaskReport {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it ended.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// How many times the cleanup was called; 0 when it never ran
    /// (skipped, or released before its first attempt).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The priority it was registered with.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The phase it ran in: its own priority raised to that of any task it had
    /// to precede.
    pub fn effective_priority(&self) -> Priority {
        self.effective_priority
    }

    /// The kind of resource.
    pub fn category(&self) -> &Category {
        &self.category
    }

    /// When its first attempt started, from the start of the run; `None` if it
    /// never started.
    pub fn started_at(&self) -> Option<Duration> {
        self.started_at
    }

    /// From its first attempt's start to its end (retries and backoff included).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// For a task stopped from outside (timeout, deadline, phase budget): how.
    pub fn interruption(&self) -> Option<Interruption> {
        self.interruption
    }

    /// For a weak registration whose value was still alive after its cleanup:
    /// the number of strong references left (a possible leak).
    pub fn leaked(&self) -> Option<usize> {
        self.leaked.map(NonZeroUsize::get)
    }

    /// What its cleanup said it freed (see [`Freed`]); `None` when it
    /// returned `()`, failed, or never ran.
    pub fn freed(&self) -> Option<Freed> {
        self.freed
    }

    /// For a scope's task that did not end clean (failed, timed out,
    /// cancelled): the scope's own report, whose failures
    /// [`ShutdownReport::failures`](super::ShutdownReport::failures) lists
    /// with their paths. `None` for any other task, or a scope whose report
    /// was not out by this one.
    pub fn scope(&self) -> Option<&super::ShutdownReport> {
        self.scope.as_ref()
    }

    /// For a task skipped because the deadline or its phase budget ran out:
    /// the unfinished task it was waiting for then (one it depends on, or,
    /// before its phase began, a task of the phase under way).
    /// [`ShutdownReport::blocked_chain`](super::ShutdownReport::blocked_chain)
    /// follows these to the task that held it up.
    pub fn waited_for(&self) -> Option<&str> {
        self.waited_for.as_deref()
    }
}

#[cfg(feature = "serde")]
pub(crate) fn optional_millis<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => super::millis(d, s),
        None => s.serialize_none(),
    }
}
