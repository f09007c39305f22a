//! Services: long-running futures (a server, a queue consumer) that are part
//! of the shutdown. A service runs on a task of its own from the moment it
//! is registered (`main`'s, given to `run_until_shutdown`, on `main`'s own);
//! its drain is a task of the graph, with the priority, dependencies and
//! timeout of any other, and a report entry. Both kinds are linked to their
//! drain task the same way ([`link`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::register::dropped_refused;
use super::{Compactor, TaskBuilder};
use crate::error::Error;
use crate::priority::Category;
use crate::registry::TaskHandle;
use crate::report::{CleanupError, ShutdownReason};
use crate::run::contain::{drop_contained, message_of};
use crate::task::cleanup::{CleanupResult, once_with_token};

/// How a service ended.
pub(crate) enum ServiceEnd {
    Ok,
    Failed(CleanupError),
    Panicked(String),
}

impl ServiceEnd {
    /// The end of a service future run under `catch_unwind`.
    pub(crate) fn of<T: CleanupResult>(ended: std::thread::Result<T>) -> ServiceEnd {
        // The error's `Display` is user code too.
        let ended = ended
            .and_then(|output| std::panic::catch_unwind(AssertUnwindSafe(|| output.into_result())));
        match ended {
            Ok(Ok(())) => ServiceEnd::Ok,
            Ok(Err(error)) => ServiceEnd::Failed(error),
            Err(panic) => ServiceEnd::Panicked(message_of(panic)),
        }
    }

    /// As the drain task's outcome: a panic is raised again for the attempt
    /// to report (without calling the panic hook a second time).
    pub(crate) fn into_outcome(self) -> Result<(), CleanupError> {
        match self {
            ServiceEnd::Ok => Ok(()),
            ServiceEnd::Failed(error) => Err(error),
            ServiceEnd::Panicked(message) => std::panic::resume_unwind(Box::new(message)),
        }
    }

    /// The reason a shutdown this end starts gives: `service`'s, or, for
    /// `main`'s (`None`), the service's.
    pub(crate) fn reason(&self, service: Option<&str>) -> ShutdownReason {
        let who = match service {
            Some(name) => format!("service `{name}`"),
            None => "the service".to_owned(),
        };
        match self {
            ServiceEnd::Ok => ShutdownReason::ServiceEnded,
            ServiceEnd::Failed(error) => ShutdownReason::ServiceFailed(match service {
                Some(_) => format!("{who}: {error}"),
                None => error.to_string(),
            }),
            ServiceEnd::Panicked(message) => {
                ShutdownReason::Panic(format!("{who} panicked: {message}"))
            }
        }
    }
}

/// Links a service to its drain task: the service's side ([`Serving`]) and
/// the drain's ([`Drain`]). `stop`, if given, is cancelled as the drain
/// begins (a service's own token; `main`'s stops on the instance's drain
/// token instead).
pub(crate) fn link(stop: Option<CancellationToken>) -> (Serving, Drain) {
    let (ended, drained) = oneshot::channel();
    let (cut, cut_off) = oneshot::channel();
    let serving = Serving { ended, cut_off };
    let drain = Drain {
        stop,
        ended: drained,
        cut: CutOff(Some(cut)),
    };
    (serving, drain)
}

/// A service's side of its link: where it says it ended, and where it
/// hears it is cut off.
pub(crate) struct Serving {
    ended: oneshot::Sender<ServiceEnd>,
    cut_off: oneshot::Receiver<oneshot::Sender<()>>,
}

impl Serving {
    /// Runs the future `service` makes (the closure called inside the
    /// catch: a panic there is a service that ended) until it ends, tells
    /// `ended` and then the drain how; or until the drain cuts it off
    /// (out of time, or the drain task dropped unrun): then the future is
    /// dropped at once, and the drain told it is gone.
    pub(crate) async fn serve<S, F>(self, service: S, ended: impl FnOnce(&ServiceEnd))
    where
        S: FnOnce() -> F,
        F: Future,
        F::Output: CleanupResult,
    {
        let Serving {
            ended: tell,
            cut_off,
        } = self;
        let mut serving = Box::pin(AssertUnwindSafe(async move { service().await }).catch_unwind());
        tokio::select! {
            // A cut-off first: a service cut off (or whose drain went
            // unrun) before its first poll never runs.
            biased;
            cut = cut_off => {
                let _ = drop_contained(serving);
                if let Ok(dropped) = cut {
                    let _ = dropped.send(());
                }
            }
            result = &mut serving => {
                let _ = drop_contained(serving);
                let end = ServiceEnd::of(result);
                ended(&end);
                let _ = tell.send(end);
            }
        }
    }
}

/// The drain task's side of a service's link.
pub(crate) struct Drain {
    stop: Option<CancellationToken>,
    ended: oneshot::Receiver<ServiceEnd>,
    cut: CutOff,
}

