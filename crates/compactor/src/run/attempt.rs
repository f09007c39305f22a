//! One attempt of a task: the user's code, run where it cannot hold the
//! runner. An async attempt begins on a lane ([`super::lane`]) and goes on,
//! if it must, on a tokio task of its own; a blocking one runs on a thread
//! of its own. The closure is called, its future polled and both dropped
//! there, every panic contained ([`super::contain`]). The attempt's end goes
//! to the runner's mailbox, also when the attempt is dropped unfinished.

use std::any::Any;
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::task::Poll;

use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::RunContext;
use super::contain::{drop_contained, message_of};
use super::membership::{ACTIVE, ACTIVE_BLOCKING};
use crate::report::{CleanupError, Freed};
use crate::task::cleanup::{BoxCleanup, CleanupEnd, Start};

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum End {
    /// With what it freed, if it said.
    Ok(Option<Freed>),
    Err(CleanupError),
    Panicked(String),
    /// The weakly held value was gone: the closure was not called.
    Released,
    /// The attempt was dropped unfinished (its runtime shut down) or could
    /// not start: why.
    Lost(&'static str),
}

/// An attempt's end, as the runner receives it.
pub(crate) struct Ended {
    pub(crate) index: u32,
    pub(crate) attempt: u32,
    pub(crate) end: End,
    /// For a weak registration that ended: the value's strong count once the
    /// cleanup let go of it.
    pub(crate) strong: Option<usize>,
    pub(crate) at: Instant,
}

/// One attempt, as the runner hands it out.
pub(crate) struct Attempt {
    pub(crate) ctx: Arc<RunContext>,
    pub(crate) index: u32,
    pub(crate) number: u32,
    pub(crate) token: Option<CancellationToken>,
    /// No retry follows a failure: the attempt drops the cleanup when done.
    pub(crate) last: bool,
    pub(crate) span: tracing::Span,
    /// Whether its end was told; dropped untold, it tells the runner it was
    /// lost, and why (see [`Drop`]): an attempt dropped before it ever ran
    /// (its runtime shut down) still reports.
    pub(crate) told: bool,
    pub(crate) lost: &'static str,
}

/// Why an async attempt dropped before its end was lost.
pub(crate) const RUNTIME_GONE: &str = "the runtime running the cleanup shut down";

impl Attempt {
    /// Runs an async attempt on a task of its own, from waiting for its
    /// cleanup on; the handle stops it.
    pub(super) fn spawn_async(self) -> AbortHandle {
        let chain = self.ctx.chain.clone();
        let span = self.span.clone();
        tokio::spawn(ACTIVE.scope(chain, self.run_async()).instrument(span)).abort_handle()
    }

    /// Runs a blocking attempt on a thread of its own: a thread nobody joins,
    /// so an abandoned attempt holds neither a runtime's drop nor the
    /// process's exit. Send on the returned sender when abandoning it.
    ///
    /// On a current-thread runtime, a stand-in on the runtime's blocking
    /// pool waits until the thread ends or the attempt is abandoned: a
    /// runtime whose clock is paused (only a current-thread runtime's can
    /// be, a test's) does not skip time while blocking work runs, as it does
    /// not for its own blocking tasks. Elsewhere the attempt costs its one
    /// thread.
    pub(crate) fn spawn_blocking(mut self) -> mpsc::Sender<()> {
        self.lost = "no thread could be started for the blocking cleanup";
        let (ended, stand_in) = mpsc::channel::<()>();
        let thread_ended = ended.clone();
        let started = std::thread::Builder::new()
            .name("compactor-blocking".to_owned())
            .spawn(move || {
                self.run_blocking();
                let _ = thread_ended.send(());
            });
        let pausable = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        match started {
            Ok(_) if pausable => drop(tokio::task::spawn_blocking(move || {
                let _ = stand_in.recv();
            })),
            Ok(_) => drop(stand_in),
            Err(error) => tracing::error!(%error, "no thread for a blocking cleanup"),
        }
        ended
    }

    /// Holds the cleanup for the whole attempt, so the next attempt starts
    /// only once this one's future is gone (dropped, if it was stopped).
    async fn run_async(mut self) {
        let held = self.ctx.slots.take(self.index).await;
        let cell = &self.ctx.headway[self.index as usize].lane;
        if !cell.begin(self.number) {
            self.ctx.slots.put_back(self.index, held);
            return self.send(End::Lost("stopped before it began"), None);
        }
        let Some(mut running) = self.begin(held) else {
            return;
        };
        let polled = poll_fn(|cx| running.poll(cx)).await;
        running.finish(polled);
    }

    /// Calls the closure for its future, with the cleanup `held` (taken out
    /// of its place, put back when the attempt is done); `None` when the
    /// attempt ended there (stopped before it began, released, a panic).
    pub(super) fn begin(mut self, mut held: Held) -> Option<Running> {
        if !self.is_current() {
            self.ctx.slots.put_back(self.index, held);
            self.send(End::Lost("stopped before it began"), None);
            return None;
        }
        let Some(cleanup) = held.as_mut() else {
            self.ctx.slots.put_back(self.index, None);
            self.send(End::Lost("the cleanup was already dropped"), None);
            return None;
        };
        let future = match catch_unwind(AssertUnwindSafe(|| cleanup.start(self.token.as_ref()))) {
            Ok(Start::Async(future)) => future,
            Ok(Start::Released) => {
                self.ctx.slots.put_back(self.index, None);
                self.end(End::Released, held);
                return None;
            }
            Ok(Start::Blocking) => unreachable!("blocking cleanups run on a thread"),
            Err(panic) => {
                let end = End::Panicked(message_of(panic));
                self.ctx.slots.put_back(self.index, None);
                self.end(end, held);
                return None;
            }
        };
        self.ctx.announce(self.index, self.number);
        Some(Running {
            future: Some(future),
            held: Some(held),
            attempt: self,
        })
    }

    fn run_blocking(mut self) {
        // A retry after an abandoned attempt waits here for it to return.
        let mut held = self.ctx.slots.take_blocking(self.index);
        if !self.is_current() {
            self.ctx.slots.put_back(self.index, held);
            return self.send(End::Lost("stopped before it began"), None);
        }
        let Some(cleanup) = held.as_mut() else {
            self.ctx.slots.put_back(self.index, None);
            return self.send(End::Lost("the cleanup was already dropped"), None);
        };
        if cleanup.released() {
            self.ctx.slots.put_back(self.index, None);
            return self.end(End::Released, held);
        }
        ACTIVE_BLOCKING.with(|a| *a.borrow_mut() = Some(self.ctx.chain.clone()));
        self.ctx.announce(self.index, self.number);
        let ran = catch_unwind(AssertUnwindSafe(|| {
            cleanup.run_blocking(self.token.as_ref())
        }));
        let end = settle(ran);
        // The cleanup put back for the next attempt, or let go of.
        let cleanup = match self.is_final(&end) {
            true => held,
            false => {
                self.ctx.slots.put_back(self.index, held);
                None
            }
        };
        if cleanup.is_some() {
            self.ctx.slots.put_back(self.index, None);
        }
        self.end(end, cleanup);
        ACTIVE_BLOCKING.with(|a| *a.borrow_mut() = None);
    }

    /// Whether the runner still waits for this attempt: one that waited for
    /// the cleanup while the runner moved on (a timeout, the deadline) does
    /// not call it.
    fn is_current(&self) -> bool {
        let progress = &self.ctx.headway[self.index as usize];
        progress.attempts.load(Ordering::Acquire) == self.number
            && !progress.finished.load(Ordering::Acquire)
            && !self.ctx.is_stopped()
    }

    /// Whether no attempt follows this one's end. One whose token was
    /// cancelled ran out of time, whatever it returned: a retry may follow.
    fn is_final(&self, end: &End) -> bool {
        let timed_out = self
            .token
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled);
        self.last || !(matches!(end, End::Err(_)) || timed_out)
    }

    /// Reports the end; a cleanup that no attempt will call again is
    /// dropped here first (its `Drop` is user code too).
    fn end(&mut self, mut end: End, cleanup: Option<BoxCleanup>) {
        let strong = cleanup.as_ref().and_then(|c| c.strong_count());
        if let (Err(message), false) = (drop_contained(cleanup), matches!(end, End::Panicked(_))) {
            end = End::Panicked(format!("{message} (while dropping the cleanup)"));
        }
        self.send(end, strong);
    }

    /// Tells the runner the attempt's end: booked on the parked runner where
    /// it can be (on a runtime: what the end frees is spawned here), else
    /// left in the mailbox.
    pub(super) fn send(&mut self, end: End, strong: Option<usize>) {
        self.told = true;
        self.deliver(end, strong, tokio::runtime::Handle::try_current().is_ok());
    }

    /// `here`: booked on the parked runner if it can be. Not for an attempt
    /// dropped unfinished: its runtime may be going away with the runner.
    fn deliver(&self, end: End, strong: Option<usize>, here: bool) {
        let mut ended = Ended {
            index: self.index,
            attempt: self.number,
            end,
            strong,
            at: Instant::now(),
        };
        if here {
            match self.ctx.book_here(ended) {
                Ok(()) => return,
                Err(back) => ended = back,
            }
        }
        let _ = self.ctx.done.send(ended);
    }
}

