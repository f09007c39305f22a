//! A run as it is published: the report to every waiter, and, after a
//! signal-started run, the record of who ends the process (which the
//! process layer acts on). Apart from the instance, which may go as its
//! report goes out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

use super::Instance;
use crate::event::Event;
use crate::report::ShutdownReport;
use crate::run::RunContext;
use crate::signal::SignalExit;

/// The end of the whole shutdown: after a signal-started run, who ends the
/// process, recorded once; then the report out to every waiter.
pub(super) fn publish(instance: Arc<Instance>, ctx: &RunContext, report: ShutdownReport) {
    tracing::info!(clean = report.is_clean(), duration = ?report.duration(), "shutdown finished");
    tracing::Span::current().record("clean", report.is_clean());
    if instance.scope.get().is_none() {
        crate::telemetry::shutdown_reported(&report);
    }
    if let Some(task) = instance.scope.get() {
        // Shut down on its own: the parent has nothing left to do for it,
        // but to report what shut down by itself.
        super::Compactor {
            inner: instance.clone(),
        }
        .leave_parent(task, &report);
    }
    if instance.signals.started_run.load(Ordering::Acquire) {
        // Decided once, here, while the waiters still wait.
        let waiters = instance.out.waiters.load(Ordering::Acquire);
        let decision = match (instance.signals.exit, waiters) {
            (SignalExit::Return, _) => AfterRun::Nobody,
            (_, 0) => AfterRun::Library,
            _ => AfterRun::Application,
        };
        instance
            .out
            .published
            .after_run
            .store(decision as u8, Ordering::Release);
    }
    let outcome = instance.out.published.clone();
    let hooks = instance.signals.hooks.get().copied();
    // The instance may go as soon as callers have the report.
    drop(instance);
    ctx.refresh_listening();
    ctx.emit(|| Event::ShutdownFinished {
        report: report.clone(),
    });
    outcome.report.send_replace(Some(report));
    if let Some(hooks) = hooks {
        (hooks.run_over)();
    }
}

/// Who ends the process after a signal-started run, once its report is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AfterRun {
    /// The library: nobody in the process waits for the report.
    Library = 1,
    /// The application, which waits for the report (within the exit grace).
    Application = 2,
    /// Nobody: `SignalExit::Return` leaves the process to the application,
    /// without a limit.
    Nobody = 3,
}

/// A run's published outcome, held apart from the instance.
#[derive(Clone)]
pub(crate) struct Published {
    pub(crate) report: Arc<watch::Sender<Option<ShutdownReport>>>,
    after_run: Arc<AtomicU8>,
}

impl Published {
    pub(crate) fn new() -> Published {
        Published {
            report: Arc::new(watch::Sender::new(None)),
            after_run: Arc::new(AtomicU8::new(0)),
        }
    }

    pub(crate) fn report(&self) -> Option<ShutdownReport> {
        self.report.borrow().clone()
    }

    /// `None` before the report is out, or for a run a signal did not start.
    pub(crate) fn after_run(&self) -> Option<AfterRun> {
        match self.after_run.load(Ordering::Acquire) {
            1 => Some(AfterRun::Library),
            2 => Some(AfterRun::Application),
            3 => Some(AfterRun::Nobody),
            _ => None,
        }
    }
}

/// Counts a caller waiting for the report while it lives: while any does,
/// the application ends the process after a signal-started run.
pub(crate) struct Waiting<'a>(&'a Instance);

impl<'a> Waiting<'a> {
    pub(super) fn new(instance: &'a Instance) -> Waiting<'a> {
        instance.out.waiters.fetch_add(1, Ordering::AcqRel);
        Waiting(instance)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.out.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}
