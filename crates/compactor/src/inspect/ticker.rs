//! Progress shown while a shutdown runs: a line at INFO every
//! [`progress_every`](crate::Builder::progress_every), and on a terminal one
//! updating line on stderr.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Progress;
use crate::config::Config;
use crate::run::{RunContext, Ticker};

/// How long a run goes before the terminal line appears, and how often it
/// is redrawn.
const QUIET_FOR: Duration = Duration::from_secs(1);
const REDRAW: Duration = Duration::from_millis(250);
/// The widest the terminal line is drawn, so it never wraps (a wrapped line
/// cannot be redrawn in place).
const LINE_WIDTH: usize = 79;

/// Whether this process's stderr is a terminal to draw on.
pub(crate) fn on_terminal(config: &Config, listening: bool) -> bool {
    config.terminal_progress && listening && std::io::stderr().is_terminal()
}

/// The ticker of a shutdown's run, or `None` when nothing would be shown.
/// `listening`: whether the instance listens for signals (only such an
/// instance draws on the terminal).
pub(crate) fn ticker(config: &Config, listening: bool) -> Option<Ticker> {
    let terminal = on_terminal(config, listening);
    let log_every = config.progress_every;
    let every = match terminal {
        true => REDRAW,
        false if log_every == Duration::MAX => return None,
        false => log_every,
    };
    let deadline = config.deadline;
    let state = Arc::new(Mutex::new(Shown::default()));
    let tick = move |ctx: &RunContext, over: bool| {
        let mut shown = state.lock().unwrap_or_else(PoisonError::into_inner);
        if over {
            if shown.drawn {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
            return;
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(ctx.t0);
        let progress = Progress::of(ctx, deadline);
        if elapsed >= shown.logged.saturating_add(log_every) {
            shown.logged = elapsed;
            tracing::info!(target: "compactor::progress", "{progress}");
        }
        if terminal && elapsed >= QUIET_FOR {
            shown.drawn = true;
            let line = crate::report::shown(&progress.to_string(), LINE_WIDTH);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        }
    };
    Some(Ticker {
        every,
        tick: Arc::new(tick),
    })
}

#[derive(Default)]
struct Shown {
    /// When, into the run, the last INFO line went out.
    logged: Duration,
    /// Whether the terminal line is on the screen.
    drawn: bool,
}
