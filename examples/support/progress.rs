//! A progress line for shutdowns that take more than a moment, driven by the
//! instance's events: `shutdown: 3/7 done; running: db-pool, http`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compactor::{Compactor, Event};
use tokio::sync::broadcast::error::RecvError;

/// How long a shutdown runs before the line appears, and how often it changes.
const QUIET_FOR: Duration = Duration::from_millis(500);
const EVERY: Duration = Duration::from_millis(250);

/// Subscribes now, and prints progress to stderr during the shutdown.
pub(crate) fn show(compactor: &Compactor) {
    let mut events = compactor.subscribe();
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let mut total = 0;
        let mut done = 0;
        let mut running: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut started = None;
        let mut shown = false;
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(Event::ShutdownStarted { tasks, .. }) => {
                        total = tasks;
                        started = Some(Instant::now());
                    }
                    Ok(Event::TaskStarted { name, .. }) => {
                        running.insert(name);
                    }
                    Ok(Event::TaskFinished { name, .. }) => {
                        running.remove(&name);
                        done += 1;
                    }
                    Ok(Event::ShutdownFinished { .. }) | Err(RecvError::Closed) => {
                        if shown && tty {
                            eprintln!();
                        }
                        return;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                },
                _ = tick.tick() => {
                    if started.is_none_or(|s: Instant| s.elapsed() < QUIET_FOR) {
                        continue;
                    }
                    shown = true;
                    let names: Vec<&str> = running.iter().map(|n| &**n).collect();
                    let line = format!("shutdown: {done}/{total} done; running: {}", names.join(", "));
                    let mut err = std::io::stderr().lock();
                    let _ = match tty {
                        true => write!(err, "\r\x1b[2K{line}"),
                        false => writeln!(err, "{line}"),
                    };
                    let _ = err.flush();
                }
            }
        }
    });
}
