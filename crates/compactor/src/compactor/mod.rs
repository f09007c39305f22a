//! The instance: the handle users hold, its shared state, and the calls
//! that begin a shutdown and wait for its report.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

mod batch;
mod early;
mod inspect;
mod published;
mod register;
mod service;
mod shutdown;
mod supervision;
mod tree;

pub use batch::TaskDef;
pub use early::Selection;
pub use register::TaskBuilder;

pub(crate) use published::{AfterRun, Published, Waiting};
pub(crate) use service::{ServiceEnd, link};
pub(crate) use tree::scope_failure;

use crate::config::{Builder, Config};
use crate::error::Error;
use crate::event::Event;
use crate::registry::{Registry, TaskHandle};
use crate::report::{ShutdownReason, ShutdownReport};
use crate::run::mailbox::Mailbox;
use crate::run::membership::inside_cleanup_of;
use crate::run::{EarlyRun, RunContext, SnapshotRequest, Ticker};
use crate::signal::SignalExit;

/// How many events the broadcast channel holds for a slow subscriber (the
/// channel allocates them all when the first subscriber comes).
const EVENT_CAPACITY: usize = 4096;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

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
    inner: Arc<Instance>,
}

// As tokio's handles are: every panic in user code is contained where it
// runs, no user code runs under the instance's locks, and its state stays
// whole across a panic seen through a handle (its mutexes are read through
// poisoning, its channels are tokio's, which may use parking_lot's locks).
impl std::panic::UnwindSafe for Instance {}
impl std::panic::RefUnwindSafe for Instance {}

/// One instance's state, shared by every clone of its [`Compactor`], by
/// concern.
struct Instance {
    id: u64,
    config: Arc<Config>,
    registry: Arc<Registry>,
    /// Where the instance is in its shutdown.
    gates: Gates,
    /// What its run shares with it.
    running: Running,
    /// What goes out of it: the report, the events.
    out: Out,
    /// How the instance stands to the process's signals.
    signals: Signals,
    /// For a scope: its task in the parent, withdrawn once the scope has
    /// shut down on its own.
    scope: OnceLock<TaskHandle>,
    /// Its place among its parent and scopes, and its services' count.
    tree: tree::Tree,
}

/// Where an instance is in its shutdown.
struct Gates {
    /// Set as the shutdown begins (registration closes with it).
    started: AtomicBool,
    /// Cancelled the moment shutdown begins.
    token: CancellationToken,
    /// Cancelled once the drain delay is over (at the start without one).
    drain: CancellationToken,
    /// Set to end the instance's run at once: a scope whose task its
    /// parent cut off or skipped runs nothing more (see [`Compactor::halt`]).
    halted: Arc<AtomicU8>,
}

/// What an instance's run shares with it.
struct Running {
    /// The run's shared state, for the line a forced exit prints.
    run: OnceLock<Arc<RunContext>>,
    /// Requests for the report so far, from cleanups that call `shutdown()`
    /// on their own instance; served by the run.
    snapshots: Arc<Mailbox<SnapshotRequest>>,
    /// Early runs under way, by number: the shutdown waits for them.
    early_runs: Mutex<Vec<(u64, EarlyRun)>>,
    /// Its services still alive, which its run's end waits for.
    services: Arc<crate::run::live::LiveServices>,
}

/// What goes out of an instance.
struct Out {
    /// Where the run's report goes out; kept apart from the instance, which
    /// may be dropped as soon as callers have the report.
    published: Published,
    /// Callers waiting for the report right now (see [`Waiting`]).
    waiters: AtomicUsize,
    /// Created by the first `subscribe()`: an instance nobody listens to
    /// allocates no channel and sends no events.
    events: Arc<OnceLock<broadcast::Sender<Event>>>,
}

