//! Plan + settings -> [`ShutdownReport`]: the engine's run.
//!
//! The runner ([`scheduler`]) keeps the time limits and the books and runs
//! no user code; each attempt runs on a task or thread of its own
//! ([`attempt`]) and reports back through a [`mailbox`]. A run whose runtime
//! goes away before it ends goes on on the library's own runtime ([`drive`]).

pub(crate) mod attempt;
pub(crate) mod clock;
pub(crate) mod contain;
mod early;
mod finals;
mod finish;
mod lane;
pub(crate) mod live;
pub(crate) mod mailbox;
pub(crate) mod membership;
mod observe;
#[cfg(feature = "process")]
pub(crate) mod reaper;
mod record;
mod scheduler;
mod settle;
mod slot;
mod state;
mod supervise;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};

use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::plan::Plan;
use crate::{Event, ShutdownReport};

pub(crate) use finish::halt_code;
pub(crate) use membership::Chain;
#[cfg(feature = "process")]
pub(crate) use membership::{killer_gone, killer_made, tell_dropping_task};
pub(crate) use observe::{Layout, Standing};
pub(crate) use record::{Head, pending_report as stalled_report};
pub(crate) use scheduler::{Runner, RunnerParts};

/// Called by the runner every `every` while the run goes on, and once
/// with `over` set when it has ended: how the run's progress is shown.
#[derive(Clone)]
pub(crate) struct Ticker {
    pub(crate) every: std::time::Duration,
    pub(crate) tick: TickFn,
}

/// A ticker's hook: the run's state, and whether the run has ended.
pub(crate) type TickFn = Arc<dyn Fn(&RunContext, bool) + Send + Sync>;

impl Ticker {
    /// One ticker for several, ticking as often as the most frequent (each
    /// hook keeps its own pace); `None` for none.
    pub(crate) fn joined(mut tickers: Vec<Ticker>) -> Option<Ticker> {
        if tickers.len() <= 1 {
            return tickers.pop();
        }
        let every = tickers.iter().map(|t| t.every).min()?;
        let tick = move |ctx: &RunContext, over: bool| {
            for ticker in &tickers {
                ticker.tick(ctx, over);
            }
        };
        Some(Ticker {
            every,
            tick: Arc::new(tick),
        })
    }

    /// Calls the hook; a panic in it (a logging layer's) is contained.
    pub(crate) fn tick(&self, ctx: &RunContext, over: bool) {
        let call = std::panic::AssertUnwindSafe(|| (self.tick)(ctx, over));
        let _ = std::panic::catch_unwind(call);
    }
}

/// A request for the report so far, from code inside the run.
pub(crate) type SnapshotRequest = oneshot::Sender<ShutdownReport>;

/// An early run under way, as the instance's shutdown waits for it.
#[derive(Clone)]
pub(crate) struct EarlyRun {
    pub(crate) halt: CancellationToken,
    pub(crate) report: watch::Receiver<Option<ShutdownReport>>,
    pub(crate) t0: Instant,
}

/// What every attempt of one run shares with the runner.
pub(crate) struct RunContext {
    /// The instances whose run this is part of (see [`Chain`]).
    pub(crate) chain: Chain,
    /// Where attempts report their end.
    pub(crate) done: mailbox::Mailbox<attempt::Ended>,
    events: Events,
    /// Fires at the deadline; the parent of every attempt's token.
    stop: CancellationToken,
    /// Set as `stop` fires.
    stopped: AtomicBool,
    /// Per task, read from other threads.
    pub(crate) headway: Box<[Headway]>,
    /// Per task, its cleanup between its attempts.
    pub(crate) slots: slot::Slots,
    pub(crate) names: Arc<[Arc<str>]>,
    /// The plan's shape, for what a task waits for.
    pub(crate) layout: Layout,
    /// When the run began.
    pub(crate) t0: Instant,
    /// The phase the runner is in (an index into `layout.phases`).
    pub(crate) current_phase: AtomicU32,
    /// When it ended, in nanoseconds since its start plus one; zero while
    /// it goes on.
    ended: AtomicU64,
    /// The thread of the current-thread runtime driving the run, if it is
    /// on one: a caller there that blocks waits on itself.
    driver: std::sync::Mutex<Option<std::thread::ThreadId>>,
    /// The runner while it waits for something to happen: an attempt that
    /// ends meanwhile books its end and starts what it freed right where it
    /// ended (see [`Runner::book_here`]), with no wake-up of the runner.
    parked: std::sync::Mutex<Option<Box<Runner>>>,
    /// Child processes killed as tasks' cleanups were dropped: (task index,
    /// the child's id, how it ended once reaped).
    killing: std::sync::Mutex<Vec<Killed>>,
    /// Set when the run moves to the library's own runtime.
    moved: AtomicBool,
    /// The final phase's cleanups not started yet.
    pub(crate) finals: finals::Finals,
}

