//! Releasing one category now, while the process goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Compactor;
use crate::plan::Plan;
use crate::report::{ShutdownReason, ShutdownReport};
use crate::run::attempt::drop_contained;
use crate::run::{Release, Runner};
use crate::task::RESERVED_PREFIX;

static NEXT_RELEASE: AtomicU64 = AtomicU64::new(1);

impl Compactor {
    /// Releases one category now: its pending tasks leave the instance and
    /// run, in the order their dependencies among themselves and their
    /// priorities give, with the instance's timeouts and deadline. Their
    /// dependencies on tasks of other categories are dropped; the library's
    /// own tasks (`compactor::service`, `compactor::spawned`) stay for the
    /// shutdown. The report's
    /// reason is [`ShutdownReason::Category`]. Once shutdown has begun, the
    /// tasks belong to that run and the report is empty.
    ///
    /// Only `TaskStarted`, `TaskRetrying`, `TaskFinished` (and leak) events
    /// are sent for it; `ShutdownStarted` and `ShutdownFinished` are kept for
    /// the instance's own shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the release runs on a task of its own and goes on if
    /// this future is dropped.
    pub async fn shutdown_category(&self, category: &crate::priority::Category) -> ShutdownReport {
        let t0 = Instant::now();
        let (publish, mut report) = watch::channel(None);
        let halt = CancellationToken::new();
        let number = NEXT_RELEASE.fetch_add(1, Ordering::Relaxed);
        let nodes = {
            // Taken and listed under one lock, which the shutdown's start
            // takes after closing the registry: it sees every release that
            // took tasks.
            let mut releases = self.releases();
            let nodes = self.inner.registry.take_where(|name, node| {
                // The library's own tasks (a service's drain) belong
                // to the shutdown.
                node.spec.category == *category && !name.starts_with(RESERVED_PREFIX)
            });
            releases.push((
                number,
                Release {
                    halt: halt.clone(),
                    report: report.clone(),
                    t0,
                },
            ));
            nodes
        };
        let mut plan = Plan::partial(nodes);
        let reason = ShutdownReason::Category(category.clone());
        let ctx = self.run_context(&mut plan);
        let parts = self.runner_parts(ctx, reason, t0, None, Some(halt), Vec::new());
        let owner = Arc::downgrade(&self.inner);
        let finish = Box::new(move |report: ShutdownReport, spent: Plan| {
            publish.send_replace(Some(report));
            if let Some(inner) = owner.upgrade() {
                let mut releases = inner
                    .releases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                releases.retain(|(n, _)| *n != number);
            }
            let _ = drop_contained(spent);
        });
        crate::run::spawn_run(crate::run::drive(Runner::new(plan, parts), finish), false);
        let released = report.wait_for(Option::is_some).await;
        let report = released.map(|r| r.clone()).ok().flatten();
        report.expect("a release always publishes its report")
    }

    pub(super) fn releases(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Release)>> {
        self.inner
            .releases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
