//! Killed child processes, reaped off the runtime's threads: a `SIGKILL`
//! ends a process at once, but its exit comes a little later, and waiting
//! for it on a runtime worker would hold the worker. A run's end waits
//! (briefly) until none is left unreaped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::Notify;

/// How long the reaper waits for one child's exit before leaving it to
/// tokio (one in uninterruptible sleep, on a dead network mount).
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

static UNREAPED: AtomicUsize = AtomicUsize::new(0);

fn reaped() -> &'static Notify {
    static REAPED: OnceLock<Notify> = OnceLock::new();
    REAPED.get_or_init(Notify::new)
}

/// Reaps `child`, killed, on the reaper's thread.
pub(crate) fn reap(child: Child) {
    static QUEUE: OnceLock<Option<mpsc::Sender<Child>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("compactor-reaper".to_owned())
            .spawn(move || reaper(&rx))
            .ok()
            .map(|_| tx)
    });
    UNREAPED.fetch_add(1, Ordering::AcqRel);
    let sent = queue.as_ref().is_some_and(|q| q.send(child).is_ok());
    if !sent {
        // No reaper: tokio reaps it in time.
        done(None);
    }
}

fn done(
    child: Option<(
        Child,
        Result<Option<std::process::ExitStatus>, std::io::Error>,
    )>,
) {
    if let Some((child, status)) = child {
        match status {
            Ok(Some(status)) => {
                tracing::warn!(pid = ?child.id(), %status, "child process killed at its cleanup's cut-off");
            }
            _ => {
                tracing::warn!(pid = ?child.id(), "killed child process not reaped; left to tokio");
            }
        }
    }
    UNREAPED.fetch_sub(1, Ordering::AcqRel);
    reaped().notify_waiters();
}

fn reaper(queue: &mpsc::Receiver<Child>) {
    let mut dying: Vec<(Child, Instant)> = Vec::new();
    loop {
        if dying.is_empty() {
            match queue.recv() {
                Ok(child) => dying.push((child, Instant::now())),
                Err(_) => return,
            }
        }
        dying.extend(queue.try_iter().map(|c| (c, Instant::now())));
        let mut i = 0;
        while i < dying.len() {
            let status = dying[i].0.try_wait();
            let late = dying[i].1.elapsed() > GIVE_UP_AFTER;
            if matches!(status, Ok(Some(_)) | Err(_)) || late {
                let (child, _) = dying.swap_remove(i);
                done(Some((child, status)));
            } else {
                i += 1;
            }
        }
        if !dying.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Returns once no killed child is left unreaped.
pub(crate) async fn settled() {
    loop {
        let notified = reaped().notified();
        if UNREAPED.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

/// Whether every killed child has been reaped.
pub(crate) fn is_settled() -> bool {
    UNREAPED.load(Ordering::Acquire) == 0
}
