//! One task's life in a run: its attempts, their timeouts, retries with
//! backoff, contained panics. Ends with a [`Done`] for the runner.

use std::any::Any;
use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use futures::FutureExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::cleanup::{BoxCleanup, Start};
use crate::mailbox::Mailbox;
use crate::{Event, Interruption, Outcome};

tokio::task_local! {
    /// The instance whose cleanup is running on this tokio task.
    static ACTIVE: u64;
}

thread_local! {
    /// The instance whose blocking cleanup is running on this thread (0: none).
    static ACTIVE_BLOCKING: Cell<u64> = const { Cell::new(0) };
}

/// Whether the caller is one of `instance`'s own cleanups.
pub(crate) fn inside_cleanup_of(instance: u64) -> bool {
    ACTIVE.try_with(|id| *id == instance).unwrap_or(false)
        || ACTIVE_BLOCKING.with(Cell::get) == instance
}

/// Whether the caller is any instance's cleanup.
pub(crate) fn inside_any_cleanup() -> bool {
    ACTIVE.try_with(|_| ()).is_ok() || ACTIVE_BLOCKING.with(Cell::get) != 0
}

/// What every task of one run shares.
pub(crate) struct RunContext {
    pub(crate) instance: u64,
    /// Where handed-over tasks report their end to the runner.
    pub(crate) done: Mailbox<Done>,
    pub(crate) events: Arc<OnceLock<broadcast::Sender<Event>>>,
    pub(crate) cancel_grace: Duration,
    /// Fires at the deadline; the parent of every attempt's token. Made
    /// when first needed: most runs have no task that watches a token.
    stop: OnceLock<CancellationToken>,
    /// Whether anyone subscribes to the events. Asking the channel takes its
    /// lock, so the runner refreshes this once per batch instead.
    pub(crate) listening: AtomicBool,
    /// Per task, read from other threads (one table for both).
    pub(crate) progress: Box<[Progress]>,
    pub(crate) names: Box<[Arc<str>]>,
}

/// How far a task has got.
#[derive(Default)]
pub(crate) struct Progress {
    /// Attempts begun so far: what the report shows for a task stopped
    /// from outside or still running.
    pub(crate) attempts: AtomicU32,
    /// Set as the task reaches its outcome.
    pub(crate) finished: AtomicBool,
}

impl RunContext {
    pub(crate) fn new(
        instance: u64,
        events: Arc<OnceLock<broadcast::Sender<Event>>>,
        cancel_grace: Duration,
        names: Box<[Arc<str>]>,
    ) -> RunContext {
        RunContext {
            instance,
            done: Mailbox::new(),
            events,
            cancel_grace,
            stop: OnceLock::new(),
            listening: AtomicBool::new(false),
            progress: names.iter().map(|_| Progress::default()).collect(),
            names,
        }
    }

    /// A token for an attempt, cancelled when the run stops.
    pub(crate) fn attempt_token(&self) -> CancellationToken {
        self.stop.get_or_init(CancellationToken::new).child_token()
    }

    /// Cancels every attempt's token, those made later too.
    pub(crate) fn stop(&self) {
        self.stop.get_or_init(CancellationToken::new).cancel();
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if self.listening.load(Ordering::Relaxed) {
            if let Some(events) = self.events.get() {
                let _ = events.send(event());
            }
        }
    }

    /// Tasks that began an attempt and have not finished: read from another
    /// thread when the process is made to exit mid-run.
    pub(crate) fn running(&self) -> Vec<String> {
        (0..self.names.len())
            .filter(|&i| {
                self.progress[i].attempts.load(Ordering::Relaxed) > 0
                    && !self.progress[i].finished.load(Ordering::Relaxed)
            })
            .map(|i| self.names[i].to_string())
            .collect()
    }

    pub(crate) fn announce(&self, name: &Arc<str>, attempt: u32) {
        self.emit(|| Event::TaskStarted {
            name: name.clone(),
            attempt,
        });
    }

    pub(crate) fn refresh_listening(&self) {
        self.listening.store(
            self.events.get().is_some_and(|e| e.receiver_count() > 0),
            Ordering::Relaxed,
        );
    }
}

/// Polls `future` once before arming a timer: most cleanups that finish at
/// once then never touch the timer wheel.
async fn within<F: Future>(deadline: Instant, future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut future = future;
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        return Some(output);
    }
    // Boxed: the timer is large, and only cleanups that wait pay for it.
    Box::pin(tokio::time::timeout_at(deadline, future))
        .await
        .ok()
}

/// A finished task, as reported to the runner.
pub(crate) struct Done {
    pub(crate) index: u32,
    pub(crate) outcome: Outcome,
    pub(crate) attempts: u32,
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    pub(crate) interruption: Option<Interruption>,
    pub(crate) leaked: Option<usize>,
}

/// The per-task settings the runner hands over.
pub(crate) struct Job {
    pub(crate) index: u32,
    pub(crate) name: Arc<str>,
    pub(crate) cleanup: BoxCleanup,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
}

