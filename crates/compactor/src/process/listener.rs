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
//! every runtime worker is blocked by a cleanup. A run a signal starts goes
//! on the library's own runtime, which a signal finds alive and idle.

use std::sync::{Mutex, MutexGuard, PoisonError};

use signal_hook::iterator::{Handle, Signals};

use super::exit::end_process;
use crate::Error;
use crate::compactor::{Compactor, WeakCompactor};
use crate::report::ShutdownReason;
use crate::signal::Signal;

struct Listener {
    /// Adds signals to those the thread receives.
    handle: Handle,
    registered: Vec<i32>,
    instances: Vec<Entry>,
    /// Deliveries the early start acted on (it began runs) that the thread
    /// has not read yet. One count for all signals: the thread reads pending
    /// signals in number order, not in the order they came.
    early: u32,
    /// Deliveries the thread began runs for that the early start has not
    /// seen yet: when it does, they are not news.
    thread_ahead: u32,
}

struct Entry {
    id: u64,
    owner: WeakCompactor,
    signals: Vec<i32>,
    /// Its progress signal (see `Builder::progress_signal`).
    progress: Option<i32>,
    /// Deliveries of its signals since it joined.
    seen: u32,
}

static LISTENER: Mutex<Option<Listener>> = Mutex::new(None);

fn listener() -> MutexGuard<'static, Option<Listener>> {
    LISTENER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes `compactor` an instance that listens for its configured signals.
pub(crate) fn join(compactor: &Compactor) -> Result<(), Error> {
    let numbers: Vec<i32> = compactor
        .config()
        .signals
        .iter()
        .map(|s| s.number())
        .collect();
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
            early: 0,
            thread_ahead: 0,
            instances: Vec::new(),
        });
    }
    let listener = guard.as_mut().expect("set above");
    let progress = compactor.config().progress_signal.map(Signal::number);
    if let Some(problem) = listener.conflict(&numbers, progress) {
        return Err(Error::Signals { problem });
    }
    for &number in &numbers {
        if !listener.registered.contains(&number) {
            listener.handle.add_signal(number).map_err(problem)?;
            listener.registered.push(number);
            start_early(number);
        }
    }
    if let Some(number) = progress.filter(|n| !listener.registered.contains(n)) {
        // The thread alone: nothing about it is urgent.
        listener.handle.add_signal(number).map_err(problem)?;
        listener.registered.push(number);
    }
    listener.instances.push(Entry {
        id: compactor.id(),
        owner: compactor.downgrade(),
        signals: numbers,
        progress,
        seen: 0,
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

/// Begins the runs a signal starts sooner than the listener thread can: a
/// task on the library's own runtime, whose I/O driver tokio's signal
/// handling wakes directly, so an idle process has one wake-up between the
/// signal and the run where the thread adds its own. It begins runs, counts
/// the deliveries it acted on, and ends the process on a second signal
/// during a run a signal began; the thread sees every delivery and does
/// everything else (and that too, when every worker of the runtime is
/// blocked).
fn start_early(number: i32) {
    let Some(runtime) = crate::run::own_runtime() else {
        return;
    };
    runtime.spawn(async move {
        let kind = tokio::signal::unix::SignalKind::from_raw(number);
        let Ok(mut arrivals) = tokio::signal::unix::signal(kind) else {
            return;
        };
        while arrivals.recv().await.is_some() {
            let Some(signal) = Signal::from_number(number) else {
                continue;
            };
            let begun = {
                let mut guard = listener();
                let Some(listener) = guard.as_mut() else {
                    continue;
                };
                if listener.thread_ahead > 0 {
                    // The thread has acted on this delivery already.
                    listener.thread_ahead -= 1;
                    continue;
                }
                let reached = listener.begin_all(signal);
                if reached.iter().any(|(_, began)| *began) {
                    // For the thread: a delivery acted on already.
                    listener.early += 1;
                }
                reached
            };
            watch(&begun, signal);
            // A delivery during a run a signal began, which it did not begin:
            // the second signal. The thread may never see it as such: a
            // signal that comes again before the thread reads the first is
            // one delivery to it.
            if let Some((again, _)) = begun.iter().find(|(compactor, began)| {
                !began && compactor.started_by_signal() && compactor.report().is_none()
            }) {
                force_exit(again, signal);
            }
        }
    });
}

impl Listener {
    /// Why an instance with these shutdown signals and this progress
    /// signal cannot listen beside the others: one number cannot both
    /// start a shutdown and only show progress.
    fn conflict(&self, shutdown: &[i32], progress: Option<i32>) -> Option<String> {
        let alive = || self.instances.iter().filter(|e| e.owner.is_alive());
        if let Some(p) = progress {
            if alive().any(|e| e.signals.contains(&p)) {
                return Some(format!(
                    "{} is another listening instance's shutdown signal; choose another progress signal",
                    name_of(p)
                ));
            }
        }
        let shown = shutdown
            .iter()
            .find(|&&n| alive().any(|e| e.progress == Some(n)))?;
        Some(format!(
            "{} is another listening instance's progress signal; it cannot also start this one's shutdown",
            name_of(*shown)
        ))
    }

    /// Begins the runs of the instances that listen for `signal` and have
    /// not begun: under the table's lock, so the early start and the thread
    /// agree on who began a run. Returns the instances it reached, whether it
    /// began each: to watch, and to drop, once the lock is released (the
    /// watchdog takes the table's lock under its own, and an instance's last
    /// drop takes it to leave).
    fn begin_all(&mut self, signal: Signal) -> Vec<(Compactor, bool)> {
        self.instances.retain(|e| e.owner.is_alive());
        let mut reached = Vec::new();
        for entry in &self.instances {
            if !entry.signals.contains(&signal.number()) {
                continue;
            }
            let Some(compactor) = entry.owner.upgrade() else {
                continue;
            };
            // A panic (in a tracing layer, say) must not end the early start.
            let began = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                begin(&compactor, signal)
            }));
            reached.push((compactor, began.unwrap_or(false)));
        }
        reached
    }
}

