//! Killed child processes, reaped off the runtime's threads: a `SIGKILL`
//! ends a process at once, but its exit comes a little later, and waiting
//! for it on a runtime worker would hold the worker. A run's end waits
//! (briefly) until none is left unreaped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::Notify;

use super::membership::Owner;

/// How long the reaper waits for one child's exit before leaving it to
/// tokio (one in uninterruptible sleep, on a dead network mount).
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

static UNREAPED: AtomicUsize = AtomicUsize::new(0);

fn reaped() -> &'static Notify {
    static REAPED: OnceLock<Notify> = OnceLock::new();
    REAPED.get_or_init(Notify::new)
}

/// A killed child, its id (gone from `Child` once reaped), and the task it
/// belonged to, if a run's.
type Dying = (Child, Option<u32>, Option<Owner>);

/// Reaps `child`, killed, on the reaper's thread; `owner` is told how it
/// ended.
pub(crate) fn reap(child: Child, owner: Option<Owner>) {
    static QUEUE: OnceLock<Option<mpsc::Sender<Dying>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("compactor-reaper".to_owned())
            .spawn(move || reaper(&rx))
            .ok()
            .map(|_| tx)
    });
    let pid = child.id();
    if let Some(owner) = &owner {
        owner.ctx.killing(owner.index, pid, None);
    }
    UNREAPED.fetch_add(1, Ordering::AcqRel);
    let sent = queue
        .as_ref()
        .is_some_and(|q| q.send((child, pid, owner)).is_ok());
    if !sent {
        // No reaper: tokio reaps it in time.
        done(None);
    }
}

fn done(
    dying: Option<(
        Dying,
        Result<Option<std::process::ExitStatus>, std::io::Error>,
    )>,
) {
    if let Some(((_, pid, owner), status)) = dying {
        match status {
            Ok(Some(status)) => {
                tracing::warn!(?pid, %status, "child process killed at its cleanup's cut-off");
                if let Some(owner) = owner {
                    owner.ctx.killing(owner.index, pid, Some(status));
                }
            }
            _ => {
                tracing::warn!(?pid, "killed child process not reaped; left to tokio");
            }
        }
    }
    UNREAPED.fetch_sub(1, Ordering::AcqRel);
    reaped().notify_waiters();
}

fn reaper(queue: &mpsc::Receiver<Dying>) {
    let mut dying: Vec<(Dying, Instant)> = Vec::new();
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
            let status = dying[i].0.0.try_wait();
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
