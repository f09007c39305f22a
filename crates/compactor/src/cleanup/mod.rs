//! What a task's cleanup can be, and ready-made ones for the resources
//! services hold most.
//!
//! Every registration ([`TaskBuilder::register`](crate::TaskBuilder::register),
//! [`register_blocking`](crate::TaskBuilder::register_blocking),
//! [`define`](crate::TaskBuilder::define) for a batch,
//! [`Compactor::register`](crate::Compactor::register)) takes an
//! [`IntoCleanup`], with every option of the builder:
//!
//! | cleanup | what it is |
//! |---|---|
//! | `\|\| async { .. }` | async, called again for each retry (a `FnMut`) |
//! | [`once`]`(move \|\| async move { .. })` | async, called once: a `FnOnce` that owns what it cleans up (no retries) |
//! | [`cancellable`]`(\|token\| async move { .. })` | async, handed a token cancelled when its time is up |
//! | [`blocking`]`(\|\| { .. })` | synchronous, on a thread of its own; wraps any of the three above |
//! | [`join_handle`], [`child_process`], [`flush_file`], ... | ready-made, below |
//!
//! They combine: `blocking(once(f))`, `blocking(cancellable(f))`,
//! `once(|token: CancellationToken| ..)` (a one-shot handed its token:
//! name the argument's type). A weak registration
//! ([`register_weak`](crate::TaskBuilder::register_weak)) takes a closure
//! of the value, async or synchronous.
//!
//! The ready-made cleanups stop what they were given even when the cleanup
//! itself is cut off (its timeout, the deadline), never runs, or its task
//! is unregistered: a tokio task is aborted, a child process killed and
//! reaped. A refused registration leaves the resource as it was. Each sets
//! the task's category unless the builder did; where a resource had to be
//! forced, the task fails with the reason, so the report shows it.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Compactor;
use crate::priority::Category;
use crate::task::cleanup::{
    AsyncFn, BlockingCancellableFn, BlockingFn, BoxCleanup, CancellableFn, WeakBlockingFn, WeakFn,
    once_blocking, once_blocking_with_token, once_with_token,
};

mod ready_made;

pub use crate::task::cleanup::CleanupResult;
pub use ready_made::*;

/// Something a task can run at shutdown: an async closure, [`once`],
/// [`cancellable`], [`blocking`], or a ready-made cleanup of this module.
/// `M` only tells the kinds apart; it is inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cleanup",
    label = "not a cleanup",
    note = "a cleanup is `|| async {{ .. }}`, `cleanup::once(..)`, `cleanup::cancellable(..)`, `cleanup::blocking(..)` for synchronous code, or one of `compactor::cleanup`'s ready-made ones",
    note = "its output must be `()`, `Freed`, or a `Result` of them whose error is `Display`"
)]
pub trait IntoCleanup<M>: Send + 'static {
    /// The cleanup as a task holds it.
    #[doc(hidden)]
    fn into_cleanup(self, on: &Compactor) -> kind::Prepared;
}

/// Keeps `future` part of the shutdown run the calling code belongs to, on
/// whatever task it is spawned. A task a cleanup spawns with `tokio::spawn`
/// does not inherit that run: a [`shutdown()`](crate::Compactor::shutdown) or
/// [`wait()`](crate::Compactor::wait) there would wait for the run, which waits for
/// the cleanup, until the cleanup's timeout. Spawned as
/// `tokio::spawn(compactor::cleanup::inherit_run(work))`, the work gets the report
/// so far at once, as the cleanup itself would. Outside a run, `future` is
/// returned as it is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// let c = compactor::Compactor::new();
/// let inner = c.clone();
/// c.register("reentrant", compactor::cleanup::once(move || async move {
///     let work = compactor::cleanup::inherit_run(async move { inner.shutdown().await });
///     let so_far = tokio::spawn(work).await.expect("the work ran");
///     assert!(!so_far.is_complete());
/// }))?;
/// assert!(c.shutdown().await.is_clean());
/// # Ok(())
/// # }
/// ```
pub fn inherit_run<F: Future>(future: F) -> impl Future<Output = F::Output> {
    crate::run::membership::carried(future)
}

/// [`inherit_run`] for a closure run on another thread
/// (`std::thread::spawn(compactor::cleanup::inherit_run_blocking(work))` from a
/// cleanup): [`shutdown_blocking`](crate::Compactor::shutdown_blocking) or a
/// `wait()` there gets the report so far at once.
pub fn inherit_run_blocking<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    crate::run::membership::carried_blocking(f)
}

