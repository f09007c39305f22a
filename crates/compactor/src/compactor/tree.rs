//! Instances as a tree: a scope knows its parent and its path; services
//! are counted here and in every instance above, so the whole ends when
//! its parts do; a failure travels up to what its supervision says it
//! ends; and a scope that a failure shut down leaves its report with its
//! parent, for the parent's report.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::{Compactor, WeakCompactor};
use crate::priority::{Category, Priority};
use crate::report::{CleanupError, Outcome, ShutdownReason, ShutdownReport, TaskReport};
use crate::service::{Ends, Supervision};

/// How many reports of scopes that shut down by themselves an instance keeps for
/// its own report; past that, the rest are counted in the log only.
const LEFT_REPORTS: usize = 64;

/// The entry that counts the reports not kept.
const NOT_KEPT: &str = "compactor::scopes-not-kept";

/// An instance's place in its tree.
#[derive(Default)]
pub(super) struct Tree {
    /// For a scope: its parent, its task's name and spec there.
    parent: OnceLock<Parent>,
    /// The supervision of the services registered here, if set here.
    supervision: OnceLock<Supervision>,
    /// Services counted for "the whole ends when its parts do", alive here
    /// and in the scopes below.
    services: AtomicUsize,
    /// Whether one of them ended by itself (not stopped by a shutdown)
    /// since the count was last zero.
    one_ended: AtomicBool,
    /// Reports of scopes below that a failure shut down, as tasks of this
    /// instance's report, and how many more were not kept.
    left: Mutex<(Vec<TaskReport>, usize)>,
}

struct Parent {
    of: WeakCompactor,
    /// The scope's task's name there, and its path from the root.
    name: Arc<str>,
    path: Arc<str>,
    priority: Priority,
    category: Category,
}

impl Compactor {
    /// Makes this new instance a scope of `parent`, as its task `name`.
    pub(crate) fn place_under(
        &self,
        parent: &Compactor,
        name: &str,
        spec: (Priority, Category),
        supervision: Option<Supervision>,
    ) {
        let path = parent.path_of(name);
        let _ = self.inner.tree.parent.set(Parent {
            of: parent.downgrade(),
            name: Arc::from(name),
            path,
            priority: spec.0,
            category: spec.1,
        });
        if let Some(supervision) =
            supervision.or_else(|| parent.inner.tree.supervision.get().copied())
        {
            let _ = self.inner.tree.supervision.set(supervision);
        }
    }

    /// The path of this instance's task `name`: the scopes' names above it
    /// first (`subsys/nested`).
    pub(crate) fn path_of(&self, name: &str) -> Arc<str> {
        match self.inner.tree.parent.get() {
            Some(parent) => Arc::from(format!("{}/{name}", parent.path)),
            None => Arc::from(name),
        }
    }

    /// The supervision of a service registered here without its own.
    pub(crate) fn supervision(&self) -> Supervision {
        self.inner
            .tree
            .supervision
            .get()
            .copied()
            .unwrap_or_default()
    }

    fn parent(&self) -> Option<Compactor> {
        self.inner.tree.parent.get().and_then(|p| p.of.upgrade())
    }

    /// This instance and those above it, nearest first.
    fn lineage(&self) -> impl Iterator<Item = Compactor> {
        std::iter::successors(Some(self.clone()), Compactor::parent)
    }

    /// Counts a service of this instance here and above, until the
    /// count's [`ended`](Counted::ended).
    pub(crate) fn service_began(&self) -> Counted {
        let lineage: Vec<WeakCompactor> = self
            .lineage()
            .map(|instance| {
                instance.inner.tree.services.fetch_add(1, Ordering::AcqRel);
                instance.downgrade()
            })
            .collect();
        Counted {
            lineage,
            done: AtomicBool::new(false),
        }
    }

    /// Starts what a service's failure ends, as its supervision says.
    pub(crate) fn escalate(&self, ends: Ends, reason: ShutdownReason) {
        let target = match ends {
            Ends::Nothing => return,
            Ends::Scope => self.clone(),
            Ends::All => self.lineage().last().unwrap_or_else(|| self.clone()),
        };
        target.begin_unless_begun(reason);
    }

    fn begin_unless_begun(&self, reason: ShutdownReason) {
        if !self.is_shutting_down() {
            match &reason {
                ShutdownReason::ServicesEnded => {
                    tracing::info!(%reason, "every service has ended: starting the shutdown");
                }
                _ => tracing::error!(%reason, "a service failed: starting the shutdown"),
            }
            self.begin(reason);
        }
    }

    /// Tokens cancelled as this instance's shutdown, or that of an instance
    /// above it, begins: a service's end after any of them is the
    /// shutdown's doing, not its own.
    pub(crate) fn lineage_begun(&self) -> Vec<tokio_util::sync::CancellationToken> {
        self.lineage().map(|i| i.begun().clone()).collect()
    }

