//! Executes a [`Plan`]: starts each task when the tasks it waits for have
//! finished and its phase is current, enforces the deadline and phase
//! budgets, and turns what happened into a [`ShutdownReport`].

use std::collections::{BinaryHeap, HashMap};
use std::future::poll_fn;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tracing::Instrument;

use crate::attempt::{
    Attempt, Done, First, Job, RunContext, as_cleanup_of, conclude, drive, poll_once, start_async,
};
use crate::cleanup::BoxCleanup;
use crate::compactor::Inner;
use crate::plan::Plan;
use crate::report::Nanos;
use crate::{Event, Interruption, Outcome, ShutdownReason, ShutdownReport, SkipReason, TaskReport};

/// How many tasks one turn of the loop may start before the runner checks
/// its deadline and its mail again.
const STARTS_PER_TURN: usize = 4096;

/// A request for the report as it stands, from a cleanup that called
/// `shutdown()` on its own instance.
pub(crate) type SnapshotRequest = oneshot::Sender<ShutdownReport>;

/// A task handed over to a driver of its own, still running.
struct Driver {
    handle: JoinHandle<()>,
    blocking: bool,
}

/// When the task of a started entry began, `t0` being the run's start.
fn started(t0: Instant, entry: &TaskReport) -> Instant {
    t0 + entry.started_at().unwrap_or_default()
}

/// Where each task's entry is in the report, if it started: kept as
/// `index + 1`, so the table starts as zeroed memory (for a large run, pages
/// the system hands over zeroed, not a fill).
struct Positions(Vec<u32>);

impl Positions {
    fn new(n: usize) -> Positions {
        Positions(vec![0; n])
    }

    fn of(&self, task: usize) -> Option<usize> {
        self.0[task].checked_sub(1).map(|at| at as usize)
    }

    fn set(&mut self, task: usize, at: usize) {
        self.0[task] = at as u32 + 1;
    }
}

/// The ready tasks of a phase, latest registered first. Those ready from
/// the start come in registration order, so a range (or a plain vector)
/// popped from the end serves them; a heap takes only the tasks released
/// later.
struct Ready {
    /// Ready from the start: the phase's whole range of tasks when no task
    /// of the plan waits for another (no list to build), else those that
    /// wait for none, ascending.
    initial: Initial,
    /// Released by the tasks they waited for.
    released: BinaryHeap<u32>,
}

enum Initial {
    All(std::ops::Range<u32>),
    Listed(Vec<u32>),
}

impl Initial {
    fn last(&self) -> Option<u32> {
        match self {
            Initial::All(range) => range.clone().next_back(),
            Initial::Listed(list) => list.last().copied(),
        }
    }

    fn pop(&mut self) -> Option<u32> {
        match self {
            Initial::All(range) => range.next_back(),
            Initial::Listed(list) => list.pop(),
        }
    }
}

impl Ready {
    fn push(&mut self, index: u32) {
        self.released.push(index);
    }

    fn pop(&mut self) -> Option<u32> {
        match (self.initial.last(), self.released.peek()) {
            (Some(a), Some(&b)) if b > a => self.released.pop(),
            (Some(_), _) => self.initial.pop(),
            (None, _) => self.released.pop(),
        }
    }
}

struct Phase {
    unfinished: usize,
    /// Ready tasks; the latest registered (highest index) first.
    ready: Ready,
    budget: Option<Duration>,
}

pub(crate) struct Runner {
    ctx: Arc<RunContext>,
    plan: Plan,
    reason: ShutdownReason,
    owner: Arc<Inner>,
    /// The report of each started task, in the order they started: the
    /// report's own order, so the run ends by handing it over.
    reports: Vec<TaskReport>,
    /// Where each started task's entry is in `reports`.
    position: Positions,
    /// Tasks that ended without starting (skipped), with their outcome.
    unstarted: Vec<(u32, Outcome)>,
    /// The tasks running on drivers of their own.
    drivers: HashMap<u32, Driver>,
    phases: Vec<Phase>,
    current: usize,
    running: usize,
    finished: usize,
    t0: Instant,
    /// The latest clock reading: a task started inline starts when the one
    /// before it ended, so each costs one reading.
    clock: Instant,
}