/// A one-shot cleanup: made by [`once`].
#[derive(Debug)]
pub struct Once<F>(F);

/// A cleanup handed its attempt's token: made by [`cancellable`].
#[derive(Debug)]
pub struct Cancellable<F>(F);

/// A synchronous cleanup: made by [`blocking`].
#[derive(Debug)]
pub struct Blocking<F>(F);

/// A cleanup called once: a `FnOnce` that owns what it cleans up, moved in
/// (no `Clone`, no `Option`, no lock). A task with
/// [`retries`](crate::TaskBuilder::retries) needs a cleanup it can call
/// again, so registering a one-shot one with retries is refused
/// ([`Error::RetriesNeedRepeatable`](crate::Error::RetriesNeedRepeatable)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// use compactor::cleanup::once;
/// # let c = compactor::Compactor::new();
/// let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
/// c.register("queue", once(move || async move {
///     drop(tx); // moved in, used once
/// }))?;
/// # c.shutdown().await;
/// # assert!(rx.recv().await.is_none());
/// # Ok(())
/// # }
/// ```
pub fn once<F>(cleanup: F) -> Once<F> {
    Once(cleanup)
}

/// A cleanup handed a [`CancellationToken`] for each attempt, cancelled
/// when the attempt's timeout passes. One that stops soon after (within
/// the instance's [`cancel_grace`](crate::Builder::cancel_grace)) is
/// reported as stopped in time; one that does not is dropped, or, if
/// synchronous, abandoned. At the deadline (or the end of a phase's
/// budget) the token is cancelled too, but there is no grace: the report
/// is due, so the cleanup is dropped or abandoned at once, as every
/// running one.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// use compactor::cleanup::{blocking, cancellable};
/// # let c = compactor::Compactor::new();
/// c.register("drain", cancellable(|token| async move {
///     tokio::select! {
///         _ = token.cancelled() => {}  // out of time: stop cleanly
///         _ = async { /* drain the queue */ } => {}
///     }
/// }))?;
/// c.register("scan", blocking(cancellable(|token| {
///     while !token.is_cancelled() { /* one more step */ break }
/// })))?;
/// # assert!(c.shutdown().await.is_clean());
/// # Ok(())
/// # }
/// ```
pub fn cancellable<F, O>(cleanup: F) -> Cancellable<F>
where
    F: FnMut(CancellationToken) -> O,
{
    Cancellable(cleanup)
}

/// A synchronous cleanup, run on a thread of its own so it never stalls
/// the async workers: `blocking(|| ..)`, `blocking(once(..))` or
/// `blocking(cancellable(..))`. A blocking call cannot be interrupted: on
/// timeout it is abandoned (it goes on in its thread, which nothing waits
/// for: not the runtime's drop, not the process's exit) and a retry waits
/// for it to return first.
pub fn blocking<F>(cleanup: F) -> Blocking<F> {
    Blocking(cleanup)
}

/// The kinds of cleanup, which tell [`IntoCleanup`]'s impls apart. Name
/// one to return a cleanup from a function:
///
/// ```
/// use compactor::cleanup::{IntoCleanup, kind, once};
///
/// fn close(pool: Vec<u8>) -> impl IntoCleanup<kind::AsyncOnce> {
///     once(move || async move { drop(pool) })
/// }
/// # let c = compactor::Compactor::new();
/// # c.register("pool", close(Vec::new())).unwrap();
/// ```
pub mod kind {

    use super::*;

    /// A cleanup as a task holds it, with what its registration needs.
    #[doc(hidden)]
    pub struct Prepared {
        pub(crate) cleanup: BoxCleanup,
        /// Whether it can be called again (for a retry).
        pub(crate) repeatable: bool,
        /// The category its task gets unless the builder set one.
        pub(crate) category: Option<Category>,
        /// Armed once the registration went through (a ready-made
        /// cleanup's guard).
        pub(crate) armed: Option<ready_made::Armed>,
    }

    impl Prepared {
        pub(crate) fn new(cleanup: BoxCleanup, repeatable: bool) -> Prepared {
            Prepared {
                cleanup,
                repeatable,
                category: None,
                armed: None,
            }
        }
    }

