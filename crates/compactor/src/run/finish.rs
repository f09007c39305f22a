//! A task's end in the run: its outcome booked, its dependents freed, its
//! cleanup let go of off the runner; and the tasks a time limit ends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use tokio::time::Instant;

use super::contain::{drop_contained, spawn_or_run};
use super::scheduler::Runner;
use super::state::State;
use crate::event::Event;
use crate::report::{Interruption, Outcome, SkipReason};

impl Runner {
    /// Records a task's outcome and releases the tasks that waited for it;
    /// then logs it (the books first: a logging layer may panic).
    pub(super) fn finish(
        &mut self,
        i: usize,
        outcome: Outcome,
        how: Option<Interruption>,
        strong: Option<usize>,
        at: Instant,
    ) {
        let index = i as u32;
        let attempts = self.ctx.headway[i].attempts.load(Ordering::Relaxed);
        let leaked = strong.filter(|&n| n > 0 && outcome != Outcome::Released);
        let elapsed = self.books.record.end(index, outcome.clone(), attempts, at);
        self.books.record.interrupted(index, how, leaked);
        if let Some(scope) = self.tasks[i].scope.take() {
            // A scope's task not clean keeps the scope's report: the one its
            // failure carries, or, however else it ended (late), the one out.
            let carried = match &outcome {
                Outcome::Failed(error) => error.scope().cloned(),
                _ => None,
            };
            let out = || scope.report().filter(|_| !outcome.is_clean());
            if let Some(report) = carried.or_else(out) {
                self.books.record.scope_report(index, report);
            }
        }
        let task = &mut self.tasks[i];
        if !matches!(task.state, State::Waiting) {
            self.running -= 1;
            self.books.running.finished();
        }
        let started = !matches!(task.state, State::Waiting);
        task.state = State::Finished;
        task.scope = None;
        // A task that never started lets go of its cleanup now too, not
        // after the report: what it owns (a service, a child process) goes
        // with it while the run still waits for the tasks after it.
        let unstarted = match started {
            true => None,
            false => self.plan.tasks[i]
                .node
                .try_take_cleanup()
                .or_else(|| self.ctx.finals.take(index)),
        };
        let to_dispose = match unstarted {
            Some(unstarted) => {
                if let Some(scope) = super::scheduler::scope_of(&*unstarted) {
                    // A scope never started: halted, its shutdown runs
                    // nothing (its services stop), and the report waits for
                    // it.
                    scope.halt(self.halted().unwrap_or(crate::report::SkipReason::Halted));
                    self.stopped.scopes.push((index, scope));
                }
                self.ctx.slots.fill(index, unstarted);
                true
            }
            None => started && self.ctx.slots.holds(index),
        };
        let task = &mut self.tasks[i];
        let span = std::mem::replace(&mut task.span, tracing::Span::none());
        self.ctx.headway[i].finished.store(true, Ordering::Release);
        self.finished += 1;
        self.phases[self.plan.tasks[i].phase as usize].unfinished -= 1;
        for d in self.plan.precedes.of(index) {
            let waiting = &mut self.plan.waiting[d as usize];
            *waiting -= 1;
            if *waiting == 0 {
                let phase = self.plan.tasks[d as usize].phase as usize;
                self.phases[phase].ready.push(d);
            }
        }
        if to_dispose {
            self.stopped.undisposed.push(index);
        }
        let name = &self.ctx.names[i];
        log_end(name, &outcome, attempts, leaked);
        if !span.is_disabled() {
            span.record("attempts", attempts);
            span.record("outcome", tracing::field::display(&outcome));
            span.record("elapsed_ms", elapsed.as_secs_f64() * 1e3);
            tracing::debug!(parent: &span, "cleanup finished");
        }
        if let Some(strong) = leaked {
            self.ctx.emit(|| Event::LeakSuspected {
                name: name.clone(),
                strong_count: strong,
            });
        }
        self.ctx.emit(|| Event::TaskFinished {
            name: name.clone(),
            outcome,
            attempts,
            elapsed,
        });
    }