impl Runner {
    pub(crate) fn new(
        ctx: Arc<RunContext>,
        plan: Plan,
        reason: ShutdownReason,
        owner: Arc<Inner>,
        t0: Instant,
    ) -> Runner {
        let config = &owner.config;
        let n = plan.tasks.len();
        let mut phases: Vec<Phase> = plan
            .phases
            .iter()
            .map(|p| Phase {
                unfinished: 0,
                ready: Ready {
                    initial: Initial::All(0..0),
                    released: BinaryHeap::new(),
                },
                budget: config.phase_budget(*p),
            })
            .collect();
        match phases.as_mut_slice() {
            // One phase (a flat shutdown): no task need be read.
            [only] => only.unfinished = n,
            phases => {
                for task in &plan.tasks {
                    phases[task.phase as usize].unfinished += 1;
                }
            }
        }
        // The plan lists its tasks phase by phase: each phase is a range.
        debug_assert!(plan.tasks.windows(2).all(|w| w[0].phase <= w[1].phase));
        let mut start = 0;
        for phase in &mut phases {
            let range = start..start + phase.unfinished as u32;
            start = range.end;
            phase.ready.initial = match plan.any_waiting() {
                false => Initial::All(range),
                true => Initial::Listed(range.filter(|&i| plan.waiting(i as usize) == 0).collect()),
            };
        }
        Runner {
            ctx,
            plan,
            reason,
            reports: Vec::with_capacity(n),
            position: Positions::new(n),
            unstarted: Vec::new(),
            drivers: HashMap::new(),
            phases,
            current: 0,
            running: 0,
            finished: 0,
            t0,
            clock: t0,
            owner,
        }
    }

    /// Runs the plan to its report; `serve_snapshots`: answer the instance's
    /// requests for the report so far (the whole shutdown does).
    pub(crate) async fn run(mut self, serve_snapshots: bool) -> (ShutdownReport, Plan) {
        let ctx = self.ctx.clone();
        let owner = self.owner.clone();
        let n = self.plan.tasks.len();
        let deadline = self.t0 + self.owner.config.deadline;
        // One timer for the next time limit: the deadline, or the current
        // phase's budget where that ends sooner.
        let mut limit = pin!(sleep_until(deadline));
        // The phase whose budget `limit` counts down, if it has one.
        let mut budgeted: Option<usize> = None;
        let mut timed: Option<usize> = None;
        let mut batch = Vec::new();
        let mut requests = Vec::new();
        while self.finished < n {
            // One task-local scope for the whole batch of inline starts.
            let instance = self.ctx.instance;
            let more =
                poll_fn(|cx| Poll::Ready(as_cleanup_of(instance, || self.start_ready(cx)))).await;
            if self.finished == n {
                break;
            }
            self.advance();
            if timed != Some(self.current) {
                // A new phase began: its budget starts now.
                timed = Some(self.current);
                let end = self.phases[self.current]
                    .budget
                    .map(|b| Instant::now() + b)
                    .filter(|&end| end < deadline);
                let at = end.unwrap_or(deadline);
                if limit.deadline() != at {
                    limit.as_mut().reset(at);
                }
                budgeted = end.map(|_| self.current);
            }
            if more {
                // Many tasks finished on their first poll: look at the clock
                // and the mail, then go on without waiting.
                if Instant::now() >= deadline {
                    self.expire_running(None);
                    break;
                }
                ctx.done.take(&mut batch);
                for d in batch.drain(..) {
                    self.complete(d);
                }
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                () = &mut limit => match budgeted.take() {
                    Some(phase) => {
                        self.expire_running(Some(phase));
                        limit.as_mut().reset(deadline);
                    }
                    None => {
                        self.expire_running(None);
                        break;
                    }
                },
                () = ctx.done.ready() => {
                    ctx.done.take(&mut batch);
                    for d in batch.drain(..) {
                        self.complete(d);
                    }
                }
                () = owner.snapshots.ready(), if serve_snapshots => {
                    owner.snapshots.take(&mut requests);
                    for reply in requests.drain(..) {
                        let _ = reply.send(self.snapshot());
                    }
                }
            }
        }
        self.ctx.stop();
        ctx.done.close();
        if serve_snapshots {
            // A request that comes too late waits for the final report.
            owner.snapshots.close();
        }
        self.into_report()
    }

