//! The watchdog of signal-started runs: one thread for the process, started
//! with the listener (so a signal starts no thread), and the one place that
//! ends the process after such a run:
//!
//! - when every signal-started run has finished and the library is to end
//!   the process (nobody waited for the reports), at once, with the first
//!   report's code: one instance's exit never cuts another's run short;
//! - when a run has not finished by its deadline + the exit grace, however
//!   stuck the runtime is, with the signal's code, naming what still runs;
//! - when the application took the exit over (it waited for the report) and
//!   has not ended the process within the exit grace, with the report's code.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::exit::end_process;
use crate::compactor::{AfterRun, Published};
use crate::compactor::{Compactor, WeakCompactor};
use crate::config::BeforeExit;
use crate::signal::Signal;

/// How often the watchdog looks while it watches runs.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// A run being watched.
struct Watched {
    owner: WeakCompactor,
    /// The run's report and who ends the process, which outlive the
    /// instance (it may go as its report goes out).
    published: Published,
    signal: Signal,
    /// When the run must have finished (`None`: no limit).
    limit: Option<Instant>,
    grace: Duration,
    hook: Option<BeforeExit>,
    /// The report is out.
    after: Option<After>,
}

#[derive(Clone, Copy)]
enum After {
    /// The library ends the process, with this code, once every watched run
    /// is over.
    Library(u8),
    /// The application ends the process by then, else the library does,
    /// with this code.
    Application { until: Option<Instant>, code: u8 },
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static LOOK: Condvar = Condvar::new();

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

/// Watches the runs a signal just started, all at once: the process ends
/// only when every one of them is over, so none may be looked at before
/// the others are on the list.
pub(crate) fn watch<'a>(compactors: impl IntoIterator<Item = &'a Compactor>, signal: Signal) {
    let mut list = watched();
    for compactor in compactors {
        let config = compactor.config();
        let limit = Instant::now()
            .checked_add(config.deadline)
            .and_then(|end| end.checked_add(config.exit_grace));
        list.push(Watched {
            owner: compactor.downgrade(),
            published: compactor.published(),
            signal,
            limit,
            grace: config.exit_grace,
            hook: config.before_exit.clone(),
            after: None,
        });
    }
    drop(list);
    LOOK.notify_one();
}

/// A report is out: look now rather than at the next round.
pub(crate) fn wake() {
    LOOK.notify_one();
}

fn guard() {
    let mut list = watched();
    loop {
        list = match list.is_empty() {
            true => LOOK.wait(list).unwrap_or_else(PoisonError::into_inner),
            false => {
                LOOK.wait_timeout(list, LOOK_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        let now = Instant::now();
        list.retain_mut(|w| look(w, now));
        let all_over = list
            .iter()
            .all(|w| matches!(w.after, Some(After::Library(_))));
        if let (Some(first), true) = (list.first(), all_over) {
            let Some(After::Library(code)) = first.after else {
                unreachable!("all are over")
            };
            tracing::info!(code, "exiting after a signal-started shutdown");
            end_process(code, None, first.hook.as_ref(), first.grace);
        }
    }
}

/// Looks at one watched run; `false` once there is nothing to watch.
fn look(watched: &mut Watched, now: Instant) -> bool {
    if let Some(After::Application { until, code }) = watched.after {
        if until.is_some_and(|until| now >= until) {
            let (signal, grace) = (watched.signal, watched.grace);
            let why = format!(
                "the application did not end the process within {grace:?} of the shutdown after {signal}; exiting with code {code}"
            );
            end_process(code, Some(why), watched.hook.as_ref(), grace);
        }
        return true;
    }
    if watched.after.is_some() {
        return true;
    }
    match (watched.published.report(), watched.published.after_run()) {
        (Some(_), Some(AfterRun::Nobody)) => return false,
        (Some(report), Some(AfterRun::Library)) => {
            watched.after = Some(After::Library(report.exit_code()));
        }
        (Some(report), _) => {
            watched.after = Some(After::Application {
                until: now.checked_add(watched.grace),
                code: report.exit_code(),
            });
        }
        (None, _) if watched.limit.is_some_and(|limit| now >= limit) => {
            let (signal, grace) = (watched.signal, watched.grace);
            let code = signal.exit_code();
            let (deadline, running) = match watched.owner.upgrade() {
                Some(compactor) => {
                    let running = compactor.still_running();
                    compactor.run_finals_before_exit();
                    (format!("{:?}", compactor.config().deadline), running)
                }
                None => ("?".to_owned(), "none".to_owned()),
            };
            let why = format!(
                "the shutdown after {signal} passed its deadline and grace ({deadline} + {grace:?}); exiting with code {code}; still running: {running}"
            );
            end_process(code, Some(why), watched.hook.as_ref(), grace);
        }
        (None, _) => {}
    }
    true
}