pub(crate) enum Attempt {
    Ok,
    Err(String),
    TimedOut(Interruption),
    Panicked(String),
    Released,
}

/// The cleanup, owned while async; shared with the blocking thread otherwise,
/// so a retry can take it back once an abandoned attempt returns.
enum Body {
    Async(BoxCleanup),
    Blocking(Arc<Mutex<BoxCleanup>>),
}

/// How far the first attempt got when the runner polled it inline.
pub(crate) enum First {
    /// Not started.
    Fresh,
    /// Started and polled once: still pending.
    Pending {
        future: CleanupFuture,
        token: Option<CancellationToken>,
        started: Instant,
    },
    /// Started and failed at once; a retry follows.
    Failed { error: String, started: Instant },
}

pub(crate) type CleanupFuture = futures::future::BoxFuture<'static, Result<(), String>>;

pub(crate) async fn drive(ctx: Arc<RunContext>, job: Job, first: First) -> Done {
    let Job {
        index,
        name,
        cleanup,
        timeout,
        retries,
        backoff,
    } = job;
    let observes_token = cleanup.observes_token();
    let mut body = match cleanup.is_blocking() {
        true => Body::Blocking(Arc::new(Mutex::new(cleanup))),
        false => Body::Async(cleanup),
    };
    let span = tracing::Span::current();
    let mut first = Some(first);
    let started = match &first {
        Some(First::Pending { started, .. } | First::Failed { started, .. }) => *started,
        _ => Instant::now(),
    };
    let mut attempt_started = started;
    let mut attempts = 0;
    let (outcome, interruption) = loop {
        attempts += 1;
        ctx.progress[index as usize]
            .attempts
            .store(attempts, Ordering::Relaxed);
        span.record("attempt", attempts);
        let attempt = match (first.take(), &mut body) {
            (Some(First::Pending { future, token, .. }), _) => {
                finish_async(&ctx, future, token, attempt_started + timeout).await
            }
            (Some(First::Failed { error, .. }), _) => Attempt::Err(error),
            (_, Body::Async(cleanup)) => {
                let token = observes_token.then(|| ctx.attempt_token());
                match as_cleanup_of(ctx.instance, || start_async(cleanup, token.as_ref())) {
                    Ok(future) => {
                        ctx.announce(&name, attempts);
                        finish_async(&ctx, future, token, attempt_started + timeout).await
                    }
                    Err(attempt) => attempt,
                }
            }
            (_, Body::Blocking(cell)) => {
                let token = observes_token.then(|| ctx.attempt_token());
                ctx.announce(&name, attempts);
                Box::pin(run_blocking(&ctx, cell, token, timeout)).await
            }
        };
        let error = match attempt {
            Attempt::Ok => break (Outcome::Succeeded, None),
            Attempt::Released => {
                // The closure was not called this time.
                attempts -= 1;
                ctx.progress[index as usize]
                    .attempts
                    .store(attempts, Ordering::Relaxed);
                break (Outcome::Released, None);
            }
            Attempt::Panicked(message) => break (Outcome::Panicked(message), None),
            Attempt::Err(error) if attempts > retries => break (Outcome::Failed(error), None),
            Attempt::TimedOut(how) if attempts > retries => break (Outcome::TimedOut, Some(how)),
            Attempt::Err(error) => error,
            Attempt::TimedOut(_) => format!("attempt timed out after {timeout:?}"),
        };
        let delay = backoff.next_delay(attempts);
        tracing::warn!(task = %name, attempt = attempts, %error, ?delay, "cleanup attempt failed; retrying");
        ctx.emit(|| Event::TaskRetrying {
            name: name.clone(),
            attempt: attempts,
            delay,
            error,
        });
        Box::pin(tokio::time::sleep(delay)).await;
        attempt_started = Instant::now();
    };
    let strong = match &body {
        Body::Async(cleanup) => cleanup.strong_count(),
        Body::Blocking(_) => None,
    };
    let done = Done {
        index,
        outcome,
        attempts,
        started,
        finished: Instant::now(),
        interruption,
        leaked: None,
    };
    conclude(&ctx, &name, &span, done, strong)
}

/// Logs a task's end and checks a weak registration for a leak (`strong`:
/// the value's strong count, now that the cleanup has let go of it), filling
/// in `done.leaked`. Shared by the runner's inline path and [`drive`].
pub(crate) fn conclude(
    ctx: &RunContext,
    name: &Arc<str>,
    span: &tracing::Span,
    mut done: Done,
    strong: Option<usize>,
) -> Done {
    let Done {
        outcome,
        attempts,
        started,
        finished,
        ..
    } = &done;
    let attempts = *attempts;
    match outcome {
        Outcome::Panicked(message) => {
            tracing::error!(task = %name, attempts, panic = %message, "cleanup panicked");
        }
        Outcome::Failed(error) => tracing::error!(task = %name, attempts, %error, "cleanup failed"),
        Outcome::TimedOut => tracing::warn!(task = %name, attempts, "cleanup timed out"),
        _ => {}
    }
    if !span.is_disabled() {
        span.record("attempt", attempts);
        span.record("outcome", tracing::field::display(outcome));
        span.record("elapsed_ms", (*finished - *started).as_secs_f64() * 1e3);
        tracing::debug!(parent: span, "cleanup finished");
    }
    done.leaked = strong.filter(|&n| n > 0 && done.outcome != Outcome::Released);
    if let Some(strong) = done.leaked {
        tracing::warn!(task = %name, strong, "value still alive after its cleanup: possible leak");
        ctx.emit(|| Event::LeakSuspected {
            name: name.clone(),
            strong_count: strong,
        });
    }
    done
}

