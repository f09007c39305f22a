//! What a signal is to the library: the signals that start a shutdown, what
//! the process does after one, and the exit code a run ends with. Plain
//! data: the process layer (`process/`) acts on it.

use std::fmt;

/// A signal that can start a shutdown.
///
/// The numbers of `SIGHUP`, `SIGINT`, `SIGQUIT` and `SIGTERM` are the same
/// on Linux, the BSDs and macOS; those of `SIGUSR1` and `SIGUSR2` are the
/// platform's. On Windows only [`Signal::Interrupt`] (Ctrl-C) is delivered.
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
    /// `SIGUSR1` (10 on Linux): the application's own; see
    /// [`Builder::progress_signal`](crate::Builder::progress_signal).
    User1,
    /// `SIGUSR2` (12 on Linux): the application's own.
    User2,
}

impl Signal {
    /// The signal's number.
    pub const fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::Terminate => 15,
            Signal::User1 => USR1,
            Signal::User2 => USR2,
        }
    }

    /// The conventional name, e.g. `"SIGTERM"`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Terminate => "SIGTERM",
            Signal::User1 => "SIGUSR1",
            Signal::User2 => "SIGUSR2",
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
            Signal::User1,
            Signal::User2,
        ]
        .into_iter()
        .find(|s| s.number() == number)
    }
}

#[cfg(unix)]
const USR1: i32 = signal_hook::consts::SIGUSR1;
#[cfg(unix)]
const USR2: i32 = signal_hook::consts::SIGUSR2;
#[cfg(not(unix))]
const USR1: i32 = 10;
#[cfg(not(unix))]
const USR2: i32 = 12;

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
