use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::priority::PackedPriority;

mod table;
use crate::priority::{Category, Priority};
use crate::signal::{Signal, SignalExit};

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

    fn label(&self) -> &'static str {
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

/// What started a shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ShutdownReason {
    /// [`Compactor::shutdown`](crate::Compactor::shutdown) or
    /// [`Compactor::trigger`](crate::Compactor::trigger).
    Manual,
    /// A process signal (see [`Compactor::listen_for_signals`](crate::Compactor::listen_for_signals)).
    Signal(Signal),
    /// A panic, with the hook of [`Compactor::shutdown_on_panic`](crate::Compactor::shutdown_on_panic):
    /// the thread and the panic message.
    Panic(String),
    /// The application asked for it, with [`Compactor::request_shutdown`](crate::Compactor::request_shutdown).
    Requested(String),
    /// The service given to [`Compactor::run_until_shutdown`](crate::Compactor::run_until_shutdown)
    /// ended by itself.
    ServiceEnded,
    /// That service ended with an error (its text).
    ServiceFailed(String),
    /// Not a shutdown: one category released early with
    /// [`Compactor::shutdown_category`](crate::Compactor::shutdown_category).
    Category(Category),
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Manual => f.write_str("manual"),
            ShutdownReason::Signal(signal) => write!(f, "{signal}"),
            ShutdownReason::Panic(message) => write!(f, "panic: {message}"),
            ShutdownReason::Requested(why) => write!(f, "requested: {why}"),
            ShutdownReason::ServiceEnded => f.write_str("service ended"),
            ShutdownReason::ServiceFailed(error) => write!(f, "service failed: {error}"),
            ShutdownReason::Category(category) => write!(f, "category {category}"),
        }
    }
}

/// Something about the dependency graph that the run had to work around.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum GraphWarning {
    /// A dependency by name that no task had at shutdown; it was ignored.
    UnknownDependency {
        /// The task that declared the dependency.
        task: String,
        /// The name no task had.
        dependency: String,
    },
    /// A cycle that could not be refused at registration (tasks registered
    /// concurrently with name dependencies on each other). The dependency
    /// declared by the latest-registered task on the cycle was dropped.
    CycleBroken {
        /// The cycle, first task repeated at the end.
        path: Vec<String>,
        /// The dependency that was dropped: `(task, dependency)`.
        dropped: (String, String),
    },
}

impl fmt::Display for GraphWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphWarning::UnknownDependency { task, dependency } => {
                write!(
                    f,
                    "task `{task}` depends on `{dependency}`, which was never registered; dependency ignored"
                )
            }
            GraphWarning::CycleBroken { path, dropped } => write!(
                f,
                "dependency cycle {}; dropped `{}` -> `{}`",
                path.join(" -> "),
                dropped.0,
                dropped.1
            ),
        }
    }
}

/// The record of one task in a [`ShutdownReport`].
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
            Some(span) => millis(&span, s),
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

/// The outcomes and time of one category of tasks in a [`ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CategorySummary {
    category: Category,
    tasks: usize,
    clean: usize,
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "millis", rename = "time_ms")
    )]
    time: Duration,
}

impl CategorySummary {
    /// The category.
    pub fn category(&self) -> &Category {
        &self.category
    }

    /// How many tasks it had.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// How many of them ended clean (succeeded or released).
    pub fn clean(&self) -> usize {
        self.clean
    }

    /// How many did not.
    pub fn not_clean(&self) -> usize {
        self.tasks - self.clean
    }

