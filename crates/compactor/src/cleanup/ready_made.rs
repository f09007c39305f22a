//! Ready-made cleanups for the resources services hold most: tokio tasks,
//! join sets, threads, files, temporary directories, tokens, secrets, child
//! processes, requests to workers. Each is a value any registration takes,
//! with every option of the builder.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::kind::{self, Prepared};
use super::{CleanupResult, IntoCleanup};
use crate::Compactor;
use crate::priority::Category;
use crate::report::CleanupError;

/// What a joined tokio task's failure reads as.
fn join_failure(error: JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => format!(
            "the task panicked: {}",
            crate::run::contain::panic_message(&*payload)
        ),
        Err(_) => "the task was cancelled".to_owned(),
    }
}

/// Set once a registration was accepted: from then on, the resource's
/// guard stops it if the cleanup lets go of it unfinished (cut off by its
/// timeout or the deadline, never run, unregistered). A refused
/// registration leaves the resource as it was.
pub(crate) type Armed = Arc<AtomicBool>;

/// Arms a ready-made cleanup's guard once its registration went through.
pub(crate) fn arm(armed: Option<Armed>) {
    if let Some(armed) = armed {
        armed.store(true, Ordering::Release);
    }
}

/// A tokio task, aborted if this is dropped armed before it finished.
struct AbortOnDrop<T>(JoinHandle<T>, Armed);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if self.1.load(Ordering::Acquire) {
            self.0.abort();
        }
    }
}

/// A ready-made cleanup of this module, as any registration takes it.
#[must_use = "a cleanup does nothing until it is registered"]
pub struct ReadyMade(Box<dyn FnOnce(&Compactor) -> Prepared + Send>);

impl std::fmt::Debug for ReadyMade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyMade")
    }
}

impl IntoCleanup<kind::Ready> for ReadyMade {
    fn into_cleanup(self, on: &Compactor) -> Prepared {
        (self.0)(on)
    }
}

impl ReadyMade {
    /// `cleanup` as a task of `category` (unless the builder sets one),
    /// whose guard `armed` is armed once it is registered.
    fn new<M>(category: Category, armed: Option<Armed>, cleanup: impl IntoCleanup<M>) -> Self {
        ReadyMade::made_for(category, armed, move |_| cleanup)
    }

    /// [`new`](Self::new), for a cleanup made for the instance that
    /// registers it (one that reads its settings).
    fn made_for<M, C: IntoCleanup<M>>(
        category: Category,
        armed: Option<Armed>,
        make: impl FnOnce(&Compactor) -> C + Send + 'static,
    ) -> Self {
        ReadyMade(Box::new(move |on| {
            let mut prepared = make(on).into_cleanup(on);
            prepared.category = Some(category);
            prepared.armed = armed;
            prepared
        }))
    }
}

/// A tokio task: waits up to `grace` for it to finish (it should be
/// watching the shutdown token), then aborts it and waits for it to be
/// gone. The task's own result is the outcome: an `Err` it returned fails
/// the cleanup with that error, a panic with the panic's message, an abort
/// with the grace. If the cleanup itself is cut off (its timeout, the
/// deadline) or never runs, the task is aborted, never left running; so is
/// one whose task is [unregistered](crate::TaskHandle::unregister). A
/// `grace` of `Duration::MAX` waits for as long as the cleanup's timeout
/// allows. Category [`Category::Task`]; one-shot.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// use std::time::Duration;
/// use compactor::cleanup::join_handle;
///
/// let c = compactor::Compactor::new();
/// let stop = c.shutdown_token();
/// let worker = tokio::spawn(async move { stop.cancelled().await });
/// c.register("worker", join_handle(worker, Duration::from_secs(1)))?;
/// assert!(c.shutdown().await.is_clean());
/// # Ok(())
/// # }
/// ```
pub fn join_handle<T: CleanupResult>(handle: JoinHandle<T>, grace: Duration) -> ReadyMade {
    let armed = Armed::default();
    let task = AbortOnDrop(handle, armed.clone());
    let cleanup = super::once(move || async move {
        let mut task = task;
        match tokio::time::timeout(grace, &mut task.0).await {
            Ok(Ok(output)) => output.into_result(),
            Ok(Err(e)) => Err(join_failure(e).into()),
            Err(_) => {
                task.0.abort();
                let _ = (&mut task.0).await;
                Err(format!("did not finish within {grace:?}; aborted").into())
            }
        }
    });
    ReadyMade::new(Category::Task, Some(armed), cleanup)
}