    /// Moves `current` past the phases that have finished.
    fn advance(&mut self) {
        while self
            .phases
            .get(self.current)
            .is_some_and(|p| p.unfinished == 0)
        {
            self.current += 1;
        }
    }

    /// Starts ready tasks of the current phase, up to the concurrency limit,
    /// moving on through the phases as tasks finish on their first poll.
    /// Returns whether ready tasks were left for the next turn.
    fn start_ready(&mut self, cx: &mut Context<'_>) -> bool {
        self.ctx.refresh_listening();
        self.clock = Instant::now();
        let limit = self.owner.config.concurrency.get();
        for _ in 0..STARTS_PER_TURN {
            self.advance();
            if self.running >= limit {
                return false;
            }
            let Some(phase) = self.phases.get_mut(self.current) else {
                return false;
            };
            let Some(index) = phase.ready.pop() else {
                return false;
            };
            if !self.is_finished(index as usize) {
                self.start(index, cx);
            }
        }
        true
    }

    /// Starts a task and polls its first attempt once right here: a cleanup
    /// that finishes on its first poll costs no spawn, no channel message, no
    /// timer and no boxed driver. One that waits (or fails and has retries)
    /// is handed to [`drive`] on a task of its own, to go on in parallel.
    fn start(&mut self, index: u32, cx: &mut Context<'_>) {
        let i = index as usize;
        let started = self.clock;
        self.position.set(i, self.reports.len());
        let entry = self.entry(i, Outcome::Pending, Some(started));
        self.reports.push(entry);
        self.running += 1;
        let task = &mut self.plan.tasks[i];
        let mut cleanup = task.node.take_cleanup();
        let name = &self.ctx.names[i];
        let span = tracing::info_span!(
            "cleanup",
            task = %name,
            category = %task.node.spec.category,
            priority = %task.effective.get(),
            attempt = tracing::field::Empty,
            outcome = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        if cleanup.is_blocking() {
            self.handover(index, cleanup, span, First::Fresh);
            return;
        }
        let retries = task.node.spec.retries;
        let entered = span.enter();
        self.ctx.progress[i].attempts.store(1, Ordering::Relaxed);
        let token = cleanup.observes_token().then(|| self.ctx.attempt_token());
        let outcome = match start_async(&mut cleanup, token.as_ref()) {
            Err(Attempt::Released) => {
                // The closure was not called.
                self.ctx.progress[i].attempts.store(0, Ordering::Relaxed);
                Outcome::Released
            }
            Err(Attempt::Panicked(message)) => Outcome::Panicked(message),
            Err(_) => unreachable!("starting an attempt ends only as released or panicked"),
            Ok(mut future) => {
                self.ctx.announce(name, 1);
                match poll_once(&mut future, cx) {
                    Poll::Ready(Attempt::Ok) => Outcome::Succeeded,
                    Poll::Ready(Attempt::Panicked(message)) => Outcome::Panicked(message),
                    Poll::Ready(Attempt::Err(error)) if retries == 0 => Outcome::Failed(error),
                    Poll::Ready(Attempt::Err(error)) => {
                        drop(entered);
                        self.handover(index, cleanup, span, First::Failed { error, started });
                        return;
                    }
                    Poll::Ready(Attempt::TimedOut(_) | Attempt::Released) => {
                        unreachable!("a first poll neither times out nor releases")
                    }
                    Poll::Pending => {
                        drop(entered);
                        let first = First::Pending {
                            future,
                            token,
                            started,
                        };
                        self.handover(index, cleanup, span, first);
                        return;
                    }
                }
            }
        };
        let finished = Instant::now();
        self.clock = finished;
        let strong = cleanup.strong_count();
        drop(cleanup);
        let done = Done {
            index,
            outcome,
            attempts: self.ctx.progress[i].attempts.load(Ordering::Relaxed),
            started,
            finished,
            interruption: None,
            leaked: None,
        };
        let done = conclude(&self.ctx, name, &span, done, strong);
        drop(entered);
        self.record(done);
    }

    /// Spawns the rest of a task's life onto the runtime.
    fn handover(&mut self, index: u32, cleanup: BoxCleanup, span: tracing::Span, first: First) {
        let spec = self.plan.tasks[index as usize].spec();
        let blocking = cleanup.is_blocking();
        let job = Job {
            index,
            name: self.ctx.names[index as usize].clone(),
            cleanup,
            timeout: spec.timeout.unwrap_or(self.owner.config.default_timeout),
            retries: spec.retries,
            backoff: spec
                .backoff
                .as_deref()
                .copied()
                .unwrap_or(self.owner.config.backoff),
        };
        let ctx = self.ctx.clone();
        let run = drive(self.ctx.clone(), job, first).instrument(span);
        let handle = tokio::spawn(async move {
            let _ = ctx.done.send(run.await);
        });
        self.drivers.insert(index, Driver { handle, blocking });
    }

    fn is_finished(&self, index: usize) -> bool {
        self.ctx.progress[index].finished.load(Ordering::Relaxed)
    }

    /// A driver's report of its task's end.
    fn complete(&mut self, done: Done) {
        if self.is_finished(done.index as usize) {
            // Stopped by a phase budget while its report was on the way.
            return;
        }
        self.drivers.remove(&done.index);
        self.record(done);
    }

    /// Writes a started task's end into its report entry.
    fn record(&mut self, done: Done) {
        let index = done.index as usize;
        self.running -= 1;
        let entry = &mut self.reports[self.position.of(index).expect("a started task")];
        entry.started_at = Nanos::new(done.started.saturating_duration_since(self.t0));
        entry.duration = Nanos::new(done.finished.saturating_duration_since(done.started));
        entry.interruption = done.interruption;
        entry.leaked = done.leaked.and_then(NonZeroUsize::new);
        self.finish(index, done.outcome);
    }

    /// Records the final outcome and releases the tasks that waited for it.
    fn finish(&mut self, index: usize, outcome: Outcome) {
        let task = &self.plan.tasks[index];
        let attempts = self.ctx.progress[index].attempts.load(Ordering::Relaxed);
        let elapsed = match self.position.of(index) {
            None => Duration::ZERO,
            Some(at) => self.reports[at].duration(),
        };
        self.ctx.emit(|| Event::TaskFinished {
            name: self.ctx.names[index].clone(),
            outcome: outcome.clone(),
            attempts,
            elapsed,
        });
        match self.position.of(index) {
            None => self.unstarted.push((index as u32, outcome)),
            Some(at) => {
                let entry = &mut self.reports[at];
                entry.outcome = outcome;
                entry.attempts = attempts;
            }
        }
        self.ctx.progress[index]
            .finished
            .store(true, Ordering::Relaxed);
        self.finished += 1;
        self.phases[task.phase as usize].unfinished -= 1;
        for d in self.plan.precedes.of(index as u32) {
            // Only tasks with edges have waiting counts.
            let waiting = &mut self.plan.waiting[d as usize];
            *waiting -= 1;
            if *waiting == 0 {
                let phase = self.plan.tasks[d as usize].phase as usize;
                self.phases[phase].ready.push(d);
            }
        }
    }

    /// Stops the running tasks (all, or those of one phase) and skips the
    /// unstarted ones, at the deadline or the end of a phase budget.
    fn expire_running(&mut self, phase: Option<usize>) {
        let now = Instant::now();
        let reason = match phase {
            Some(_) => SkipReason::PhaseBudget,
            None => {
                self.ctx.stop();
                SkipReason::Deadline
            }
        };
        let in_scope = |runner: &Runner, index: usize| {
            !runner.is_finished(index)
                && phase.is_none_or(|p| runner.plan.tasks[index].phase as usize == p)
        };
        // The running tasks first, then those that never started.
        let mut stopped: Vec<u32> = self
            .drivers
            .keys()
            .copied()
            .filter(|&i| in_scope(self, i as usize))
            .collect();
        stopped.sort_unstable();
        for index in stopped {
            let driver = self.drivers.remove(&index).expect("a running task");
            driver.handle.abort();
            self.running -= 1;
            let i = index as usize;
            let t0 = self.t0;
            let entry = &mut self.reports[self.position.of(i).expect("a running task")];
            entry.duration = Nanos::new(now.saturating_duration_since(started(t0, entry)));
            entry.interruption = Some(match driver.blocking {
                true => Interruption::Abandoned,
                false => Interruption::Dropped,
            });
            self.finish(i, Outcome::Cancelled);
        }
        for index in 0..self.plan.tasks.len() {
            if in_scope(self, index) {
                self.finish(index, Outcome::Skipped(reason));
            }
        }
        if let Some(p) = phase {
            tracing::warn!(phase = %self.plan.phases[p], "phase budget ran out; its unfinished tasks were stopped");
        } else {
            tracing::warn!(deadline = ?self.owner.config.deadline, "shutdown deadline passed; unfinished tasks were stopped");
        }
    }

    /// A task's report entry before it ends: started at `started`, or not.
    fn entry(&self, i: usize, outcome: Outcome, started: Option<Instant>) -> TaskReport {
        let task = &self.plan.tasks[i];
        TaskReport {
            name: self.ctx.names[i].clone(),
            outcome,
            attempts: 0,
            priority: task.node.spec.priority.into(),
            effective_priority: task.effective,
            category: task.node.spec.category.clone(),
            started_at: started.map_or(Nanos::NONE, |s| {
                Nanos::new(s.saturating_duration_since(self.t0))
            }),
            duration: Nanos::ZERO,
            interruption: None,
            leaked: None,
        }
    }

    /// The report as it stands, for a cleanup that asked for it mid-run.
    fn snapshot(&self) -> ShutdownReport {
        let mut tasks = self.reports.clone();
        let now = Instant::now();
        for i in 0..self.plan.tasks.len() {
            if let (Some(at), false) = (self.position.of(i), self.is_finished(i)) {
                let entry = &mut tasks[at];
                entry.attempts = self.ctx.progress[i].attempts.load(Ordering::Relaxed);
                entry.duration = Nanos::new(now.saturating_duration_since(started(self.t0, entry)));
            }
        }
        self.finish_report(tasks, false)
    }

    /// The final report: the entries of the started tasks, handed over.
    /// The plan comes back too, for its caller to drop once the report is
    /// out: freeing a node per task is no reason to keep anyone waiting.
    /// (Only the plan: the runner holds the instance, which must be free to
    /// go as soon as the report is published.)
    fn into_report(mut self) -> (ShutdownReport, Plan) {
        let tasks = std::mem::take(&mut self.reports);
        let report = self.finish_report(tasks, true);
        (report, self.plan)
    }

    /// `tasks` (the started ones) followed by those that never started, in
    /// plan order.
    fn finish_report(&self, mut tasks: Vec<TaskReport>, complete: bool) -> ShutdownReport {
        let n = self.plan.tasks.len();
        let mut unstarted = self.unstarted.clone();
        unstarted.sort_unstable_by_key(|(i, _)| *i);
        let mut ended = unstarted.into_iter().peekable();
        for i in 0..n {
            if tasks.len() == n {
                break;
            }
            if self.position.of(i).is_some() {
                continue;
            }
            let outcome = match ended.next_if(|(at, _)| *at as usize == i) {
                Some((_, outcome)) => outcome,
                None => Outcome::Pending,
            };
            tasks.push(self.entry(i, outcome, None));
        }
        ShutdownReport::new(
            self.reason.clone(),
            complete,
            self.t0.elapsed(),
            self.plan.warnings.clone(),
            tasks,
            self.owner.signal_exit(),
        )
    }
}
