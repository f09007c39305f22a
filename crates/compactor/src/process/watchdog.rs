//! The watchdog of a signal-started run: a thread that ends the process if
//! the run has not finished by its deadline + the exit grace, however stuck
//! the runtime is, and that gives an application that took the exit over
//! (by waiting for the report) the grace to end the process itself.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::exit::{Signal, end_process};
use super::listener::still_running;
use crate::compactor::{Compactor, Inner};

/// How often the watchdog looks.
const LOOK_EVERY: Duration = Duration::from_millis(20);

pub(crate) fn watch(compactor: &Compactor, signal: Signal) {
    let owner = Arc::downgrade(&compactor.inner);
    let config = &compactor.inner.config;
    let grace = config.exit_grace;
    let limit = Instant::now()
        .checked_add(config.deadline)
        .and_then(|end| end.checked_add(grace));
    let started = std::thread::Builder::new()
        .name("compactor-watchdog".to_owned())
        .spawn(move || guard(&owner, signal, limit, grace));
    if let Err(error) = started {
        tracing::error!(%error, "no thread for the shutdown's watchdog");
    }
}

fn guard(owner: &Weak<Inner>, signal: Signal, limit: Option<Instant>, grace: Duration) {
    // Until the run ends.
    loop {
        let Some(inner) = owner.upgrade() else { return };
        let compactor = Compactor { inner };
        if compactor.report().is_some() {
            if compactor.exits_after_run() {
                return;
            }
            break;
        }
        if limit.is_some_and(|limit| Instant::now() >= limit) {
            let inner = &compactor.inner;
            let code = signal.exit_code();
            let why = format!(
                "the shutdown after {signal} passed its deadline and grace ({:?} + {grace:?}); exiting with code {code}; still running: {}",
                inner.config.deadline,
                still_running(inner)
            );
            end_process(code, Some(why), inner.config.before_exit.as_ref(), grace);
        }
        drop(compactor);
        std::thread::sleep(LOOK_EVERY);
    }
    // The application waits for the report and decides when the process
    // ends: within the grace.
    let Some(until) = Instant::now().checked_add(grace) else {
        return;
    };
    while Instant::now() < until {
        std::thread::sleep(LOOK_EVERY.min(until.saturating_duration_since(Instant::now())));
    }
    let Some(inner) = owner.upgrade() else { return };
    let report = Compactor {
        inner: inner.clone(),
    }
    .report();
    let code = report.map_or(signal.exit_code(), |r| r.exit_code());
    let why = format!(
        "the application did not end the process within {grace:?} of the shutdown after {signal}; exiting with code {code}"
    );
    end_process(code, Some(why), inner.config.before_exit.as_ref(), grace);
}
