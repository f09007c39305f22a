//! Process signals: which ones start a shutdown, what the process does after
//! it, and the listener that survives a wedged runtime.
//!
//! On Unix the listener is a plain thread blocked on signal-hook's iterator,
//! not a tokio task: when every runtime worker is stuck in a misbehaving
//! cleanup, a second signal must still end the process.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::compactor::{Compactor, Inner};
use crate::{Error, ShutdownReason};

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
    /// `main`. [`Compactor::run_until_shutdown`] switches to this.
    Return,
}

impl SignalExit {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            SignalExit::WithSignalCode => 0,
            SignalExit::ZeroIfClean => 1,
            SignalExit::Return => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> SignalExit {
        match v {
            1 => SignalExit::ZeroIfClean,
            2 => SignalExit::Return,
            _ => SignalExit::WithSignalCode,
        }
    }
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

/// Starts the listener thread (once per instance).
#[cfg(unix)]
pub(crate) fn listen(inner: &Arc<Inner>) -> Result<(), Error> {
    use std::sync::atomic::Ordering;

    use signal_hook::iterator::Signals;

    if inner.signals_armed.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    // The fast path registers first, so its wake-up is written first when a
    // signal arrives.
    let runtime = tokio::runtime::Handle::try_current().ok();
    if let Some(runtime) = &runtime {
        start_fast_path(inner, runtime);
    }
    let numbers: Vec<i32> = inner.config.signals.iter().map(|s| s.number()).collect();
    let mut signals = match Signals::new(&numbers) {
        Ok(signals) => signals,
        Err(e) => {
            inner.signals_armed.store(false, Ordering::Release);
            inner.signal_tasks.cancel();
            return Err(Error::Signals {
                problem: e.to_string(),
            });
        }
    };
    inner.set_signal_handle(signals.handle());
    let owner: Weak<Inner> = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new()
        .name("compactor-signals".to_owned())
        .spawn(move || {
            let mut received = 0u32;
            for number in signals.forever() {
                let Some(inner) = owner.upgrade() else { break };
                let Some(signal) = Signal::from_number(number) else {
                    continue;
                };
                received += 1;
                handle(&Compactor { inner }, signal, received, runtime.as_ref());
            }
        });
    if let Err(e) = spawned {
        inner.signals_armed.store(false, Ordering::Release);
        return Err(Error::Signals {
            problem: format!("cannot start the listener thread: {e}"),
        });
    }
    Ok(())
}

/// The first signal also reaches a task on the runtime: tokio's signal
/// driver wakes it without a second thread hop, and the task drives the run
/// itself, so the shutdown starts sooner. Only the start: everything after
/// it (the second signal, the default handling after the run) stays with
/// the listener thread, which works when the runtime does not.
#[cfg(unix)]
fn start_fast_path(inner: &Arc<Inner>, runtime: &tokio::runtime::Handle) {
    use tokio::signal::unix::{SignalKind, signal};

    let _entered = runtime.enter();
    for &wanted in &inner.config.signals {
        let Ok(mut stream) = signal(SignalKind::from_raw(wanted.number())) else {
            continue;
        };
        let owner = Arc::downgrade(inner);
        let closed = inner.signal_tasks.clone();
        runtime.spawn(async move {
            tokio::select! {
                () = closed.cancelled() => return,
                received = stream.recv() => if received.is_none() { return },
            }
            let Some(inner) = owner.upgrade() else { return };
            let compactor = Compactor { inner };
            tracing::info!(signal = %wanted, "signal received: starting shutdown");
            // Driven right here: no spawn between the signal and the run.
            if let Some(run) = compactor.start(ShutdownReason::Signal(wanted)) {
                drop(compactor);
                run.await;
            }
        });
    }
}

/// How long the listener thread leaves the start of a run to the fast path.
#[cfg(unix)]
const FAST_PATH_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// What one received signal does, depending on where the instance is.
#[cfg(unix)]
fn handle(
    compactor: &Compactor,
    signal: Signal,
    received: u32,
    runtime: Option<&tokio::runtime::Handle>,
) {
    if !compactor.is_shutting_down() {
        if runtime.is_some() {
            // The fast path on the runtime has the same signal and starts
            // the run sooner; step in only if the runtime does not answer.
            let until = std::time::Instant::now() + FAST_PATH_PATIENCE;
            while !compactor.is_shutting_down() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        if !compactor.is_shutting_down() {
            tracing::info!(%signal, "signal received: starting shutdown");
            let _entered = runtime.map(tokio::runtime::Handle::enter);
            compactor.begin(ShutdownReason::Signal(signal));
        }
        return;
    }
    if received == 1 && compactor.started_by_signal() {
        // The signal the fast path already started the run with, however
        // far that run has got.
        return;
    }
    if compactor.report().is_some() {
        // The run is over: behave as if no one handled the signal.
        let _ = signal_hook::low_level::emulate_default_handler(signal.number());
        return;
    }
    if received == 1 {
        // During a run started by other means: the next signal escalates.
        tracing::info!(%signal, "shutdown under way; send the signal again to exit at once");
        return;
    }
    force_exit(compactor, signal);
}

/// Ctrl-C through tokio where there are no Unix signals.
#[cfg(not(unix))]
pub(crate) fn listen(inner: &Arc<Inner>) -> Result<(), Error> {
    use std::sync::atomic::Ordering;

    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Signals {
        problem: "listening for Ctrl-C needs a tokio runtime; call it from inside one".to_owned(),
    })?;
    if inner.signals_armed.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let owner: Weak<Inner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        let mut received = 0u32;
        while tokio::signal::ctrl_c().await.is_ok() {
            let Some(inner) = owner.upgrade() else { break };
            let compactor = Compactor { inner };
            received += 1;
            if compactor.report().is_some() {
                std::process::exit(i32::from(Signal::Interrupt.exit_code()));
            } else if !compactor.is_shutting_down() {
                compactor.begin(ShutdownReason::Signal(Signal::Interrupt));
            } else if received > 1 {
                force_exit(&compactor, Signal::Interrupt);
            }
        }
    });
    Ok(())
}

/// Ends the process at once, naming the cleanups that were still running.
fn force_exit(compactor: &Compactor, signal: Signal) -> ! {
    let running = compactor.inner.running_tasks();
    let listed = match running.is_empty() {
        true => "none".to_owned(),
        false => running.join(", "),
    };
    eprintln!(
        "compactor: {signal} again during shutdown; exiting now with code {}; still running: {listed}",
        signal.exit_code()
    );
    std::process::exit(i32::from(signal.exit_code()))
}
