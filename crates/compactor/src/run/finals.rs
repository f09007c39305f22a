//! The final phase's cleanups ([`Priority::Final`](crate::Priority::Final)),
//! held by the run's shared context rather than its plan: the runner takes
//! each as it starts it, and a process that must end before the run does (a
//! second signal, the deadline watchdog) takes the rest and runs them itself,
//! within the exit grace.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::RunContext;
use super::finish::Phases;
use super::scheduler::Runner;
use crate::config::Config;
use crate::plan::Plan;
use crate::report::SkipReason;
use crate::task::cleanup::{BoxCleanup, Start};

/// The longest a process ending first waits for its final tasks.
const FINALS_AT_MOST: Duration = Duration::from_secs(5);

/// The final tasks' cleanups not started yet: (task index, cleanup, its
/// own timeout if set); and, once a process ending first took them, whether
/// it is done with them (a second caller waits for the first).
#[derive(Default)]
pub(crate) struct Finals(
    Mutex<Vec<(u32, BoxCleanup, Option<Duration>)>>,
    Mutex<Option<bool>>,
    std::sync::Condvar,
);

impl Finals {
    /// Takes the final phase's cleanups out of `plan`.
    pub(crate) fn of(plan: &mut Plan) -> Finals {
        let Some(last) = plan.final_phase() else {
            return Finals::default();
        };
        let held: Vec<_> = plan
            .tasks
            .iter_mut()
            .enumerate()
            .filter(|(_, t)| t.phase as usize == last)
            .map(|(i, t)| (i as u32, t.node.take_cleanup(), t.node.spec.timeout))
            .collect();
        Finals(
            Mutex::new(held),
            Mutex::new(None),
            std::sync::Condvar::new(),
        )
    }

    /// The cleanup of final task `index`, unless taken already.
    pub(crate) fn take(&self, index: u32) -> Option<BoxCleanup> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = held.iter().position(|(i, ..)| *i == index)?;
        Some(held.swap_remove(at).1)
    }

    /// Every cleanup left, for the first caller; `None` for a later one,
    /// once the first is done with them (or `until` passed).
    fn take_all(&self, until: Option<Instant>) -> Option<Vec<(u32, BoxCleanup, Option<Duration>)>> {
        let mut state = self.1.lock().unwrap_or_else(PoisonError::into_inner);
        if state.is_none() {
            *state = Some(false);
            return Some(std::mem::take(
                &mut *self.0.lock().unwrap_or_else(PoisonError::into_inner),
            ));
        }
        while *state == Some(false) {
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            let wait = left.unwrap_or(Duration::from_secs(3600));
            state = self
                .2
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        None
    }

    /// Lets go of every cleanup left, a panic in a `Drop` contained: for a
    /// run that will never start them.
    pub(crate) fn let_go(&self) {
        for (_, cleanup, _) in self.take_all(None).unwrap_or_default() {
            let _ = super::contain::drop_contained(cleanup);
        }
        self.done();
    }

    fn done(&self) {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) = Some(true);
        self.2.notify_all();
    }
}

/// Where the final phase's time begins, if the run has one and a deadline:
/// the time kept for it ([`Config::kept_for_final`]) before the deadline.
pub(super) fn begin(
    plan: &Plan,
    config: &Config,
    t0: tokio::time::Instant,
) -> Option<(usize, tokio::time::Instant)> {
    let last = plan.final_phase()?;
    let deadline = super::clock::after(t0, config.deadline)?;
    let finals = plan.tasks.iter().filter(|t| t.phase as usize == last);
    let in_line = plan.phase_in_line(last, config.concurrency.get());
    let kept = config.kept_for_final(
        finals.map(|t| (t.node.spec.timeout, t.node.spec.kind.observes_token)),
        in_line,
    )?;
    Some((last, deadline.checked_sub(kept)?))
}

impl Runner {
    /// Where the final phase's time begins: the phases before it end as
    /// the deadline ends them, and the run goes on into it.
    pub(super) fn on_finals_time(&mut self, now: tokio::time::Instant) {
        if let Some((last, _)) = self.clock.finals.filter(|&(_, at)| now >= at) {
            self.clock.finals = None;
            self.expire(Phases::Before(last), SkipReason::Deadline);
            self.advance();
        }
    }
}

impl RunContext {
    /// For a process about to end before its run does: runs the final tasks
    /// the run has not started, each within its timeout (`default` unless
    /// set), on a runtime of their own, and waits for those the run has
    /// started; all within `grace`. Returns how many it ran.
    pub(crate) fn run_finals_now(&self, default: Duration, grace: Duration) -> usize {
        // An unlimited grace still ends the process.
        let grace = grace.min(FINALS_AT_MOST);
        let until = Instant::now().checked_add(grace);
        // A second caller (two threads ending the process) waits for the first.
        let Some(left) = self.finals.take_all(until) else {
            return 0;
        };
        let ran = left.len();
        let started: Vec<u32> = self.started_finals();
        if !left.is_empty() {
            super::contain::bounded("compactor-final", grace, move || run_all(left, default));
        }
        // Those the run started: their own end, within what is left.
        while started.iter().any(|&i| {
            !self.headway[i as usize]
                .finished
                .load(std::sync::atomic::Ordering::Acquire)
        }) && until.is_none_or(|until| Instant::now() < until)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.finals.done();
        ran
    }

    /// The final tasks the run has started (their cleanups are not held).
    fn started_finals(&self) -> Vec<u32> {
        let Some(last) = self.layout.phases.len().checked_sub(1) else {
            return Vec::new();
        };
        if self.layout.phases[last] != crate::Priority::Final {
            return Vec::new();
        }
        let held: Vec<u32> = {
            let held = self.finals.0.lock().unwrap_or_else(PoisonError::into_inner);
            held.iter().map(|(i, ..)| *i).collect()
        };
        (self.layout.phase_start(last)..self.names.len() as u32)
            .filter(|i| !held.contains(i))
            .filter(|&i| {
                self.headway[i as usize]
                    .attempts
                    .load(std::sync::atomic::Ordering::Acquire)
                    > 0
            })
            .collect()
    }
}

/// Runs `finals` at once on a current-thread runtime of this thread: the
/// async ones together, the blocking ones on threads of their own, each
/// within its timeout; panics contained.
fn run_all(finals: Vec<(u32, BoxCleanup, Option<Duration>)>, default: Duration) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let runs = finals.into_iter().map(|(_, mut cleanup, timeout)| {
            let timeout = timeout.unwrap_or(default);
            async move {
                let started =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cleanup.start(None)));
                match started {
                    Ok(Start::Async(run)) => {
                        let run =
                            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run));
                        let _ = tokio::time::timeout(timeout, run).await;
                    }
                    Ok(Start::Blocking) => {
                        let blocking = tokio::task::spawn_blocking(move || {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                cleanup.run_blocking(None)
                            }));
                        });
                        let _ = tokio::time::timeout(timeout, blocking).await;
                    }
                    Ok(Start::Released) | Err(_) => {}
                }
            }
        });
        futures::future::join_all(runs).await;
    });
    // Blocking ones still running are left to the process's end.
    runtime.shutdown_background();
}
