use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::time::Instant;

use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cleanup::CleanupResult;
use crate::config::{Builder, Config};
use crate::outcome::{Outcome, Waiting, exits_after_run, publish};
use crate::plan::Plan;
use crate::registry::Registry;
use crate::run::attempt::{current_chain, drop_contained, inside_cleanup_of};
use crate::run::mailbox::Mailbox;
use crate::run::{Head, Release, RunContext, Runner, RunnerParts, SnapshotRequest};
use crate::task::TaskBuilder;
use crate::{Error, Event, ShutdownReason, ShutdownReport, SignalExit, TaskHandle};

static GLOBAL: OnceLock<Compactor> = OnceLock::new();
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);
static NEXT_RELEASE: AtomicU64 = AtomicU64::new(1);

/// Runs a process's cleanup, once, in order and on time.
///
/// Register cleanups as resources are acquired; when shutdown begins, the
/// instance runs them as a dependency graph in priority phases and returns a
/// [`ShutdownReport`]. Cheap to clone: clones share the same state.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use compactor::{Compactor, Priority};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// let c = Compactor::new();
/// let pool = c.register("db-pool", || async { /* close the pool */ })?;
/// c.task("http")
///     .priority(Priority::High)
///     .depends_on(&pool)
///     .timeout(Duration::from_secs(5))
///     .register(|| async { /* drain connections */ })?;
///
/// let report = c.shutdown().await;
/// assert!(report.is_clean());
/// assert_eq!(report.tasks()[0].name(), "http");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Compactor {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Registry,
    token: CancellationToken,
    /// Created by the first `subscribe()`: an instance nobody listens to
    /// allocates no channel and sends no events.
    events: Arc<OnceLock<broadcast::Sender<Event>>>,
    started: AtomicBool,
    /// Shared with the run, which lets go of the instance before it
    /// publishes, so the instance can be dropped as soon as callers have the report.
    pub(crate) report: Arc<watch::Sender<Option<ShutdownReport>>>,
    /// Requests for the report so far, from cleanups that call `shutdown()`
    /// on their own instance; served by the run.
    pub(crate) snapshots: Arc<Mailbox<SnapshotRequest>>,
    /// The run's shared state, for the line a forced exit prints.
    run: OnceLock<Arc<RunContext>>,
    /// Category releases under way, by number: the shutdown waits for them.
    releases: Mutex<Vec<(u64, Release)>>,

    /// Listen for signals at the first registration inside a runtime.
    pub(crate) auto_listen: bool,
    pub(crate) signals_armed: AtomicBool,
    /// A [`SignalExit`], changed by `run_until_shutdown`.
    pub(crate) signal_exit: SignalExit,
    /// Callers waiting for the report right now: while any does, the
    /// application ends the process after a signal-started run.
    pub(crate) waiters: AtomicUsize,
    /// After a signal-started run, who ends the process, decided once as
    /// the report goes out (see [`AfterRun`]).
    pub(crate) after_run: Arc<std::sync::atomic::AtomicU8>,
    /// For a scope: its task in the parent, withdrawn once the scope has
    /// shut down on its own.
    pub(crate) scope: OnceLock<TaskHandle>,
    /// Background work of `spawn`, and whether its task is registered.
    pub(crate) tracker: OnceLock<tokio_util::task::TaskTracker>,
    pub(crate) tracker_registered: AtomicBool,
    /// Whether a signal started the run.
    pub(crate) by_signal: AtomicBool,
}

