//! Registering services: a service's drain in the graph, the service on a
//! task of its own, supervised (its failure escalated, its restarts within
//! a budget, its place in the counts) and its state kept for its handle.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::TaskBuilder;
use super::register::dropped_refused;
use super::service::{ServiceEnd, link};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::event::Event;
use crate::priority::Category;
use crate::registry::TaskHandle;
use crate::report::CleanupError;
use crate::service::{ServiceContext, Supervision};
use crate::task::cleanup::{CleanupResult, once_with_token};

impl TaskBuilder<'_> {
    /// How a [service](Self::service) is supervised: what its failure ends,
    /// whether it is restarted first, and whether it counts for "the whole
    /// ends when its parts do" (see [`Supervision`]). Given to a
    /// [scope](Self::scope): the default of the services registered in it.
    /// Default: [`Supervision::end_all`] (set on a scope above, that
    /// scope's). Other tasks do not read it.
    pub fn supervise(mut self, supervision: Supervision) -> Self {
        self.supervision = Some(supervision);
        self
    }

    /// Starts `service` now on a task of its own (on the current tokio
    /// runtime) and makes its drain a task of the shutdown: when the task's
    /// turn comes (its priority and dependencies, like any other), the
    /// service's [context](ServiceContext) is cancelled and the task waits
    /// for the service to end, within its timeout. The service's end is the
    /// task's outcome: an `Err` fails it, a panic is `Panicked`. Cut off by the
    /// timeout, the deadline or an [abort](crate::Compactor::abort), the service is
    /// dropped at its next poll, not left running, and the task is reported
    /// timed out or cancelled, never clean (abandoned, still running, if its
    /// code holds its thread).
    ///
    /// "The pool closes after the server has drained" is one `depends_on`:
    /// the server uses the pool, so it is stopped before it.
    ///
    /// Before any shutdown of its instance or of one above it, its
    /// [supervision](Self::supervise) decides what
    /// its end does: by default a failure (an `Err`, a panic) shuts the
    /// whole tree down, and the end of the last service shuts its instance
    /// down (see [`compactor::service`](crate::service)). A service runs
    /// once: for restarts, register it with [`restartable`](Self::restartable).
    /// Category [`Category::Task`] unless set; no retries.
    ///
    /// The service is handed its name (its path, `scope/name`) with its
    /// token, and runs inside a span `service` whose field `task` is that
    /// path, so what it logs says which service it is.
    /// [`TaskHandle::service`] says how it stands.
    ///
    /// The service's own code (a request handler, an admin endpoint) must
    /// not wait for the report (`wait()`, `shutdown()`): the report waits
    /// for the service's drain, which would wait for that code until its
    /// timeout. Start the shutdown from there with
    /// [`trigger`](crate::Compactor::trigger) instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// use compactor::Compactor;
    ///
    /// let c = Compactor::new();
    /// let pool = c.register("db-pool", compactor::cleanup::once(|| async { /* close the pool */ }))?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// c.task("http")
    ///     .depends_on(&pool) // the server uses the pool: drained before it closes
    ///     .service(move |stop| async move {
    ///         loop {
    ///             tokio::select! {
    ///                 () = stop.cancelled() => return Ok::<(), std::io::Error>(()),
    ///                 accepted = listener.accept() => drop(accepted?),
    ///             }
    ///         }
    ///     })?;
    /// let report = c.shutdown().await;
    /// assert_eq!(report.tasks()[0].name(), "http");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a tokio runtime,
    /// [`Error::RestartsNeedRestartable`] for a supervision with restarts,
    /// and those of [`register`](Self::register) for a one-shot cleanup; a
    /// refused service is never started.
    pub fn service<F, Fut>(self, service: F) -> Result<TaskHandle, Error>
    where
        F: FnOnce(ServiceContext) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: CleanupResult,
    {
        let mut once = Some(service);
        self.start_service(false, move |context| match once.take() {
            Some(service) => service(context),
            None => unreachable!("a one-shot service is never restarted"),
        })
    }

    /// A [service](Self::service) that can be restarted: `service` is
    /// called again for each restart that its [supervision](Self::supervise)'s
    /// [restarts](Supervision::restarts) allow, after the task's
    /// [backoff](Self::backoff) (an [`Event::ServiceRestarting`](crate::Event::ServiceRestarting)
    /// each time); past that budget, the failure ends what the supervision
    /// says, its error saying how many restarts it had. Never restarted
    /// once the shutdown has begun; a failure while it waits to be
    /// restarted is its end then.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// use std::time::Duration;
    /// use compactor::{Compactor, service::Supervision};
    ///
    /// let c = Compactor::new();
    /// let worker = c
    ///     .task("worker")
    ///     .supervise(Supervision::end_all().restarts(2, Duration::from_secs(60)))
    ///     .restartable(|ctx| async move {
    ///         Err::<(), _>(format!("lost the queue (run {})", ctx.restarts() + 1))
    ///     })?;
    /// // Two restarts, then the failure ends the instance.
    /// let report = c.wait().await;
    /// assert_eq!(worker.service().unwrap().restarts(), 2);
    /// assert!(report.reason().to_string().contains("after 2 restarts"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`service`](Self::service).
    pub fn restartable<F, Fut>(self, service: F) -> Result<TaskHandle, Error>
    where
        F: FnMut(ServiceContext) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: CleanupResult,
    {
        self.start_service(true, service)
    }

    /// Registers a service's drain, then starts the service, supervised.
    fn start_service<F, Fut>(self, restartable: bool, service: F) -> Result<TaskHandle, Error>
    where
        F: FnMut(ServiceContext) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: CleanupResult,
    {
        if self.compactor().is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Error::NoRuntime {
                task: self.name().to_owned(),
            });
        };
        let compactor = self.compactor();
        let mut supervision = self.supervision.unwrap_or_else(|| compactor.supervision());
        if let Some(error) = self.restarts_refusal(restartable) {
            return Err(dropped_refused(error, [service]));
        }
        if !restartable {
            // A scope's default restarts are for the services that can be.
            supervision.restarts = None;
        }
        let path = compactor.path_of(self.name());
        let backoff = self.restart_backoff();
        let stop = CancellationToken::new();
        let (token, stop_seen) = (stop.clone(), stop.clone());
        let (serving, drain) = link(Some(stop));
        let builder = match self.has_category() {
            true => self,
            false => self.category(Category::Task),
        };
        // Registered first: a refused service never runs, not even the part
        // of its closure before its first `.await`, and its closure is
        // dropped here, a panic in its `Drop` contained.
        let registered = builder.refusal(false).and_then(|()| {
            builder.insert(once_with_token(move |out_of_time: CancellationToken| {
                drain.drained(out_of_time)
            }))
        });
        let mut handle = match registered {
            Ok(handle) => handle,
            Err(error) => return Err(dropped_refused(error, [service])),
        };
        let state = crate::service::StateCell::new();
        handle.service = Some(state.clone());
        let tracking = Tracking {
            state,
            counted: (!supervision.background).then(|| compactor.service_began()),
        };
        // Under the name its registration holds: a service registered again
        // under the same name is another entry.
        let alive = compactor.alive_service(handle.name.clone());
        let owner = compactor.downgrade();
        let stops = Stops {
            own: stop_seen,
            begun: compactor.lineage_begun(),
        };
        let events = compactor.events();
        let span = tracing::info_span!("service", task = %path);
        drop(
            runtime.spawn(
                async move {
                    let _alive = alive;
                    let tracking = tracking;
                    let ended = |end: &ServiceEnd| {
                        // Ended once its drain, an early run or a shutdown of
                        // its instance or one above began: not a failure
                        // that ends anything.
                        let by_itself = !stops.any();
                        if by_itself && !matches!(end, ServiceEnd::Ok) {
                            if let Some(compactor) = owner.upgrade() {
                                compactor.escalate(supervision.ends, end.reason(Some(&path)));
                            }
                        }
                        tracking.finish(end, by_itself);
                    };
                    let tracking = &tracking;
                    let supervised = Supervised {
                        context: ServiceContext {
                            token,
                            name: path.clone(),
                            restarts: 0,
                        },
                        budget: supervision.restarts,
                        backoff,
                        stops: &stops,
                        events,
                        state: tracking.state.clone(),
                    };
                    serving.serve(move || supervised.run(service), ended).await;
                }
                .instrument(span),
            ),
        );
        Ok(handle)
    }
}

