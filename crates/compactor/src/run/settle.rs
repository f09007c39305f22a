//! The run's end and its report: before the report, what the run stopped
//! is given a moment to be gone (attempts' futures, cleanups it disposes
//! of, halted scopes, services, killed children), and what is still there
//! is booked as abandoned, still running: the report claims only what it
//! knows.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::record::Head;
use super::scheduler::Runner;
use crate::plan::Plan;
use crate::report::{Interruption, ShutdownReport, SkipReason};

/// How long the run waits, at its end, for the stopped attempts' futures to
/// be gone (a dropped future is normally gone within microseconds): within
/// the 50 ms past the deadline that the report may take.
const STOPPED_WITHIN: Duration = Duration::from_millis(20);

impl Runner {
    /// The final report, and the spent plan for the caller to drop once the
    /// report is out.
    pub(crate) fn into_report(mut self) -> (ShutdownReport, Plan) {
        self.abandon_what_is_left();
        self.books.head.duration = self.clock.t0.elapsed();
        self.ctx.end(self.books.head.duration);
        if let Some((ticker, _)) = &self.clock.ticker {
            ticker.tick(&self.ctx, true);
        }
        // What is still alive on the runtime making the report.
        self.books.head.runtime_tasks = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.metrics().num_alive_tasks());
        let extra = std::mem::take(&mut self.books.early_run_tasks);
        // The run's own tasks, and the reports its scopes left: not the
        // early runs' (recorded by their runs).
        let own = self.tasks.len() + self.books.left;
        let report = self.books.record.into_report(self.books.head, extra);
        crate::telemetry::reported(&report.tasks()[..own.min(report.tasks().len())]);
        (report, self.plan)
    }

    /// Ends the run where it stands, with no runtime to go on: as at the
    /// deadline.
    pub(crate) fn end_now(&mut self) {
        if !self.done() {
            self.expire(super::finish::Phases::All, SkipReason::Deadline);
        }
    }

    /// Waits, briefly, for the futures of the attempts it stopped to be
    /// gone (their code has then stopped), and for the cleanups left to it
    /// to be dropped. An attempt still there (its code holds its thread, or
    /// its `Drop` does) is reported abandoned, still running.
    pub(super) async fn await_stopped(&mut self) {
        // Any stopped attempt not aborted yet (a panic cut its stop short).
        self.abort_stopped();
        // From the deadline where the run reached it: the early runs waited
        // for since then have had their share.
        let now = Instant::now();
        let until = self.clock.deadline.map_or(now, |d| d.min(now)) + STOPPED_WITHIN;
        let mut ended = Vec::new();
        loop {
            self.ctx.done.take(&mut ended);
            ended.drain(..).for_each(|e| self.on_end(e));
            self.dispose();
            // Awaited from the last: each finished one is let go of once.
            while self
                .stopped
                .disposing
                .last()
                .is_some_and(|d| d.handle.is_finished())
            {
                self.stopped.disposing.pop();
            }
            let record = &mut self.books.record;
            self.stopped
                .scopes
                .retain(|(index, scope)| match scope.report() {
                    Some(report) => {
                        record.scope_report(*index, report);
                        false
                    }
                    None => true,
                });
            let services = self.outside.services.clone();
            let settled = services.as_deref().is_none_or(|s| s.alive().is_empty());
            if self.stopped.attempts.is_empty()
                && self.stopped.disposing.is_empty()
                && self.stopped.scopes.is_empty()
                && settled
                && children_reaped()
            {
                return;
            }
            let services_gone = async {
                match services.as_deref() {
                    Some(services) if !settled => services.settled().await,
                    _ => std::future::pending().await,
                }
            };
            let disposed = async {
                match self.stopped.disposing.last_mut() {
                    Some(last) => drop((&mut last.handle).await),
                    None => std::future::pending().await,
                }
            };
            let halted = async {
                match self.stopped.scopes.last() {
                    Some((_, scope)) => drop(scope.wait().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                () = self.ctx.done.ready() => {}
                () = disposed => {}
                () = halted => {}
                () = services_gone => {}
                () = children_settled(), if !children_reaped() => {}
            }
        }
        self.abandon_what_is_left();
    }

    /// Books as abandoned, still running, every task whose attempt,
    /// disposal, scope or service is still there.
    pub(super) fn abandon_what_is_left(&mut self) {
        let mut ended = Vec::new();
        self.ctx.done.take(&mut ended);
        ended.drain(..).for_each(|e| self.on_end(e));
        for (index, _) in std::mem::take(&mut self.stopped.attempts) {
            self.books.record.abandoned(index);
        }
        for (index, scope) in std::mem::take(&mut self.stopped.scopes) {
            match scope.report() {
                Some(report) => self.books.record.scope_report(index, report),
                None => self.books.record.abandoned(index),
            }
        }
        self.dispose();
        for disposal in std::mem::take(&mut self.stopped.disposing) {
            for index in disposal.left() {
                self.books.record.abandoned(index);
            }
        }
        let alive = self
            .outside
            .services
            .as_deref()
            .map(|s| s.alive())
            .unwrap_or_default();
        for service in alive {
            // The very name its registration holds: not another task's of
            // the same name (one registered after it was withdrawn).
            if let Some(index) = self
                .ctx
                .names
                .iter()
                .position(|n| std::sync::Arc::ptr_eq(n, &service))
            {
                self.books.record.abandoned(index as u32);
            }
        }
        for (index, pid, status) in self.ctx.killed() {
            match status {
                Some(status) => self
                    .books
                    .record
                    .killed(index, Interruption::killed(pid, status)),
                // Not reaped by now: it may still run.
                None => self.books.record.abandoned(index),
            }
        }
    }
}

/// Whether every child process a cleanup's cut-off killed is reaped.
fn children_reaped() -> bool {
    #[cfg(feature = "process")]
    return super::reaper::is_settled();
    #[cfg(not(feature = "process"))]
    true
}

/// Returns once every killed child process is reaped (see
/// [`super::reaper`]).
async fn children_settled() {
    #[cfg(feature = "process")]
    super::reaper::settled().await;
    #[cfg(not(feature = "process"))]
    std::future::pending::<()>().await;
}

/// The report so far, for cleanups that call `shutdown()` on their own
/// instance (they cannot wait for the run, which waits for them).
impl Runner {
    /// Answers every request for the report so far.
    pub(super) fn serve_snapshots(&mut self) {
        let Some(snapshots) = self.outside.snapshots.clone() else {
            return;
        };
        let mut requests = Vec::new();
        snapshots.take(&mut requests);
        if requests.is_empty() {
            return;
        }
        let report = self.snapshot();
        for reply in requests {
            let _ = reply.send(report.clone());
        }
    }

    fn snapshot(&self) -> ShutdownReport {
        let head = Head {
            reason: self.books.head.reason.clone(),
            duration: self.clock.t0.elapsed(),
            warnings: self.books.head.warnings.clone(),
            policy: self.books.head.policy,
            runtime_tasks: None,
        };
        let attempts = |i: u32| {
            self.ctx.headway[i as usize]
                .attempts
                .load(Ordering::Relaxed)
        };
        self.books.record.snapshot(attempts, Instant::now(), head)
    }
}
