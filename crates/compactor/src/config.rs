use std::num::NonZeroUsize;
use std::time::Duration;

use std::fmt;
use std::sync::Arc;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::priority::Priority;
use crate::signal::{Signal, SignalExit};

/// The settings of an instance, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) deadline: Duration,
    pub(crate) default_timeout: Duration,
    pub(crate) concurrency: NonZeroUsize,
    pub(crate) cancel_grace: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) phase_budgets: Vec<(Priority, Duration)>,
    pub(crate) signals: Vec<Signal>,
    pub(crate) signal_exit: SignalExit,
    /// `None`: on for the global instance, off for the others.
    pub(crate) auto_listen: Option<bool>,
    pub(crate) exit_grace: Duration,
    pub(crate) progress_every: Duration,
    pub(crate) progress_signal: Option<Signal>,
    /// Whether a panic outside a cleanup starts the shutdown.
    pub(crate) shutdown_on_panic: bool,
    /// A refused setting: every registration is refused with it.
    pub(crate) refused: Option<Error>,
    pub(crate) drain_delay: Duration,
    pub(crate) before_exit: Option<BeforeExit>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            deadline: Duration::from_secs(25),
            default_timeout: Duration::from_secs(10),
            concurrency: NonZeroUsize::MAX,
            cancel_grace: Duration::from_millis(500),
            backoff: Backoff::default(),
            phase_budgets: Vec::new(),
            signals: vec![Signal::Interrupt, Signal::Terminate],
            signal_exit: SignalExit::WithSignalCode,
            auto_listen: None,
            exit_grace: Duration::from_secs(1),
            progress_every: Duration::from_secs(5),
            progress_signal: None,
            shutdown_on_panic: false,
            refused: None,
            drain_delay: Duration::ZERO,
            before_exit: None,
        }
    }
}

impl Config {
    pub(crate) fn phase_budget(&self, phase: Priority) -> Option<Duration> {
        self.phase_budgets
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }
}

