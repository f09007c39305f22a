//! [`Progress`]: a run as it stands, read from any thread without asking
//! the runner (so it answers while every runtime worker is blocked). Tasks
//! are kept by their number in the run and named from the run's own table
//! of names when asked, so a read touches no task's name.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::priority::Priority;
use crate::report::{Millis, NAME_WIDTH, links, shown};
use crate::run::{RunContext, Standing};

/// How far a shutdown has got: the running tasks, the waiting ones with
/// what each waits for, the finished count and the time left. From
/// [`Compactor::progress`](crate::Compactor::progress): live during the run,
/// final after it. `Display` is one line, as the library logs it (`{:#}`
/// adds a line per task); with the `serde` feature it serializes.
#[derive(Debug, Clone)]
pub struct Progress {
    elapsed: Duration,
    deadline: Duration,
    finished: usize,
    phase: Option<Priority>,
    over: bool,
    names: Arc<[Arc<str>]>,
    running: Vec<Active>,
    waiting: Vec<Waiting>,
    /// The tasks each waiting one waits for, one after another.
    waits: Vec<u32>,
    /// For each task, its place in `waiting` (`u32::MAX` if it does not
    /// wait): made when a chain is first asked for.
    slots: std::sync::OnceLock<Vec<u32>>,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    task: u32,
    attempt: u32,
    elapsed: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    task: u32,
    /// Its range in `waits`.
    waits: (u32, u32),
    waits_for_phase: bool,
    held_by: Option<u32>,
    /// The first step of its chain, by the run's own rule (see
    /// `Observed::step`), as the report and the stderr lines take it.
    next: Option<u32>,
}

/// A task that has begun and not finished, in a [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningTask<'a> {
    name: &'a str,
    attempt: u32,
    elapsed: Option<Duration>,
}

/// A task that has not begun, in a [`Progress`].
#[derive(Debug, Clone, Copy)]
pub struct WaitingTask<'a> {
    progress: &'a Progress,
    waiting: Waiting,
}

impl Progress {
    pub(crate) fn of(ctx: &RunContext, deadline: Duration) -> Progress {
        let observed = ctx.observe();
        let holders = observed.holders();
        let mut running = Vec::new();
        let mut waiting = Vec::new();
        let mut waits = Vec::new();
        let mut finished = 0;
        for (i, standing) in observed.standings.iter().enumerate() {
            let task = i as u32;
            match *standing {
                Standing::Finished => finished += 1,
                Standing::Running { attempt, since } => running.push(Active {
                    task,
                    attempt,
                    elapsed: Some(since),
                }),
                Standing::BackingOff { attempt } => running.push(Active {
                    task,
                    attempt,
                    elapsed: None,
                }),
                Standing::Waiting => {
                    let start = waits.len() as u32;
                    waits.extend(observed.waits_for(task));
                    waiting.push(Waiting {
                        task,
                        waits: (start, waits.len() as u32),
                        waits_for_phase: observed.waits_for_phase(task),
                        held_by: holders[i],
                        next: observed.step(task),
                    });
                }
            }
        }
        let ended = ctx.ended_after();
        let over = ended.is_some();
        Progress {
            // Final after the run: its time stops with it.
            elapsed: ended.unwrap_or_else(|| observed.now.saturating_duration_since(ctx.t0)),
            deadline,
            finished,
            phase: (!over)
                .then(|| ctx.layout.phases.get(observed.current).copied())
                .flatten(),
            over,
            names: ctx.names.clone(),
            running,
            waiting,
            waits,
            slots: std::sync::OnceLock::new(),
        }
    }

    fn name(&self, task: u32) -> &str {
        &self.names[task as usize]
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
        self.names.len()
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
    pub fn running(&self) -> impl ExactSizeIterator<Item = RunningTask<'_>> + '_ {
        self.running.iter().map(|a| RunningTask {
            name: self.name(a.task),
            attempt: a.attempt,
            elapsed: a.elapsed,
        })
    }

    /// The tasks that have not begun, in plan order.
    pub fn waiting(&self) -> impl ExactSizeIterator<Item = WaitingTask<'_>> + '_ {
        self.waiting.iter().map(|&waiting| WaitingTask {
            progress: self,
            waiting,
        })
    }

    /// Whether the run is over (its report is out).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The chain from waiting task `task` to the running task that holds it
    /// up: the task it waits for, the one that one waits for, and so on.
    /// Empty when it waits for nothing, or is not waiting.
    pub fn chain(&self, task: &str) -> Vec<&str> {
        match self.waiting.iter().find(|w| self.name(w.task) == task) {
            Some(w) => self.chain_of(w).map(|t| self.name(t)).collect(),
            None => Vec::new(),
        }
    }

    /// The tasks of a waiting task's chain (see [`chain`](Self::chain)).
    fn chain_of<'a>(&'a self, from: &Waiting) -> impl Iterator<Item = u32> + 'a {
        let slot = self.slots.get_or_init(|| {
            let mut slot = vec![u32::MAX; self.names.len()];
            for (k, w) in self.waiting.iter().enumerate() {
                slot[w.task as usize] = k as u32;
            }
            slot
        });
        let mut at = Some(*from);
        let mut steps = 0;
        std::iter::from_fn(move || {
            let next = at.take()?.next?;
            steps += 1;
            if steps <= self.names.len() {
                at = self.waiting.get(slot[next as usize] as usize).copied();
            }
            Some(next)
        })
    }
}

