//! The run as an observer sees it from any thread, without asking the
//! runner: where each task stands, what a waiting task waits for, and the
//! running task at the end of that chain. Read from the atomics the runner
//! and the attempts keep, so it answers while every worker is blocked.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::RunContext;
use crate::plan::{Edges, Plan};
use crate::priority::Priority;
use crate::report::{NAME_WIDTH, links, shown};

/// The plan's shape as the run's observers read it.
pub(crate) struct Layout {
    /// The tasks that start only after each task.
    precedes: Arc<Edges>,
    /// The tasks that must finish before each task: built when first asked.
    preceded_by: OnceLock<Edges>,
    /// The first task of each phase, and the task count at the end.
    phase_starts: Box<[u32]>,
    /// Each phase's effective priority.
    pub(crate) phases: Box<[Priority]>,
}

impl Layout {
    /// The first task of phase `phase`.
    pub(super) fn phase_start(&self, phase: usize) -> u32 {
        self.phase_starts[phase]
    }

    pub(super) fn of(plan: &Plan) -> Layout {
        let mut phase_starts = Vec::with_capacity(plan.phases.len() + 1);
        for (i, task) in plan.tasks.iter().enumerate() {
            while phase_starts.len() <= task.phase as usize {
                phase_starts.push(i as u32);
            }
        }
        while phase_starts.len() <= plan.phases.len() {
            phase_starts.push(plan.tasks.len() as u32);
        }
        Layout {
            precedes: plan.precedes.clone(),
            preceded_by: OnceLock::new(),
            phase_starts: phase_starts.into(),
            phases: plan.phases.clone().into(),
        }
    }

    fn tasks(&self) -> usize {
        self.phase_starts.last().map_or(0, |&n| n as usize)
    }

    /// The phase of task `i`.
    pub(crate) fn phase_of(&self, i: u32) -> usize {
        self.phase_starts
            .partition_point(|&start| start <= i)
            .saturating_sub(1)
    }

    /// The tasks that must finish before task `i` starts.
    pub(crate) fn preceded_by(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        self.preceded_by
            .get_or_init(|| self.precedes.turned(self.tasks()))
            .of(i)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    Waiting,
    /// An attempt runs, begun `since` ago.
    Running {
        attempt: u32,
        since: Duration,
    },
    /// Between a failed attempt and the next.
    BackingOff {
        attempt: u32,
    },
    Finished,
}

impl Standing {
    /// Begun and not finished: running or between attempts.
    pub(crate) fn is_active(self) -> bool {
        matches!(self, Standing::Running { .. } | Standing::BackingOff { .. })
    }
}

impl RunContext {
    /// Where task `i` stands at `now`.
    pub(crate) fn standing(&self, i: u32, now: Instant) -> Standing {
        let p = &self.headway[i as usize];
        if p.finished.load(Ordering::Acquire) {
            return Standing::Finished;
        }
        let attempt = p.attempts.load(Ordering::Acquire);
        if attempt == 0 {
            return Standing::Waiting;
        }
        if p.backing_off.load(Ordering::Acquire) {
            return Standing::BackingOff { attempt };
        }
        let began = p.attempt_began.load(Ordering::Acquire).saturating_sub(1);
        Standing::Running {
            attempt,
            since: now.saturating_duration_since(self.t0 + Duration::from_nanos(began)),
        }
    }

    /// Notes that attempt `number` of task `i` begins at `at`, or, with
    /// `backing_off`, that the task waits out its backoff after it.
    pub(crate) fn note_attempt(&self, i: usize, number: u32, at: Instant, backing_off: bool) {
        let p = &self.headway[i];
        if backing_off {
            p.backing_off.store(true, Ordering::Release);
            return;
        }
        let since = at.saturating_duration_since(self.t0).as_nanos();
        let nanos = u64::try_from(since).unwrap_or(u64::MAX).saturating_add(1);
        p.attempt_began.store(nanos, Ordering::Release);
        p.attempts.store(number, Ordering::Release);
        p.backing_off.store(false, Ordering::Release);
    }

