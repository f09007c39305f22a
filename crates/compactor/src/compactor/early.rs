//! Releasing one category now, while the process goes on.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Compactor;
use crate::error::Error;
use crate::plan::Plan;
use crate::priority::Category;
use crate::registry::TaskHandle;
use crate::report::{ShutdownReason, ShutdownReport};
use crate::run::contain::drop_contained;
use crate::run::{EarlyRun, Runner, RunnerParts};
use crate::task::RESERVED_PREFIX;

static NEXT_EARLY_RUN: AtomicU64 = AtomicU64::new(1);

/// Which pending tasks [`Compactor::run_early`] runs now.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Selection {
    /// One task, by its handle.
    Task(TaskHandle),
    /// Several, by their handles.
    Tasks(Vec<TaskHandle>),
    /// Several, by name.
    Names(Vec<String>),
    /// Every pending task of a category. Their dependencies on tasks of
    /// other categories are dropped; the library's own tasks stay for the
    /// shutdown.
    Category(Category),
}

impl Compactor {
    /// Runs one category early: see [`Selection::Category`].
    async fn run_category_early(&self, category: &crate::priority::Category) -> ShutdownReport {
        let reason = ShutdownReason::Category(category.clone());
        self.run_early_tasks(reason, |name, node| {
            // The library's own tasks (a service's drain) belong to the
            // shutdown.
            node.spec.category == *category && !name.starts_with(RESERVED_PREFIX)
        })
        .await
    }

    /// Runs now the pending tasks of `selection`: they leave the instance
    /// and run in the order their dependencies among themselves and their
    /// priorities give, with their timeouts and retries and the instance's
    /// deadline, and a report of their own (reason [`ShutdownReason::Early`],
    /// or [`ShutdownReason::Category`] for a category). A shutdown that
    /// begins meanwhile waits for it and reports its tasks too.
    ///
    /// Only `TaskStarted`, `TaskRetrying`, `TaskFinished` (and leak) events
    /// are sent for it; `ShutdownStarted` and `ShutdownFinished` are kept for
    /// the instance's own shutdown.
    ///
    /// The rule for the tasks around it: a chosen task's dependencies on
    /// tasks not chosen are dropped (they are not run); a task not chosen
    /// that depends on a chosen one (it would have to run first) refuses
    /// the early run, with an error naming it: run it early too, or unregister
    /// it. [`Selection::Category`] drops such dependencies instead, and
    /// leaves the library's own tasks (a service's drain) for the shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the early run runs on a task of its own and goes on if
    /// this future is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NotPending`] for a chosen task that is not pending (unknown,
    /// unregistered, replaced, already run), [`Error::EarlyRunHasDependents`]
    /// as above, [`Error::ShuttingDown`] once shutdown has begun; nothing
    /// is released then.
    pub async fn run_early(&self, selection: Selection) -> Result<ShutdownReport, Error> {
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let chosen: Vec<(Arc<str>, Option<NonZeroU64>)> = match selection {
            Selection::Category(category) => return Ok(self.run_category_early(&category).await),
            Selection::Task(handle) => vec![(handle.name.clone(), Some(handle.id))],
            Selection::Tasks(handles) => handles
                .into_iter()
                .map(|h| (h.name.clone(), Some(h.id)))
                .collect(),
            Selection::Names(names) => names.into_iter().map(|n| (Arc::from(n), None)).collect(),
        };
        let registry = &self.inner.registry;
        let mut ids: HashMap<Arc<str>, u64> = HashMap::with_capacity(chosen.len());
        for (name, id) in chosen {
            match registry.pending_id(&name) {
                Some(now) if id.is_none_or(|id| id.get() == now) => {
                    ids.insert(name, now);
                }
                _ => {
                    return Err(Error::NotPending {
                        task: name.to_string(),
                    });
                }
            }
        }
        let dependents = registry.dependents_of(&ids);
        if !dependents.is_empty() {
            return Err(Error::EarlyRunHasDependents { dependents });
        }
        let reason = ShutdownReason::Early(ids.len());
        Ok(self
            .run_early_tasks(reason, |name, _| ids.contains_key(name))
            .await)
    }

    /// Takes the tasks `pick` chooses and runs them now, on a task of its
    /// own; the report when they are done.
    async fn run_early_tasks(
        &self,
        reason: ShutdownReason,
        pick: impl FnMut(&str, &crate::registry::Node) -> bool,
    ) -> ShutdownReport {
        let t0 = Instant::now();
        let (publish, mut report) = watch::channel(None);
        let halt = CancellationToken::new();
        let number = NEXT_EARLY_RUN.fetch_add(1, Ordering::Relaxed);
        let nodes = {
            // Taken and listed under one lock, which the shutdown's start
            // takes after closing the registry: it sees every early run that
            // took tasks.
            let mut early_runs = self.early_runs();
            let nodes = self.inner.registry.take_chosen(pick);
            early_runs.push((
                number,
                EarlyRun {
                    halt: halt.clone(),
                    report: report.clone(),
                    t0,
                },
            ));
            nodes
        };
        let mut plan = Plan::partial(nodes);
        let ctx = self.run_context(&mut plan, t0);
        let parts = RunnerParts {
            halt: Some(halt),
            halted: None,
            services: None,
            ..self.runner_parts(ctx, reason, t0)
        };
        let owner = Arc::downgrade(&self.inner);
        let finish = Box::new(move |report: ShutdownReport, spent: Plan| {
            publish.send_replace(Some(report));
            if let Some(inner) = owner.upgrade() {
                let mut early_runs = inner
                    .running
                    .early_runs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                early_runs.retain(|(n, _)| *n != number);
            }
            let _ = drop_contained(spent);
        });
        crate::run::spawn_run(crate::run::drive(Runner::new(plan, parts), finish), false);
        let released = report.wait_for(Option::is_some).await;
        let report = released.map(|r| r.clone()).ok().flatten();
        report.expect("an early run always publishes its report")
    }

    pub(super) fn early_runs(&self) -> std::sync::MutexGuard<'_, Vec<(u64, EarlyRun)>> {
        self.inner
            .running
            .early_runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