/// An attempt dropped before its end was told: lost, and why.
impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.told {
            self.deliver(End::Lost(self.lost), None, false);
        }
    }
}

/// A task's cleanup, out of its place with the attempt that runs it (`None`:
/// gone already).
pub(super) type Held = Option<BoxCleanup>;

/// An attempt whose future is being polled.
pub(super) struct Running {
    /// Taken when it ends; dropped with the task known (see [`Drop`]).
    future: Option<futures::future::BoxFuture<'static, CleanupEnd>>,
    /// Put back (or let go of) when it ends.
    held: Option<Held>,
    /// Last: dropped untold, it tells the runner once the future and the
    /// cleanup are let go of.
    attempt: Attempt,
}

/// A stopped attempt's future is dropped as its task's (a child process it
/// owned, killed on the way, is booked to the task), its panic contained.
impl Drop for Running {
    fn drop(&mut self) {
        let (ctx, index) = (&self.attempt.ctx, self.attempt.index);
        if let Some(future) = self.future.take() {
            let _ = super::membership::dropping(ctx, index, || drop_contained(future));
        }
        // Stopped: the cleanup goes back for what comes next (a retry, or
        // the runner's disposal).
        if let Some(held) = self.held.take() {
            ctx.slots.put_back(index, held);
        }
    }
}

