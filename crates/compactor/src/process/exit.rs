//! Ending the process.
//!
//! The process always ends with `std::process::exit(128 + n)` after signal
//! `n`, never by re-raising the signal: a process that is PID 1 (a container
//! without an init) ignores a raised signal it has no handler for, and the
//! re-raise then falls through to whatever comes next. An exit code works
//! the same as PID 1, under tini or dumb-init, supervisord and systemd.

use std::time::Duration;

use crate::config::BeforeExit;

/// The longest the `before_exit` hook is waited for, whatever the exit grace.
const HOOK_AT_MOST: Duration = Duration::from_secs(5);

/// The longest a write to stderr or a flush is waited for: a stderr nobody
/// reads does not keep the process.
const WRITE_AT_MOST: Duration = Duration::from_millis(200);

use crate::run::contain::bounded;

/// Ends the process with `code`: `why` on stderr first (one line), then the
/// application's hook (given `limit` to return), then stdout and stderr
/// flushed.
pub(crate) fn end_process(
    code: u8,
    why: Option<String>,
    hook: Option<&BeforeExit>,
    limit: Duration,
) -> ! {
    use std::io::Write as _;
    static ENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ENDING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        // Another thread is ending the process already.
        loop {
            std::thread::park();
        }
    }
    if let Some(why) = why {
        // On a line of its own, not after the progress line.
        let erase = match crate::inspect::stderr::line_drawn() {
            true => crate::inspect::stderr::ERASE,
            false => "",
        };
        bounded("compactor-exit-line", WRITE_AT_MOST, move || {
            let _ = writeln!(std::io::stderr(), "{erase}compactor: {why}");
        });
    }
    if let Some(hook) = hook {
        // A hook that hangs does not keep the process.
        let hook = hook.0.clone();
        bounded(
            "compactor-before-exit",
            limit.min(HOOK_AT_MOST),
            move || {
                hook(code);
            },
        );
    }
    bounded("compactor-exit-flush", WRITE_AT_MOST, || {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    });
    std::process::exit(i32::from(code))
}