    /// Stops the running tasks (of `phases`) and skips the unstarted ones,
    /// at the deadline, the end of a phase budget, or where the final
    /// phase's time begins.
    pub(super) fn expire(&mut self, phases: Phases, reason: SkipReason) {
        let now = Instant::now();
        if phases == Phases::All {
            self.ctx.stop();
        }
        let in_scope = |runner: &Runner, i: usize| {
            !matches!(runner.tasks[i].state, State::Finished)
                && phases.holds(runner.plan.tasks[i].phase as usize)
        };
        // What each unstarted task waited for, read before anything ends
        // (a look at the whole run: only if one is unstarted).
        let unstarted = |runner: &Runner, i: usize| {
            in_scope(runner, i) && matches!(runner.tasks[i].state, State::Waiting)
        };
        if (0..self.tasks.len()).any(|i| unstarted(self, i)) {
            let observed = self.ctx.observe();
            for i in 0..self.tasks.len() {
                if unstarted(self, i) {
                    let step = observed.step(i as u32);
                    self.books
                        .record
                        .waited_for(i as u32, step.map(|s| self.ctx.names[s as usize].clone()));
                }
            }
        }
        // The running tasks first, then those that never started. All are
        // marked stopped, then their tasks aborted (see `Stopped::aborting`),
        // and only then booked, which runs code not ours (a tracing layer):
        // a panic there finds every attempt aborted already.
        let mut stopped = Vec::new();
        for i in 0..self.tasks.len() {
            if in_scope(self, i) && !matches!(self.tasks[i].state, State::Waiting) {
                stopped.push((i, self.stop(i)));
            }
        }
        self.abort_stopped();
        for (i, how) in stopped {
            self.finish(i, Outcome::Cancelled, Some(how), None, now);
        }
        for i in 0..self.tasks.len() {
            if in_scope(self, i) {
                self.finish(i, Outcome::Skipped(reason), None, None, now);
            }
        }
        match phases {
            Phases::One(p) => {
                tracing::warn!(phase = %self.plan.phases[p], "phase budget ran out; its unfinished tasks were stopped");
            }
            Phases::Before(_) => {
                tracing::warn!(deadline = ?self.config.deadline, "shutdown deadline near; unfinished tasks were stopped, the final ones run in the time kept for them");
            }
            Phases::All if reason == SkipReason::Aborted => {
                tracing::warn!("the instance was aborted; its unfinished tasks were stopped");
            }
            Phases::All if reason == SkipReason::Halted => {
                tracing::warn!(
                    "the scope's task was cut off by its parent; its unfinished tasks were stopped"
                );
            }
            Phases::All => {
                tracing::warn!(deadline = ?self.config.deadline, "shutdown deadline passed; unfinished tasks were stopped");
            }
        }
    }
}

impl Runner {
    /// Why the run was ended at once (an abort, a parent's cut-off), if it
    /// was.
    pub(super) fn halted(&self) -> Option<SkipReason> {
        let code = self.outside.halted_flag.as_ref()?.load(Ordering::SeqCst);
        match code {
            0 => None,
            2 => Some(SkipReason::Aborted),
            _ => Some(SkipReason::Halted),
        }
    }
}

/// A halt's reason as the instance's flag holds it (0: not halted).
pub(crate) fn halt_code(why: SkipReason) -> u8 {
    match why {
        SkipReason::Aborted => 2,
        _ => 1,
    }
}

/// The phases a time limit ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phases {
    /// Every one: the deadline, a halt.
    All,
    /// One phase: its budget.
    One(usize),
    /// Those before this one (the final phase): the final tasks' time.
    Before(usize),
}

impl Phases {
    fn holds(self, phase: usize) -> bool {
        match self {
            Phases::All => true,
            Phases::One(p) => phase == p,
            Phases::Before(p) => phase < p,
        }
    }
}