/// A service's state and its place in the counts, kept up to date from
/// its task: dropped unfinished (cut off), it ended `Cancelled`.
struct Tracking {
    state: Arc<crate::service::StateCell>,
    counted: Option<super::tree::Counted>,
}

impl Tracking {
    fn finish(&self, end: &ServiceEnd, by_itself: bool) {
        self.state.update(|s| s.ended = Some(end.outcome()));
        if let Some(counted) = &self.counted {
            counted.ended(match by_itself {
                true => super::tree::End::ByItself,
                false => super::tree::End::Stopped,
            });
        }
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        self.state.update(|s| {
            s.ended.get_or_insert(crate::Outcome::Cancelled);
        });
    }
}

/// What ends a service's time of its own: its drain (or an early run),
/// and the shutdown of its instance or of any instance above it.
struct Stops {
    own: CancellationToken,
    begun: Vec<CancellationToken>,
}

impl Stops {
    fn any(&self) -> bool {
        self.own.is_cancelled() || self.begun.iter().any(CancellationToken::is_cancelled)
    }

    async fn cancelled(&self) {
        let all = std::iter::once(&self.own).chain(&self.begun);
        futures::future::select_all(all.map(|t| Box::pin(t.cancelled()))).await;
    }
}

/// A service's runs, restarts between them.
struct Supervised<'a> {
    context: ServiceContext,
    budget: Option<(u32, Duration)>,
    backoff: Backoff,
    stops: &'a Stops,
    events: Arc<OnceLock<broadcast::Sender<Event>>>,
    state: Arc<crate::service::StateCell>,
}

