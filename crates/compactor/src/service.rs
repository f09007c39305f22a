//! Services: what one is handed ([`ServiceContext`]), how it is supervised
//! ([`Supervision`]), how it stands ([`ServiceState`]), and the instance's
//! [`Readiness`] for what serves behind a load balancer.
//!
//! A service is registered with [`TaskBuilder::service`](crate::TaskBuilder::service)
//! (runs once) or [`TaskBuilder::restartable`](crate::TaskBuilder::restartable)
//! (its closure called again for each restart). The rules, by default:
//! - a service that fails (an `Err`, a panic) before any shutdown of its
//!   instance or of one above it ends the
//!   whole tree: the root instance shuts down, its reason naming the
//!   service by its path (`subsys/nested`);
//! - once at least one service has run and every service has ended, by
//!   itself or by a failure, the instance shuts down
//!   ([`ShutdownReason::ServicesEnded`](crate::report::ShutdownReason::ServicesEnded)):
//!   the whole ends when its parts do. A scope's services count for the
//!   scope and for every instance above it.
//!
//! [`Supervision`] changes both, per service, or per scope for the services
//! registered in it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};

pub use crate::compactor::Readiness;
use crate::report::Outcome;

/// What a service is handed: the token it stops on, its name, and how
/// many times it was restarted.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    pub(crate) token: CancellationToken,
    pub(crate) name: Arc<str>,
    pub(crate) restarts: u32,
}

impl ServiceContext {
    /// Completes when the service must stop: its drain began, or its task
    /// was let go of unrun (skipped, aborted, unregistered), so work it
    /// handed its token to stops with it.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// [`cancelled`](Self::cancelled), owning the token: for a server's own
    /// graceful shutdown (`with_graceful_shutdown(stop.cancelled_owned())`).
    pub fn cancelled_owned(self) -> WaitForCancellationFutureOwned {
        self.token.cancelled_owned()
    }

    /// Whether the service must stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The token itself, for code that takes one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The service's path: its task's name, after the names of the scopes
    /// it is in (`subsys/nested`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times it was restarted before this run (0 the first time).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

/// What a service's failure ends, whether it is restarted first, and
/// whether it counts for "the whole ends when its parts do". Given to
/// [`TaskBuilder::supervise`](crate::TaskBuilder::supervise): for a service,
/// its own; for a scope, the default of the services registered in it (and
/// in its scopes, unless they set their own). Default:
/// [`end_all`](Self::end_all), no restarts, counted.
///
/// ```
/// use std::time::Duration;
/// use compactor::service::Supervision;
///
/// // Restarted up to 3 times in any minute; past that, the failure ends the scope.
/// let policy = Supervision::end_scope().restarts(3, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    pub(crate) ends: Ends,
    pub(crate) restarts: Option<(u32, Duration)>,
    pub(crate) background: bool,
}

/// What a service's failure ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ends {
    /// The root instance: the whole tree shuts down.
    All,
    /// The service's own instance (its scope).
    Scope,
    /// Nothing: the failure waits in the report.
    Nothing,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision::end_all()
    }
}

impl Supervision {
    /// A failure ends the whole tree: the root instance shuts down, with
    /// [`ShutdownReason::ServiceFailed`](crate::report::ShutdownReason::ServiceFailed)
    /// (or [`Panic`](crate::report::ShutdownReason::Panic)) naming the
    /// service's path and its error. The default, as a process whose
    /// service died should stop: the run starts, and the process ends when
    /// `main` returns ([`run_until_shutdown`](crate::Compactor::run_until_shutdown)
    /// or [`wait`](crate::Compactor::wait) give it the report; only a
    /// signal-started run ends the process by itself). If the instances above are gone (every
    /// handle dropped), the topmost one still there shuts down.
    pub const fn end_all() -> Self {
        Supervision {
            ends: Ends::All,
            restarts: None,
            background: false,
        }
    }

    /// A failure ends only the service's own instance: its scope shuts
    /// down and leaves its parent, and the failure, with its path and its
    /// causes, is in the parent's report, which is therefore not clean (a
    /// parent keeps 64 such reports; past that, one entry,
    /// `compactor::scopes-not-kept`, counts the rest). For a service of a
    /// root instance, the same as [`end_all`](Self::end_all). If it was
    /// the last counted service anywhere above, the whole still ends as
    /// every service has ended ([`background`](Self::background) keeps a
    /// service out of that count).
    pub const fn end_scope() -> Self {
        Supervision {
            ends: Ends::Scope,
            ..Supervision::end_all()
        }
    }

    /// A failure ends nothing: it is the outcome of the service's task
    /// when the shutdown comes.
    pub const fn carry_on() -> Self {
        Supervision {
            ends: Ends::Nothing,
            ..Supervision::end_all()
        }
    }

    /// Restarts a failed (or panicked) service, at most `at_most` times
    /// in any span of `within`, after the task's
    /// [backoff](crate::TaskBuilder::backoff); past that budget, the
    /// failure ends what this policy says. Never once the shutdown has
    /// begun. Only a [restartable](crate::TaskBuilder::restartable) service
    /// can be restarted: a one-shot one given restarts is refused (given on
    /// a scope, the default's restarts apply to its restartable services
    /// only). `within` is the span counted in: [`Duration::MAX`] for a
    /// budget over the service's whole life; zero is refused
    /// ([`Error::InvalidConfig`](crate::Error::InvalidConfig)). A failure
    /// once the shutdown of its instance or of one above it has begun is
    /// never restarted, so restarts do not lengthen a shutdown.
    /// Each restart is an [`Event::ServiceRestarting`](crate::Event::ServiceRestarting)
    /// to the subscribers of the service's own instance.
    pub const fn restarts(mut self, at_most: u32, within: Duration) -> Self {
        self.restarts = Some((at_most, within));
        self
    }

    /// A background service does not count for "the whole ends when its
    /// parts do": the instance does not shut down because it ended, nor
    /// stays up for it.
    pub const fn background(mut self, background: bool) -> Self {
        self.background = background;
        self
    }
}

/// How a service stands, from [`TaskHandle::service`](crate::TaskHandle::service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub(crate) ended: Option<Outcome>,
    pub(crate) restarts: u32,
}

impl ServiceState {
    /// Whether it runs (or waits to be restarted).
    pub fn is_running(&self) -> bool {
        self.ended.is_none()
    }

    /// How it ended for good: [`Outcome::Succeeded`], [`Outcome::Failed`]
    /// or [`Outcome::Panicked`] by itself, [`Outcome::Cancelled`] if it
    /// was dropped (cut off by its drain's timeout, the deadline, or an
    /// abort). A service that stopped on its token ends `Succeeded` (or
    /// with its error). A service whose task was unregistered is cut off
    /// too: `Cancelled`.
    pub fn ended(&self) -> Option<&Outcome> {
        self.ended.as_ref()
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

/// A service's state, shared between it and its handles.
#[derive(Debug)]
pub(crate) struct StateCell(Mutex<ServiceState>);

impl StateCell {
    pub(crate) fn new() -> Arc<StateCell> {
        Arc::new(StateCell(Mutex::new(ServiceState {
            ended: None,
            restarts: 0,
        })))
    }

    pub(crate) fn get(&self) -> ServiceState {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ServiceState)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}
