//! Progress shown while a shutdown runs: a line at INFO every
//! [`progress_every`](crate::Builder::progress_every), and on a terminal one
//! updating line on stderr.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Progress;
use super::stderr::{self, Output};
use crate::config::Config;
use crate::run::{RunContext, Ticker};

/// How long a run goes before the terminal line appears, and how often it
/// is redrawn.
const QUIET_FOR: Duration = Duration::from_secs(1);
const REDRAW: Duration = Duration::from_millis(250);
/// The widest the terminal line is drawn, so it never wraps (a wrapped line
/// cannot be redrawn in place).
const LINE_WIDTH: usize = 79;

/// Whether this process's stderr is a terminal to draw on (with the
/// escapes of a VT terminal: not on Windows' console).
pub(crate) fn on_terminal(config: &Config, listening: bool) -> bool {
    cfg!(unix)
        && !crate::run::clock::is_no_limit(config.progress_every)
        && listening
        && std::io::stderr().is_terminal()
}

/// The ticker of a shutdown's run of instance `owner`, or `None` when
/// nothing would be shown. `listening`: whether the instance listens for
/// signals (only such an instance draws on the terminal).
pub(crate) fn ticker(config: &Config, listening: bool, owner: u64) -> Option<Ticker> {
    let terminal = on_terminal(config, listening);
    let log_every = config.progress_every;
    let every = match terminal {
        true => REDRAW,
        false if log_every == Duration::MAX => return None,
        false => log_every,
    };
    let deadline = config.deadline;
    let logged = Arc::new(Mutex::new(Duration::ZERO));
    let tick = move |ctx: &RunContext, over: bool| {
        if over {
            if terminal {
                stderr::send(Output::Clear { owner });
            }
            return;
        }
        let elapsed = Instant::now().saturating_duration_since(ctx.t0);
        let log = {
            let mut last = logged.lock().unwrap_or_else(PoisonError::into_inner);
            let due = elapsed >= last.saturating_add(log_every);
            if due {
                *last = elapsed;
            }
            due
        };
        let draw = terminal && elapsed >= QUIET_FOR;
        if !log && !draw {
            return;
        }
        let progress = Progress::of(ctx, deadline);
        if log {
            tracing::info!(target: "compactor::progress", "{progress}");
        }
        if draw {
            let line = crate::report::shown(&progress.to_string(), LINE_WIDTH);
            stderr::send(Output::Draw { owner, line });
        }
    };
    Some(Ticker {
        every,
        tick: Arc::new(tick),
    })
}
