//! Services: long-running futures (a server, a queue consumer) that are part
//! of the shutdown. A service runs on a task of its own from the moment it
//! is registered (`main`'s, given to `run_until_shutdown`, on `main`'s own);
//! its drain is a task of the graph, with the priority, dependencies and
//! timeout of any other, and a report entry. Both kinds are linked to their
//! drain task the same way ([`link`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Compactor;
use crate::report::{CleanupError, Outcome, ShutdownReason};
use crate::run::contain::{drop_contained, message_of};
use crate::task::cleanup::CleanupResult;

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

    /// As the service's state says how it ended.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            ServiceEnd::Ok => Outcome::Succeeded,
            ServiceEnd::Failed(error) => Outcome::Failed(error.clone()),
            ServiceEnd::Panicked(message) => Outcome::Panicked(message.clone()),
        }
    }

    /// What went wrong, for a log line or an event.
    pub(super) fn text(&self) -> String {
        match self {
            ServiceEnd::Ok => "ended".to_owned(),
            ServiceEnd::Failed(error) => error.to_string(),
            ServiceEnd::Panicked(message) => format!("panicked: {message}"),
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
        // A drain dropped unrun (skipped, aborted, unregistered) still
        // stops the service's token, and what its code handed it to.
        stop: stop.map(CancellationToken::drop_guard),
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
    stop: Option<tokio_util::sync::DropGuard>,
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
        // Told to stop: the guard cancels its token.
        drop(stop);
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

impl Compactor {
    /// Counts a service of this instance as alive while the guard lives:
    /// the run's end waits for it, and reports it abandoned if it outlives
    /// its drain (its code holding its thread).
    pub(crate) fn alive_service(&self, name: Arc<str>) -> crate::run::live::Alive {
        crate::run::live::LiveServices::enter(&self.inner.running.services, name)
    }
}
