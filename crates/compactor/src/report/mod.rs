//! What a shutdown did: the [`ShutdownReport`], one [`TaskReport`] per
//! task, the [`Outcome`] of each, and a summary per category.

use std::sync::Arc;
use std::time::Duration;

mod failure;
mod freed;
mod reason;
mod table;
mod task;

pub use failure::CleanupError;
pub use freed::Freed;
pub use reason::{GraphWarning, ShutdownReason};
pub use task::{Interruption, Outcome, SkipReason, TaskReport};

pub(crate) use table::{Millis, NAME_WIDTH, links, name_column, padded, shown};
#[cfg(feature = "serde")]
pub(crate) use task::optional_millis;

use crate::priority::Category;
use crate::signal::SignalExit;

/// A task that did not end clean, with its path in the tree: from
/// [`ShutdownReport::failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Failure {
    path: String,
    names: Vec<String>,
    outcome: Outcome,
    interruption: Option<Interruption>,
}

impl Failure {
    /// The scopes' names and the task's, `/`-separated (`subsys/nested`).
    /// A name holding a `/` makes it ambiguous: [`names`](Self::names) is not.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The scopes' names and the task's, outermost first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How the task ended; a failure keeps its causes ([`CleanupError::chain`]).
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// How it was stopped, if it was.
    pub fn interruption(&self) -> Option<Interruption> {
        self.interruption
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.outcome)
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
    freed: Freed,
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

    /// What its tasks said they freed, added up.
    pub fn freed(&self) -> Freed {
        self.freed
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
    runtime_tasks: Option<usize>,
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
///
/// A `main` that waits for the report returns it, or its
/// [`exit_code`](ShutdownReport::exit_code): an unclean run then never
/// exits 0 by accident (the report is `#[must_use]`, and a
/// [`Termination`](std::process::Termination)).
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> compactor::ShutdownReport {
///     let c = compactor::Compactor::global();
///     c.register("flush", || async {}).unwrap();
///     c.wait().await // exits with 0, 128 + n after signal n, or 1
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the report says whether the shutdown was clean: return it (or its `exit_code()`) from `main`"]
pub struct ShutdownReport(Arc<ReportData>);

/// The process exits with [`ShutdownReport::exit_code`]; a report that is
/// not [clean](ShutdownReport::is_clean), or whose run a failure started
/// (a failed service, a panic), is written to stderr first, as `main`'s
/// `Err` is, so the reason of the exit code is never lost.
impl std::process::Termination for ShutdownReport {
    fn report(self) -> std::process::ExitCode {
        let failure = matches!(
            self.reason(),
            ShutdownReason::ServiceFailed(_) | ShutdownReason::Panic(_)
        );
        if !self.is_clean() || failure {
            eprintln!("{self}");
        }
        std::process::ExitCode::from(self.exit_code())
    }
}

impl ShutdownReport {
    pub(crate) fn new(
        reason: ShutdownReason,
        complete: bool,
        duration: Duration,
        warnings: Vec<GraphWarning>,
        tasks: Vec<TaskReport>,
        policy: SignalExit,
        runtime_tasks: Option<usize>,
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
            runtime_tasks,
        }))
    }

    /// The exit code the process should end with, by what started the
    /// shutdown and how it went:
    ///
    /// | started by | exit code |
    /// |---|---|
    /// | a signal | 128 + its number (130 for `SIGINT`, 143 for `SIGTERM`); 0 after a clean run with [`SignalExit::ZeroIfClean`] |
    /// | a panic ([`Builder::shutdown_on_panic`](crate::Builder::shutdown_on_panic)) | 101, as a panicking `main` |
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