    /// A scope that shut down on its own leaves its parent: its task there
    /// is withdrawn. If it shut down by itself (a failure, or its services'
    /// end) and is not clean, no caller holds its report: it goes to the
    /// parent, as that task, for the parent's report. Withdrawn and left
    /// under the lock of the parent's list, which the parent's run takes
    /// after closing its registry: the report is in one or the other.
    pub(super) fn leave_parent(&self, task: &crate::registry::TaskHandle, report: &ShutdownReport) {
        let by_itself = matches!(
            report.reason(),
            ShutdownReason::ServiceFailed(_)
                | ShutdownReason::Panic(_)
                | ShutdownReason::ServicesEnded
        );
        let kept = by_itself && !report.is_clean();
        let place = self.inner.tree.parent.get().filter(|_| kept);
        let Some((place, parent)) = place.and_then(|p| Some((p, p.of.upgrade()?))) else {
            task.unregister();
            return;
        };
        let mut left = parent
            .inner
            .tree
            .left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !task.unregister() {
            // The parent's run has the task: it reports the scope itself.
            return;
        }
        if left.0.len() >= LEFT_REPORTS {
            tracing::warn!(scope = %place.path, "a failed scope's report is not kept for its parent's: too many");
            left.1 += 1;
            return;
        }
        let failed = Outcome::Failed(scope_failure(&place.name, report));
        let (priority, category) = (place.priority, place.category.clone());
        let mut entry = TaskReport::unrun(place.name.clone(), failed, priority, priority, category);
        // Its run was its scope's own shutdown.
        entry.attempts = 1;
        entry.duration = report.duration();
        entry.scope = Some(report.clone());
        left.0.push(entry);
    }

    /// The reports scopes below left, for this instance's run; past the
    /// kept ones, one entry (`compactor::scopes-not-kept`) counts the rest.
    pub(super) fn left_reports(&self) -> Vec<TaskReport> {
        let (mut kept, dropped) = std::mem::take(
            &mut *self
                .inner
                .tree
                .left
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if dropped > 0 {
            let text = format!(
                "{dropped} more scopes shut down by themselves not clean; their reports were not kept (at most {LEFT_REPORTS} are)"
            );
            let failed = Outcome::Failed(CleanupError::from(text));
            let normal = Priority::Normal;
            kept.push(TaskReport::unrun(
                Arc::from(NOT_KEPT),
                failed,
                normal,
                normal,
                Category::Other,
            ));
        }
        kept
    }
}

/// A service's place in the counts of its instance and those above.
pub(crate) struct Counted {
    lineage: Vec<WeakCompactor>,
    done: AtomicBool,
}

impl Counted {
    /// Takes the service off the counts (once). Where it was the last, and
    /// one of them ended by itself since the count was last zero, that
    /// instance shuts down: the whole ends when its parts do. A service
    /// withdrawn (unregistered, cut off, dropped) leaves the count without
    /// ending anything, and a count that reaches zero without ending the
    /// instance starts afresh.
    pub(crate) fn ended(&self, how: End) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        for instance in self.lineage.iter().filter_map(WeakCompactor::upgrade) {
            let tree = &instance.inner.tree;
            if how == End::ByItself {
                tree.one_ended.store(true, Ordering::Release);
            }
            if tree.services.fetch_sub(1, Ordering::AcqRel) != 1 {
                continue;
            }
            let one_ended = tree.one_ended.swap(false, Ordering::AcqRel);
            if one_ended && how != End::Withdrawn {
                instance.begin_unless_begun(ShutdownReason::ServicesEnded);
            }
        }
    }
}

/// How a counted service left the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// It ended by itself, before any shutdown of its instance or above.
    ByItself,
    /// It ended stopped on its token (its drain, an early run, a shutdown).
    Stopped,
    /// It was withdrawn or cut off: it never ended.
    Withdrawn,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.ended(End::Withdrawn);
    }
}

/// A scope's task's error when its report is not clean: how many of its
/// tasks did not succeed, with the scope's report inside.
pub(crate) fn scope_failure(name: &str, report: &ShutdownReport) -> CleanupError {
    let failed = report
        .tasks()
        .iter()
        .filter(|t| !t.outcome().is_clean())
        .count();
    let text = match report.reason() {
        reason @ (ShutdownReason::ServiceFailed(_)
        | ShutdownReason::Panic(_)
        | ShutdownReason::ServicesEnded) => format!(
            "scope `{name}` shut down ({reason}): {failed} of {} tasks did not succeed",
            report.tasks().len()
        ),
        _ => format!(
            "scope `{name}`: {failed} of {} tasks did not succeed",
            report.tasks().len()
        ),
    };
    CleanupError::from(text).with_scope(report.clone())
}