    /// What still runs, for the stderr line of a forced exit: the active
    /// tasks, then the chain of the first few waiting ones to what holds
    /// them ("waiting: cache on http"). "none" when nothing runs.
    pub(crate) fn still_running(&self) -> String {
        const NAMED: usize = 3;
        const ACTIVE: usize = 10;
        let observed = self.observe();
        let name = |t: u32| &*self.names[t as usize];
        let active: Vec<u32> = (0..self.names.len() as u32)
            .filter(|&t| observed.standings[t as usize].is_active())
            .collect();
        let named: Vec<String> = active
            .iter()
            .take(ACTIVE)
            .map(|&t| shown(name(t), NAME_WIDTH))
            .collect();
        let mut line = match named.is_empty() {
            true => "none".to_owned(),
            false => named.join(", "),
        };
        if active.len() > ACTIVE {
            line.push_str(&format!(" and {} more", active.len() - ACTIVE));
        }
        let waiting: Vec<u32> = (0..self.names.len() as u32)
            .filter(|&t| observed.standings[t as usize] == Standing::Waiting)
            .collect();
        let chains: Vec<String> = waiting
            .iter()
            .take(NAMED)
            .map(|&t| {
                let mut chain = vec![name(t)];
                chain.extend(observed.chain(t).into_iter().map(name));
                links(&chain)
            })
            .collect();
        if !chains.is_empty() {
            line.push_str("; waiting: ");
            line.push_str(&chains.join(", "));
            if waiting.len() > NAMED {
                line.push_str(&format!(" and {} more", waiting.len() - NAMED));
            }
        }
        line
    }

    /// Every task's standing, read once.
    pub(crate) fn observe(&self) -> Observed<'_> {
        let now = Instant::now();
        let standings = (0..self.names.len() as u32)
            .map(|i| self.standing(i, now))
            .collect();
        let mut observed = Observed {
            ctx: self,
            now,
            standings,
            current: self.current_phase.load(Ordering::Acquire) as usize,
            holder: None,
        };
        observed.holder = observed.phase_holder();
        observed
    }
}

/// The run at one moment.
pub(crate) struct Observed<'a> {
    pub(crate) ctx: &'a RunContext,
    pub(crate) now: Instant,
    pub(crate) standings: Vec<Standing>,
    /// The runner's phase.
    pub(crate) current: usize,
    /// What a task waiting for its phase waits on: a task of the current one.
    holder: Option<u32>,
}

impl Observed<'_> {
    fn unfinished(&self, t: u32) -> bool {
        self.standings[t as usize] != Standing::Finished
    }

    /// The unfinished tasks `t` waits for directly.
    pub(crate) fn waits_for(&self, t: u32) -> impl Iterator<Item = u32> + '_ {
        self.ctx
            .layout
            .preceded_by(t)
            .filter(move |&d| self.unfinished(d))
    }

    /// Whether `t` waits for its phase to begin rather than for a task.
    pub(crate) fn waits_for_phase(&self, t: u32) -> bool {
        self.ctx.layout.phase_of(t) > self.current
    }

    /// An active task of the current phase, else an unfinished one.
    fn phase_holder(&self) -> Option<u32> {
        let starts = &self.ctx.layout.phase_starts;
        let range = *starts.get(self.current)?..*starts.get(self.current + 1)?;
        let mut unfinished = range.filter(|&t| self.unfinished(t)).peekable();
        let first = unfinished.peek().copied();
        unfinished
            .find(|&t| self.standings[t as usize].is_active())
            .or(first)
    }

    /// The next step from waiting task `t` towards what holds it: a task it
    /// waits for (an active one where there is a choice), or, before its
    /// phase, a task of the current phase.
    pub(crate) fn step(&self, t: u32) -> Option<u32> {
        let mut waits = self.waits_for(t).peekable();
        let first = waits.peek().copied();
        waits
            .find(|&d| self.standings[d as usize].is_active())
            .or(first)
            .or_else(|| self.waits_for_phase(t).then_some(self.holder).flatten())
    }

    /// For every waiting task, the active task at the end of its chain;
    /// linear in tasks and edges.
    pub(crate) fn holders(&self) -> Vec<Option<u32>> {
        let n = self.standings.len();
        let mut held: Vec<Option<Option<u32>>> = vec![None; n];
        let mut path = Vec::new();
        for start in 0..n as u32 {
            if self.standings[start as usize] != Standing::Waiting || held[start as usize].is_some()
            {
                continue;
            }
            let mut at = start;
            let end = loop {
                path.push(at);
                match self.step(at) {
                    None => break None,
                    Some(next) if self.standings[next as usize] != Standing::Waiting => {
                        break Some(next);
                    }
                    Some(next) => match held[next as usize] {
                        Some(known) => break known,
                        // A plan has no cycle; a torn read must not loop.
                        None if path.len() > n => break None,
                        None => at = next,
                    },
                }
            };
            for t in path.drain(..) {
                held[t as usize] = Some(end);
            }
        }
        held.into_iter().map(Option::flatten).collect()
    }

    /// The chain from waiting task `t` to the active task that holds it,
    /// `t` excluded.
    pub(crate) fn chain(&self, t: u32) -> Vec<u32> {
        let mut chain = Vec::new();
        let mut at = t;
        while let Some(next) = self.step(at) {
            chain.push(next);
            if self.standings[next as usize] != Standing::Waiting
                || chain.len() > self.standings.len()
            {
                break;
            }
            at = next;
        }
        chain
    }
}