/// Configures a [`Compactor`](crate::Compactor); created by [`Compactor::builder`](crate::Compactor::builder).
///
/// | setting | default |
/// |---|---|
/// | [`deadline`](Self::deadline) | 25 s (fits Kubernetes' default 30 s grace period) |
/// | [`default_timeout`](Self::default_timeout) | 10 s per attempt |
/// | [`concurrency_limit`](Self::concurrency_limit) | unlimited |
/// | [`cancel_grace`](Self::cancel_grace) | 500 ms |
/// | [`backoff`](Self::backoff) | 100 ms doubling to 2 s, with jitter |
/// | [`phase_budget`](Self::phase_budget) | none |
/// | [`signals`](Self::signals) | `SIGINT`, `SIGTERM` |
/// | [`signal_exit`](Self::signal_exit) | exit with 128 + the signal number |
/// | [`auto_listen`](Self::auto_listen) | on for the global instance, off for others |
/// | [`exit_grace`](Self::exit_grace) | 1 s |
/// | [`before_exit`](Self::before_exit) | none |
/// | [`progress_every`](Self::progress_every) | 5 s |
/// | [`progress_signal`](Self::progress_signal) | none |
/// | [`drain_delay`](Self::drain_delay) | none |
/// | [`shutdown_on_panic`](Self::shutdown_on_panic) | off |
///
/// A setting that is refused (a zero deadline, a drain delay longer than
/// the deadline) does not panic: [`build`](Self::build) logs it and makes
/// an instance that refuses every registration with the
/// [`Error::InvalidConfig`] naming it, and
/// [`init_global`](crate::Compactor::init_global) returns that error.
///
/// Every instance that listens for signals speaks systemd's notification
/// protocol where systemd gives it a socket (`NOTIFY_SOCKET` is set, and
/// `SYSTEMD_EXEC_PID`, if set, is this process): `STOPPING=1` as its
/// shutdown begins, a `STATUS=` line with its progress every second, and
/// `EXTEND_TIMEOUT_USEC=` for 5 s more as it begins (past the drain delay)
/// and whenever tasks have finished since the last one (never past the
/// deadline + the exit grace), so a `TimeoutStopSec=` shorter than the
/// deadline does not kill a shutdown that is getting somewhere. Over the
/// datagram socket directly, abstract namespace included; no libsystemd.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use compactor::{Compactor, Priority};
///
/// let c = Compactor::builder()
///     .deadline(Duration::from_secs(25))
///     .default_timeout(Duration::from_secs(5))
///     .phase_budget(Priority::High, Duration::from_secs(10))
///     .build();
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    config: Config,
    error: Option<Error>,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder::default()
    }

    fn check(&mut self, error: Option<Error>) {
        if self.error.is_none() {
            self.error = error;
        }
    }

    /// The budget of the whole shutdown, from its start to the report. At
    /// the deadline, running cleanups are stopped, unstarted ones skipped, and
    /// the report is returned at once. Set it a few seconds below the time
    /// your supervisor waits before it kills the process. Zero is refused;
    /// `Duration::MAX` means no deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.check(Error::zero_duration("deadline", deadline));
        self.config.deadline = deadline;
        self
    }

    /// The timeout of each attempt of a task that sets none. Zero is
    /// refused; `Duration::MAX` means no timeout.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.check(Error::zero_duration("default_timeout", timeout));
        self.config.default_timeout = timeout;
        self
    }

    /// At most `limit` cleanups run at once; 1 runs them one at a time, the
    /// latest registered first (the order of `Drop`), dependencies and
    /// phases still respected. Where a choice remains among ready tasks, the
    /// latest registered goes first.
    pub fn concurrency_limit(mut self, limit: usize) -> Self {
        match NonZeroUsize::new(limit) {
            Some(limit) => self.config.concurrency = limit,
            None => self.check(Some(Error::InvalidConfig {
                option: "concurrency_limit",
                problem:
                    "must be at least 1 (1 runs one cleanup at a time, the latest registered first)"
                        .to_owned(),
            })),
        }
        self
    }

    /// How long a timed-out cleanup that observes its cancellation token (see
    /// [`cleanup::cancellable`](crate::cleanup::cancellable))
    /// may take to stop before it is dropped. Zero drops it at once;
    /// `Duration::MAX` waits for it (within the deadline).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// The delays between attempts of tasks that set no backoff of their own.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// A time budget for the phase of `priority` (tasks whose effective
    /// priority it is), counted from when the phase begins. When it runs out,
    /// the phase's running cleanups are stopped and its unstarted ones
    /// skipped, and the next phase begins, so an overrunning phase does not
    /// eat the time of the phases after it. Zero is refused;
    /// `Duration::MAX` means no budget.
    pub fn phase_budget(mut self, priority: Priority, budget: Duration) -> Self {
        self.check(Error::zero_duration("phase_budget", budget));
        self.config.phase_budgets.retain(|(p, _)| *p != priority);
        self.config.phase_budgets.push((priority, budget));
        self
    }

    /// The signals that start a shutdown once the instance
    /// [listens](crate::Compactor::listen_for_signals). Default: `SIGINT` and `SIGTERM`;
    /// add [`Signal::Hangup`] or [`Signal::Quit`] as your supervisor needs.
    pub fn signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        let mut chosen: Vec<Signal> = Vec::new();
        for s in signals {
            if !chosen.contains(&s) {
                chosen.push(s);
            }
        }
        if chosen.is_empty() {
            self.check(Some(Error::InvalidConfig {
                option: "signals",
                problem:
                    "needs at least one signal (use `auto_listen(false)` not to listen at all)"
                        .to_owned(),
            }));
        }
        self.config.signals = chosen;
        self
    }

    /// What the process does after a shutdown started by a signal.
    pub fn signal_exit(mut self, policy: SignalExit) -> Self {
        self.config.signal_exit = policy;
        self
    }

    /// Whether the instance starts [listening for
    /// signals](crate::Compactor::listen_for_signals) by itself, at its first
    /// registration (from any thread, in a runtime or not). On by default for
    /// the global instance, so an application gets signal handling without
    /// asking; turn it off where the application owns its signals. Off by
    /// default for other instances.
    pub fn auto_listen(mut self, on: bool) -> Self {
        self.config.auto_listen = Some(on);
        self
    }

    /// After a signal-started shutdown: how long past its deadline the run
    /// may go before the process ends regardless (naming the cleanups still
    /// running), and how long an application that waits for the report has
    /// to end the process itself before the library does. Also the time the
    /// [`before_exit`](Self::before_exit) hook has. Default 1 s;
    /// `Duration::MAX` means no limit.
    pub fn exit_grace(mut self, grace: Duration) -> Self {
        self.config.exit_grace = grace;
        self
    }

    /// Called with the exit code just before the library ends the process
    /// itself (after a signal-started run, on a second signal, past the
    /// deadline + exit grace): flush logs, telemetry, a tracing-appender's
    /// guard. It runs on a thread of its own and is given the
    /// [exit grace](Self::exit_grace), and 5 s, at most; a panic in it is
    /// ignored.
    pub fn before_exit(mut self, hook: impl Fn(u8) + Send + Sync + 'static) -> Self {
        self.config.before_exit = Some(BeforeExit(Arc::new(hook)));
        self
    }

    /// How often a running shutdown logs its progress at INFO (target
    /// `compactor::progress`): what still runs, what waits on what, and how
    /// much of the deadline is left (see [`Progress`](crate::inspect::Progress)).
    /// The first line comes after `every`; a shutdown that ends sooner logs
    /// none. Less than 100 ms is refused.
    ///
    /// An instance that listens for signals (the application's, so
    /// libraries' and tests' instances stay quiet) also draws one updating
    /// progress line on stderr where stderr is a terminal (from 1 s into
    /// the run, four times a second, cleared when it ends), and, after a
    /// signal starts the run, says how to force an exit. `Duration::MAX`
    /// turns progress off: no lines, no terminal line.
    pub fn progress_every(mut self, every: Duration) -> Self {
        if every < Self::MIN_PROGRESS_EVERY {
            self.check(Some(Error::InvalidConfig {
                option: "progress_every",
                problem: format!(
                    "must be at least {:?} (got {every:?}); Duration::MAX turns the lines off",
                    Self::MIN_PROGRESS_EVERY
                ),
            }));
        }
        self.config.progress_every = every.max(Self::MIN_PROGRESS_EVERY);
        self
    }

    /// The shortest [`progress_every`](Self::progress_every): 100 ms.
    pub const MIN_PROGRESS_EVERY: Duration = Duration::from_millis(100);

    /// A signal (typically [`Signal::User1`]) that prints, to stderr and
    /// without starting a shutdown, the live [progress](crate::Compactor::progress)
    /// of the shutdown under way, or, before one, the [plan](crate::Compactor::plan)
    /// of what it would do: `kill -USR1 <pid>` to see what a process would
    /// do, or what its shutdown is waiting on. Works once the instance
    /// [listens](crate::Compactor::listen_for_signals); refused if it is
    /// also one of the [shutdown signals](Self::signals), and, when the
    /// instance starts listening, if it is another listening instance's
    /// shutdown signal.
    pub fn progress_signal(mut self, signal: Signal) -> Self {
        self.config.progress_signal = Some(signal);
        self
    }

    /// Time for load balancers to stop sending traffic before anything
    /// closes: when the shutdown begins, [readiness](crate::Compactor::readiness)
    /// turns "not ready" at once, and every cleanup waits `delay` (the task
    /// `compactor::drain-delay`, a phase of its own before all others, shown
    /// in the plan and the report), while requests keep being served.
    /// Services' drains and [`Readiness::drained`](crate::service::Readiness::drained)
    /// come after it. Take what the load balancer needs to notice:
    /// `inter × fall` of HAProxy's health check, or Kubernetes' endpoint
    /// propagation (a few seconds). The delay counts against the deadline,
    /// and must be shorter than it; every shutdown of the instance waits it
    /// out, whatever started it. Its phase has the highest priority there
    /// is (`Priority::Custom(i32::MAX)`): a task given that priority too
    /// runs beside it. Scopes have no delay of their own. Default: none.
    /// `Duration::MAX` is refused (the build fails naming `drain_delay`): a
    /// delay without end would run no cleanup.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.config.drain_delay = delay;
        self
    }

    /// Whether a panic on any thread (outside a cleanup, whose panics are
    /// reported instead) starts the shutdown, with
    /// [`ShutdownReason::Panic`](crate::report::ShutdownReason::Panic),
    /// once, after the previous panic hook has printed the panic: the
    /// equivalent of an uncaught-exception handler. The hook is installed
    /// when the instance is built, and does nothing once the instance is
    /// gone. Off by default.
    pub fn shutdown_on_panic(mut self, on: bool) -> Self {
        self.config.shutdown_on_panic = on;
        self
    }

    /// The settings, or the first invalid one.
    pub(crate) fn into_config(self) -> Result<Config, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if crate::run::clock::is_no_limit(self.config.drain_delay) {
            return Err(Error::no_limit_refused(
                "drain_delay",
                "a delay without end would never let a cleanup run",
                "give the time the load balancer needs to notice, shorter than the deadline",
            ));
        }
        let bounded = !crate::run::clock::is_no_limit(self.config.deadline);
        if !self.config.drain_delay.is_zero()
            && bounded
            && self.config.drain_delay >= self.config.deadline
        {
            return Err(Error::InvalidConfig {
                option: "drain_delay",
                problem: format!(
                    "{:?} leaves no time of the {:?} deadline for the cleanups; make it shorter, or the deadline longer",
                    self.config.drain_delay, self.config.deadline
                ),
            });
        }
        if let Some(signal) = self.config.progress_signal {
            if self.config.signals.contains(&signal) {
                return Err(Error::InvalidConfig {
                    option: "progress_signal",
                    problem: format!(
                        "{signal} is also a shutdown signal (see `signals`); pick another, such as SIGUSR1"
                    ),
                });
            }
        }
        Ok(self.config)
    }
}