/// Begins the run of a signal on the library's own runtime (which a signal
/// finds alive and idle, whatever the application's runtimes are doing);
/// whether it did.
fn begin(compactor: &Compactor, signal: Signal) -> bool {
    if compactor.is_shutting_down() {
        return false;
    }
    let config = &compactor.config();
    let again = match signal {
        Signal::Interrupt => "press Ctrl-C again".to_owned(),
        other => format!("send {other} again"),
    };
    tracing::info!(%signal, deadline = ?config.deadline, "signal received: shutting down; {again} to force an exit");
    if crate::inspect::on_terminal(config, true) {
        let deadline = config.deadline;
        let line = move || {
            format!(
                "{signal} received: shutting down (deadline {deadline:?}); {again} to force an exit"
            )
        };
        crate::inspect::stderr::send(crate::inspect::stderr::Output::Text(Box::new(line)));
    }
    match crate::run::own_runtime() {
        Some(runtime) => {
            let _entered = runtime.enter();
            compactor.begin(ShutdownReason::Signal(signal))
        }
        None => compactor.begin(ShutdownReason::Signal(signal)),
    }
}

fn watch(reached: &[(Compactor, bool)], signal: Signal) {
    let began = reached.iter().filter(|(_, began)| *began).map(|(c, _)| c);
    super::watchdog::watch(began, signal);
}