impl Drain {
    /// The drain task's cleanup: the service told to stop, and its end
    /// waited for; out of time, it is cut off, and this waits until it is
    /// gone (within the cancel grace), so what runs after the drain never
    /// runs beside the service.
    pub(crate) async fn drained(self, out_of_time: CancellationToken) -> Result<(), CleanupError> {
        let Drain {
            stop,
            ended,
            mut cut,
        } = self;
        if let Some(stop) = stop {
            stop.cancel();
        }
        tokio::select! {
            end = ended => {
                cut.0 = None;
                match end {
                    Ok(end) => end.into_outcome(),
                    Err(_) => Err(
                        "the service was dropped before it drained (its future, or the runtime that ran it, went away)".into(),
                    ),
                }
            }
            () = out_of_time.cancelled() => {
                let (dropped, gone) = oneshot::channel();
                if let Some(cut) = cut.0.take() {
                    let _ = cut.send(dropped);
                }
                let _ = gone.await;
                Err("did not drain in time; dropped".into())
            }
        }
    }
}

/// Cuts the service off if the drain goes without its end (dropped unrun,
/// or past its grace): a service is never left running without a drain.
struct CutOff(Option<oneshot::Sender<oneshot::Sender<()>>>);

impl Drop for CutOff {
    fn drop(&mut self) {
        if let Some(cut) = self.0.take() {
            let (dropped, _) = oneshot::channel();
            let _ = cut.send(dropped);
        }
    }
}

impl TaskBuilder<'_> {
    /// Whether a [service](Self::service) that ends with an error or a
    /// panic before any shutdown starts the shutdown (reason
    /// [`ShutdownReason::ServiceFailed`] or [`ShutdownReason::Panic`]).
    /// Default: it does, as a process whose server died should stop. The
    /// library starts the run, not the process's end: that comes when
    /// `main` returns, so `main` should be waiting for the report
    /// ([`wait`](Compactor::wait), or
    /// [`run_until_shutdown`](Compactor::run_until_shutdown)). Only services
    /// read it.
    pub fn shutdown_on_failure(mut self, starts: bool) -> Self {
        self.service_failure_starts_shutdown = starts;
        self
    }

    /// Starts `service` now on a task of its own (on the current tokio
    /// runtime) and makes its drain a task of the shutdown: when the task's
    /// turn comes (its priority and dependencies, like any other), the
    /// token handed to `service` is cancelled and the task waits for the
    /// service to end, within its timeout. The service's end is the task's
    /// outcome: an `Err` fails it, a panic is `Panicked`. Cut off by the
    /// timeout or the deadline, the service is dropped at its next poll, not
    /// left running, and the task is reported timed out or cancelled, never
    /// clean (abandoned, still running, if its code holds its thread).
    ///
    /// "The pool closes after the server has drained" is one `depends_on`:
    /// the server uses the pool, so it is stopped before it.
    ///
    /// A service that ends by itself before any shutdown with an error or a
    /// panic starts the shutdown (see [`shutdown_on_failure`](Self::shutdown_on_failure));
    /// one that ends cleanly just leaves its task nothing to wait for.
    /// Category [`Category::Task`] unless set; no retries.
    ///
    /// The service runs inside a span `service` whose field `task` is its
    /// task's name, so what it logs says which service it is.
    ///
    /// The service's own code (a request handler, an admin endpoint) must
    /// not wait for the report (`wait()`, `shutdown()`): the report waits
    /// for the service's drain, which would wait for that code until its
    /// timeout. Start the shutdown from there with
    /// [`trigger`](Compactor::trigger) instead.
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
    /// [`Error::NoRuntime`] outside a tokio runtime, and those of
    /// [`register`](Self::register) for a one-shot cleanup; a refused service is never
    /// started.
    pub fn service<F, Fut>(self, service: F) -> Result<TaskHandle, Error>
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
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
        let name: Arc<str> = Arc::from(self.name());
        let compactor = self.compactor();
        let starts_shutdown = self.service_failure_starts_shutdown;
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
        let handle = match registered {
            Ok(handle) => handle,
            Err(error) => return Err(dropped_refused(error, [service])),
        };
        let alive = compactor.alive_service(name.clone());
        let owner = compactor.downgrade();
        drop(runtime.spawn(async move {
            let _alive = alive;
            let ended = |end: &ServiceEnd| {
                // Ended by its drain or an early run: not a failure that
                // should start a shutdown.
                let failed = !matches!(end, ServiceEnd::Ok);
                if failed && starts_shutdown && !stop_seen.is_cancelled() {
                    if let Some(compactor) = owner.upgrade() {
                        begin_unless_begun(&compactor, end.reason(Some(&name)));
                    }
                }
            };
            let span = tracing::info_span!("service", task = %name);
            serving
                .serve(move || service(token), ended)
                .instrument(span)
                .await;
        }));
        Ok(handle)
    }
}

impl Compactor {
    /// Counts a service of this instance as alive while the guard lives:
    /// the run's end waits for it, and reports it abandoned if it outlives
    /// its drain (its code holding its thread).
    pub(crate) fn alive_service(&self, name: Arc<str>) -> crate::run::live::Alive {
        crate::run::live::LiveServices::enter(&self.inner.running.services, name)
    }
}

/// Starts the shutdown for a failed service, unless one has begun.
fn begin_unless_begun(compactor: &Compactor, reason: ShutdownReason) {
    if !compactor.is_shutting_down() {
        tracing::error!(%reason, "a service failed: starting the shutdown");
        compactor.begin(reason);
    }
}
