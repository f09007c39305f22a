//! The runner: starts each task when the tasks it waits for have finished
//! and its phase is current, keeps every time limit, and books what happens.
//! It runs no user code: attempts run on tasks and threads of their own
//! (see [`super::attempt`]) and report back through the mailbox.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::clock::{Timers, after, earliest};
use super::finish::Phases;
use super::mailbox::Mailbox;
use super::record::{Head, Record};
use super::state::{Books, Clock, Lanes, Outside, Phase, Ready, State, Stopped, TaskRun};
use super::{EarlyRun, RunContext, SnapshotRequest, Ticker};
use crate::config::Config;
use crate::plan::Plan;
use crate::report::SkipReason;

/// How many tasks one turn may start before the runner looks at its clock
/// and its mail again.
const STARTS_PER_TURN: usize = 1024;

/// How many tasks a turn starts per reading of the clock (their start
/// times, and the timeouts counted from them, are that close: a few µs).
const CLOCK_EVERY: usize = 16;

/// A run's state, in named parts: what it schedules (its tasks, their
/// phases, what runs), its clock, its books, its lanes, what it stopped
/// that is not yet gone, and what reaches it from outside.
pub(crate) struct Runner {
    pub(super) ctx: Arc<RunContext>,
    pub(super) plan: Plan,
    pub(super) config: Arc<Config>,
    pub(super) tasks: Vec<TaskRun>,
    pub(super) phases: Vec<Phase>,
    /// The current phase (an index into `phases`).
    pub(super) current: usize,
    /// Tasks with an attempt under way or between attempts.
    pub(super) running: usize,
    pub(super) finished: usize,
    pub(super) clock: Clock,
    pub(super) books: Books,
    pub(super) lanes: Lanes,
    pub(super) stopped: Stopped,
    pub(super) outside: Outside,
}

/// How a turn of the runner ended.
enum Turn {
    /// The run is over (finished, out of time, or halted).
    Over,
    /// Ready tasks are left: go on after a yield.
    More,
    /// Nothing to do until something happens.
    Wait,
}

/// What woke the parked runner.
enum Woke {
    Alarm,
    Snapshot,
    Halt,
}

/// What a runner is handed besides its plan.
pub(crate) struct RunnerParts {
    pub(crate) ctx: Arc<RunContext>,
    pub(crate) config: Arc<Config>,
    pub(crate) head: Head,
    pub(crate) t0: Instant,
    pub(crate) snapshots: Option<Arc<Mailbox<SnapshotRequest>>>,
    pub(crate) halt: Option<CancellationToken>,
    pub(crate) halted: Option<Arc<std::sync::atomic::AtomicU8>>,
    /// The instance's services, for a shutdown's run (an early run leaves
    /// the others running).
    pub(crate) services: Option<Arc<super::live::LiveServices>>,
    pub(crate) early_runs: Vec<EarlyRun>,
    /// Tasks run before, reported in this run (scopes a failure shut down).
    pub(crate) earlier: Vec<crate::report::TaskReport>,
    pub(crate) ticker: Option<Ticker>,
}

impl Runner {
    pub(crate) fn new(plan: Plan, parts: RunnerParts) -> Runner {
        let config = parts.config;
        let mut head = parts.head;
        head.warnings = plan.warnings.clone();
        let mut phases: Vec<Phase> = plan
            .phases
            .iter()
            .map(|p| Phase {
                unfinished: 0,
                ready: Ready::default(),
                budget: config.phase_budget(*p),
            })
            .collect();
        for (i, task) in plan.tasks.iter().enumerate() {
            let phase = &mut phases[task.phase as usize];
            phase.unfinished += 1;
            if plan.waiting(i) == 0 {
                phase.ready.push_initial(i as u32);
            }
        }
        let tasks = plan
            .tasks
            .iter()
            .map(|_| TaskRun {
                state: State::Waiting,
                blocking: false,
                observes_token: false,
                span: tracing::Span::none(),
                scope: None,
            })
            .collect();
        Runner {
            books: Books {
                record: Record::new(&plan, &parts.ctx.names, parts.t0),
                head,
                left: parts.earlier.len(),
                early_run_tasks: parts.earlier,
                running: crate::telemetry::Running::new(),
            },
            clock: Clock {
                t0: parts.t0,
                deadline: after(parts.t0, config.deadline),
                finals: super::finals::begin(&plan, &config, parts.t0),
                budget: None,
                timers: Timers::default(),
                ticker: parts.ticker.map(|ticker| {
                    let next = after(parts.t0, ticker.every);
                    (ticker, next)
                }),
                armed: None,
            },
            ctx: parts.ctx,
            plan,
            config,
            tasks,
            phases,
            current: 0,
            running: 0,
            finished: 0,
            lanes: Lanes::default(),
            stopped: Stopped::default(),
            outside: Outside {
                snapshots: parts.snapshots,
                halt: parts.halt,
                halted_flag: parts.halted,
                services: parts.services,
                early_runs: parts.early_runs,
            },
        }
    }

