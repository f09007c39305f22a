//! Panic containment: dropping what the user handed in, and reading a
//! panic's message, with a panic in either contained.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::membership::inside_any_cleanup;

thread_local! {
    /// Set while the library drops a value the user handed in, or polls a
    /// supervised service.
    static DROPPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic here is one the library contains (for the panic hook of
/// `shutdown_on_panic`, which must not take it for the application's).
pub(crate) fn containing() -> bool {
    inside_any_cleanup() || DROPPING.with(std::cell::Cell::get)
}

/// A future whose panics the library contains (a service's run, which its
/// supervision answers): the panic hook of `shutdown_on_panic` leaves them.
pub(crate) struct Contained<F>(pub(crate) std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Contained<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let was = DROPPING.with(|d| d.replace(true));
        // Restored however the poll ends (a panic unwinds through here).
        let _restore = Restore(was);
        self.0.as_mut().poll(cx)
    }
}

struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        DROPPING.with(|d| d.set(self.0));
    }
}

/// Drops a value the user handed in; a panic in its `Drop` comes back as
/// its message.
pub(crate) fn drop_contained<T>(value: T) -> Result<(), String> {
    let was = DROPPING.with(|d| d.replace(true));
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(value)));
    DROPPING.with(|d| d.set(was));
    dropped.map_err(message_of)
}

/// A panic's message; the payload is dropped with its own panic contained.
pub(crate) fn message_of(payload: Box<dyn Any + Send>) -> String {
    let message = panic_message(payload.as_ref());
    let was = DROPPING.with(|d| d.replace(true));
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    DROPPING.with(|d| d.set(was));
    if let Err(again) = dropped {
        // A payload whose drop panics again is left alone rather than dropped.
        #[allow(clippy::mem_forget)]
        std::mem::forget(again);
    }
    message
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

/// Drops a value the user handed in (an error a cleanup returned) off the
/// runner, on a task of its own: its `Drop` is user code, which may wait on
/// the run (ask for the report so far), and the runner never waits on it.
pub(crate) fn let_go<T: Send + 'static>(value: T) {
    // Part of the run, as the code that returned it was.
    let dropped = super::membership::carried(async move {
        let _ = drop_contained(value);
    });
    drop(spawn_or_run(dropped));
}

/// Spawns `future` on the current runtime, or the library's own; with
/// neither, runs it here.
pub(crate) fn spawn_or_run(
    future: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    match tokio::runtime::Handle::try_current()
        .ok()
        .or(super::own_runtime().cloned())
    {
        Some(runtime) => Some(runtime.spawn(future)),
        None => {
            futures::executor::block_on(future);
            None
        }
    }
}

/// Runs `f` on a thread of its own, a panic contained, and waits for it
/// `limit` at most: for what a process ending must not be held by.
pub(crate) fn bounded(name: &str, limit: std::time::Duration, f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let ran = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = catch_unwind(AssertUnwindSafe(f));
            let _ = done.send(());
        });
    if ran.is_ok() {
        let _ = finished.recv_timeout(limit);
    }
}
