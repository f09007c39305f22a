//! Services: long-running futures (a server, a queue consumer) that are part
//! of the shutdown. A service runs on a task of its own from the moment it
//! is registered; its drain is a task of the graph, with the priority,
//! dependencies and timeout of any other, and a report entry.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Compactor, Instance, TaskBuilder};
use crate::error::Error;
use crate::priority::Category;
use crate::registry::TaskHandle;
use crate::report::{CleanupError, ShutdownReason};
use crate::run::contain::message_of;
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

    /// The reason a shutdown this end starts gives, if it starts one.
    pub(crate) fn reason(&self, service: &str) -> Option<ShutdownReason> {
        match self {
            ServiceEnd::Ok => None,
            ServiceEnd::Failed(error) => Some(ShutdownReason::ServiceFailed(format!(
                "service `{service}`: {error}"
            ))),
            ServiceEnd::Panicked(message) => Some(ShutdownReason::Panic(format!(
                "service `{service}` panicked: {message}"
            ))),
        }
    }
}

/// The service's task, aborted if the drain is cut off (its timeout, the
/// deadline), never runs, or its instance goes: never left detached.
struct Running(JoinHandle<ServiceEnd>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
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
    /// timeout or the deadline, the service is aborted, not left running,
    /// and the task is reported timed out or cancelled, never clean.
    ///
    /// "The pool closes after the server has drained" is one `depends_on`:
    /// the server uses the pool, so it is stopped before it.
    ///
    /// A service that ends by itself before any shutdown with an error or a
    /// panic starts the shutdown (see [`shutdown_on_failure`](Self::shutdown_on_failure));
    /// one that ends cleanly just leaves its task nothing to wait for.
    /// Category [`Category::Task`] unless set; no retries.
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
        let starts_shutdown = self.service_failure_starts_shutdown;
        let owner = Arc::downgrade(&self.compactor().inner);
        let stop = CancellationToken::new();
        let (token, stop_seen) = (stop.clone(), stop.clone());
        // Called only once registered: a refused service never runs, not
        // even the part of its closure before its first `.await`.
        let (go, registered) = tokio::sync::oneshot::channel::<()>();
        let alive =
            crate::run::live::LiveServices::enter(&self.compactor().inner.services, name.clone());
        let running = Running(runtime.spawn(async move {
            let _alive = alive;
            if registered.await.is_err() {
                return ServiceEnd::Ok;
            }
            let serving = AssertUnwindSafe(async move { service(token).await });
            let end = ServiceEnd::of(serving.catch_unwind().await);
            // Ended by a category's early run, or by its drain: not a failure
            // that should start a shutdown.
            if starts_shutdown && !stop_seen.is_cancelled() {
                if let Some(reason) = end.reason(&name) {
                    if let Some(inner) = owner.upgrade() {
                        begin_unless_begun(inner, reason);
                    }
                }
            }
            end
        }));
        let builder = match self.has_category() {
            true => self,
            false => self.category(Category::Task),
        };
        builder.refusal(false)?;
        let handle = builder.finish(once_with_token(
            move |out_of_time: CancellationToken| async move {
                let mut running = running;
                stop.cancel();
                let ended = tokio::select! {
                    ended = &mut running.0 => ended,
                    () = out_of_time.cancelled() => {
                        // Out of time: aborted, and waited for (within the
                        // cancel grace), so what runs after it never runs
                        // beside it.
                        running.0.abort();
                        let _ = (&mut running.0).await;
                        return Err("did not drain in time; aborted".into());
                    }
                };
                match ended {
                    Ok(end) => end.into_outcome(),
                    Err(error) if error.is_panic() => Err(format!(
                        "the service panicked: {}",
                        message_of(error.into_panic())
                    )
                    .into()),
                    Err(_) => {
                        Err("the service's task was cancelled (its runtime shut down)".into())
                    }
                }
            },
        ))?;
        let _ = go.send(());
        Ok(handle)
    }
}

/// Starts the shutdown for a failed service, unless one has begun.
fn begin_unless_begun(inner: Arc<Instance>, reason: ShutdownReason) {
    let compactor = Compactor { inner };
    if !compactor.is_shutting_down() {
        tracing::error!(%reason, "a service failed: starting the shutdown");
        compactor.begin(reason);
    }
}