fn arrived(signal: Signal) {
    if show_progress(signal) {
        return;
    }
    let (reached, begun, taken) = {
        let mut guard = listener();
        let Some(listener) = guard.as_mut() else {
            return;
        };
        listener.instances.retain(|e| e.owner.is_alive());
        let reached: Vec<(Compactor, u32)> = listener
            .instances
            .iter_mut()
            .filter(|e| e.signals.contains(&signal.number()))
            .filter_map(|e| {
                e.seen += 1;
                Some((e.owner.upgrade()?, e.seen))
            })
            .collect();
        let taken = listener.early > 0;
        listener.early = listener.early.saturating_sub(1);
        let begun = match taken {
            true => Vec::new(),
            false => listener.begin_all(signal),
        };
        if begun.iter().any(|(_, began)| *began) {
            listener.thread_ahead += 1;
        }
        (reached, begun, taken)
    };
    watch(&begun, signal);
    if taken {
        // Counted as seen, and acted on already: the instances it reached
        // may be gone by now, which does not make it a signal nobody hears.
        return;
    }
    if reached.is_empty() {
        let code = signal.exit_code();
        let why = format!("{signal} and no instance listens for it: exiting with code {code}");
        end_process(code, Some(why), None, std::time::Duration::ZERO);
    }
    for (compactor, seen) in reached {
        let began = begun.iter().any(|(b, began)| *began && b.is(&compactor));
        if !began {
            act(&compactor, signal, seen);
        }
    }
}

/// Prints the progress (or, before a run, the plan) of the instances whose
/// progress signal `signal` is; whether that is all it is to anyone (no
/// instance has it among its shutdown signals).
fn show_progress(signal: Signal) -> bool {
    let (shown, shutdown) = {
        let mut guard = listener();
        let Some(listener) = guard.as_mut() else {
            return false;
        };
        let number = signal.number();
        let shown: Vec<Compactor> = listener
            .instances
            .iter()
            .filter(|e| e.progress == Some(number))
            .filter_map(|e| e.owner.upgrade())
            .collect();
        let shutdown = listener
            .instances
            .iter()
            .any(|e| e.signals.contains(&number));
        (shown, shutdown)
    };
    for compactor in &shown {
        // Made and written off this thread: a plan of many tasks takes a
        // while, and a blocked stderr must not hold the signals.
        // Held weakly: behind a blocked stderr, the text must not keep the
        // instance alive (nor drop it, the last owner, on the writer).
        let instance = compactor.downgrade();
        let text = move || {
            let Some(compactor) = instance.upgrade() else {
                return format!("{signal}: the instance has gone");
            };
            match compactor.progress() {
                Some(progress) => format!("{signal}: {progress:#}"),
                None => format!("{signal}: {}", compactor.plan()),
            }
        };
        crate::inspect::stderr::send(crate::inspect::stderr::Output::Text(Box::new(text)));
    }
    !shown.is_empty() && !shutdown
}

/// What a delivery does to an instance whose run it did not begin; `seen`:
/// its deliveries so far, this one included.
fn act(compactor: &Compactor, signal: Signal, seen: u32) {
    let config = compactor.config();
    let code = signal.exit_code();
    let first = seen == 1;
    if compactor.report().is_some() {
        if (first && compactor.started_by_signal()) || compactor.exits_after_run() {
            // The delivery that started the run, or the run's own exit is
            // under way.
            return;
        }
        let why = format!("{signal} after the shutdown: exiting with code {code}");
        end_process(
            code,
            Some(why),
            config.before_exit.as_ref(),
            config.exit_grace,
        );
    }
    if first {
        if !compactor.started_by_signal() {
            tracing::info!(%signal, "shutdown under way; send the signal again to exit at once");
        }
        return;
    }
    force_exit(compactor, signal);
}

/// Ends the process at once, naming the cleanups still running.
pub(crate) fn force_exit(compactor: &Compactor, signal: Signal) -> ! {
    let config = compactor.config();
    let code = signal.exit_code();
    let why = format!(
        "{signal} again during shutdown; exiting now with code {code}; still running: {}",
        compactor.still_running()
    );
    compactor.run_finals_before_exit();
    end_process(
        code,
        Some(why),
        config.before_exit.as_ref(),
        config.exit_grace,
    )
}

fn name_of(number: i32) -> String {
    Signal::from_number(number).map_or_else(|| format!("signal {number}"), |s| s.name().to_owned())
}