impl Inner {
    /// The run under way or done, if any.
    pub(crate) fn current_run(&self) -> Option<&Arc<RunContext>> {
        self.run.get()
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The names of the cleanups running right now.
    pub(crate) fn running_tasks(&self) -> Vec<String> {
        self.run.get().map(|ctx| ctx.running()).unwrap_or_default()
    }

    pub(crate) fn signal_exit(&self) -> SignalExit {
        self.signal_exit
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        #[cfg(unix)]
        if *self.signals_armed.get_mut() {
            // Leaves the process's listener; the last instance to leave
            // takes the signal-hook registrations back (see `signal::hub`).
            crate::process::stop_listening(self.id);
        }
        let pending = self.registry.len();
        if pending > 0 && !*self.started.get_mut() {
            tracing::warn!(
                instance = self.id,
                pending,
                "Compactor dropped before shutdown: its pending cleanups never ran"
            );
        }
    }
}

impl Default for Compactor {
    fn default() -> Self {
        Compactor::new()
    }
}

impl fmt::Debug for Compactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compactor")
            .field("id", &self.inner.id)
            .field("pending", &self.pending())
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl Compactor {
    /// An isolated instance with the default settings (see [`Builder`]), for
    /// libraries and tests.
    pub fn new() -> Self {
        Compactor::with_config(Config::default(), false)
    }

    /// Configures an instance.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn with_config(config: Config, global: bool) -> Self {
        let auto_listen = config.auto_listen.unwrap_or(global);
        let signal_exit = config.signal_exit;
        Compactor::from_parts(Arc::new(config), auto_listen, signal_exit)
    }