/// Called with the exit code just before the library ends the process: see
/// [`Builder::before_exit`].
#[derive(Clone)]
pub(crate) struct BeforeExit(pub(crate) Arc<dyn Fn(u8) + Send + Sync>);

// Called, never changed: the hook's own panic is contained where it runs.
impl std::panic::UnwindSafe for BeforeExit {}
impl std::panic::RefUnwindSafe for BeforeExit {}

impl fmt::Debug for BeforeExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BeforeExit(..)")
    }
}

impl Config {
    /// The time kept for the final phase ([`Priority::Final`](crate::Priority::Final))
    /// before the deadline, from its tasks' attempts (timeout, whether it
    /// observes its token): the longest, its cancel grace included, or
    /// their sum where they may run `in_line` (a dependency among them, a
    /// concurrency limit); at most half the deadline. `None` without final
    /// tasks or without a deadline.
    pub(crate) fn kept_for_final(
        &self,
        attempts: impl Iterator<Item = (Option<Duration>, bool)>,
        in_line: bool,
    ) -> Option<Duration> {
        if crate::run::clock::is_no_limit(self.deadline) {
            return None;
        }
        let mut each = attempts.map(|(timeout, observes_token)| {
            let grace = match observes_token {
                true => self.cancel_grace,
                false => Duration::ZERO,
            };
            timeout
                .unwrap_or(self.default_timeout)
                .saturating_add(grace)
        });
        let first = each.next()?;
        let kept = match in_line {
            true => each.fold(first, Duration::saturating_add),
            false => each.fold(first, Duration::max),
        };
        Some(kept.min(self.deadline / 2))
    }
}
