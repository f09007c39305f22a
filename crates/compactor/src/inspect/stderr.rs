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
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Whether a progress line is on the screen: an exit clears it before its
/// own line.
static DRAWN: AtomicBool = AtomicBool::new(false);

/// What the thread is asked to do.
pub(crate) enum Output {
    /// Draw (or redraw) the progress line of instance `owner`.
    Draw { owner: u64, line: String },
    /// Clear instance `owner`'s line, if it is on the screen.
    Clear { owner: u64 },
    /// Write a text made on the thread (it may take a while to make).
    Text(Box<dyn FnOnce() -> String + Send>),
}

fn sender() -> Option<&'static Mutex<SyncSender<Output>>> {
    static SENDER: OnceLock<Option<Mutex<SyncSender<Output>>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            let (tx, rx) = sync_channel(8);
            std::thread::Builder::new()
                .name("compactor-stderr".to_owned())
                .spawn(move || writer(rx))
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// Hands `what` to the writer; dropped when the writer is behind.
pub(crate) fn send(what: Output) {
    let Some(sender) = sender() else { return };
    let sender = sender.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(TrySendError::Full(_)) = sender.try_send(what) {
        // Behind (a blocked stderr): this one is dropped.
    }
}

/// The escape that returns to the line's start and erases it.
pub(crate) const ERASE: &str = "\r\x1b[2K";

/// Whether a progress line is on the screen now.
pub(crate) fn line_drawn() -> bool {
    DRAWN.load(Ordering::Acquire)
}

fn writer(requests: Receiver<Output>) {
    let mut owner: Option<u64> = None;
    for request in requests {
        let mut err = std::io::stderr().lock();
        match request {
            Output::Draw { owner: who, line } => {
                if owner.is_none_or(|o| o == who) {
                    owner = Some(who);
                    let _ = write!(err, "{ERASE}{line}");
                    DRAWN.store(true, Ordering::Release);
                }
            }
            Output::Clear { owner: who } => {
                if owner == Some(who) {
                    owner = None;
                    let _ = write!(err, "{ERASE}");
                    DRAWN.store(false, Ordering::Release);
                }
            }
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
