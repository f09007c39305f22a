//! Cleanup checked by the tests themselves: a per-test instance whose
//! shutdown runs when the test ends and fails the test, with the report, if
//! any cleanup failed, timed out, panicked, was skipped or leaked.
//!
//! ```
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a `#[tokio::test]`:
//! let c = compactor::testing::instance();
//! let pool = Arc::new("a connection pool");
//! c.task("pool").register_weak(&pool, |_pool| async { /* close it */ }).unwrap();
//! drop(pool); // forget this, and the test fails: the pool would leak
//! c.finish().await; // runs the cleanup; panics with the report if it went wrong
//! # }
//! ```
//!
//! Call [`TestCompactor::finish`] at the end of the test. If the test
//! returns without it, dropping the instance runs the shutdown on a runtime
//! of its own thread and checks it the same way (skipped when the test is
//! already panicking). That fallback suits cleanups that close things; one
//! that awaits I/O created on the test's runtime should rather be finished
//! explicitly.

use std::ops::Deref;
use std::time::Duration;

use crate::{Builder, Compactor, ShutdownReport};

/// A [`Compactor`] for one test; dereferences to it.
#[derive(Debug)]
#[must_use = "the checks run when the instance is finished or dropped at the end of the test"]
pub struct TestCompactor {
    compactor: Option<Compactor>,
}

/// A test instance with a 10 s deadline and a 5 s default timeout, so a
/// hanging cleanup fails the test instead of hanging it.
pub fn instance() -> TestCompactor {
    with_builder(
        Compactor::builder()
            .deadline(Duration::from_secs(10))
            .default_timeout(Duration::from_secs(5)),
    )
}

/// A test instance with these settings.
///
/// # Panics
///
/// If a setting is invalid, as [`Builder::build`].
pub fn with_builder(builder: Builder) -> TestCompactor {
    TestCompactor {
        compactor: Some(builder.auto_listen(false).build()),
    }
}

impl TestCompactor {
    /// Runs the shutdown and returns its report.
    ///
    /// # Panics
    ///
    /// With the report, if it is not clean or flags a possible leak.
    pub async fn finish(mut self) -> ShutdownReport {
        let compactor = self.compactor.take().expect("finished once");
        let report = compactor.shutdown().await;
        check(&report);
        report
    }
}

impl Deref for TestCompactor {
    type Target = Compactor;

    fn deref(&self) -> &Compactor {
        self.compactor.as_ref().expect("not finished yet")
    }
}

impl Drop for TestCompactor {
    fn drop(&mut self) {
        let Some(compactor) = self.compactor.take() else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        // The test's runtime may be a single thread, blocked right here.
        let report = compactor.shutdown_blocking();
        check(&report);
    }
}

fn check(report: &ShutdownReport) {
    let leaks = report.leaks().count();
    if !report.is_clean() || leaks > 0 {
        panic!(
            "the cleanup at the end of the test did not go well ({} not clean, {leaks} possible leak(s)):\n{report}",
            report
                .tasks()
                .iter()
                .filter(|t| !t.outcome().is_clean())
                .count()
        );
    }
}

/// Fails the test when the shutdown `compactor` would run now, plus the
/// [exit grace](crate::Builder::exit_grace) the process may take to end
/// after it, could take longer than `grace`, the time a supervisor waits before it kills the
/// process (Kubernetes' `terminationGracePeriodSeconds`, 30 s by default;
/// systemd's `TimeoutStopSec`, 90 s by default). The message names the
/// tasks on the critical path, with their worst cases, and what to change.
///
/// The worst case is that of [`ShutdownPlan::worst_case`](crate::inspect::ShutdownPlan::worst_case):
/// at most the deadline. Where the tasks' own limits add up to more than the
/// deadline, the run still fits, but the deadline would cut cleanups short:
/// the message says so when the check fails, and
/// [`ShutdownPlan::worst_case_without_deadline`](crate::inspect::ShutdownPlan::worst_case_without_deadline)
/// tells it in any case.
///
/// ```
/// use std::time::Duration;
/// use compactor::Compactor;
///
/// # fn main() -> Result<(), compactor::Error> {
/// let c = Compactor::builder().deadline(Duration::from_secs(20)).build();
/// c.task("flush").timeout(Duration::from_secs(3)).retries(2).register(|| async {})?;
/// compactor::testing::assert_plan_fits(&c, Duration::from_secs(30));
/// # Ok(())
/// # }
/// ```
#[track_caller]
pub fn assert_plan_fits(compactor: &Compactor, grace: Duration) {
    let plan = compactor.plan();
    // Past the run, the process may take up to the exit grace to end.
    let exit_grace = compactor.config().exit_grace;
    let needs = plan.worst_case().saturating_add(exit_grace);
    if needs <= grace {
        return;
    }
    let path: Vec<String> = plan
        .critical_path()
        .map(|t| format!("{} ({:?})", t.name(), t.worst_case()))
        .collect();
    panic!(
        "the shutdown could take {:?} and the exit {exit_grace:?} more, past the grace \
         period of {grace:?} (deadline {:?}; the tasks' own limits add up to {:?}); \
         critical path: {}. Lower the deadline below the grace period minus the exit \
         grace, or the timeouts and retries on the path, or give a phase a budget.\n{plan}",
        plan.worst_case(),
        plan.deadline(),
        plan.worst_case_without_deadline(),
        match path.is_empty() {
            true => "none".to_owned(),
            false => path.join(" -> "),
        },
    );
}
