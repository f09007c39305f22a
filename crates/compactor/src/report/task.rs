//! One task's record in the report: how it ended, its attempts and times.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::priority::{Category, PackedPriority, Priority};

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", content = "detail", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Outcome {
    /// The cleanup returned `()` or `Ok(())`.
    Succeeded,
    /// The last attempt returned an error (its text).
    Failed(String),
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
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Deadline => "shutdown deadline passed",
            SkipReason::PhaseBudget => "phase budget ran out",
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
    /// A blocking cleanup: its thread was left running.
    Abandoned,
}

/// The record of one task in a [`ShutdownReport`](super::ShutdownReport).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TaskReport {
    pub(crate) name: Arc<str>,
    pub(crate) outcome: Outcome,
    pub(crate) attempts: u32,
    pub(crate) priority: PackedPriority,
    pub(crate) effective_priority: PackedPriority,
    pub(crate) category: Category,
    #[cfg_attr(feature = "serde", serde(rename = "started_at_ms"))]
    pub(crate) started_at: Nanos<true>,
    #[cfg_attr(feature = "serde", serde(rename = "duration_ms"))]
    pub(crate) duration: Nanos<false>,
    pub(crate) interruption: Option<Interruption>,
    pub(crate) leaked: Option<NonZeroUsize>,
}

impl TaskReport {
    /// The entry with its start moved `by` later (a task of another run,
    /// reported in this one).
    pub(crate) fn shifted(&self, by: Duration) -> TaskReport {
        let mut entry = self.clone();
        if let Some(at) = entry.started_at.get() {
            entry.started_at = Nanos::new(at.saturating_add(by));
        }
        entry
    }
}

// A report holds one entry per task, written into fresh memory as the run
// goes (each page faulted in): the entry keeps its priorities and times in
// compact form, 112 bytes rather than 144, and the accessors convert.

/// A span of time in nanoseconds (8 bytes, where a `Duration` takes 16),
/// up to 584 years; `OPTIONAL` ones keep `u64::MAX` for "none".
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nanos<const OPTIONAL: bool>(u64);

impl<const OPTIONAL: bool> Nanos<OPTIONAL> {
    pub(crate) const ZERO: Nanos<OPTIONAL> = Nanos(0);

    pub(crate) fn new(span: Duration) -> Nanos<OPTIONAL> {
        Nanos(u64::try_from(span.as_nanos()).map_or(u64::MAX - 1, |n| n.min(u64::MAX - 1)))
    }

    fn value(self) -> Option<Duration> {
        (self.0 != u64::MAX).then(|| Duration::from_nanos(self.0))
    }
}

impl Nanos<true> {
    pub(crate) const NONE: Nanos<true> = Nanos(u64::MAX);

    pub(crate) fn get(self) -> Option<Duration> {
        self.value()
    }
}

impl Nanos<false> {
    pub(crate) fn get(self) -> Duration {
        self.value().unwrap_or_default()
    }
}

impl fmt::Debug for Nanos<true> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl fmt::Debug for Nanos<false> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(feature = "serde")]
impl<const OPTIONAL: bool> serde::Serialize for Nanos<OPTIONAL> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value() {
            Some(span) => super::millis(&span, s),
            None => s.serialize_none(),
        }
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
        self.priority.get()
    }

    /// The phase it ran in: its own priority raised to that of any task it had
    /// to precede.
    pub fn effective_priority(&self) -> Priority {
        self.effective_priority.get()
    }

    /// The kind of resource.
    pub fn category(&self) -> &Category {
        &self.category
    }

    /// When its first attempt started, from the start of the run; `None` if it
    /// never started.
    pub fn started_at(&self) -> Option<Duration> {
        self.started_at.get()
    }

    /// From its first attempt's start to its end (retries and backoff included).
    pub fn duration(&self) -> Duration {
        self.duration.get()
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
}
