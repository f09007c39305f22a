//! The helpers for `main`: run a service until shutdown, shut down from
//! synchronous code, start a shutdown on a panic.

use std::future::Future;

use crate::compactor::{Compactor, ServiceEnd, link};
use crate::priority::{Category, Priority};
use crate::run::membership::inside_cleanup_of;
use tokio_util::sync::CancellationToken;

use crate::ShutdownReport;
use crate::error::Error;
use crate::report::ShutdownReason;
use crate::task::cleanup::{CleanupResult, once_with_token};

impl Compactor {
    /// Installs the panic hook of [`Builder::shutdown_on_panic`](crate::Builder::shutdown_on_panic).
    pub(crate) fn shutdown_on_panic(&self) {
        let owner = self.downgrade();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if crate::run::contain::containing() {
                return;
            }
            if let Some(compactor) = owner.upgrade() {
                let thread = std::thread::current();
                let message = crate::run::contain::panic_message(info.payload());
                let at = info
                    .location()
                    .map(|l| format!(" at {l}"))
                    .unwrap_or_default();
                let reason = format!(
                    "thread '{}' panicked{at}: {message}",
                    thread.name().unwrap_or("<unnamed>")
                );
                compactor.begin(ShutdownReason::Panic(reason));
            }
        }));
    }

    /// Runs `service` until it ends or shutdown begins (a signal, a panic,
    /// a request), runs the cleanup, and returns the report: the one way to
    /// write `main`. `main` returns it, so the exit code follows it
    /// ([`ShutdownReport::exit_code`]): 0 after a clean run, 128 + n after
    /// signal n, 1 if the service failed or a cleanup did not succeed; an
    /// unclean run never exits 0 by accident. A `main` that decides
    /// otherwise returns its own code.
    ///
    /// `service` is handed the token it must stop on: cancelled when the
    /// shutdown's [drain delay](crate::Builder::drain_delay) is over (at once
    /// without one), the same as [`Readiness::drained`](crate::service::Readiness::drained). A
    /// server passes it to its own graceful shutdown (axum's
    /// `with_graceful_shutdown(stop.cancelled_owned())`); a `main` with
    /// nothing to serve, whose work is all registered cleanups, waits on it
    /// (`|stop| async move { stop.cancelled().await }`).
    ///
    /// The service is part of the shutdown: it keeps running after the
    /// shutdown began, so it can drain, and a
    /// task of the graph, `compactor::service` (priority
    /// [`Critical`](crate::Priority::Critical), the instance's
    /// [default timeout](crate::Builder::default_timeout)), waits for it to
    /// end: the other cleanups (closing the pool the server uses) run after
    /// it has drained. Its end is the task's outcome. A service that does not
    /// stop on its token holds the cleanups until that timeout; cut off by it
    /// or the deadline, the service is dropped at its next poll and the task
    /// reported timed out or cancelled, so the report is not clean (one
    /// whose code holds the thread past its cut-off is reported abandoned,
    /// still running). A
    /// service that ends by itself starts the shutdown
    /// ([`ShutdownReason::ServiceEnded`], or [`ShutdownReason::ServiceFailed`]
    /// if it returned an error). The service's own code must not wait for
    /// the report (`wait()`, `shutdown()`), which waits for the service's
    /// drain: start the shutdown there with [`trigger`](Self::trigger).
    ///
    /// Listens for signals (unless [`Builder::auto_listen`](crate::Builder::auto_listen) was turned off),
    /// and, while it runs, takes the exit over from the signal handling: the
    /// process ends when `main` returns the code (within
    /// [`Builder::exit_grace`](crate::Builder::exit_grace) after a signal-started run). A service that
    /// panics before any shutdown is a service that ended: the cleanup
    /// runs, with [`ShutdownReason::Panic`], and the code is 101 (one that
    /// panics while it drains fails its task: code 1). One service per
    /// instance: a second `run_until_shutdown` on the same instance while
    /// one runs starts nothing and ends the run, reporting why (code 1).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> compactor::ShutdownReport {
    ///     let compactor = compactor::Compactor::global();
    ///     compactor
    ///         .run_until_shutdown(|stop| async move {
    ///             stop.cancelled().await; // serve until then
    ///         })
    ///         .await
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that dropping it drops the service; a
    /// shutdown it started goes on. Dropped before any shutdown, it
    /// withdraws the service's drain task.
    pub async fn run_until_shutdown<S, F>(&self, service: S) -> ShutdownReport
    where
        S: FnOnce(crate::service::ServiceContext) -> F,
        F: Future,
        F::Output: CleanupResult,
    {
        // The application ends the process (with the code returned here).
        let _waiting = self.waiting();
        if self.config().auto_listen != Some(false) {
            if let Err(error) = self.listen_for_signals() {
                tracing::warn!(%error, "running without signal handling");
            }
        }
        // The service's drain is a task of the graph, first of all: the
        // other cleanups wait for the service to end (within the instance's
        // default timeout).
        let (serving, drain) = link(None);
        let registered = self
            .task(SERVICE)
            .priority(Priority::Critical)
            .category(Category::Task)
            .finish_internal(once_with_token(move |out_of_time: CancellationToken| {
                drain.drained(out_of_time)
            }));
        let _withdraw = match registered {
            Ok(handle) => Withdraw(handle),
            // Begun before the service started: it does not start.
            Err(Error::ShuttingDown) => return self.wait().await,
            Err(error) => {
                // Not started: a service whose drain the shutdown would not
                // wait for could run behind the report. The run says why.
                tracing::error!(%error, "the service is not started");
                let why = format!("the service was not started: {error}");
                self.begin(ShutdownReason::ServiceFailed(why));
                return self.wait().await;
            }
        };
        // Served here, on `main`'s task: it need not be `Send`. It goes on
        // while it drains, until it ends or its drain cuts it off; one that
        // ends by itself starts the shutdown.
        let stop = crate::service::ServiceContext {
            token: self.drain_token(),
            name: self.path_of(SERVICE),
            restarts: 0,
        };
        // Counted as alive while served: if its code holds the thread past
        // its drain, the report says it is abandoned, still running. Not
        // counted among the services whose end ends the whole: its own end
        // does that.
        let alive = self.alive_service(_withdraw.0.name.clone());
        // Ended by itself only before a shutdown of this instance or one
        // above it began.
        let begun = self.lineage_begun();
        let ended = |end: &ServiceEnd| {
            if !begun.iter().any(CancellationToken::is_cancelled) {
                self.begin(end.reason(None));
            }
        };
        let served = async {
            let _alive = alive;
            serving.serve(move || service(stop), ended).await;
        };
        tokio::select! {
            () = served => {}
            // The report without the drain's end (a drain dropped unrun
            // cuts the service off, so this is only a safeguard).
            _ = self.wait() => {}
        }
        self.wait().await
    }

    /// Runs the shutdown from synchronous code and blocks until the report
    /// is in: for a `main` without a runtime, a `Drop`, a test's teardown.
    ///
    /// It works from any thread, inside a runtime too: a run it begins goes
    /// on the library's own runtime, so blocking the caller's thread (the
    /// only thread of a current-thread runtime, say) cannot hold it up, and
    /// the report comes by the deadline. Called from inside the run (one of
    /// the instance's cleanups) it returns the report as it stands, as
    /// [`shutdown`](Self::shutdown) does there.
    ///
    /// One case cannot wait: a run already begun on a current-thread runtime,
    /// waited for from that runtime's own thread, which the run needs. It
    /// then returns at once with a report that is not
    /// [complete](ShutdownReport::is_complete) and says so in an error log;
    /// use `shutdown().await` there. And [services](crate::TaskBuilder::service)
    /// running on the current-thread runtime whose thread this blocks cannot
    /// drain: their tasks wait out their timeouts and are reported
    /// abandoned; use `shutdown().await` there too.
    pub fn shutdown_blocking(&self) -> ShutdownReport {
        if !inside_cleanup_of(self.id()) {
            if let Some(started) = self.start(ShutdownReason::Manual) {
                self.drive(started, true);
            }
        }
        let wait = || futures::executor::block_on(self.wait());
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // A worker that blocks keeps the task it woke last (the run's,
            // spawned or asked for its report) to itself: hand it over first.
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            Ok(_)
                if self.report().is_none()
                    && self
                        .current_run()
                        .is_some_and(|ctx| ctx.driven_by_this_thread()) =>
            {
                tracing::error!(
                    "shutdown_blocking on the thread of the current-thread runtime that drives the run would wait on itself; returning the report as it stands"
                );
                self.stalled_report()
            }
            _ => wait(),
        }
    }
}

/// The name of `run_until_shutdown`'s task for its service.
const SERVICE: &str = "compactor::service";

/// Withdraws the service's drain if `run_until_shutdown` is dropped before
/// any shutdown: a service nobody polls any more has nothing to drain.
struct Withdraw(crate::TaskHandle);

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.0.unregister();
    }
}
