//! The type-erased cleanup closures that the registry stores and the runner calls.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;

use crate::report::{CleanupError, Freed};
use tokio_util::sync::CancellationToken;

/// What a cleanup may return: `()` for "done", what it [`Freed`]
/// (`Freed`, or `Option<Freed>` when it may not say), or a `Result` of any
/// of these whose error is reported as [`Outcome::Failed`](crate::Outcome::Failed)
/// (and retried, if the task has retries).
///
/// The `Result`'s error may be any `E: Display`, which covers
/// `std::io::Error`, `Box<dyn Error + Send + Sync>`, `anyhow::Error` and
/// string errors, without a `map_err`. The error is kept with its causes
/// ([`CleanupError`]): an `io::Error`'s and a boxed error's through
/// `source()`, anyhow's and eyre's as their alternate format (`{:#}`)
/// writes the chain.
#[diagnostic::on_unimplemented(
    message = "a cleanup may not return `{Self}`",
    note = "return `()`, `Freed`, `Option<Freed>`, or a `Result` of one of them whose error is `Display`"
)]
pub trait CleanupResult: Send + 'static {
    /// What it freed, if it says; or the error with its causes.
    fn into_outcome(self) -> Result<Option<Freed>, CleanupError>;

    /// `Ok(())`, or the error with its causes.
    fn into_result(self) -> Result<(), CleanupError>
    where
        Self: Sized,
    {
        self.into_outcome().map(drop)
    }
}

impl CleanupResult for () {
    fn into_outcome(self) -> Result<Option<Freed>, CleanupError> {
        Ok(None)
    }
}

impl CleanupResult for Freed {
    fn into_outcome(self) -> Result<Option<Freed>, CleanupError> {
        Ok(Some(self))
    }
}

impl CleanupResult for Option<Freed> {
    fn into_outcome(self) -> Result<Option<Freed>, CleanupError> {
        Ok(self)
    }
}

impl<T: CleanupResult, E: Display + Send + 'static> CleanupResult for Result<T, E> {
    fn into_outcome(self) -> Result<Option<Freed>, CleanupError> {
        self.map_err(CleanupError::new)
            .and_then(CleanupResult::into_outcome)
    }
}

/// How one call of a cleanup ended: what it freed, if it says, or its error.
pub(crate) type CleanupEnd = Result<Option<Freed>, CleanupError>;

/// How an attempt begins.
pub(crate) enum Start {
    /// Poll this future to completion.
    Async(BoxFuture<'static, CleanupEnd>),
    /// Call [`Cleanup::run_blocking`] on a blocking thread.
    Blocking,
    /// The weakly held value is gone: nothing to clean up.
    Released,
}

/// A registered cleanup, whatever its flavour.
pub(crate) trait Cleanup: Send + 'static {
    /// Begins one attempt. `token` fires when the attempt runs out of time.
    fn start(&mut self, token: Option<&CancellationToken>) -> Start;

    /// Runs one attempt of a blocking cleanup; only called after [`Start::Blocking`].
    fn run_blocking(&mut self, _token: Option<&CancellationToken>) -> CleanupEnd {
        Ok(None)
    }

    /// Whether the cleanup runs on a blocking thread.
    fn is_blocking(&self) -> bool {
        false
    }

    /// Whether the cleanup observes its cancellation token, so a timed-out
    /// attempt is given a grace period before it is dropped.
    fn observes_token(&self) -> bool {
        false
    }

    /// For a weak registration: how many strong references keep the value alive.
    fn strong_count(&self) -> Option<usize> {
        None
    }

    /// For a weak blocking registration, as its attempt begins: whether the
    /// value is gone, so the closure is not called (async ones say so
    /// through [`Start::Released`]). A value still there is held for the
    /// attempt.
    fn released(&mut self) -> bool {
        false
    }

    /// For a scope's task: its instance (a `Compactor`), for the inventory.
    fn scope(&self) -> Option<Box<dyn std::any::Any>> {
        None
    }
}

pub(crate) type BoxCleanup = Box<dyn Cleanup>;

fn boxed<Fut>(fut: Fut) -> BoxFuture<'static, CleanupEnd>
where
    Fut: Future + Send + 'static,
    Fut::Output: CleanupResult,
{
    Box::pin(async move { fut.await.into_outcome() })
}

pub(crate) struct AsyncFn<F>(pub(crate) F);

impl<F, Fut> Cleanup for AsyncFn<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: CleanupResult,
{
    fn start(&mut self, _token: Option<&CancellationToken>) -> Start {
        Start::Async(boxed((self.0)()))
    }
}

/// What a one-shot cleanup's second call reports. Its task has no retries
/// (registration refuses them), so only a lost attempt's successor sees it.
const CALLED_ONCE: &str = "a one-shot cleanup was already called";

/// A cleanup called once, as an [`AsyncFn`]: the closure owns what it
/// cleans up.
pub(crate) fn once<F, Fut>(f: F) -> BoxCleanup
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: CleanupResult,
{
    let mut f = Some(f);
    Box::new(AsyncFn(move || {
        let call = f.take();
        async move {
            match call {
                Some(f) => f().await.into_outcome(),
                None => Err(CleanupError::from(CALLED_ONCE)),
            }
        }
    }))
}