    pub(crate) fn from_parts(
        config: Arc<Config>,
        auto_listen: bool,
        signal_exit: SignalExit,
    ) -> Self {
        Compactor {
            inner: Arc::new(Inner {
                auto_listen,
                signals_armed: AtomicBool::new(false),
                signal_exit,
                waiters: AtomicUsize::new(0),
                after_run: Arc::new(std::sync::atomic::AtomicU8::new(0)),
                scope: OnceLock::new(),
                tracker: OnceLock::new(),
                tracker_registered: AtomicBool::new(false),
                by_signal: AtomicBool::new(false),
                run: OnceLock::new(),
                id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                config,
                registry: Registry::new(),
                token: CancellationToken::new(),
                events: Arc::new(OnceLock::new()),
                started: AtomicBool::new(false),
                report: Arc::new(watch::Sender::new(None)),
                snapshots: Arc::new(Mailbox::new()),
                releases: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The process-wide instance, created with the default settings on first
    /// use unless [`init_global`](Self::init_global) configured it before.
    ///
    /// It [listens for signals](Self::listen_for_signals) by itself from its
    /// first registration, from any thread (turn that off with
    /// [`Builder::auto_listen`]): after a `SIGTERM` it runs the cleanup and
    /// exits with 143.
    pub fn global() -> &'static Compactor {
        GLOBAL.get_or_init(|| Compactor::with_config(Config::default(), true))
    }

    /// Configures the process-wide instance. Call it once, before anything
    /// calls [`global`](Self::global).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyInitialized`] if the global instance already exists
    /// (it keeps its settings), or the builder's [`Error::InvalidConfig`].
    pub fn init_global(builder: Builder) -> Result<&'static Compactor, Error> {
        let compactor = builder.try_build_as(true)?;
        let mut fresh = Some(compactor);
        let global = GLOBAL.get_or_init(|| fresh.take().expect("taken once"));
        match fresh {
            None => Ok(global),
            Some(_) => Err(Error::AlreadyInitialized),
        }
    }

    /// Starts configuring a task named `name`; finish with one of the
    /// builder's `register*` methods.
    pub fn task(&self, name: impl Into<Arc<str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(self, name.into())
    }

    /// Registers an async cleanup with the default options: shorthand for
    /// `self.task(name).register(cleanup)`.
    ///
    /// # Errors
    ///
    /// See [`TaskBuilder::register`].
    pub fn register<F, Fut>(
        &self,
        name: impl Into<Arc<str>>,
        cleanup: F,
    ) -> Result<TaskHandle, Error>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: CleanupResult,
    {
        self.task(name).register(cleanup)
    }

    /// Removes the weak registrations whose value has been dropped (they would
    /// only be reported as released) and returns how many. Registration does
    /// this by itself from time to time, so an instance that gets one weak
    /// registration per request stays bounded; call it to prune at once.
    pub fn prune_released(&self) -> usize {
        self.inner.registry.prune_released()
    }

    /// Releases one category now: its pending tasks leave the instance and
    /// run, in the order their dependencies among themselves and their
    /// priorities give, with the instance's timeouts and deadline. Their
    /// dependencies on tasks of other categories are dropped. The report's
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
    pub async fn shutdown_category(&self, category: &crate::Category) -> ShutdownReport {
        let t0 = Instant::now();
        let (publish, mut report) = watch::channel(None);
        let halt = CancellationToken::new();
        let number = NEXT_RELEASE.fetch_add(1, Ordering::Relaxed);
        let nodes = {
            // Taken and listed under one lock, which the shutdown's start
            // takes after closing the registry: it sees every release that
            // took tasks.
            let mut releases = self.releases();
            let nodes = self
                .inner
                .registry
                .take_where(|node| node.spec.category == *category);
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

    fn releases(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Release)>> {
        self.inner
            .releases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn run_context(&self, plan: &mut Plan) -> Arc<RunContext> {
        let mut chain: Vec<u64> = current_chain().map(|c| c.to_vec()).unwrap_or_default();
        chain.push(self.inner.id);
        Arc::new(RunContext::new(
            chain.into(),
            self.inner.events.clone(),
            std::mem::take(&mut plan.names).into_boxed_slice(),
        ))
    }

    fn runner_parts(
        &self,
        ctx: Arc<RunContext>,
        reason: ShutdownReason,
        t0: Instant,
        snapshots: Option<Arc<Mailbox<SnapshotRequest>>>,
        halt: Option<CancellationToken>,
        releases: Vec<Release>,
    ) -> RunnerParts {
        RunnerParts {
            ctx,
            config: self.inner.config.clone(),
            head: Head {
                reason,
                duration: std::time::Duration::ZERO,
                warnings: Vec::new(),
                policy: self.inner.signal_exit(),
            },
            t0,
            snapshots,
            halt,
            releases,
        }
    }

    /// How many tasks are registered and waiting for shutdown.
    pub fn pending(&self) -> usize {
        self.inner.registry.len()
    }

    /// Whether a signal started the shutdown.
    pub(crate) fn started_by_signal(&self) -> bool {
        self.inner.by_signal.load(Ordering::Acquire)
    }

    /// Whether the library ends the process once the run is over: after a
    /// signal-started run, as the exit policy says, when nobody waits.
    pub(crate) fn exits_after_run(&self) -> bool {
        exits_after_run(&self.inner)
    }

    /// Where the outcome of the run is published: its report, and who ends
    /// the process after it (see [`Outcome::after_run`]). They outlive the
    /// instance, which may go as its report goes out.
    pub(crate) fn outcome(&self) -> Outcome {
        Outcome {
            report: self.inner.report.clone(),
            after_run: self.inner.after_run.clone(),
        }
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    /// A token cancelled the moment shutdown begins: services select on it to
    /// stop taking new work. Cancelling the returned token yourself does not
    /// start a shutdown (use [`trigger`](Self::trigger)).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.token.child_token()
    }

    /// Receives an [`Event`] for every state change of the shutdown.
    /// Subscribe before it begins to see it all.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner
            .events
            .get_or_init(|| broadcast::channel(self.inner.config.event_capacity).0)
            .subscribe()
    }

    /// Starts the shutdown without waiting for it; does nothing if it has
    /// begun already. Closes registration and fires the shutdown token before
    /// it returns. The run goes on in the current tokio runtime, or, outside
    /// of one, in a runtime on a thread of its own.
    pub fn trigger(&self) {
        self.begin(ShutdownReason::Manual);
    }

    /// Starts the shutdown for a reason of the application's own (a lost
    /// database, a failed health check), shown in the report and the events.
    /// Does nothing if shutdown has begun already.
    pub fn request_shutdown(&self, why: impl Into<String>) {
        self.begin(ShutdownReason::Requested(why.into()));
    }

    /// Runs the shutdown when the process receives one of the configured
    /// [signals](Builder::signals) (`SIGINT` and `SIGTERM` by default; Ctrl-C
    /// on Windows). Idempotent.
    ///
    /// - The first signal starts the shutdown ([`ShutdownReason::Signal`]).
    /// - When it has finished, the process exits as set by
    ///   [`Builder::signal_exit`] (by default with 128 + the signal number),
    ///   unless the application waits for the report ([`wait`](Self::wait),
    ///   [`shutdown`](Self::shutdown), [`run_until_shutdown`](Self::run_until_shutdown)):
    ///   then it has the report and ends the process itself, within
    ///   [`Builder::exit_grace`].
    /// - If the run has not finished by the deadline + the exit grace, the
    ///   process ends with the signal's code and one stderr line naming the
    ///   cleanups still running, even when every runtime worker is blocked.
    /// - A second signal during the run ends the process at once with that
    ///   signal's code, with the same line.
    /// - A signal after the run, or one that no instance listens for (every
    ///   instance that listened is gone), ends the process with 128 + n.
    ///
    /// The process always ends with an exit code, never by re-raising the
    /// signal, so this works the same as PID 1 in a container without an
    /// init, under tini or dumb-init, supervisord and systemd.
    ///
    /// The global instance calls this by itself at its first registration,
    /// unless [`Builder::auto_listen`] turned it off. On Unix the listener is
    /// a thread (one per process, shared by the instances that listen), so it
    /// works from any thread, with any runtime or none. A run a signal starts
    /// goes on the library's own runtime (two worker threads), which a signal
    /// finds alive and idle whatever the application's runtimes are doing.
    ///
    /// # Errors
    ///
    /// [`Error::Signals`] if the handlers cannot be installed (on Windows:
    /// when called outside a tokio runtime).
    pub fn listen_for_signals(&self) -> Result<(), Error> {
        crate::process::listen(&self.inner)
    }

    /// Runs the shutdown, or joins the run already under way, and returns its
    /// report. Every caller, concurrent or later, gets an equal report.
    ///
    /// Called from inside one of this instance's own cleanups, it cannot wait
    /// for the run (the run waits for that cleanup), so it returns at once
    /// with the report as it stands: [`is_complete`](ShutdownReport::is_complete)
    /// is `false` and unfinished tasks are [`Outcome::Pending`](crate::Outcome::Pending).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the run does not belong to the caller, so dropping this
    /// future does not stop it; [`wait`](Self::wait) picks the report up later.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.trigger();
        self.wait().await
    }

    /// Waits for the report of a shutdown started elsewhere (another task,
    /// [`trigger`](Self::trigger)). Before any shutdown it waits for one.
    /// From inside one of this instance's cleanups it behaves like
    /// [`shutdown`](Self::shutdown) does there.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self) -> ShutdownReport {
        let _waiting = Waiting::new(&self.inner);
        if inside_cleanup_of(self.inner.id) {
            if let Some(report) = self.snapshot().await {
                return report;
            }
        }
        let mut rx = self.inner.report.subscribe();
        let report = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as `self`");
        report.clone().expect("waited for Some")
    }

    /// The final report, if the shutdown has finished.
    pub fn report(&self) -> Option<ShutdownReport> {
        self.inner.report.borrow().clone()
    }

    async fn snapshot(&self) -> Option<ShutdownReport> {
        if let Some(report) = self.report() {
            return Some(report);
        }
        let (reply, answer) = oneshot::channel();
        if !self.is_shutting_down() {
            return None;
        }
        self.inner.snapshots.send(reply).ok()?;
        answer.await.ok()
    }

    pub(crate) fn begin(&self, reason: ShutdownReason) -> bool {
        let Some(started) = self.start(reason) else {
            return false;
        };
        self.drive(started, false);
        true
    }

    /// The report of a run that cannot be asked for one: every task of it
    /// pending.
    pub(crate) fn stalled_report(&self) -> ShutdownReport {
        let names = self
            .inner
            .run
            .get()
            .map(|ctx| ctx.names.clone())
            .unwrap_or_default();
        crate::run::stalled_report(&names, self.inner.signal_exit())
    }

    /// Drives a begun shutdown: here, or on the library's own runtime.
    pub(crate) fn drive(&self, started: Started, own: bool) {
        // Built here, from user-visible state (and with tracing, whose
        // layers are the user's): a panic must not leave a shutdown begun
        // that no run will finish.
        let run = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| started.run())) {
            Ok(run) => run,
            Err(panic) => {
                let message = crate::run::attempt::message_of(panic);
                tracing::error!(panic = %message, "the shutdown's run could not be built");
                self.inner.report.send_replace(Some(self.stalled_report()));
                return;
            }
        };
        if let Some(ctx) = self.inner.run.get() {
            ctx.driven_here(own);
        }
        crate::run::spawn_run(run, own);
    }