/// What the process layer does for an instance that listens for signals.
/// The engine calls these at three moments and knows nothing else of it.
pub(crate) struct ProcessHooks {
    /// At a registration of an instance that listens from its first one.
    pub(crate) listen: fn(&Compactor) -> Result<(), Error>,
    /// As a listening instance goes.
    pub(crate) leave: fn(u64),
    /// Once a run's report is out.
    pub(crate) run_over: fn(),
    /// As a run of a listening instance begins (with its task count): what
    /// the process layer
    /// shows of its progress (systemd's notifications).
    pub(crate) run_begins: fn(&Compactor, usize) -> Option<Ticker>,
}

/// An instance's standing with the process's signals: plain state the
/// process layer sets and reads.
pub(crate) struct Signals {
    /// Set by the process layer when the instance may listen.
    pub(crate) hooks: OnceLock<&'static ProcessHooks>,
    /// Listen at the first registration.
    pub(crate) auto_listen: bool,
    /// Whether the instance listens now.
    pub(crate) armed: AtomicBool,
    /// What the process does after a signal-started run.
    pub(crate) exit: SignalExit,
    /// Whether a signal started the run.
    pub(crate) started_run: AtomicBool,
}

impl Instance {
    fn token(&self) -> &CancellationToken {
        &self.gates.token
    }
}

/// An instance as the process layer holds it: without keeping it alive.
#[derive(Clone)]
pub(crate) struct WeakCompactor(Weak<Instance>);

impl WeakCompactor {
    /// The instance, if a handle on it is still alive.
    pub(crate) fn upgrade(&self) -> Option<Compactor> {
        self.0.upgrade().map(|inner| Compactor { inner })
    }

    /// Whether a handle on the instance is still alive.
    pub(crate) fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// What the rest of the crate reads of an instance: the engine's state
/// stays behind these.
impl Compactor {
    /// A handle that does not keep the instance alive.
    pub(crate) fn downgrade(&self) -> WeakCompactor {
        WeakCompactor(Arc::downgrade(&self.inner))
    }

    /// Whether `other` is a handle on this same instance.
    pub(crate) fn is(&self, other: &Compactor) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The instance's number, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// How the instance stands to the process's signals.
    pub(crate) fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    /// Cancelled the moment shutdown begins.
    pub(crate) fn begun(&self) -> &CancellationToken {
        self.inner.token()
    }

    /// The token of what drains once the drain delay is over.
    pub(crate) fn drain_token(&self) -> CancellationToken {
        self.inner.gates.drain.child_token()
    }

    /// The run under way or done, if any.
    pub(crate) fn current_run(&self) -> Option<&Arc<RunContext>> {
        self.inner.running.run.get()
    }

    /// Where the instance's events go out (once someone subscribes).
    pub(crate) fn events(&self) -> Arc<OnceLock<broadcast::Sender<Event>>> {
        self.inner.out.events.clone()
    }

    /// Counts the caller as waiting for the report while this lives.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        Waiting::new(&self.inner)
    }

    /// A scope's instance: this one's settings, but no drain delay of its
    /// own (a scope is not behind a load balancer), a registry sized for a
    /// few tasks, and no signals.
    pub(crate) fn new_scope(&self) -> Compactor {
        let parent = &self.inner.config;
        let config = match parent.drain_delay.is_zero() {
            true => parent.clone(),
            false => Arc::new(Config {
                drain_delay: std::time::Duration::ZERO,
                ..(**parent).clone()
            }),
        };
        let registry = Registry::small();
        Compactor::from_parts(config, registry, false, SignalExit::Return, None)
    }

    /// Makes this scope's instance the scope of task `handle` in its parent.
    pub(crate) fn scoped_as(&self, handle: TaskHandle) {
        let _ = self.inner.scope.set(handle);
    }

    /// Before the process ends ahead of the run (a second signal, the
    /// deadline watchdog): the final tasks, within the exit grace.
    pub(crate) fn run_finals_before_exit(&self) {
        if let Some(ctx) = self.current_run() {
            let config = self.config();
            let ran = ctx.run_finals_now(config.default_timeout, config.exit_grace);
            if ran > 0 {
                tracing::info!(tasks = ran, grace = ?config.exit_grace, "ran the final tasks before exiting");
            }
        }
    }