/// The instance's events, as a run sends them.
struct Events {
    sender: Arc<OnceLock<broadcast::Sender<Event>>>,
    /// Whether anyone subscribes: asking the channel takes its lock, so the
    /// runner refreshes this once per turn.
    listening: AtomicBool,
}

/// A child process killed as a task's cleanup was dropped: the task's
/// index, the child's id, and how it ended once reaped.
pub(crate) type Killed = (u32, Option<u32>, Option<std::process::ExitStatus>);

/// How far a task has got.
#[derive(Default)]
pub(crate) struct Headway {
    /// Attempts begun so far.
    pub(crate) attempts: AtomicU32,
    pub(crate) finished: AtomicBool,
    /// Between a failed attempt and the next.
    pub(crate) backing_off: AtomicBool,
    /// When its current attempt began, in nanoseconds since the run's start
    /// plus one; zero before the first.
    pub(crate) attempt_began: AtomicU64,
    /// Between its attempt's lane and the runner (see [`lane::LaneCell`]).
    pub(crate) lane: lane::LaneCell,
}

impl RunContext {
    /// The shared state of a run of `plan`, whose names it takes.
    pub(crate) fn new(
        chain: Chain,
        events: Arc<OnceLock<broadcast::Sender<Event>>>,
        plan: &mut Plan,
        t0: Instant,
    ) -> RunContext {
        let names: Arc<[Arc<str>]> = std::mem::take(&mut plan.names).into();
        let finals = finals::Finals::of(plan);
        RunContext {
            chain,
            done: mailbox::Mailbox::new(),
            events: Events {
                sender: events,
                listening: AtomicBool::new(false),
            },
            stop: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            headway: names.iter().map(|_| Headway::default()).collect(),
            slots: slot::Slots::new(names.len()),
            names,
            layout: Layout::of(plan),
            t0,
            current_phase: AtomicU32::new(0),
            ended: AtomicU64::new(0),
            driver: std::sync::Mutex::new(None),
            parked: std::sync::Mutex::new(None),
            killing: std::sync::Mutex::new(Vec::new()),
            moved: AtomicBool::new(false),
            finals,
        }
    }

    /// Notes that the run has ended, `after` its start.
    pub(crate) fn end(&self, after: std::time::Duration) {
        let nanos = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        self.ended.store(nanos.saturating_add(1), Ordering::Release);
    }

    /// How long the run took, once it has ended.
    pub(crate) fn ended_after(&self) -> Option<std::time::Duration> {
        match self.ended.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(std::time::Duration::from_nanos(nanos - 1)),
        }
    }

    /// Notes where the run is driven: called where it is spawned, and when
    /// it moves to the library's own runtime.
    pub(crate) fn driven_here(&self, own: bool) {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        let current_thread = matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::CurrentThread));
        *self
            .driver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (current_thread && !own).then(|| std::thread::current().id());
    }

    /// Whether the run is driven by the current-thread runtime of this thread.
    pub(crate) fn driven_by_this_thread(&self) -> bool {
        let driver = self
            .driver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *driver == Some(std::thread::current().id())
    }

    /// A token for an attempt, cancelled when the run stops.
    pub(crate) fn attempt_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Cancels every attempt's token, those made later too.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Whether the run has stopped its attempts: read on every attempt's
    /// begin, so a flag, not the token (whose state is behind its lock).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if self.events.listening.load(Ordering::Relaxed) {
            if let Some(events) = self.events.sender.get() {
                let _ = events.send(event());
            }
        }
    }

    pub(crate) fn refresh_listening(&self) {
        self.events.listening.store(
            self.events
                .sender
                .get()
                .is_some_and(|e| e.receiver_count() > 0),
            Ordering::Relaxed,
        );
    }

    #[cfg_attr(not(feature = "process"), allow(dead_code))]
    /// Notes a child process of task `index` killed (`status`: `None` until
    /// it is reaped).
    pub(crate) fn killing(
        &self,
        index: u32,
        pid: Option<u32>,
        status: Option<std::process::ExitStatus>,
    ) {
        let mut killing = self.killing.lock().unwrap_or_else(PoisonError::into_inner);
        match killing
            .iter_mut()
            .find(|(i, p, _)| *i == index && *p == pid)
        {
            Some(entry) => entry.2 = status.or(entry.2),
            None => killing.push((index, pid, status)),
        }
    }

    /// The children killed so far (see [`RunContext::killing`]).
    pub(crate) fn killed(&self) -> Vec<Killed> {
        self.killing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Leaves the runner here while it waits.
    fn park(&self, runner: Box<Runner>) {
        *self.parked.lock().unwrap_or_else(PoisonError::into_inner) = Some(runner);
    }

    /// Takes the parked runner back (waiting for an attempt booking its end
    /// on it to finish).
    fn unpark(&self) -> Option<Box<Runner>> {
        self.parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Books an attempt's end on the parked runner, if it is parked and
    /// free; gives the end back otherwise (it goes to the mailbox).
    /// Not once the run has moved to the library's own runtime, from a
    /// thread of another (the one going away): what the end frees would be
    /// spawned there.
    pub(crate) fn book_here(&self, ended: attempt::Ended) -> Result<(), attempt::Ended> {
        if self.moved.load(Ordering::Acquire) && !on_own_runtime() {
            return Err(ended);
        }
        let Ok(mut parked) = self.parked.try_lock() else {
            return Err(ended);
        };
        let Some(runner) = parked.as_mut() else {
            return Err(ended);
        };
        let booked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runner.book_here(ended);
        }));
        if let Err(panic) = booked {
            // A logging layer's (the books come first): the runner looks
            // at where things stand.
            let message = contain::message_of(panic);
            drop(parked);
            tracing::error!(panic = %message, "booking an attempt's end panicked");
            self.done.nudge();
        }
        Ok(())
    }

    pub(crate) fn announce(&self, index: u32, attempt: u32) {
        self.emit(|| Event::TaskStarted {
            name: self.names[index as usize].clone(),
            attempt,
        });
    }
}