impl Supervised<'_> {
    /// Runs the service until it ends with no restart left: its end, a
    /// last panic raised again (without the panic hook) for the link to
    /// report.
    async fn run<F, Fut>(mut self, mut service: F) -> Result<(), CleanupError>
    where
        F: FnMut(ServiceContext) -> Fut,
        Fut: Future,
        Fut::Output: CleanupResult,
    {
        let mut restarts_at: VecDeque<Instant> = VecDeque::new();
        loop {
            // Each run its own token, a child of the service's: a run that
            // cancels it (a guard on it) stops its own work, not the
            // supervision.
            let context = ServiceContext {
                token: self.context.token.child_token(),
                ..self.context.clone()
            };
            let run = Box::pin(async { service(context).await });
            let ran = AssertUnwindSafe(crate::run::contain::Contained(run))
                .catch_unwind()
                .await;
            let end = ServiceEnd::of(ran);
            let failed = !matches!(end, ServiceEnd::Ok);
            let restarts = self.context.restarts.saturating_add(1);
            let delay = self.backoff.next_delay(restarts);
            // The budget as it stands when the restart would happen.
            let at = Instant::now() + delay.min(Duration::from_secs(86_400 * 365));
            let restart = failed
                && !self.stops.any()
                && self.budget.is_some_and(|(at_most, within)| {
                    while restarts_at
                        .front()
                        .is_some_and(|then| at.saturating_duration_since(*then) >= within)
                    {
                        restarts_at.pop_front();
                    }
                    (restarts_at.len() as u64) < u64::from(at_most)
                });
            if !restart {
                return self.given_up(end);
            }
            tracing::warn!(restart = restarts, ?delay, error = %end.text(), "service failed; restarting");
            if let Some(events) = self.events.get() {
                let _ = events.send(Event::ServiceRestarting {
                    name: self.context.name.clone(),
                    restart: restarts,
                    delay,
                    error: end.text(),
                });
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // Stopped while it waits: this failure is its end.
                () = self.stops.cancelled() => return self.given_up(end),
            }
            restarts_at.push_back(Instant::now());
            self.context.restarts = restarts;
            crate::telemetry::restarted();
            self.state.update(|s| s.restarts = restarts);
        }
    }

    /// The end of a service with no restart left, its restarts named.
    fn given_up(&self, end: ServiceEnd) -> Result<(), CleanupError> {
        let restarts = self.context.restarts;
        let end = match (end, restarts) {
            (end, 0) => end,
            (ServiceEnd::Failed(error), n) => {
                ServiceEnd::Failed(error.within(format!("after {n} restarts")))
            }
            (ServiceEnd::Panicked(message), n) => {
                ServiceEnd::Panicked(format!("after {n} restarts: {message}"))
            }
            (end, _) => end,
        };
        end.into_outcome()
    }
}