impl<'a> RunningTask<'a> {
    /// The task's name.
    pub fn name(&self) -> &'a str {
        self.name
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

impl<'a> WaitingTask<'a> {
    /// The task's name.
    pub fn name(&self) -> &'a str {
        self.progress.name(self.waiting.task)
    }

    /// The unfinished tasks it must wait for (they run before it).
    pub fn waits_for(&self) -> impl Iterator<Item = &'a str> + 'a {
        let progress = self.progress;
        let (start, end) = self.waiting.waits;
        progress.waits[start as usize..end as usize]
            .iter()
            .map(move |&t| progress.name(t))
    }

    /// Whether it waits for its phase to begin (every task it waits for
    /// may be done).
    pub fn waits_for_phase(&self) -> bool {
        self.waiting.waits_for_phase
    }

    /// The running task at the end of its chain (see [`Progress::chain`]).
    pub fn held_by(&self) -> Option<&'a str> {
        self.waiting.held_by.map(|t| self.progress.name(t))
    }

    /// The chain from it to the running task that holds it up.
    pub fn chain(&self) -> Vec<&'a str> {
        let progress = self.progress;
        progress
            .chain_of(&self.waiting)
            .map(|t| progress.name(t))
            .collect()
    }
}

/// How many running tasks a line names at most.
const LINE_NAMES: usize = 5;
/// How many waiting tasks the detailed form lists.
const DETAIL_WAITING: usize = 50;

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
            self.total(),
            Millis(self.remaining()),
            Millis(self.deadline)
        )?;
        if !self.running.is_empty() {
            f.write_str("; running: ")?;
            for (k, r) in self.running().take(LINE_NAMES).enumerate() {
                if k > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", shown(r.name, NAME_WIDTH))?;
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
        if let Some(first) = self.waiting().next() {
            write!(f, "; {} waiting", self.waiting.len())?;
            let chain = first.chain();
            if !chain.is_empty() {
                write!(
                    f,
                    " ({} on {})",
                    shown(first.name(), NAME_WIDTH),
                    links(&chain)
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
        for r in self.running() {
            write!(
                f,
                "\n  running  {}  attempt {}",
                shown(r.name, NAME_WIDTH),
                r.attempt
            )?;
            match r.elapsed {
                Some(e) => write!(f, ", {}", Millis(e))?,
                None => f.write_str(", waiting out its backoff")?,
            }
        }
        for w in self.waiting().take(DETAIL_WAITING) {
            write!(f, "\n  waiting  {}", shown(w.name(), NAME_WIDTH))?;
            if let Some(first) = w.waits_for().next() {
                write!(f, " on {}", shown(first, NAME_WIDTH))?;
            }
            if let Some(holder) = w.held_by() {
                write!(f, ", held by {}", shown(holder, NAME_WIDTH))?;
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

/// As JSON: `elapsed_ms`, `deadline_ms`, `total`, `finished`, `phase`,
/// `over`, `running` (`name`, `attempt`, `attempt_elapsed_ms`) and `waiting`
/// (`name`, `waits_for`, `waits_for_phase`, `held_by`).
#[cfg(feature = "serde")]
impl serde::Serialize for Progress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;

        #[derive(serde::Serialize)]
        struct Running<'a> {
            name: &'a str,
            attempt: u32,
            #[serde(
                rename = "attempt_elapsed_ms",
                serialize_with = "crate::report::optional_millis"
            )]
            elapsed: Option<Duration>,
        }
        #[derive(serde::Serialize)]
        struct Waits<'a> {
            name: &'a str,
            waits_for: Vec<&'a str>,
            waits_for_phase: bool,
            held_by: Option<&'a str>,
        }
        let running: Vec<Running<'_>> = self
            .running()
            .map(|r| Running {
                name: r.name,
                attempt: r.attempt,
                elapsed: r.elapsed,
            })
            .collect();
        let waiting: Vec<Waits<'_>> = self
            .waiting()
            .map(|w| Waits {
                name: w.name(),
                waits_for: w.waits_for().collect(),
                waits_for_phase: w.waits_for_phase(),
                held_by: w.held_by(),
            })
            .collect();
        let mut s = serializer.serialize_struct("Progress", 8)?;
        s.serialize_field("elapsed_ms", &(self.elapsed.as_secs_f64() * 1e3))?;
        s.serialize_field("deadline_ms", &(self.deadline.as_secs_f64() * 1e3))?;
        s.serialize_field("total", &self.total())?;
        s.serialize_field("finished", &self.finished)?;
        s.serialize_field("phase", &self.phase)?;
        s.serialize_field("over", &self.over)?;
        s.serialize_field("running", &running)?;
        s.serialize_field("waiting", &waiting)?;
        s.end()
    }
}
