//! [`Progress`]: a run as it stands, read from any thread without asking
//! the runner (so it answers while every runtime worker is blocked).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::priority::Priority;
use crate::report::{Millis, shown};
use crate::run::{RunContext, Standing};

/// How far a shutdown has got: the running tasks, the waiting ones with
/// what each waits for, the finished count and the time left. From
/// [`Compactor::progress`](crate::Compactor::progress): live during the run,
/// final after it. `Display` is one line, as the library logs it; with the
/// `serde` feature it serializes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Progress {
    #[cfg_attr(
        feature = "serde",
        serde(rename = "elapsed_ms", serialize_with = "crate::report::millis")
    )]
    pub(crate) elapsed: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "deadline_ms", serialize_with = "crate::report::millis")
    )]
    pub(crate) deadline: Duration,
    pub(crate) total: usize,
    pub(crate) finished: usize,
    pub(crate) phase: Option<Priority>,
    pub(crate) running: Vec<RunningTask>,
    pub(crate) waiting: Vec<WaitingTask>,
    pub(crate) over: bool,
}

/// A task that has begun and not finished, in a [`Progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RunningTask {
    pub(crate) name: Arc<str>,
    pub(crate) attempt: u32,
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "attempt_elapsed_ms",
            serialize_with = "crate::report::optional_millis"
        )
    )]
    pub(crate) elapsed: Option<Duration>,
}

/// A task that has not begun, in a [`Progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WaitingTask {
    pub(crate) name: Arc<str>,
    pub(crate) waits_for: Vec<Arc<str>>,
    pub(crate) waits_for_phase: bool,
    pub(crate) held_by: Option<Arc<str>>,
}

impl Progress {
    pub(crate) fn of(ctx: &RunContext, deadline: Duration) -> Progress {
        let observed = ctx.observe();
        let names = &ctx.names;
        let holders = observed.holders();
        let mut running = Vec::new();
        let mut waiting = Vec::new();
        let mut finished = 0;
        for (i, standing) in observed.standings.iter().enumerate() {
            let name = || names[i].clone();
            match *standing {
                Standing::Finished => finished += 1,
                Standing::Running { attempt, since } => running.push(RunningTask {
                    name: name(),
                    attempt,
                    elapsed: Some(since),
                }),
                Standing::BackingOff { attempt } => running.push(RunningTask {
                    name: name(),
                    attempt,
                    elapsed: None,
                }),
                Standing::Waiting => {
                    let t = i as u32;
                    waiting.push(WaitingTask {
                        name: name(),
                        waits_for: observed
                            .waits_for(t)
                            .map(|d| names[d as usize].clone())
                            .collect(),
                        waits_for_phase: observed.waits_for_phase(t),
                        held_by: holders[i].map(|h| names[h as usize].clone()),
                    });
                }
            }
        }
        let over = ctx.over.load(Ordering::Acquire);
        Progress {
            elapsed: observed.now.saturating_duration_since(ctx.t0),
            deadline,
            total: names.len(),
            finished,
            phase: (!over)
                .then(|| ctx.layout.phases.get(observed.current).copied())
                .flatten(),
            running,
            waiting,
            over,
        }
    }

    /// Time since the run began.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The time left to the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.elapsed)
    }

    /// The instance's deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// How many tasks the run has.
    pub fn total(&self) -> usize {
        self.total
    }

    /// How many have finished, however they ended.
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// The phase under way; `None` once the run is over.
    pub fn phase(&self) -> Option<Priority> {
        self.phase
    }

    /// The tasks that have begun and not finished, in plan order.
    pub fn running(&self) -> &[RunningTask] {
        &self.running
    }

    /// The tasks that have not begun, in plan order.
    pub fn waiting(&self) -> &[WaitingTask] {
        &self.waiting
    }

    /// Whether the run is over (its report is out).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The chain from waiting task `task` to the running task that holds it
    /// up: the task it waits for, the one that one waits for, and so on.
    /// Empty when it waits for nothing, or is not waiting.
    pub fn chain(&self, task: &str) -> Vec<&str> {
        let waiting: HashMap<&str, &WaitingTask> =
            self.waiting.iter().map(|w| (&*w.name, w)).collect();
        let running: HashSet<&str> = self.running.iter().map(|r| &*r.name).collect();
        let mut chain = Vec::new();
        let mut at = waiting.get(task).copied();
        while let Some(w) = at {
            let next = w
                .waits_for
                .iter()
                .find(|d| running.contains(&***d))
                .or(w.waits_for.first())
                .or(w.held_by.as_ref().filter(|_| w.waits_for_phase));
            let Some(next) = next else { break };
            if chain.len() >= self.total {
                break;
            }
            chain.push(&**next);
            at = waiting.get(&**next).copied();
        }
        chain
    }
}