/// A `JoinSet`: waits up to `grace` for all its tasks, then aborts the
/// rest. Fails naming how many were aborted or panicked. A `grace` of
/// `Duration::MAX` waits for as long as the cleanup's timeout allows. If the
/// cleanup is cut off or never runs, the set's tasks are aborted; a refused
/// registration detaches them, running as they were. Category
/// [`Category::Task`]; one-shot.
pub fn join_set<T: Send + 'static>(set: JoinSet<T>, grace: Duration) -> ReadyMade {
    let armed = Armed::default();
    let held = AbortSetOnDrop(Some(set), armed.clone());
    let cleanup = super::once(move || async move {
        let mut held = held;
        let set = held.0.as_mut().expect("held until dropped");
        let mut panicked = 0;
        let drained = tokio::time::timeout(grace, async {
            while let Some(result) = set.join_next().await {
                panicked += usize::from(result.is_err_and(|e| e.is_panic()));
            }
        })
        .await;
        let aborted = set.len();
        set.shutdown().await;
        match (drained.is_ok(), panicked) {
            (true, 0) => Ok(()),
            _ => Err(format!(
                "{aborted} task(s) aborted after {grace:?}, {panicked} panicked"
            )),
        }
    });
    ReadyMade::new(Category::Task, Some(armed), cleanup)
}

/// A `JoinSet`, whose tasks are aborted if this is dropped armed (the
/// cleanup cut off or never run), and detached, left running, if it is
/// dropped unarmed (a refused registration).
struct AbortSetOnDrop<T: 'static>(Option<JoinSet<T>>, Armed);

impl<T: 'static> Drop for AbortSetOnDrop<T> {
    fn drop(&mut self) {
        if let Some(mut set) = self.0.take() {
            if !self.1.load(Ordering::Acquire) {
                set.detach_all();
            }
        }
    }
}

/// A thread: joined on a blocking thread, within the task's timeout (past
/// it, the thread is abandoned, as any blocking cleanup). Fails if the
/// thread panicked. Category [`Category::Task`]; one-shot.
pub fn thread<T: Send + 'static>(handle: std::thread::JoinHandle<T>) -> ReadyMade {
    let cleanup = super::blocking(super::once(move || {
        handle.join().map(drop).map_err(|payload| {
            format!(
                "the thread panicked: {}",
                crate::run::contain::panic_message(&*payload)
            )
        })
    }));
    ReadyMade::new(Category::Task, None, cleanup)
}

/// A file written through a buffer: flushes the buffer and syncs the file
/// to disk (`sync_all`), on a blocking thread. Category [`Category::File`].
pub fn flush_file(writer: Arc<Mutex<BufWriter<File>>>) -> ReadyMade {
    let cleanup = super::blocking(move || {
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.flush()?;
        writer.get_ref().sync_all()
    });
    ReadyMade::new(Category::File, None, cleanup)
}

/// A file: syncs it to disk (`sync_all`) on a blocking thread. Category
/// [`Category::File`].
pub fn sync_file(file: File) -> ReadyMade {
    ReadyMade::new(
        Category::File,
        None,
        super::blocking(move || file.sync_all()),
    )
}

/// A temporary directory: removed with everything in it (already gone is
/// fine). Category [`Category::File`].
pub fn temp_dir(path: impl Into<PathBuf>) -> ReadyMade {
    let path = path.into();
    let cleanup = super::blocking(move || match std::fs::remove_dir_all(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    });
    ReadyMade::new(Category::File, None, cleanup)
}

/// Cancels `token` as a step of the graph: to stop a group of workers only
/// once the tasks that depend on them have finished. Category
/// [`Category::Task`].
pub fn cancel_token(token: CancellationToken) -> ReadyMade {
    let cleanup = move || {
        token.cancel();
        std::future::ready(())
    };
    ReadyMade::new(Category::Task, None, cleanup)
}