fn log_end(name: &str, outcome: &Outcome, attempts: u32, leaked: Option<usize>) {
    match outcome {
        Outcome::Panicked(message) => {
            tracing::error!(task = %name, attempts, panic = %message, "cleanup panicked");
        }
        Outcome::Failed(error) => tracing::error!(task = %name, attempts, %error, "cleanup failed"),
        Outcome::TimedOut => tracing::warn!(task = %name, attempts, "cleanup timed out"),
        _ => {}
    }
    if let Some(strong) = leaked {
        tracing::warn!(task = %name, strong, "value still alive after its cleanup: possible leak");
    }
}

impl Runner {
    /// Lets go of the cleanups the tasks finished since the last call left
    /// to the runner, on tasks of the run's: those free now at once, those
    /// still held by a stopped attempt as each attempt lets go. Their
    /// `Drop`s are user code, run with the task known (a child process killed
    /// on the way is booked to it). Up to [`DISPOSAL_TASKS`] at a time each
    /// get a task of their own, so one `Drop` that holds its thread holds no
    /// other; more are shared out among that many tasks (at a deadline that
    /// skips 100,000 tasks: 64 tasks, not 100,000), where a `Drop` that
    /// holds its thread holds those after it in its share (reported
    /// abandoned, not known to be gone).
    pub(super) fn dispose(&mut self) {
        let undisposed = std::mem::take(&mut self.stopped.undisposed);
        if undisposed.is_empty() {
            return;
        }
        let share = undisposed.len().div_ceil(DISPOSAL_TASKS);
        let mut undisposed = undisposed.into_iter().peekable();
        while undisposed.peek().is_some() {
            let batch: Vec<u32> = undisposed.by_ref().take(share).collect();
            let indices = batch.clone();
            let gone = Arc::new(Mutex::new(Vec::new()));
            let dropped = let_go_of(self.ctx.clone(), batch, gone.clone());
            if let Some(handle) = spawn_or_run(dropped) {
                self.stopped.disposing.push(Disposal {
                    indices,
                    gone,
                    handle,
                });
            }
        }
    }
}

/// How many tasks one disposal uses at most (see [`Runner::dispose`]).
const DISPOSAL_TASKS: usize = 64;

/// Drops the cleanups of the tasks in `batch`, each once no attempt has it
/// out (a stopped attempt lets go of it), noting each task in `gone` once
/// its cleanup is.
async fn let_go_of(ctx: Arc<super::RunContext>, batch: Vec<u32>, gone: Arc<Mutex<Vec<u32>>>) {
    // Each taken as the attempt holding it lets go, in any order; the free
    // ones at once.
    let mut waiting: FuturesUnordered<_> = batch
        .into_iter()
        .map(|index| {
            let ctx = &ctx;
            async move { (index, ctx.slots.take(index).await) }
        })
        .collect();
    while let Some((index, cleanup)) = waiting.next().await {
        let _ = super::membership::dropping(&ctx, index, || drop_contained(cleanup));
        // Gone: an attempt still waiting for it (a blocking retry behind an
        // abandoned one) finds it so and ends.
        ctx.slots.put_back(index, None);
        gone.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(index);
    }
}

/// Cleanups being let go of on a task of the run's: which, which are gone.
pub(super) struct Disposal {
    pub(super) indices: Vec<u32>,
    pub(super) gone: Arc<Mutex<Vec<u32>>>,
    pub(super) handle: tokio::task::JoinHandle<()>,
}

impl Disposal {
    /// The tasks whose cleanup is not known to be gone (a disposal whose
    /// task was cancelled with its runtime did not drop them all).
    pub(super) fn left(&self) -> Vec<u32> {
        let gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
        if gone.len() == self.indices.len() {
            return Vec::new();
        }
        let gone: std::collections::HashSet<u32> = gone.iter().copied().collect();
        self.indices
            .iter()
            .copied()
            .filter(|i| !gone.contains(i))
            .collect()
    }
}