    /// The cleanups running right now, and what the first few waiting ones
    /// wait on: for the line a forced exit prints.
    pub(crate) fn still_running(&self) -> String {
        self.current_run()
            .map_or_else(|| "none".to_owned(), |ctx| ctx.still_running())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if *self.signals.armed.get_mut() {
            if let Some(hooks) = self.signals.hooks.get() {
                // Leaves the process's listener.
                (hooks.leave)(self.id);
            }
        }
        let pending = self.registry.len();
        if pending > 0 && !*self.gates.started.get_mut() {
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
    /// libraries and tests: the same as `Compactor::builder().build()`.
    pub fn new() -> Self {
        Compactor::builder().build()
    }

    /// Ends the instance's run at once, begun or to come, as its deadline
    /// would (its unstarted tasks skipped with `SkipReason::Halted`): for a
    /// scope whose task its parent cut off or skipped. Begins the shutdown
    /// if it had not begun.
    pub(crate) fn halt(&self, why: crate::report::SkipReason) {
        let _ = self.inner.gates.halted.compare_exchange(
            0,
            crate::run::halt_code(why),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        // Against the run being set up: one side sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(ctx) = self.inner.running.run.get() {
            ctx.done.nudge();
        }
        self.trigger();
    }

    /// Configures an instance.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// An instance with these settings; `hooks` are the process layer's, for
    /// an instance that may listen for signals from its first registration.
    pub(crate) fn from_parts(
        config: Arc<Config>,
        registry: Registry,
        auto_listen: bool,
        exit: SignalExit,
        hooks: Option<&'static ProcessHooks>,
    ) -> Self {
        let signals = Signals {
            hooks: OnceLock::new(),
            auto_listen,
            armed: AtomicBool::new(false),
            exit,
            started_run: AtomicBool::new(false),
        };
        if let Some(hooks) = hooks {
            let _ = signals.hooks.set(hooks);
        }
        Compactor {
            inner: Arc::new(Instance {
                id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                config,
                registry: Arc::new(registry),
                gates: Gates {
                    started: AtomicBool::new(false),
                    token: CancellationToken::new(),
                    drain: CancellationToken::new(),
                    halted: Arc::default(),
                },
                running: Running {
                    run: OnceLock::new(),
                    snapshots: Arc::new(Mailbox::new()),
                    early_runs: Mutex::new(Vec::new()),
                    services: Arc::default(),
                },
                out: Out {
                    published: Published::new(),
                    waiters: AtomicUsize::new(0),
                    events: Arc::new(OnceLock::new()),
                },
                signals,
                scope: OnceLock::new(),
                tree: tree::Tree::default(),
            }),
        }
    }

    /// How many tasks are registered and waiting for shutdown.
    pub(crate) fn pending(&self) -> usize {
        self.inner.registry.len()
    }

    /// Whether a signal started the shutdown.
    pub(crate) fn started_by_signal(&self) -> bool {
        self.inner.signals.started_run.load(Ordering::Acquire)
    }

    /// Whether the library ends the process once the run is over: after a
    /// signal-started run, as the exit policy says, when nobody waits.
    pub(crate) fn exits_after_run(&self) -> bool {
        self.inner.out.published.after_run() == Some(AfterRun::Library)
    }

    /// Where the outcome of the run is published: its report, and who ends
    /// the process after it (see [`Outcome::after_run`]). They outlive the
    /// instance, which may go as its report goes out.
    pub(crate) fn published(&self) -> Published {
        self.inner.out.published.clone()
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.gates.started.load(Ordering::Acquire)
    }

    /// A token cancelled the moment shutdown begins: services select on it to
    /// stop taking new work. Cancelling the returned token yourself does not
    /// start a shutdown (use [`trigger`](Self::trigger)).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.gates.token.child_token()
    }

    /// The instance's readiness, for a health endpoint and for a server
    /// that drains behind a load balancer: ready until the shutdown begins,
    /// then not, before the [drain delay](Builder::drain_delay), so load
    /// balancers stop sending traffic while requests are still served.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            shutdown: self.shutdown_token(),
            drain: self.inner.gates.drain.clone(),
        }
    }

    /// Receives an [`Event`] for every state change of the shutdown.
    /// Subscribe before it begins to see it all.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner
            .out
            .events
            .get_or_init(|| broadcast::channel(EVENT_CAPACITY).0)
            .subscribe()
    }

    /// Starts the shutdown without waiting for it; does nothing if it has
    /// begun already. Closes registration and fires the shutdown token before
    /// it returns. The run goes on in the current tokio runtime, or, outside
    /// of one, in a runtime on a thread of its own.
    pub fn trigger(&self) {
        self.begin(ShutdownReason::Manual);
    }

    /// Ends this instance now, the way a second signal does, except that
    /// the process goes on: if no shutdown has begun, one begins
    /// ([`ShutdownReason::Aborted`]); running cleanups are cancelled (an
    /// async one dropped, a blocking one abandoned), tasks not started are
    /// skipped ([`SkipReason::Aborted`](crate::report::SkipReason::Aborted)),
    /// services are cut off, and the report is published at once and
    /// returned. On a scope, everything in it, its scopes too: nothing in it
    /// runs after the report, which the scope's task in its parent carries
    /// if the parent's shutdown was running it.
    ///
    /// Called from one of this instance's own cleanups, the abort stops
    /// that cleanup too: its future is dropped at this call's `.await`, so
    /// the report goes to the instance's other waiters, not to it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// use compactor::{Compactor, Outcome};
    ///
    /// let app = Compactor::new();
    /// let conn = app.task("conn-7").scope()?;
    /// conn.register("flush", || async {})?;
    /// let report = conn.abort().await;
    /// assert!(matches!(report.tasks()[0].outcome(), Outcome::Skipped(_)));
    /// assert_eq!(app.plan().tasks().len(), 0); // it left its parent
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe once polled: the abort is done at the first poll, and
    /// dropping the future then does not undo it.
    pub async fn abort(&self) -> ShutdownReport {
        self.begin(ShutdownReason::Aborted);
        self.halt(crate::report::SkipReason::Aborted);
        self.wait().await
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
        let mut rx = self.inner.out.published.report.subscribe();
        let report = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as `self`");
        report.clone().expect("waited for Some")
    }

    /// The final report, if the shutdown has finished.
    pub(crate) fn report(&self) -> Option<ShutdownReport> {
        self.inner.out.published.report()
    }

    async fn snapshot(&self) -> Option<ShutdownReport> {
        if let Some(report) = self.report() {
            return Some(report);
        }
        let (reply, answer) = oneshot::channel();
        if !self.is_shutting_down() {
            return None;
        }
        self.inner.running.snapshots.send(reply).ok()?;
        answer.await.ok()
    }
}