/// Runs `f` as one of `instance`'s cleanups: a cleanup that calls
/// `shutdown()` on its own instance from in here gets the report so far
/// instead of waiting for itself. [`start_async`] and [`poll_once`] must run
/// inside it.
pub(crate) fn as_cleanup_of<T>(instance: u64, f: impl FnOnce() -> T) -> T {
    ACTIVE.sync_scope(instance, f)
}

/// Calls the cleanup for one attempt: its future, or how the attempt
/// already ended (released, or a panic in the call itself).
pub(crate) fn start_async(
    cleanup: &mut BoxCleanup,
    token: Option<&CancellationToken>,
) -> Result<CleanupFuture, Attempt> {
    let started = catch_unwind(AssertUnwindSafe(|| cleanup.start(token)));
    match started {
        Ok(Start::Async(future)) => Ok(future),
        Ok(Start::Released) => Err(Attempt::Released),
        Ok(Start::Blocking) => unreachable!("blocking cleanups run in run_blocking"),
        Err(panic) => Err(Attempt::Panicked(panic_message(panic.as_ref()))),
    }
}

/// Polls an attempt's future once, panics caught.
pub(crate) fn poll_once(
    future: &mut CleanupFuture,
    cx: &mut std::task::Context<'_>,
) -> Poll<Attempt> {
    let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
    match polled {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(result)) => Poll::Ready(settle(Ok(result))),
        Err(panic) => Poll::Ready(settle(Err(panic))),
    }
}

/// Drives an attempt's future to its end, its timeout, or its token's grace.
async fn finish_async(
    ctx: &RunContext,
    future: CleanupFuture,
    token: Option<CancellationToken>,
    deadline: Instant,
) -> Attempt {
    let mut future = pin!(AssertUnwindSafe(ACTIVE.scope(ctx.instance, future)).catch_unwind());
    if let Some(result) = within(deadline, future.as_mut()).await {
        return settle(result);
    }
    let Some(token) = token else {
        return Attempt::TimedOut(Interruption::Dropped);
    };
    token.cancel();
    match within(Instant::now() + ctx.cancel_grace, future.as_mut()).await {
        Some(_) => Attempt::TimedOut(Interruption::Stopped),
        None => Attempt::TimedOut(Interruption::Dropped),
    }
}

async fn run_blocking(
    ctx: &RunContext,
    cell: &Arc<Mutex<BoxCleanup>>,
    token: Option<CancellationToken>,
    timeout: Duration,
) -> Attempt {
    let cell = cell.clone();
    let instance = ctx.instance;
    let thread_token = token.clone();
    let mut join = tokio::task::spawn_blocking(move || {
        // A retry after an abandoned attempt waits here for it to return.
        let mut cleanup = cell.lock().unwrap_or_else(PoisonError::into_inner);
        ACTIVE_BLOCKING.with(|a| a.set(instance));
        let result = catch_unwind(AssertUnwindSafe(|| {
            cleanup.run_blocking(thread_token.as_ref())
        }));
        ACTIVE_BLOCKING.with(|a| a.set(0));
        result
    });
    if let Some(result) = within(Instant::now() + timeout, std::pin::Pin::new(&mut join)).await {
        return match result {
            Ok(caught) => settle(caught),
            // The closure's panic is caught inside; this is the runtime refusing the job.
            Err(join_error) => Attempt::Panicked(join_error.to_string()),
        };
    }
    let Some(token) = token else {
        return Attempt::TimedOut(Interruption::Abandoned);
    };
    token.cancel();
    match within(
        Instant::now() + ctx.cancel_grace,
        std::pin::Pin::new(&mut join),
    )
    .await
    {
        Some(_) => Attempt::TimedOut(Interruption::Stopped),
        None => Attempt::TimedOut(Interruption::Abandoned),
    }
}

/// What `catch_unwind` gives back.
type Caught<T> = Result<T, Box<dyn Any + Send>>;

fn settle(result: Caught<Result<(), String>>) -> Attempt {
    match result {
        Ok(Ok(())) => Attempt::Ok,
        Ok(Err(error)) => Attempt::Err(error),
        Err(panic) => Attempt::Panicked(panic_message(panic.as_ref())),
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