/// A secret in memory: zeroed at shutdown (with the `zeroize` crate, so the
/// writes are not optimised away). Category [`Category::Memory`].
#[cfg(feature = "zeroize")]
#[cfg_attr(docsrs, doc(cfg(feature = "zeroize")))]
pub fn secret<S>(secret: Arc<Mutex<S>>) -> ReadyMade
where
    S: zeroize::Zeroize + Send + 'static,
{
    let cleanup = move || {
        secret
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .zeroize();
        std::future::ready(())
    };
    ReadyMade::new(Category::Memory, None, cleanup)
}

/// A child process: `SIGTERM`, up to `grace` to exit, then `SIGKILL`, and
/// the exit status reaped so no zombie is left. The outcome is the child's:
/// it fails if the child had to be killed, or exited with an error status
/// (one it had before the shutdown too); an exit by the `SIGTERM` or one of
/// the instance's [signals](crate::Builder::signals) (a terminal's Ctrl-C
/// reaches the child too), by the signal or as 128 + its number, is a clean
/// stop. If the cleanup is cut off (its timeout, the deadline) or never
/// runs, the child is killed and reaped, never left running, and the task's
/// report says so ([`Interruption::Killed`](crate::report::Interruption::Killed));
/// so is one whose task is [unregistered](crate::TaskHandle::unregister).
/// A `grace` of `Duration::MAX` waits for as long as the cleanup's timeout
/// allows. On other platforms it is killed at once. Category
/// [`Category::Process`]; one-shot.
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
pub fn child_process(child: tokio::process::Child, grace: Duration) -> ReadyMade {
    let armed = Armed::default();
    let child = KillOnDrop::new(child, armed.clone());
    ReadyMade::made_for(Category::Process, Some(armed), move |on: &Compactor| {
        let signals: Vec<i32> = on.config().signals.iter().map(|s| s.number()).collect();
        super::once(move || async move {
            let mut guard = child;
            let child = guard.0.as_mut().expect("held until dropped");
            if let Ok(Some(status)) = child.try_wait() {
                guard.0 = None;
                return stopped(status, &signals).map_err(|e| format!("had exited before: {e}"));
            }
            terminate(child);
            let ended = match tokio::time::timeout(grace, child.wait()).await {
                Ok(Ok(status)) => stopped(status, &signals),
                // Not known to be gone: the guard kills it.
                Ok(Err(e)) => return Err(format!("waiting for the process: {e}")),
                Err(_) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    Err(format!("did not exit within {grace:?} of SIGTERM; killed"))
                }
            };
            guard.0 = None;
            ended
        })
    })
}

/// A request to a worker that owns its state, over its tokio channel:
/// `request` makes the message around a reply sender, and the cleanup
/// waits for the reply within the task's timeout. The reply is the outcome
/// (`()`, [`Freed`](crate::report::Freed), or a `Result` of either: its
/// error fails the task). A worker gone away (its receiver dropped) or one
/// that drops the request without replying fails the task saying so; one
/// that never replies times out. Category [`Category::Task`]; one-shot.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// use tokio::sync::{mpsc, oneshot};
///
/// enum Request { Flush(oneshot::Sender<Result<(), String>>) }
/// let (tx, mut rx) = mpsc::channel::<Request>(8);
/// tokio::spawn(async move {
///     while let Some(Request::Flush(reply)) = rx.recv().await {
///         let _ = reply.send(Ok(()));
///     }
/// });
/// let c = compactor::Compactor::new();
/// c.register("cache-worker", compactor::cleanup::request(tx, Request::Flush))?;
/// assert!(c.shutdown().await.is_clean());
/// # Ok(())
/// # }
/// ```
pub fn request<M, R>(
    sender: tokio::sync::mpsc::Sender<M>,
    request: impl FnOnce(tokio::sync::oneshot::Sender<R>) -> M + Send + 'static,
) -> ReadyMade
where
    M: Send + 'static,
    R: CleanupResult,
{
    let cleanup = super::once(move || async move {
        let (reply, replied) = tokio::sync::oneshot::channel();
        if sender.send(request(reply)).await.is_err() {
            return Err(CleanupError::from(WORKER_GONE));
        }
        reply_of(replied).await
    });
    ReadyMade::new(Category::Task, None, cleanup)
}

