//! The library's own writes to stderr (the terminal progress line, the
//! progress signal's dump), made on a thread of their own: a terminal paused
//! with Ctrl-S or a pipe nobody reads blocks that thread, never the runner
//! or the signal listener. Writes that find it busy are dropped.
//!
//! It also owns the progress line: a text written while the line is on the
//! screen clears it first, and only the instance that drew the line first
//! redraws it until it clears it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Whether a progress line is on the screen: an exit clears it before its
/// own line.
static DRAWN: AtomicBool = AtomicBool::new(false);

/// Instances whose `Clear` the queue had no room for: the writer clears
/// their line once the queue is empty (their draws, sent before, are done
/// by then), so it neither stays on the screen nor keeps other instances
/// from drawing theirs.
static CLEARED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// What the thread is asked to do.
pub(crate) enum Output {
    /// Draw (or redraw) the progress line of instance `owner`.
    Draw { owner: u64, line: String },
    /// Clear instance `owner`'s line, if it is on the screen.
    Clear { owner: u64 },
    /// Write a text made on the thread (it may take a while to make).
    Text(Box<dyn FnOnce() -> String + Send>),
}

fn sender() -> Option<&'static SyncSender<Output>> {
    static SENDER: OnceLock<Option<SyncSender<Output>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            let (tx, rx) = sync_channel(8);
            std::thread::Builder::new()
                .name("compactor-stderr".to_owned())
                .spawn(move || writer(&rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Hands `what` to the writer; dropped when the writer is behind (a
/// blocked stderr), but for a `Clear`, which it finds anyway.
pub(crate) fn send(what: Output) {
    let Some(sender) = sender() else { return };
    if let Err(TrySendError::Full(Output::Clear { owner })) = sender.try_send(what) {
        cleared().push(owner);
    }
}

fn cleared() -> std::sync::MutexGuard<'static, Vec<u64>> {
    CLEARED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The escape that returns to the line's start and erases it.
pub(crate) const ERASE: &str = "\r\x1b[2K";

/// Whether a progress line is on the screen now.
pub(crate) fn line_drawn() -> bool {
    DRAWN.load(Ordering::Acquire)
}

fn writer(requests: &Receiver<Output>) {
    let mut owner: Option<u64> = None;
    loop {
        let request = match requests.try_recv() {
            Ok(request) => request,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                let ended = std::mem::take(&mut *cleared());
                if let Some(who) = owner.filter(|o| ended.contains(o)) {
                    clear_line(&mut owner, who);
                }
                match requests.recv() {
                    Ok(request) => request,
                    Err(_) => return,
                }
            }
        };
        let mut err = std::io::stderr().lock();
        match request {
            Output::Draw { owner: who, line } => {
                if owner.is_none_or(|o| o == who) {
                    owner = Some(who);
                    let _ = write!(err, "{ERASE}{line}");
                    DRAWN.store(true, Ordering::Release);
                }
            }
            Output::Clear { owner: who } => clear_line(&mut owner, who),
            Output::Text(make) => {
                let text = std::panic::catch_unwind(std::panic::AssertUnwindSafe(make));
                if DRAWN.swap(false, Ordering::AcqRel) {
                    let _ = write!(err, "{ERASE}");
                }
                if let Ok(text) = text {
                    let _ = writeln!(err, "{text}");
                }
            }
        }
        let _ = err.flush();
    }
}

/// Clears `who`'s line, if it is the one on the screen.
fn clear_line(owner: &mut Option<u64>, who: u64) {
    if *owner == Some(who) {
        *owner = None;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{ERASE}");
        let _ = err.flush();
        DRAWN.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn until(what: &str, holds: impl Fn() -> bool) {
        let start = Instant::now();
        while !holds() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_clear_the_queue_had_no_room_for_still_clears_the_line() {
        let (tx, rx) = sync_channel(8);
        std::thread::spawn(move || writer(&rx));
        tx.send(Output::Draw {
            owner: 7,
            line: String::new(),
        })
        .unwrap();
        until("instance 7 drew its line", line_drawn);
        // Its `Clear` found the queue full: only `CLEARED` has it. Another
        // instance's draw is refused while 7 holds the line; once the queue
        // is empty, 7's line is cleared, and the next draw is 8's.
        cleared().push(7);
        tx.send(Output::Draw {
            owner: 8,
            line: String::new(),
        })
        .unwrap();
        until("7's line cleared", || !line_drawn());
        tx.send(Output::Draw {
            owner: 8,
            line: String::new(),
        })
        .unwrap();
        until("8 draws once 7's line is gone", line_drawn);
    }
}