    /// An async `FnMut`.
    #[derive(Debug)]
    pub enum Async {}
    /// An async `FnOnce`.
    #[derive(Debug)]
    pub enum AsyncOnce {}
    /// An async `FnMut` handed its token.
    #[derive(Debug)]
    pub enum AsyncToken {}
    /// An async `FnOnce` handed its token.
    #[derive(Debug)]
    pub enum AsyncOnceToken {}
    /// A synchronous `FnMut`.
    #[derive(Debug)]
    pub enum Sync {}
    /// A synchronous `FnOnce`.
    #[derive(Debug)]
    pub enum SyncOnce {}
    /// A synchronous `FnMut` handed its token.
    #[derive(Debug)]
    pub enum SyncToken {}
    /// A synchronous `FnOnce` handed its token.
    #[derive(Debug)]
    pub enum SyncOnceToken {}
    /// A ready-made cleanup.
    #[derive(Debug)]
    pub enum Ready {}

    /// What a weak registration's closure returns: a future, or (for a
    /// synchronous one) what a cleanup returns.
    pub trait WeakOutput<M>: Sized {
        /// The cleanup that holds `value` weakly and calls `f` with it.
        #[doc(hidden)]
        fn weak<T, F>(value: std::sync::Weak<T>, f: F) -> Prepared
        where
            T: Send + std::marker::Sync + 'static,
            F: FnMut(Arc<T>) -> Self + Send + 'static;
    }

    impl<Fut> WeakOutput<Async> for Fut
    where
        Fut: Future + Send + 'static,
        Fut::Output: CleanupResult,
    {
        fn weak<T, F>(value: std::sync::Weak<T>, f: F) -> Prepared
        where
            T: Send + std::marker::Sync + 'static,
            F: FnMut(Arc<T>) -> Self + Send + 'static,
        {
            Prepared::new(Box::new(WeakFn { value, f }), true)
        }
    }

    impl<R: CleanupResult> WeakOutput<Sync> for R {
        fn weak<T, F>(value: std::sync::Weak<T>, f: F) -> Prepared
        where
            T: Send + std::marker::Sync + 'static,
            F: FnMut(Arc<T>) -> Self + Send + 'static,
        {
            let cleanup = WeakBlockingFn {
                value,
                f,
                held: None,
            };
            Prepared::new(Box::new(cleanup), true)
        }
    }
}

/// One `IntoCleanup` impl: the cleanup `$make` builds from `$f` (the
/// wrapped closure), repeatable or not.
macro_rules! kind {
    ($marker:ident, $ty:ty, [$($bound:tt)*], $out:ident: [$($out_bound:tt)*], $f:ident => $make:expr, $repeatable:expr) => {
        impl<F, $out> IntoCleanup<kind::$marker> for $ty
        where
            F: $($bound)* -> $out + Send + 'static,
            $out: $($out_bound)*,
        {
            fn into_cleanup(self, _on: &Compactor) -> kind::Prepared {
                let $f = self;
                kind::Prepared::new($make, $repeatable)
            }
        }
    };
}

kind!(Async, F, [FnMut()], O: [Future<Output: CleanupResult> + Send + 'static],
    f => Box::new(AsyncFn(f)), true);
kind!(AsyncOnce, Once<F>, [FnOnce()], O: [Future<Output: CleanupResult> + Send + 'static],
    f => crate::task::cleanup::once(f.0), false);
kind!(AsyncToken, Cancellable<F>, [FnMut(CancellationToken)], O: [Future<Output: CleanupResult> + Send + 'static],
    f => Box::new(CancellableFn(f.0)), true);
kind!(AsyncOnceToken, Once<F>, [FnOnce(CancellationToken)], O: [Future<Output: CleanupResult> + Send + 'static],
    f => once_with_token(f.0), false);
kind!(Sync, Blocking<F>, [FnMut()], O: [CleanupResult],
    f => Box::new(BlockingFn(f.0)), true);
kind!(SyncOnce, Blocking<Once<F>>, [FnOnce()], O: [CleanupResult],
    f => once_blocking(f.0.0), false);
kind!(SyncToken, Blocking<Cancellable<F>>, [FnMut(CancellationToken)], O: [CleanupResult],
    f => Box::new(BlockingCancellableFn(f.0.0)), true);
kind!(SyncOnceToken, Blocking<Once<F>>, [FnOnce(CancellationToken)], O: [CleanupResult],
    f => once_blocking_with_token(f.0.0), false);
