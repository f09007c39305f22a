//! The process's one signal listener: a thread (`compactor-signals`),
//! started by the first instance that listens and kept for the life of the
//! process, the only owner of signal handling. An instance that listens is
//! an entry in its table; an instance that goes leaves it.
//!
//! What a signal does, by where the instances that listen for it are:
//!
//! | moment | effect |
//! |---|---|
//! | no instance listens for it (none ever did, or all went) | the process ends with 128 + n |
//! | before the shutdown | the shutdown begins (and the [watchdog](super::watchdog) with it) |
//! | during a shutdown it started | the process ends at once with 128 + n, naming the cleanups still running |
//! | during a shutdown begun otherwise | the first is logged; the next ends the process as above |
//! | after the shutdown | the process ends with 128 + n (unless the run's own exit is under way) |
//!
//! A thread, not a task: it needs no runtime to be alive, and it acts when
//! every runtime worker is blocked by a cleanup.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use signal_hook::iterator::{Handle, Signals};

use super::exit::end_process;
use crate::Signal;
use crate::compactor::{Compactor, Inner};
use crate::{Error, ShutdownReason};

struct Listener {
    /// Adds signals to those the thread receives.
    handle: Handle,
    registered: Vec<i32>,
    instances: Vec<Entry>,
}

struct Entry {
    id: u64,
    owner: Weak<Inner>,
    signals: Vec<i32>,
    /// Where the instance listened from, if a multi-thread runtime: its run
    /// is begun there (or, if that runtime is gone, goes on on the library's
    /// own, as it does from the start without one).
    runtime: Option<tokio::runtime::Handle>,
    /// Signals received while its shutdown was under way.
    during_run: u32,
}

static LISTENER: Mutex<Option<Listener>> = Mutex::new(None);

fn listener() -> MutexGuard<'static, Option<Listener>> {
    LISTENER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes `inner` an instance that listens for its configured signals.
pub(crate) fn join(inner: &Arc<Inner>) -> Result<(), Error> {
    let numbers: Vec<i32> = inner.config.signals.iter().map(|s| s.number()).collect();
    let problem = |e: std::io::Error| Error::Signals {
        problem: e.to_string(),
    };
    let mut guard = listener();
    if guard.is_none() {
        let signals = Signals::new(&numbers).map_err(problem)?;
        let handle = signals.handle();
        super::watchdog::start().map_err(problem)?;
        std::thread::Builder::new()
            .name("compactor-signals".to_owned())
            .spawn(move || receive(signals))
            .map_err(problem)?;
        *guard = Some(Listener {
            handle,
            registered: Vec::new(),
            instances: Vec::new(),
        });
    }
    let listener = guard.as_mut().expect("set above");
    for &number in &numbers {
        if !listener.registered.contains(&number) {
            listener.handle.add_signal(number).map_err(problem)?;
            listener.registered.push(number);
        }
    }
    listener.instances.push(Entry {
        id: inner.id,
        owner: Arc::downgrade(inner),
        signals: numbers,
        // Only a multi-thread runtime runs its tasks by itself; a
        // current-thread one only while something blocks on it.
        runtime: tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread),
        during_run: 0,
    });
    Ok(())
}

/// An instance that listened is going.
pub(crate) fn leave(instance: u64) {
    if let Some(listener) = listener().as_mut() {
        listener.instances.retain(|e| e.id != instance);
    }
}

fn receive(mut signals: Signals) {
    for number in signals.forever() {
        if let Some(signal) = Signal::from_number(number) {
            // A panic (in a tracing layer, say) must not end the listener.
            let handled = std::panic::catch_unwind(|| arrived(signal));
            if handled.is_err() {
                tracing::error!(%signal, "handling a signal panicked");
            }
        }
    }
}

/// An instance a signal reached, with what it needs to act.
struct Reached {
    compactor: Compactor,
    runtime: Option<tokio::runtime::Handle>,
    during_run: u32,
}

fn arrived(signal: Signal) {
    let reached: Vec<Reached> = {
        let mut guard = listener();
        let Some(listener) = guard.as_mut() else {
            return;
        };
        listener.instances.retain(|e| e.owner.strong_count() > 0);
        listener
            .instances
            .iter_mut()
            .filter(|e| e.signals.contains(&signal.number()))
            .filter_map(|e| {
                let compactor = Compactor {
                    inner: e.owner.upgrade()?,
                };
                if compactor.is_shutting_down() && compactor.report().is_none() {
                    e.during_run += 1;
                }
                Some(Reached {
                    compactor,
                    runtime: e.runtime.clone(),
                    during_run: e.during_run,
                })
            })
            .collect()
    };
    if reached.is_empty() {
        let code = signal.exit_code();
        let why = format!("{signal} and no instance listens for it: exiting with code {code}");
        end_process(code, Some(why), None, std::time::Duration::ZERO);
    }
    for instance in reached {
        act(instance, signal);
    }
}

fn act(reached: Reached, signal: Signal) {
    let Reached {
        compactor,
        runtime,
        during_run,
    } = reached;
    let inner = &compactor.inner;
    let code = signal.exit_code();
    if !compactor.is_shutting_down() {
        tracing::info!(%signal, "signal received: starting shutdown");
        let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
        if compactor.begin(ShutdownReason::Signal(signal)) {
            super::watchdog::watch(&compactor, signal);
        }
        return;
    }
    if compactor.report().is_some() {
        if compactor.exits_after_run() {
            // The run's own exit, with its code, is under way.
            return;
        }
        let why = format!("{signal} after the shutdown: exiting with code {code}");
        end_process(
            code,
            Some(why),
            inner.config.before_exit.as_ref(),
            inner.config.exit_grace,
        );
    }
    if during_run < 2 && !compactor.started_by_signal() {
        tracing::info!(%signal, "shutdown under way; send the signal again to exit at once");
        return;
    }
    force_exit(&compactor, signal);
}

/// Ends the process at once, naming the cleanups still running.
pub(crate) fn force_exit(compactor: &Compactor, signal: Signal) -> ! {
    let inner = &compactor.inner;
    let code = signal.exit_code();
    let why = format!(
        "{signal} again during shutdown; exiting now with code {code}; still running: {}",
        still_running(inner)
    );
    end_process(
        code,
        Some(why),
        inner.config.before_exit.as_ref(),
        inner.config.exit_grace,
    )
}

/// The cleanups running now, for a line on stderr.
pub(crate) fn still_running(inner: &Inner) -> String {
    let running = inner.running_tasks();
    match running.is_empty() {
        true => "none".to_owned(),
        false => running.join(", "),
    }
}