impl RunningTask {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attempt under way (or, between attempts, the last one).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long the attempt under way has run; `None` between attempts
    /// (waiting out the backoff).
    pub fn elapsed(&self) -> Option<Duration> {
        self.elapsed
    }
}

impl WaitingTask {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unfinished tasks it must wait for (they run before it).
    pub fn waits_for(&self) -> impl Iterator<Item = &str> {
        self.waits_for.iter().map(|d| &**d)
    }

    /// Whether it waits for its phase to begin (every task it waits for
    /// may be done).
    pub fn waits_for_phase(&self) -> bool {
        self.waits_for_phase
    }

    /// The running task at the end of its chain (see [`Progress::chain`]).
    pub fn held_by(&self) -> Option<&str> {
        self.held_by.as_deref()
    }
}

/// How many running tasks a line names at most.
const LINE_NAMES: usize = 5;

/// One line; with `{:#}`, a line for every running and waiting task too.
impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.detail(f);
        }
        write!(
            f,
            "shutdown: {}/{} finished, {} of {} left",
            self.finished,
            self.total,
            Millis(self.remaining()),
            Millis(self.deadline)
        )?;
        if !self.running.is_empty() {
            f.write_str("; running: ")?;
            for (k, r) in self.running.iter().take(LINE_NAMES).enumerate() {
                if k > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", shown(&r.name, 40))?;
                match r.elapsed {
                    Some(e) if r.attempt > 1 => {
                        write!(f, " (attempt {}, {})", r.attempt, Millis(e))?;
                    }
                    Some(e) => write!(f, " ({})", Millis(e))?,
                    None => write!(f, " (retrying after attempt {})", r.attempt)?,
                }
            }
            if self.running.len() > LINE_NAMES {
                write!(f, " and {} more", self.running.len() - LINE_NAMES)?;
            }
        }
        if let Some(first) = self.waiting.first() {
            write!(f, "; {} waiting", self.waiting.len())?;
            let chain = self.chain(&first.name);
            if !chain.is_empty() {
                let shown_chain: Vec<String> = chain.iter().map(|n| shown(n, 40)).collect();
                write!(
                    f,
                    " ({} on {})",
                    shown(&first.name, 40),
                    shown_chain.join(" on ")
                )?;
            }
        }
        Ok(())
    }
}

impl Progress {
    fn detail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        if self.over {
            f.write_str(" (the shutdown is over)")?;
        }
        for r in &self.running {
            write!(
                f,
                "\n  running  {}  attempt {}",
                shown(&r.name, 40),
                r.attempt
            )?;
            match r.elapsed {
                Some(e) => write!(f, ", {}", Millis(e))?,
                None => f.write_str(", waiting out its backoff")?,
            }
        }
        for w in self.waiting.iter().take(DETAIL_WAITING) {
            write!(f, "\n  waiting  {}", shown(&w.name, 40))?;
            let chain: Vec<String> = self.chain(&w.name).iter().map(|n| shown(n, 40)).collect();
            if !chain.is_empty() {
                write!(f, " on {}", chain.join(" on "))?;
            }
        }
        if self.waiting.len() > DETAIL_WAITING {
            write!(
                f,
                "\n  and {} more waiting",
                self.waiting.len() - DETAIL_WAITING
            )?;
        }
        Ok(())
    }
}

/// How many waiting tasks the detailed form lists.
const DETAIL_WAITING: usize = 50;