    /// Begins the shutdown (closes registration, fires the token) and
    /// returns what the run needs, or `None` if it had begun already.
    pub(crate) fn start(&self, reason: ShutdownReason) -> Option<Started> {
        let inner = &self.inner;
        if inner.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        let t0 = Instant::now();
        if matches!(reason, ShutdownReason::Signal(_)) {
            inner.by_signal.store(true, Ordering::Release);
        }
        inner.registry.close();
        inner.token.cancel();
        Some(Started {
            compactor: self.clone(),
            reason,
            t0,
        })
    }
}

/// A shutdown begun, its run still to be driven.
#[must_use = "the shutdown has begun: its run must be driven, or no report comes"]
pub(crate) struct Started {
    compactor: Compactor,
    reason: ShutdownReason,
    t0: Instant,
}

impl Started {
    /// The whole shutdown, from the drain to the published report (and the
    /// exit, after a signal, where the policy says so).
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let Started {
            compactor,
            reason,
            t0,
        } = self;
        let span = tracing::info_span!(
            "shutdown",
            instance = compactor.inner.id,
            %reason,
            tasks = tracing::field::Empty,
            clean = tracing::field::Empty,
        );
        let (drained, shape) = compactor.inner.registry.drain();
        let mut plan = Plan::new(drained, shape);
        let ctx = compactor.run_context(&mut plan);
        let _ = compactor.inner.run.set(ctx.clone());
        ctx.refresh_listening();
        ctx.emit(|| Event::ShutdownStarted {
            reason: reason.clone(),
            tasks: plan.tasks.len(),
        });
        span.record("tasks", plan.tasks.len());
        {
            let _entered = span.enter();
            tracing::info!(tasks = plan.tasks.len(), %reason, "shutdown started");
            for warning in &plan.warnings {
                tracing::warn!(%warning, "dependency graph");
            }
        }
        let releases = compactor
            .releases()
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        let snapshots = Some(compactor.inner.snapshots.clone());
        let parts = compactor.runner_parts(ctx.clone(), reason, t0, snapshots, None, releases);
        let runner = Runner::new(plan, parts);
        let inner = compactor.inner;
        let finish_span = span.clone();
        let finish = Box::new(move |report: ShutdownReport, spent: Plan| {
            let _entered = finish_span.enter();
            publish(inner, &ctx, report);
            let _ = drop_contained(spent);
        });
        // Made here, not in the future, so a run dropped before it ever ran
        // still goes on elsewhere.
        let driven = crate::run::drive(runner, finish);
        async move {
            driven.await;
        }
        .instrument(span)
    }
}