impl Running {
    /// Polls the future once, its panic contained; the end, once ready.
    pub(super) fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Caught<CleanupEnd>> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Ok(Err(CleanupError::from("polled after its end"))));
        };
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }

    /// Polls the future to its end, and reports it.
    pub(super) async fn run(mut self) {
        let polled = poll_fn(|cx| self.poll(cx)).await;
        self.finish(polled);
    }

    /// Reports the end: the future dropped (its panic contained), then the
    /// cleanup if no attempt follows, then the cleanup let go of.
    pub(super) fn finish(mut self, polled: Caught<CleanupEnd>) {
        let mut end = settle(polled);
        let (ctx, index) = (&self.attempt.ctx, self.attempt.index);
        let future = self.future.take();
        // As its task's (a child process it kills on the way is booked).
        let dropped = super::membership::dropping(ctx, index, || drop_contained(future));
        if let Err(message) = dropped {
            end = End::Panicked(format!("{message} (while dropping the cleanup's future)"));
        }
        let held = self.held.take().flatten();
        let (ctx, index) = (&self.attempt.ctx, self.attempt.index);
        // Put back for the next attempt, or let go of (here, before the end
        // is told).
        let cleanup = match self.attempt.is_final(&end) {
            true => {
                ctx.slots.put_back(index, None);
                held
            }
            false => {
                ctx.slots.put_back(index, held);
                None
            }
        };
        self.attempt.end(end, cleanup);
    }

    /// Where it goes on: a task of its own (instrumented with the
    /// attempt's span, part of its run).
    pub(super) fn spawn(self) -> AbortHandle {
        let chain = self.attempt.ctx.chain.clone();
        let span = self.attempt.span.clone();
        tokio::spawn(ACTIVE.scope(chain, self.run()).instrument(span)).abort_handle()
    }
}

/// What `catch_unwind` gives back.
type Caught<T> = Result<T, Box<dyn Any + Send>>;

fn settle(result: Caught<CleanupEnd>) -> End {
    match result {
        Ok(Ok(freed)) => End::Ok(freed),
        Ok(Err(error)) => End::Err(error),
        Err(panic) => End::Panicked(message_of(panic)),
    }
}
