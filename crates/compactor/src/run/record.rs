//! The run's record of each task, and the [`ShutdownReport`] it becomes:
//! the tasks that started, in the order they started, then those that never
//! did, in plan order.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::plan::Plan;
use crate::report::{
    Freed, GraphWarning, Interruption, Outcome, ShutdownReason, ShutdownReport, TaskReport,
};
use crate::signal::SignalExit;

pub(crate) struct Record {
    /// One entry per task of the plan, by index.
    entries: Vec<TaskReport>,
    /// The tasks that started, in the order they did.
    order: Vec<u32>,
    t0: Instant,
}

impl Record {
    pub(crate) fn new(plan: &Plan, names: &[Arc<str>], t0: Instant) -> Record {
        let entries = plan
            .tasks
            .iter()
            .zip(names)
            .map(|(task, name)| {
                let spec = &task.node.spec;
                let (own, category) = (spec.priority, spec.category.clone());
                TaskReport::unrun(
                    name.clone(),
                    Outcome::Pending,
                    own,
                    task.effective,
                    category,
                )
            })
            .collect();
        Record {
            entries,
            order: Vec::new(),
            t0,
        }
    }

    pub(crate) fn start(&mut self, index: u32, at: Instant) {
        self.order.push(index);
        self.entries[index as usize].started_at = Some(at.saturating_duration_since(self.t0));
    }

    pub(crate) fn started_at(&self, index: u32) -> Option<Instant> {
        let since = self.entries[index as usize].started_at?;
        Some(self.t0 + since)
    }

    /// A task's outcome, with how long it ran if it started.
    pub(crate) fn end(
        &mut self,
        index: u32,
        outcome: Outcome,
        attempts: u32,
        at: Instant,
    ) -> Duration {
        let started = self.started_at(index);
        let entry = &mut self.entries[index as usize];
        let duration = started.map_or(Duration::ZERO, |s| at.saturating_duration_since(s));
        entry.outcome = outcome;
        entry.attempts = attempts;
        entry.duration = duration;
        duration
    }

    /// The task an unstarted task waited for when its time ran out.
    pub(crate) fn waited_for(&mut self, index: u32, task: Option<Arc<str>>) {
        self.entries[index as usize].waited_for = task;
    }

    /// What a task's cleanup said it freed.
    pub(crate) fn freed(&mut self, index: u32, freed: Option<Freed>) {
        self.entries[index as usize].freed = freed;
    }

    pub(crate) fn interrupted(
        &mut self,
        index: u32,
        how: Option<Interruption>,
        leaked: Option<usize>,
    ) {
        let entry = &mut self.entries[index as usize];
        entry.interruption = how;
        entry.leaked = leaked.and_then(NonZeroUsize::new);
    }

    /// A task whose child process was killed and reaped as its cleanup was
    /// dropped (unless it is known to be still running).
    pub(crate) fn killed(&mut self, index: u32, how: Interruption) {
        let entry = &mut self.entries[index as usize];
        if !matches!(entry.interruption, Some(Interruption::Abandoned)) {
            entry.interruption = Some(how);
        }
    }

    /// A task whose stopped attempt, cleanup or scope was not known to be
    /// gone by the report: abandoned, still running, rather than dropped
    /// (or, for one never started, than only skipped).
    /// The report of a scope whose task was cut off, once it is out.
    pub(crate) fn scope_report(&mut self, index: u32, report: crate::report::ShutdownReport) {
        self.entries[index as usize].scope = Some(report);
    }

    /// A task's attempt left running has returned, after the task's end:
    /// no longer abandoned, it overran.
    pub(crate) fn returned_late(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        if entry.interruption == Some(Interruption::Abandoned) {
            entry.interruption = Some(Interruption::Overran);
        }
    }

    pub(crate) fn abandoned(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        if matches!(entry.interruption, None | Some(Interruption::Dropped)) {
            entry.interruption = Some(Interruption::Abandoned);
        }
    }