    /// Their durations added up (they may have overlapped).
    pub fn time(&self) -> Duration {
        self.time
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ReportData {
    reason: ShutdownReason,
    complete: bool,
    exit_code: u8,
    duration: Duration,
    warnings: Vec<GraphWarning>,
    tasks: Vec<TaskReport>,
}

/// What a shutdown did: every registered task exactly once, in the order the
/// tasks started (those that never started last).
///
/// Cheap to clone (the data is shared). `Display` renders a table; with the
/// `serde` feature it serializes to JSON.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let c = compactor::Compactor::new();
/// c.register("flush", || async {}).unwrap();
/// let report = c.shutdown().await;
/// assert!(report.is_clean());
/// assert_eq!(report.tasks()[0].name(), "flush");
/// println!("{report}");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport(Arc<ReportData>);

impl ShutdownReport {
    pub(crate) fn new(
        reason: ShutdownReason,
        complete: bool,
        duration: Duration,
        warnings: Vec<GraphWarning>,
        tasks: Vec<TaskReport>,
        policy: SignalExit,
    ) -> Self {
        let clean = complete && tasks.iter().all(|t| t.outcome.is_clean());
        let exit_code = exit_code(&reason, clean, policy);
        ShutdownReport(Arc::new(ReportData {
            reason,
            complete,
            exit_code,
            duration,
            warnings,
            tasks,
        }))
    }

    /// The exit code the process should end with, by what started the
    /// shutdown and how it went:
    ///
    /// | started by | exit code |
    /// |---|---|
    /// | a signal | 128 + its number (130 for `SIGINT`, 143 for `SIGTERM`); 0 after a clean run with [`SignalExit::ZeroIfClean`](crate::SignalExit::ZeroIfClean) |
    /// | a panic ([`Compactor::shutdown_on_panic`](crate::Compactor::shutdown_on_panic)) | 101, as a panicking `main` |
    /// | a failed service ([`Compactor::run_until_shutdown`](crate::Compactor::run_until_shutdown)) | 1 |
    /// | anything else | 0 if the report [is clean](Self::is_clean), 1 otherwise |
    pub fn exit_code(&self) -> u8 {
        self.0.exit_code
    }

    /// Every registered task, exactly once.
    pub fn tasks(&self) -> &[TaskReport] {
        &self.0.tasks
    }

    /// The record of the task with this name.
    pub fn task(&self, name: &str) -> Option<&TaskReport> {
        self.0.tasks.iter().find(|t| t.name() == name)
    }

    /// Nothing failed, timed out, panicked, was skipped or cancelled.
    pub fn is_clean(&self) -> bool {
        self.0.complete && self.0.tasks.iter().all(|t| t.outcome.is_clean())
    }

    /// `false` only for the in-progress report a cleanup gets when it calls
    /// `shutdown()` on its own instance.
    pub fn is_complete(&self) -> bool {
        self.0.complete
    }

    /// From the start of the run to the report.
    pub fn duration(&self) -> Duration {
        self.0.duration
    }

    /// What started the shutdown.
    pub fn reason(&self) -> &ShutdownReason {
        &self.0.reason
    }

    /// Dependencies the run had to ignore or break.
    pub fn warnings(&self) -> &[GraphWarning] {
        &self.0.warnings
    }

    /// Weak registrations whose value outlived its cleanup.
    pub fn leaks(&self) -> impl Iterator<Item = &TaskReport> {
        self.0.tasks.iter().filter(|t| t.leaked.is_some())
    }

    /// Outcomes and time summed by category, in category order.
    pub fn by_category(&self) -> Vec<CategorySummary> {
        let mut sums: std::collections::BTreeMap<&Category, CategorySummary> = Default::default();
        for t in self.tasks() {
            let sum = sums.entry(&t.category).or_insert_with(|| CategorySummary {
                category: t.category.clone(),
                tasks: 0,
                clean: 0,
                time: Duration::ZERO,
            });
            sum.tasks += 1;
            sum.clean += usize::from(t.outcome.is_clean());
            sum.time += t.duration();
        }
        sums.into_values().collect()
    }

    /// How many tasks ended with an outcome of this kind (the payload of
    /// `Failed`, `Panicked` and `Skipped` is ignored).
    pub fn count(&self, outcome: &Outcome) -> usize {
        let kind = std::mem::discriminant(outcome);
        self.0
            .tasks
            .iter()
            .filter(|t| std::mem::discriminant(&t.outcome) == kind)
            .count()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for ShutdownReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("ShutdownReport", 8)?;
        s.serialize_field("reason", &self.0.reason)?;
        s.serialize_field("complete", &self.0.complete)?;
        s.serialize_field("clean", &self.is_clean())?;
        s.serialize_field("exit_code", &self.0.exit_code)?;
        s.serialize_field("duration_ms", &(self.0.duration.as_secs_f64() * 1e3))?;
        s.serialize_field("warnings", &self.0.warnings)?;
        s.serialize_field("tasks", &self.0.tasks)?;
        s.serialize_field("by_category", &self.by_category())?;
        s.end()
    }
}

#[cfg(feature = "serde")]
fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// The exit code for a run that ended this way.
pub(crate) fn exit_code(reason: &ShutdownReason, clean: bool, policy: SignalExit) -> u8 {
    match reason {
        ShutdownReason::Signal(_) if clean && policy == SignalExit::ZeroIfClean => 0,
        ShutdownReason::Signal(signal) => signal.exit_code(),
        ShutdownReason::Panic(_) => 101,
        ShutdownReason::ServiceFailed(_) => 1,
        _ if clean => 0,
        _ => 1,
    }
}