/// [`once`] for a cleanup that observes its token, as a [`CancellableFn`].
pub(crate) fn once_with_token<F, Fut>(f: F) -> BoxCleanup
where
    F: FnOnce(CancellationToken) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: CleanupResult,
{
    let mut f = Some(f);
    Box::new(CancellableFn(move |token| {
        let call = f.take();
        async move {
            match call {
                Some(f) => f(token).await.into_outcome(),
                None => Err(CleanupError::from(CALLED_ONCE)),
            }
        }
    }))
}

/// [`once`] for a synchronous cleanup, as a [`BlockingFn`].
pub(crate) fn once_blocking<F, R>(f: F) -> BoxCleanup
where
    F: FnOnce() -> R + Send + 'static,
    R: CleanupResult,
{
    let mut f = Some(f);
    Box::new(BlockingFn(move || match f.take() {
        Some(f) => f().into_outcome(),
        None => Err(CleanupError::from(CALLED_ONCE)),
    }))
}

/// [`once`] for a synchronous cleanup that observes its token, as a
/// [`BlockingCancellableFn`].
pub(crate) fn once_blocking_with_token<F, R>(f: F) -> BoxCleanup
where
    F: FnOnce(CancellationToken) -> R + Send + 'static,
    R: CleanupResult,
{
    let mut f = Some(f);
    Box::new(BlockingCancellableFn(move |token| match f.take() {
        Some(f) => f(token).into_outcome(),
        None => Err(CleanupError::from(CALLED_ONCE)),
    }))
}

pub(crate) struct CancellableFn<F>(pub(crate) F);

impl<F, Fut> Cleanup for CancellableFn<F>
where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: CleanupResult,
{
    fn start(&mut self, token: Option<&CancellationToken>) -> Start {
        Start::Async(boxed((self.0)(token.cloned().unwrap_or_default())))
    }

    fn observes_token(&self) -> bool {
        true
    }
}

pub(crate) struct BlockingFn<F>(pub(crate) F);

impl<F, R> Cleanup for BlockingFn<F>
where
    F: FnMut() -> R + Send + 'static,
    R: CleanupResult,
{
    fn start(&mut self, _token: Option<&CancellationToken>) -> Start {
        Start::Blocking
    }

    fn is_blocking(&self) -> bool {
        true
    }

    fn run_blocking(&mut self, _token: Option<&CancellationToken>) -> CleanupEnd {
        (self.0)().into_outcome()
    }
}

/// A synchronous cleanup handed its attempt's token: it may look at it
/// (`is_cancelled`) to stop within the grace once its time is up.
pub(crate) struct BlockingCancellableFn<F>(pub(crate) F);

impl<F, R> Cleanup for BlockingCancellableFn<F>
where
    F: FnMut(CancellationToken) -> R + Send + 'static,
    R: CleanupResult,
{
    fn start(&mut self, _token: Option<&CancellationToken>) -> Start {
        Start::Blocking
    }

    fn is_blocking(&self) -> bool {
        true
    }

    fn observes_token(&self) -> bool {
        true
    }

    fn run_blocking(&mut self, token: Option<&CancellationToken>) -> CleanupEnd {
        (self.0)(token.cloned().unwrap_or_default()).into_outcome()
    }
}

pub(crate) struct WeakFn<T, F> {
    pub(crate) value: Weak<T>,
    pub(crate) f: F,
}

impl<T, F, Fut> Cleanup for WeakFn<T, F>
where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: CleanupResult,
{
    fn start(&mut self, _token: Option<&CancellationToken>) -> Start {
        match self.value.upgrade() {
            Some(value) => Start::Async(boxed((self.f)(value))),
            None => Start::Released,
        }
    }

    fn strong_count(&self) -> Option<usize> {
        Some(self.value.strong_count())
    }
}

/// A synchronous cleanup that holds only a `Weak`: the value is upgraded on
/// the attempt's thread and handed to the closure.
pub(crate) struct WeakBlockingFn<T, F> {
    pub(crate) value: Weak<T>,
    pub(crate) f: F,
    /// The value, held from [`Cleanup::released`] to the closure's call.
    pub(crate) held: Option<Arc<T>>,
}

impl<T, F, R> Cleanup for WeakBlockingFn<T, F>
where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>) -> R + Send + 'static,
    R: CleanupResult,
{
    fn start(&mut self, _token: Option<&CancellationToken>) -> Start {
        Start::Blocking
    }

    fn is_blocking(&self) -> bool {
        true
    }

    fn released(&mut self) -> bool {
        self.held = self.value.upgrade();
        self.held.is_none()
    }

    fn run_blocking(&mut self, _token: Option<&CancellationToken>) -> CleanupEnd {
        match self.held.take() {
            Some(value) => (self.f)(value).into_outcome(),
            None => Ok(None),
        }
    }

    fn strong_count(&self) -> Option<usize> {
        Some(self.value.strong_count())
    }
}
