//! The OS process: signals, the watchdog of a signal-started run, ending
//! the process, and the helpers for `main`. Built on the engine; the engine
//! knows nothing of signals.
//!
//! When the library ends the process on its own: after a signal-started
//! run whose report nobody in the process waits for (no `wait()`,
//! `shutdown()` or `run_until_shutdown` under way), on a second signal, when
//! a signal-started run passes its deadline + the exit grace, and on a
//! signal no instance listens for. Where the application waits for the
//! report, the application ends the process (within the exit grace after a
//! signal-started run) and has the report first.

pub(crate) mod exit;
mod global;
#[cfg(unix)]
mod listener;
mod main;
#[cfg(unix)]
mod notify;
#[cfg(unix)]
mod watchdog;

use std::sync::atomic::Ordering;

use crate::compactor::{Compactor, ProcessHooks};
use crate::error::Error;

/// What the engine calls for an instance that listens.
pub(crate) static HOOKS: ProcessHooks = ProcessHooks {
    listen,
    leave,
    run_over,
    run_begins,
};

/// Makes the instance one that listens for its signals (once).
fn listen(compactor: &Compactor) -> Result<(), Error> {
    let signals = &compactor.signals();
    let _ = signals.hooks.set(&HOOKS);
    if signals.armed.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    join(compactor).inspect_err(|_| signals.armed.store(false, Ordering::Release))
}

/// A run's report is out: the watchdog looks at once.
fn run_over() {
    #[cfg(unix)]
    watchdog::wake();
}

/// A run begins: systemd hears of it, where the process runs under it.
fn run_begins(_compactor: &Compactor, _tasks: usize) -> Option<crate::run::Ticker> {
    #[cfg(unix)]
    return notify::run_begins(_compactor, _tasks);
    #[cfg(not(unix))]
    None
}

/// The instance is going: it listens no more.
fn leave(_instance: u64) {
    #[cfg(unix)]
    listener::leave(_instance);
}

#[cfg(unix)]
fn join(compactor: &Compactor) -> Result<(), Error> {
    listener::join(compactor)
}

/// Ctrl-C through tokio where there are no Unix signals.
#[cfg(not(unix))]
fn join(compactor: &Compactor) -> Result<(), Error> {
    use std::sync::Arc;

    use crate::report::ShutdownReason;
    use crate::signal::Signal;

    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Signals {
        problem: "listening for Ctrl-C needs a tokio runtime; call it from inside one".to_owned(),
    })?;
    let owner = compactor.downgrade();
    runtime.spawn(async move {
        let mut received = 0u32;
        while tokio::signal::ctrl_c().await.is_ok() {
            let Some(inner) = owner.upgrade() else { break };
            let compactor = Compactor { inner };
            received += 1;
            let code = Signal::Interrupt.exit_code();
            let (hook, grace) = (
                compactor.config().before_exit.as_ref(),
                compactor.config().exit_grace,
            );
            if compactor.report().is_some() {
                exit::end_process(code, None, hook, grace);
            } else if !compactor.is_shutting_down() {
                compactor.begin(ShutdownReason::Signal(Signal::Interrupt));
            } else if received > 1 {
                exit::end_process(
                    code,
                    Some("Ctrl-C again during shutdown".to_owned()),
                    hook,
                    grace,
                );
            }
        }
    });
    Ok(())
}