/// Whether an instance takes traffic: ready until its shutdown begins, and
/// when load balancers have had the [drain delay](Builder::drain_delay) to
/// notice. From [`Compactor::readiness`]; cheap to clone, and it does not
/// keep the instance alive.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let c = compactor::Compactor::new();
/// let readiness = c.readiness();
/// assert_eq!(readiness.status_code(), 200);
/// c.trigger();
/// readiness.drained().cancelled().await;
/// assert_eq!(readiness.status_code(), 503);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Readiness {
    shutdown: CancellationToken,
    drain: CancellationToken,
}

impl Readiness {
    /// Whether the instance still takes traffic.
    pub fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled()
    }

    /// The HTTP status a readiness endpoint answers: 200, then 503.
    pub fn status_code(&self) -> u16 {
        if self.is_ready() { 200 } else { 503 }
    }

    /// A token cancelled once the shutdown's [drain delay](Builder::drain_delay)
    /// is over (at once without one): what a server that is not a
    /// [service](TaskBuilder::service) stops on, so it keeps serving while
    /// load balancers take it out:
    /// `axum::serve(..).with_graceful_shutdown(readiness.drained().cancelled_owned())`.
    /// The closure of [`run_until_shutdown`](Compactor::run_until_shutdown)
    /// and every service are handed theirs, which come after the delay too.
    pub fn drained(&self) -> CancellationToken {
        self.drain.child_token()
    }
}
