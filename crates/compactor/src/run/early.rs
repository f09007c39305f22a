//! Early runs under way when the shutdown began: the shutdown waits
//! for them (until its deadline, when it stops them) and reports their tasks.

use std::time::Duration;

use tokio::time::Instant;

use super::clock::after;
use super::scheduler::{Runner, ready};

impl Runner {
    /// Waits for the early runs under way (until the deadline, when
    /// they are stopped) and keeps their tasks for the report; requests for
    /// the report so far are answered meanwhile.
    pub(super) async fn await_early_runs(&mut self) {
        let snapshots = self.outside.snapshots.clone();
        let mut halted = false;
        let mut mail = Vec::new();
        while let Some(early) = self.outside.early_runs.first().cloned() {
            // An aborted run stops the early runs at once.
            if !halted && self.halted().is_some() {
                halted = true;
                self.outside.early_runs.iter().for_each(|r| r.halt.cancel());
            }
            let mut report = early.report.clone();
            // After a halt, an early run answers at once unless its runtime is
            // stuck: then its tasks cannot be reported.
            let limit = match halted {
                false => self.clock.deadline,
                true => after(Instant::now(), EARLY_RUN_ANSWER),
            };
            let in_time = tokio::select! {
                finished = report.wait_for(Option::is_some) => finished.is_ok(),
                () = until(limit) => false,
                () = ready(snapshots.as_deref()) => {
                    self.serve_snapshots();
                    continue;
                }
                // A halt (an abort) nudges the run.
                () = self.ctx.done.ready(), if !halted => {
                    self.ctx.done.take(&mut mail);
                    mail.drain(..).for_each(|e| self.on_end(e));
                    continue;
                }
            };
            if !in_time && !halted {
                halted = true;
                self.outside.early_runs.iter().for_each(|r| r.halt.cancel());
                continue;
            }
            self.outside.early_runs.remove(0);
            let report = early.report.borrow().clone();
            match report {
                Some(report) => {
                    let shift = early.t0.saturating_duration_since(self.clock.t0);
                    let tasks = report.tasks().iter().map(|t| t.shifted(shift));
                    self.books.early_run_tasks.extend(tasks);
                }
                None => tracing::error!(
                    "a category's early run did not answer its halt; its tasks are not in the report"
                ),
            }
        }
    }
}

/// How long a halted early run has to hand its report over.
const EARLY_RUN_ANSWER: Duration = Duration::from_millis(100);

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