    pub(super) fn done(&self) -> bool {
        self.finished == self.tasks.len()
    }

    /// Runs until every task has finished or the time is up. The state stays
    /// in `slot`, so a run whose runtime went away can go on elsewhere; while
    /// the runner waits, it is parked in the run's context instead, where an
    /// attempt that ends books itself (see [`Runner::book_here`]).
    pub(crate) async fn run(slot: &mut Option<Box<Runner>>) {
        let Some(runner) = slot.as_ref() else {
            return;
        };
        let ctx = runner.ctx.clone();
        let snapshots = runner.outside.snapshots.clone();
        let halt = runner.outside.halt.clone();
        let mut sleep: Option<Pin<Box<Sleep>>> = None;
        let mut ended = Vec::new();
        loop {
            let Some(runner) = slot.as_mut() else {
                return;
            };
            let more = match runner.turn(&mut ended) {
                Turn::Over => break,
                Turn::More => true,
                Turn::Wait => false,
            };
            if more {
                // Many ready tasks: go on after letting the attempts run.
                tokio::task::yield_now().await;
                continue;
            }
            let limit = runner.next_limit();
            runner.clock.armed = limit;
            set_alarm(&mut sleep, limit);
            if let Some(runner) = slot.take() {
                ctx.park(runner);
            }
            let woke = tokio::select! {
                () = alarm(&mut sleep) => Woke::Alarm,
                () = ctx.done.ready() => Woke::Alarm,
                () = ready(snapshots.as_deref()) => Woke::Snapshot,
                () = cancelled(halt.as_ref()) => Woke::Halt,
            };
            *slot = ctx.unpark();
            let Some(runner) = slot.as_mut() else {
                return;
            };
            runner.clock.armed = None;
            match woke {
                Woke::Alarm => {}
                Woke::Snapshot => runner.serve_snapshots(),
                Woke::Halt => {
                    runner.expire(Phases::All, SkipReason::Deadline);
                    break;
                }
            }
        }
        let Some(runner) = slot.as_mut() else {
            return;
        };
        runner.await_early_runs().await;
        runner.await_stopped().await;
        ctx.stop();
        ctx.done.close();
        if let Some(snapshots) = &snapshots {
            // A request that comes too late waits for the final report.
            snapshots.close();
        }
    }

    /// One turn: the mail, the time limits, then the ready tasks.
    fn turn(&mut self, ended: &mut Vec<super::attempt::Ended>) -> Turn {
        let turn = self.turn_inner(ended);
        self.dispose();
        turn
    }

    fn turn_inner(&mut self, ended: &mut Vec<super::attempt::Ended>) -> Turn {
        // The mail first: an attempt that ended before a limit counts.
        self.ctx.done.take(ended);
        ended.drain(..).for_each(|e| self.on_end(e));
        let out_of_time = self.on_time(Instant::now());
        // Retries it started go out before anything stops them.
        self.send_lane();
        if out_of_time {
            return Turn::Over;
        }
        if let Some(why) = self.halted() {
            self.expire(Phases::All, why);
            return Turn::Over;
        }
        self.ctx.refresh_listening();
        let more = self.start_ready();
        self.send_lane();
        match (self.done(), more) {
            (true, _) => Turn::Over,
            (false, true) => Turn::More,
            (false, false) => Turn::Wait,
        }
    }