/// The worker's reply, as the outcome of a request's cleanup.
async fn reply_of<R: CleanupResult>(
    replied: tokio::sync::oneshot::Receiver<R>,
) -> Result<Option<crate::report::Freed>, CleanupError> {
    replied
        .await
        .map_err(|_| CleanupError::from(NO_REPLY))?
        .into_outcome()
}

/// [`request`] over any channel (std, crossbeam): `send` sends the request
/// with the reply sender it is given, and says whether it could (an `Err`
/// means the worker is gone). The cleanup then waits for the reply within
/// the task's timeout.
pub fn request_with<R, E>(
    send: impl FnOnce(tokio::sync::oneshot::Sender<R>) -> Result<(), E> + Send + 'static,
) -> ReadyMade
where
    R: CleanupResult,
    E: std::fmt::Display,
{
    let cleanup = super::once(move || async move {
        let (reply, replied) = tokio::sync::oneshot::channel();
        if let Err(error) = send(reply) {
            return Err(CleanupError::from(format!("{WORKER_GONE}: {error}")));
        }
        reply_of(replied).await
    });
    ReadyMade::new(Category::Task, None, cleanup)
}

#[cfg(all(feature = "process", unix))]
fn terminate(child: &tokio::process::Child) {
    use rustix::process::{Pid, Signal, kill_process};
    if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
        let _ = kill_process(pid, Signal::TERM);
    }
}

#[cfg(all(feature = "process", not(unix)))]
fn terminate(_child: &tokio::process::Child) {}

/// A child process, killed if this is dropped while it may still run (the
/// cleanup cut off or never run), and reaped: at once if it is gone
/// already, else by the reaper's thread, which a run's end waits for (never
/// a zombie left to init, nor a child alive behind the report).
#[cfg(feature = "process")]
struct KillOnDrop(Option<tokio::process::Child>, Armed);

#[cfg(feature = "process")]
impl KillOnDrop {
    fn new(child: tokio::process::Child, armed: Armed) -> KillOnDrop {
        // Counted: a run's drops of cleanups look for what it tells.
        crate::run::killer_made();
        KillOnDrop(Some(child), armed)
    }
}

#[cfg(feature = "process")]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        crate::run::killer_gone();
        let (Some(mut child), true) = (self.0.take(), self.1.load(Ordering::Acquire)) else {
            return;
        };
        let _ = child.start_kill();
        let pid = child.id();
        let status = child.try_wait();
        // Told to the task whose cleanup this is, if a run drops it.
        crate::run::tell_dropping_task(Box::new(move |owner| match status {
            Ok(Some(status)) => {
                tracing::warn!(?pid, %status, "child process killed at its cleanup's cut-off");
                if let Some(owner) = owner {
                    owner.ctx.killing(owner.index, pid, Some(status));
                }
            }
            // Dying: reaped off the runtime's threads, which the run's end
            // waits for (briefly).
            Ok(None) => crate::run::reaper::reap(child, owner),
            Err(_) => {}
        }));
    }
}

/// Whether a child's exit is a clean stop: success, or a stop signal (the
/// `SIGTERM` it was sent, or one of the instance's shutdown signals, which
/// a terminal's Ctrl-C sends to the whole process group), by the signal
/// itself or as 128 + its number.
#[cfg(feature = "process")]
fn stopped(status: std::process::ExitStatus, signals: &[i32]) -> Result<(), String> {
    let stop_signal = |n: i32| n == 15 || signals.contains(&n);
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal().is_some_and(stop_signal) {
            return Ok(());
        }
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(code) if code > 128 && stop_signal(code - 128) => Ok(()),
        _ => Err(format!("exited with {status}")),
    }
}

/// What a request to a worker whose channel is closed reports.
const WORKER_GONE: &str = "the worker has gone away (its channel is closed)";
/// What a request the worker dropped without replying reports.
const NO_REPLY: &str = "the worker dropped the request without replying";
