//! A run's outcome as it goes out: the report to every waiter, and, after a
//! signal-started run, the record of who ends the process (which the
//! process layer acts on). Apart from the instance, which may go as its
//! report goes out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

use crate::compactor::Inner;
use crate::run::RunContext;
use crate::{Event, ShutdownReport, SignalExit};

/// The end of the whole shutdown: after a signal-started run, who ends the
/// process, recorded once; then the report out to every waiter. (The
/// process layer's watchdog acts on the record.)
pub(crate) fn publish(inner: Arc<Inner>, ctx: &RunContext, report: ShutdownReport) {
    tracing::info!(clean = report.is_clean(), duration = ?report.duration(), "shutdown finished");
    tracing::Span::current().record("clean", report.is_clean());
    if let Some(task) = inner.scope.get() {
        // Shut down on its own: the parent has nothing left to do for it.
        task.unregister();
    }
    if inner.by_signal.load(Ordering::Acquire) {
        // Decided once, here: the process layer acts on it.
        let decision = match (inner.signal_exit, inner.waiters.load(Ordering::Acquire)) {
            (SignalExit::Return, _) => AFTER_RUN_NOBODY,
            (_, 0) => AFTER_RUN_LIBRARY,
            _ => AFTER_RUN_APPLICATION,
        };
        inner.after_run.store(decision, Ordering::Release);
    }
    let sender = inner.report.clone();
    // The instance may go as soon as callers have the report.
    drop(inner);
    ctx.refresh_listening();
    ctx.emit(|| Event::ShutdownFinished {
        report: report.clone(),
    });
    sender.send_replace(Some(report));
    crate::process::run_over();
}

/// After a signal-started run: the library ends the process.
const AFTER_RUN_LIBRARY: u8 = 1;
/// After a signal-started run: the application, which waits for the
/// report, ends the process (within the exit grace).
const AFTER_RUN_APPLICATION: u8 = 2;
/// After a signal-started run: nobody; `SignalExit::Return` leaves the
/// process to the application, without a limit.
const AFTER_RUN_NOBODY: u8 = 3;

/// Who ends the process after a signal-started run, once its report is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterRun {
    Library,
    Application,
    Nobody,
}

/// A run's published outcome, held apart from the instance.
pub(crate) struct Outcome {
    pub(crate) report: Arc<watch::Sender<Option<ShutdownReport>>>,
    pub(crate) after_run: Arc<AtomicU8>,
}

impl Outcome {
    pub(crate) fn report(&self) -> Option<ShutdownReport> {
        self.report.borrow().clone()
    }

    /// `None` before the report is out, or for a run a signal did not start.
    pub(crate) fn after_run(&self) -> Option<AfterRun> {
        match self.after_run.load(Ordering::Acquire) {
            AFTER_RUN_LIBRARY => Some(AfterRun::Library),
            AFTER_RUN_APPLICATION => Some(AfterRun::Application),
            AFTER_RUN_NOBODY => Some(AfterRun::Nobody),
            _ => None,
        }
    }
}

pub(crate) fn exits_after_run(inner: &Inner) -> bool {
    inner.after_run.load(Ordering::Acquire) == AFTER_RUN_LIBRARY
}

/// Counts a caller waiting for the report while it lives.
pub(crate) struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    pub(crate) fn new(inner: &'a Inner) -> Waiting<'a> {
        inner.waiters.fetch_add(1, Ordering::AcqRel);
        Waiting(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}