    /// For a task skipped when the time ran out: the chain of tasks it was
    /// waiting on, from the one it waited for to the first that had begun
    /// (the task that held the rest up). Empty for a task that waited for
    /// nothing, or is not in the report.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use compactor::Compactor;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// let c = Compactor::builder().deadline(Duration::from_secs(1)).build();
    /// let db = c.register("db-pool", || async {})?;
    /// let cache = c.task("cache").depends_on(&db).register(|| async {})?;
    /// c.task("http").depends_on(&cache).register(std::future::pending::<()>)?;
    /// let report = c.shutdown().await;
    /// assert_eq!(report.blocked_chain("db-pool"), ["cache", "http"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn blocked_chain(&self, task: &str) -> Vec<&str> {
        let by_name: std::collections::HashMap<&str, &TaskReport> =
            self.0.tasks.iter().map(|t| (t.name(), t)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut chain: Vec<&str> = Vec::new();
        let mut at = by_name.get(task).copied();
        while let Some(next) = at.and_then(TaskReport::waited_for) {
            if !seen.insert(next) {
                break;
            }
            chain.push(next);
            at = by_name
                .get(next)
                .copied()
                .filter(|t| t.started_at().is_none());
        }
        chain
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

    /// What outlived the run, as far as it knows: how many tokio tasks
    /// were alive on the runtime that made the report, as it was made
    /// (tokio's count: the application's own tasks, and the run's when the
    /// run had a task of its own; `None` for a report made outside a
    /// runtime, and for the report so far a cleanup gets from `shutdown()`
    /// on its own instance). Compare it with the count before the shutdown to see work
    /// nobody tracked.
    pub fn runtime_tasks(&self) -> Option<usize> {
        self.0.runtime_tasks
    }

    /// The tasks left running when the report was made, anywhere in the
    /// tree, with their paths: blocking cleanups abandoned on their
    /// threads, and async ones whose code held its thread past its cut-off
    /// ([`Interruption::Abandoned`]). One that returned before the report
    /// is not among them (it [overran](Interruption::Overran)).
    pub fn abandoned(&self) -> Vec<Failure> {
        self.walk(&|t| t.interruption == Some(Interruption::Abandoned))
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
                freed: Freed::default(),
            });
            sum.freed += t.freed.unwrap_or_default();
            sum.tasks += 1;
            sum.clean += usize::from(t.outcome.is_clean());
            sum.time += t.duration();
        }
        sums.into_values().collect()
    }

    /// What every task said it freed, added up (see [`Freed`]).
    pub fn freed(&self) -> Freed {
        self.tasks().iter().filter_map(TaskReport::freed).sum()
    }

    /// Every task that did not end clean, anywhere in the tree: a scope's
    /// task stands for the failures inside it (see [`TaskReport::scope`]),
    /// each named by its path (`subsys/nested`), outermost scope first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// let app = compactor::Compactor::new();
    /// let subsys = app.task("subsys").scope()?;
    /// subsys.register("flush", || async { Err::<(), _>("disk full") })?;
    /// let report = app.shutdown().await;
    /// let failures = report.failures();
    /// assert_eq!(failures[0].path(), "subsys/flush");
    /// assert_eq!(failures[0].outcome().to_string(), "failed: disk full");
    /// # Ok(())
    /// # }
    /// ```
    pub fn failures(&self) -> Vec<Failure> {
        self.walk(&|t| !t.outcome.is_clean())
    }

    /// The tasks `pick` chooses, anywhere in the tree, with their paths: a
    /// scope's task stands for those chosen inside it.
    fn walk(&self, pick: &dyn Fn(&TaskReport) -> bool) -> Vec<Failure> {
        fn collect(
            report: &ShutdownReport,
            pick: &dyn Fn(&TaskReport) -> bool,
            above: &mut Vec<String>,
            out: &mut Vec<Failure>,
        ) {
            for t in report.tasks() {
                let inside = t.scope().filter(|_| !t.outcome.is_clean());
                if !pick(t) && inside.is_none() {
                    continue;
                }
                above.push(t.name.to_string());
                let before = out.len();
                if let Some(scope) = inside {
                    collect(scope, pick, above, out);
                }
                if out.len() == before && pick(t) {
                    out.push(Failure {
                        path: above.join("/"),
                        names: above.clone(),
                        outcome: t.outcome.clone(),
                        interruption: t.interruption,
                    });
                }
                above.pop();
            }
        }
        let mut out = Vec::new();
        collect(self, pick, &mut Vec::new(), &mut out);
        out
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
        let mut s = serializer.serialize_struct("ShutdownReport", 11)?;
        s.serialize_field("reason", &self.0.reason)?;
        s.serialize_field("complete", &self.0.complete)?;
        s.serialize_field("clean", &self.is_clean())?;
        s.serialize_field("exit_code", &self.0.exit_code)?;
        s.serialize_field("duration_ms", &(self.0.duration.as_secs_f64() * 1e3))?;
        s.serialize_field("warnings", &self.0.warnings)?;
        s.serialize_field("tasks", &self.0.tasks)?;
        s.serialize_field("failures", &self.failures())?;
        s.serialize_field("by_category", &self.by_category())?;
        s.serialize_field("freed", &self.freed())?;
        let abandoned: Vec<String> = self.abandoned().into_iter().map(|f| f.path).collect();
        s.serialize_field(
            "outlived",
            &json::Outlived {
                runtime_tasks: self.0.runtime_tasks,
                abandoned,
            },
        )?;
        s.end()
    }
}

#[cfg(feature = "serde")]
mod json {
    /// What outlived the run, as the JSON has it.
    #[derive(serde::Serialize)]
    pub(super) struct Outlived {
        pub(super) runtime_tasks: Option<usize>,
        pub(super) abandoned: Vec<String>,
    }
}

#[cfg(feature = "serde")]
pub(crate) fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
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