/// What to do with the report once the run has ended (and the spent plan,
/// to drop after).
pub(crate) type Finish = Box<dyn FnOnce(ShutdownReport, Plan) + Send>;

/// Drives `runner` to its report and hands it to `finish`. If the future is
/// dropped first (its runtime shut down), the run goes on on the library's
/// own runtime; failing that, it ends where it stands, as at its deadline.
pub(crate) fn drive(runner: Runner, finish: Finish) -> impl Future<Output = ()> + Send + 'static {
    carry(Carry {
        ctx: runner.ctx.clone(),
        runner: Some(Box::new(runner)),
        finish: Some(finish),
        moved: false,
    })
}

struct Carry {
    ctx: Arc<RunContext>,
    /// The runner, unless it is parked in `ctx` while it waits.
    runner: Option<Box<Runner>>,
    finish: Option<Finish>,
    /// Already moved once: a second drop ends the run at once.
    moved: bool,
}

async fn carry(mut carry: Carry) {
    Runner::run(&mut carry.runner).await;
    carry.complete();
}

impl Carry {
    fn complete(&mut self) {
        if let (Some(runner), Some(finish)) = (self.runner.take(), self.finish.take()) {
            let (report, plan) = runner.into_report();
            finish(report, plan);
        }
    }
}

impl Drop for Carry {
    fn drop(&mut self) {
        if self.runner.is_none() {
            // Dropped while the runner waited: it is parked.
            self.runner = self.ctx.unpark();
        }
        if self.runner.is_none() {
            return;
        }
        if !self.moved {
            if let Some(runtime) = own_runtime() {
                tracing::warn!(
                    "the runtime driving the shutdown went away; it goes on on compactor's own"
                );
                self.ctx.moved.store(true, Ordering::Release);
                let moved = Carry {
                    ctx: self.ctx.clone(),
                    runner: self.runner.take(),
                    finish: self.finish.take(),
                    moved: true,
                };
                drop(runtime.spawn(carry(moved)));
                return;
            }
        }
        if let Some(runner) = self.runner.as_mut() {
            runner.end_now();
        }
        self.complete();
    }
}

std::thread_local! {
    /// Whether this thread is one of the library's own runtime's.
    static ON_OWN_RUNTIME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn on_own_runtime() -> bool {
    ON_OWN_RUNTIME.with(std::cell::Cell::get)
}

/// The library's own runtime, for runs with no runtime of the caller's to
/// go on (a synchronous caller, a runtime that went away): two workers on
/// threads that live as long as the process and never hold its exit.
pub(crate) fn own_runtime() -> Option<&'static tokio::runtime::Handle> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("compactor-runtime")
                .on_thread_start(|| ON_OWN_RUNTIME.with(|on| on.set(true)))
                .enable_all()
                .build()
                .inspect_err(
                    |error| tracing::error!(%error, "compactor could not build its own runtime"),
                )
                .ok()
        })
        .as_ref()
        .map(tokio::runtime::Runtime::handle)
}

/// Spawns a run on the current runtime, or on the library's own outside of
/// one (or where `own` asks for it). A run that cannot be spawned at all is
/// dropped, which ends it where it stands (see [`drive`]).
pub(crate) fn spawn_run(future: impl Future<Output = ()> + Send + 'static, own: bool) {
    let here = tokio::runtime::Handle::try_current().ok().filter(|_| !own);
    match here.as_ref().or(own_runtime()) {
        Some(runtime) => drop(runtime.spawn(future)),
        None => drop(future),
    }
}
