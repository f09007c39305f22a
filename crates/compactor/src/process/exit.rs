//! The signals that start a shutdown, the exit codes, and ending the
//! process.
//!
//! The process always ends with `std::process::exit(128 + n)` after signal
//! `n`, never by re-raising the signal: a process that is PID 1 (a container
//! without an init) ignores a raised signal it has no handler for, and the
//! re-raise then falls through to whatever comes next. An exit code works
//! the same as PID 1, under tini or dumb-init, supervisord and systemd.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ShutdownReason;

/// A signal that can start a shutdown.
///
/// The numbers are those of Linux, the BSDs and macOS; on Windows only
/// [`Signal::Interrupt`] (Ctrl-C) is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGINT` (2): Ctrl-C in a terminal.
    Interrupt,
    /// `SIGTERM` (15): what `kill`, systemd and Kubernetes send to stop a process.
    Terminate,
    /// `SIGHUP` (1): the terminal went away.
    Hangup,
    /// `SIGQUIT` (3): Ctrl-\ in a terminal.
    Quit,
}

impl Signal {
    /// The signal's number.
    pub const fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::Terminate => 15,
        }
    }

    /// The conventional name, e.g. `"SIGTERM"`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The exit code a shell reports for a process ended by this signal:
    /// 128 + its number (130 for `SIGINT`, 143 for `SIGTERM`).
    pub const fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    #[cfg(unix)]
    pub(crate) fn from_number(number: i32) -> Option<Signal> {
        [
            Signal::Hangup,
            Signal::Interrupt,
            Signal::Quit,
            Signal::Terminate,
        ]
        .into_iter()
        .find(|s| s.number() == number)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What the process does once a shutdown started by a signal has finished.
///
/// A second signal during the run always ends the process at once, with the
/// code of that signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SignalExit {
    /// Exit with 128 + the signal number (130 for `SIGINT`, 143 for `SIGTERM`),
    /// as a process killed by the signal would. The default.
    #[default]
    WithSignalCode,
    /// Exit with 0 after a clean run (for supervisors that count 143 as a
    /// failure), with 128 + the signal number otherwise.
    ZeroIfClean,
    /// Do not exit: the application decides, e.g. by returning
    /// [`ShutdownReport::exit_code`](crate::ShutdownReport::exit_code) from
    /// `main`. (An application that waits for the report, with
    /// [`Compactor::run_until_shutdown`](crate::Compactor::run_until_shutdown) for one, decides anyway.)
    Return,
}

/// The exit code for a run that ended this way.
pub(crate) fn exit_code(reason: &ShutdownReason, clean: bool, policy: SignalExit) -> u8 {
    match reason {
        ShutdownReason::Signal(_) if clean && policy == SignalExit::ZeroIfClean => 0,
        ShutdownReason::Signal(signal) => signal.exit_code(),
        ShutdownReason::Panic(_) => 101,
        ShutdownReason::ServiceFailed(_) => 1,
        _ if clean => 0,
        _ => 1,
    }
}

/// Called with the exit code just before the library ends the process: see
/// [`Builder::before_exit`](crate::Builder::before_exit).
#[derive(Clone)]
pub(crate) struct BeforeExit(pub(crate) Arc<dyn Fn(u8) + Send + Sync>);

impl fmt::Debug for BeforeExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BeforeExit(..)")
    }
}

/// The longest the `before_exit` hook is waited for, whatever the exit grace.
const HOOK_AT_MOST: Duration = Duration::from_secs(5);

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
        eprintln!("compactor: {why}");
    }
    if let Some(hook) = hook {
        let hook = hook.0.clone();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let ran = std::thread::Builder::new()
            .name("compactor-before-exit".to_owned())
            .spawn(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(code)));
                let _ = done.send(());
            });
        if ran.is_ok() {
            // A hook that hangs does not keep the process.
            let _ = finished.recv_timeout(limit.min(HOOK_AT_MOST));
        }
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(i32::from(code))
}
