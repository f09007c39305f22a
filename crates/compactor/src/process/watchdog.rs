//! The watchdog of signal-started runs: one thread for the process, started
//! with the listener (so a signal starts no thread), that ends the process
//! if a run has not finished by its deadline + the exit grace, however
//! stuck the runtime is, and that gives an application that took the exit
//! over (by waiting for the report) the grace to end the process itself.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::exit::{Signal, end_process};
use super::listener::still_running;
use crate::compactor::{Compactor, Inner};

/// How often the watchdog looks at the runs it watches.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// A run being watched.
struct Watched {
    owner: Weak<Inner>,
    signal: Signal,
    /// When the run must have finished (`None`: no limit).
    limit: Option<Instant>,
    /// Once the report is out and the application has the exit: when the
    /// process must have ended.
    handed_over: Option<Option<Instant>>,
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static ARMED: Condvar = Condvar::new();

fn watched() -> MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the watchdog's thread; the listener calls it once, when it starts.
pub(crate) fn start() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("compactor-watchdog".to_owned())
        .spawn(guard)
        .map(drop)
}

/// Watches the run a signal just started on `compactor`.
pub(crate) fn watch(compactor: &Compactor, signal: Signal) {
    let config = &compactor.inner.config;
    let limit = Instant::now()
        .checked_add(config.deadline)
        .and_then(|end| end.checked_add(config.exit_grace));
    watched().push(Watched {
        owner: std::sync::Arc::downgrade(&compactor.inner),
        signal,
        limit,
        handed_over: None,
    });
    ARMED.notify_one();
}

fn guard() {
    let mut list = watched();
    loop {
        list = match list.is_empty() {
            true => ARMED.wait(list).unwrap_or_else(PoisonError::into_inner),
            false => {
                ARMED
                    .wait_timeout(list, LOOK_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        let now = Instant::now();
        list.retain_mut(|w| look(w, now));
    }
}

/// Acts on one watched run; `false` once there is nothing left to watch.
fn look(watched: &mut Watched, now: Instant) -> bool {
    let Some(inner) = watched.owner.upgrade() else {
        return false;
    };
    let compactor = Compactor { inner };
    let inner = &compactor.inner;
    let (signal, grace) = (watched.signal, inner.config.exit_grace);
    let hook = inner.config.before_exit.as_ref();
    match (compactor.report(), watched.handed_over) {
        (None, _) if watched.limit.is_some_and(|limit| now >= limit) => {
            let code = signal.exit_code();
            let why = format!(
                "the shutdown after {signal} passed its deadline and grace ({:?} + {grace:?}); exiting with code {code}; still running: {}",
                inner.config.deadline,
                still_running(inner)
            );
            end_process(code, Some(why), hook, grace);
        }
        (None, _) => true,
        // The run's own exit is under way.
        (Some(_), None) if compactor.exits_after_run() => false,
        (Some(_), None) => {
            // The application waits for the report and ends the process:
            // within the grace.
            watched.handed_over = Some(now.checked_add(grace));
            true
        }
        (Some(report), Some(Some(until))) if now >= until => {
            let code = report.exit_code();
            let why = format!(
                "the application did not end the process within {grace:?} of the shutdown after {signal}; exiting with code {code}"
            );
            end_process(code, Some(why), hook, grace);
        }
        (Some(_), Some(_)) => true,
    }
}