    /// The report as it stands: running tasks show their attempts so far
    /// (`attempts`) and their time so far.
    pub(crate) fn snapshot(
        &self,
        attempts: impl Fn(u32) -> u32,
        now: Instant,
        head: Head,
    ) -> ShutdownReport {
        let mut entries = self.entries.clone();
        for &i in &self.order {
            let entry = &mut entries[i as usize];
            if entry.outcome == Outcome::Pending {
                entry.attempts = attempts(i);
                let started = self.t0 + entry.started_at.unwrap_or_default();
                entry.duration = now.saturating_duration_since(started);
            }
        }
        report(ordered(entries, &self.order), head, false)
    }

    /// The final report, with the tasks of other runs it waited for.
    pub(crate) fn into_report(self, head: Head, extra: Vec<TaskReport>) -> ShutdownReport {
        let mut tasks = ordered(self.entries, &self.order);
        tasks.extend(extra);
        report(tasks, head, true)
    }
}

/// What a report says besides its tasks.
pub(crate) struct Head {
    pub(crate) reason: ShutdownReason,
    pub(crate) duration: Duration,
    pub(crate) warnings: Vec<GraphWarning>,
    pub(crate) policy: SignalExit,
    /// The tokio tasks alive on the runtime as the report was made.
    pub(crate) runtime_tasks: Option<usize>,
}

fn report(tasks: Vec<TaskReport>, head: Head, complete: bool) -> ShutdownReport {
    ShutdownReport::new(
        head.reason,
        complete,
        head.duration,
        head.warnings,
        tasks,
        head.policy,
        head.runtime_tasks,
    )
}

/// The started entries in `order`, then the others in plan order: put in
/// place by following the permutation's cycles (one swap per entry, no
/// second table of 100,000 entries to allocate and fill).
fn ordered(mut entries: Vec<TaskReport>, order: &[u32]) -> Vec<TaskReport> {
    let n = entries.len();
    // `from[p]`: the entry that goes to position `p`.
    let mut from: Vec<u32> = Vec::with_capacity(n);
    let mut started = vec![false; n];
    for &i in order {
        if !std::mem::replace(&mut started[i as usize], true) {
            from.push(i);
        }
    }
    from.extend((0..n as u32).filter(|&i| !started[i as usize]));
    let mut placed = started;
    placed.fill(false);
    for start in 0..n {
        let mut at = start;
        while !placed[at] {
            placed[at] = true;
            let next = from[at] as usize;
            if next == start {
                break;
            }
            entries.swap(at, next);
            at = next;
        }
    }
    entries
}

/// A report in which every task of `names` is still pending: for a run that
/// cannot be asked for its report.
pub(crate) fn pending_report(names: &[Arc<str>], policy: SignalExit) -> ShutdownReport {
    let tasks = names
        .iter()
        .map(|name| {
            let normal = crate::Priority::Normal;
            TaskReport::unrun(
                name.clone(),
                Outcome::Pending,
                normal,
                normal,
                crate::Category::Other,
            )
        })
        .collect();
    let head = Head {
        reason: ShutdownReason::Manual,
        duration: Duration::ZERO,
        warnings: Vec::new(),
        policy,
        runtime_tasks: None,
    };
    report(tasks, head, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> TaskReport {
        let mut entry = pending_report(&[Arc::from(name)], SignalExit::Return).tasks()[0].clone();
        entry.name = Arc::from(name);
        entry
    }

    #[test]
    fn started_entries_come_in_start_order_then_the_others_in_plan_order() {
        let names = ["a", "b", "c", "d", "e", "f"];
        let entries: Vec<TaskReport> = names.iter().map(|n| entry(n)).collect();
        let order = [4, 1, 5, 1];
        let got: Vec<String> = ordered(entries, &order)
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
        assert_eq!(got, ["e", "b", "f", "a", "c", "d"]);
        let reversed: Vec<TaskReport> = names.iter().map(|n| entry(n)).collect();
        let got: Vec<String> = ordered(reversed, &[5, 4, 3, 2, 1, 0])
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
        assert_eq!(got, ["f", "e", "d", "c", "b", "a"]);
        assert!(ordered(Vec::new(), &[]).is_empty());
    }
}