    /// Books an attempt's end while the runner is parked, where the attempt
    /// ended, and starts what it freed there (on `lane`, the lane it ended
    /// on, if it did): a chain goes on with no wake-up of the runner. What
    /// only the runner does (a limit reached, a halt, the run's end, an
    /// alarm to set earlier) wakes it.
    pub(super) fn book_here(&mut self, ended: super::attempt::Ended) {
        let now = ended.at;
        self.lanes.open = super::lane::current();
        self.lanes.first_out = true;
        self.on_end(ended);
        let due = self.next_limit().is_some_and(|at| at <= now)
            || self.halted().is_some()
            || self
                .outside
                .halt
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled);
        let more = !due && self.start_ready();
        self.keep_lane();
        self.send_lane();
        self.dispose();
        let sooner = earliest([self.next_limit(), self.clock.armed]) != self.clock.armed;
        if due || more || sooner || self.done() {
            self.ctx.done.nudge();
        }
    }

    fn next_limit(&self) -> Option<Instant> {
        let budget = self.clock.budget.and_then(|(_, end)| end);
        let tick = self.clock.ticker.as_ref().and_then(|(_, next)| *next);
        earliest([
            self.clock.deadline,
            self.clock.finals.map(|(_, at)| at),
            budget,
            self.clock.timers.next(),
            tick,
            self.lanes.check,
        ])
    }

    /// Acts on every limit reached by `now`; `true` once the deadline passed.
    fn on_time(&mut self, now: Instant) -> bool {
        if self.clock.deadline.is_some_and(|d| now >= d) {
            self.expire(Phases::All, SkipReason::Deadline);
            return true;
        }
        self.on_finals_time(now);
        if let Some((phase, Some(end))) = self.clock.budget {
            if now >= end {
                self.clock.budget = Some((phase, None));
                self.expire(Phases::One(phase), SkipReason::PhaseBudget);
            }
        }
        while let Some(timer) = self.clock.timers.pop_due(now) {
            self.on_timer(timer, now);
        }
        self.check_lanes(now);
        if let Some((ticker, next)) = &mut self.clock.ticker {
            if next.is_some_and(|at| now >= at) {
                *next = after(now, ticker.every);
                ticker.tick(&self.ctx, false);
            }
        }
        false
    }

    /// Moves `current` past the finished phases; a phase's budget starts
    /// when it becomes current.
    pub(super) fn advance(&mut self) {
        while self
            .phases
            .get(self.current)
            .is_some_and(|p| p.unfinished == 0)
        {
            self.current += 1;
            self.ctx
                .current_phase
                .store(self.current as u32, Ordering::Release);
        }
        if self
            .clock
            .budget
            .is_none_or(|(phase, _)| phase != self.current)
            && self.current < self.phases.len()
        {
            let end = self.phases[self.current]
                .budget
                .and_then(|b| after(Instant::now(), b))
                .filter(|&end| self.clock.deadline.is_none_or(|d| end < d));
            self.clock.budget = Some((self.current, end));
        }
    }

    /// Starts ready tasks of the current phase, up to the concurrency limit.
    /// Returns whether ready tasks were left for the next turn.
    fn start_ready(&mut self) -> bool {
        let limit = self.config.concurrency.get();
        let mut now = Instant::now();
        for started in 0..STARTS_PER_TURN {
            if started % CLOCK_EVERY == CLOCK_EVERY - 1 {
                now = Instant::now();
            }
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
            if matches!(self.tasks[index as usize].state, State::Waiting) {
                self.start(index, now);
            }
        }
        true
    }

    fn start(&mut self, index: u32, now: Instant) {
        let i = index as usize;
        let planned = &mut self.plan.tasks[i];
        let held = planned.node.try_take_cleanup();
        let Some(cleanup) = held.or_else(|| self.ctx.finals.take(index)) else {
            // A final task's cleanup that a process ending first ran.
            self.finish(
                i,
                crate::Outcome::Skipped(SkipReason::Deadline),
                None,
                None,
                now,
            );
            return;
        };
        self.books.record.start(index, now);
        self.books.running.started();
        self.running += 1;
        let planned = &mut self.plan.tasks[i];
        let task = &mut self.tasks[i];
        task.blocking = cleanup.is_blocking();
        task.observes_token = cleanup.observes_token();
        task.scope = scope_of(&*cleanup);
        task.span = tracing::info_span!(
            "cleanup",
            task = %self.ctx.names[i],
            category = %planned.node.spec.category,
            priority = %planned.effective,
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        self.ctx.slots.fill(index, cleanup);
        self.attempt(index, 1, now);
    }
}

/// The scope a scope's task shuts down.
pub(super) fn scope_of(cleanup: &dyn crate::task::cleanup::Cleanup) -> Option<crate::Compactor> {
    let scope = cleanup.scope()?.downcast::<crate::Compactor>().ok()?;
    Some(*scope)
}

fn set_alarm(sleep: &mut Option<Pin<Box<Sleep>>>, at: Option<Instant>) {
    match (sleep.as_mut(), at) {
        (Some(s), Some(at)) if s.deadline() != at => s.as_mut().reset(at),
        (Some(_), Some(_)) => {}
        (None, Some(at)) => *sleep = Some(Box::pin(sleep_until(at))),
        (_, None) => *sleep = None,
    }
}

/// Fires when the alarm is due; never without one.
fn alarm(sleep: &mut Option<Pin<Box<Sleep>>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match sleep.as_mut() {
        Some(s) => s.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

pub(super) async fn ready<T>(mailbox: Option<&Mailbox<T>>) {
    match mailbox {
        Some(mailbox) => mailbox.ready().await,
        None => std::future::pending().await,
    }
}

async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}
