//! [`ShutdownPlan`]: what a shutdown would do now, and the longest it can
//! take.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::plan::{Edges, Plan};
use crate::priority::{Category, Priority};
use crate::registry::NodeCopy;
use crate::report::GraphWarning;

/// What a shutdown would do if it began now, worked out without running
/// anything: the phases in order, each task with its effective priority
/// (and the dependency that raised it), its dependencies, time limits and
/// retries, and the longest the run can take. From
/// [`Compactor::plan`](crate::Compactor::plan).
///
/// `Display` is a table; [`to_mermaid`](Self::to_mermaid) and
/// [`to_dot`](Self::to_dot) draw the graph; with the `serde` feature it
/// serializes (durations in milliseconds).
///
/// # The worst case
///
/// [`worst_case`](Self::worst_case) bounds the run from above, from the
/// settings alone:
///
/// - an attempt takes at most its timeout, plus the
///   [cancel grace](crate::Builder::cancel_grace) for a cleanup that observes
///   its token;
/// - a task takes at most `(retries + 1) × attempt` plus every backoff delay
///   before a retry, each at its largest (jitter only shortens them);
/// - a phase takes at most its longest chain of dependent tasks `C`; with a
///   [concurrency limit](crate::Builder::concurrency_limit) `m` below its
///   task count, at most `min(W, W / m + (1 − 1/m) × C)`, `W` the sum of its
///   tasks' worst cases (Graham's bound for a scheduler that never idles
///   while a task is ready); and never more than its
///   [phase budget](crate::Builder::phase_budget);
/// - phases run one after another, and the whole is capped by the
///   [deadline](crate::Builder::deadline).
///
/// [`critical_path`](Self::critical_path) names the tasks that make it up.
///
/// Tasks are kept by their number in the plan, with one table of names: a
/// plan of 100,000 tasks copies no name.
#[derive(Debug, Clone)]
pub struct ShutdownPlan {
    phases: Vec<PlanPhase>,
    names: Vec<Arc<str>>,
    tasks: Vec<Entry>,
    /// `precedes.of(t)`: the tasks `t` depends on (they run after it).
    precedes: Arc<Edges>,
    warnings: Vec<GraphWarning>,
    deadline: Duration,
    concurrency: Option<usize>,
    worst_case: Duration,
    unbounded: Duration,
    critical_path: Vec<u32>,
    inventory: super::Inventory,
    kept_for_final: Duration,
}

/// What the plan knows of one task, its name and edges apart.
#[derive(Debug, Clone)]
struct Entry {
    category: Category,
    priority: Priority,
    effective: Priority,
    raised_by: Option<u32>,
    phase: usize,
    timeout: Duration,
    retries: u32,
    backoff: Backoff,
    blocking: bool,
    observes_token: bool,
    worst_case: Duration,
}

/// One phase of a [`ShutdownPlan`]: the tasks of one effective priority.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanPhase {
    priority: Priority,
    /// The number of its first task.
    #[cfg_attr(feature = "serde", serde(skip))]
    first: usize,
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "budget_ms",
            serialize_with = "crate::report::optional_millis"
        )
    )]
    budget: Option<Duration>,
    tasks: usize,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "worst_case_ms", serialize_with = "crate::report::millis")
    )]
    worst_case: Duration,
}

impl PlanPhase {
    /// The phase's effective priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Its [phase budget](crate::Builder::phase_budget), if one is set.
    pub fn budget(&self) -> Option<Duration> {
        self.budget
    }

    /// How many tasks run in it.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// The longest it can take (see [`ShutdownPlan`]).
    pub fn worst_case(&self) -> Duration {
        self.worst_case
    }
}

/// One task of a [`ShutdownPlan`], borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct PlanTask<'a> {
    plan: &'a ShutdownPlan,
    index: usize,
}

impl<'a> PlanTask<'a> {
    fn entry(&self) -> &'a Entry {
        &self.plan.tasks[self.index]
    }

    /// The task's name.
    pub fn name(&self) -> &'a str {
        &self.plan.names[self.index]
    }

    /// Its number in the plan: its place in [`ShutdownPlan::tasks`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its kind of resource.
    pub fn category(&self) -> &'a Category {
        &self.entry().category
    }

    /// The priority it was registered with.
    pub fn priority(&self) -> Priority {
        self.entry().priority
    }

    /// The phase it runs in: its priority raised to that of the tasks it
    /// depends on (they run after it).
    pub fn effective_priority(&self) -> Priority {
        self.entry().effective
    }

    /// The dependency whose priority raised this task's, if one did.
    pub fn raised_by(&self) -> Option<&'a str> {
        let plan = self.plan;
        self.entry().raised_by.map(|d| &*plan.names[d as usize])
    }

    /// Its phase, an index into [`ShutdownPlan::phases`].
    pub fn phase(&self) -> usize {
        self.entry().phase
    }

    /// The tasks it depends on, as the shutdown resolves them: they start
    /// only after it has finished.
    pub fn depends_on(&self) -> impl Iterator<Item = PlanTask<'a>> + 'a {
        let plan = self.plan;
        plan.precedes.of(self.index as u32).map(move |d| PlanTask {
            plan,
            index: d as usize,
        })
    }

    /// The timeout of each attempt (its own, or the instance's default).
    pub fn timeout(&self) -> Duration {
        self.entry().timeout
    }

    /// How many times it is retried after a failed attempt.
    pub fn retries(&self) -> u32 {
        self.entry().retries
    }

    /// The delays between its attempts (its own, or the instance's).
    pub fn backoff(&self) -> Backoff {
        self.entry().backoff
    }

    /// Whether its cleanup runs on a thread of its own.
    pub fn is_blocking(&self) -> bool {
        self.entry().blocking
    }

    /// Whether its cleanup gets a cancellation token, and so the cancel grace
    /// after a timeout.
    pub fn observes_token(&self) -> bool {
        self.entry().observes_token
    }

    /// The longest it can take, all attempts and delays included.
    pub fn worst_case(&self) -> Duration {
        self.entry().worst_case
    }
}

impl ShutdownPlan {
    /// The plan of `plan`'s tasks (numbered phase by phase), which it takes
    /// apart.
    pub(crate) fn new(mut plan: Plan<NodeCopy>, config: &Config) -> ShutdownPlan {
        let n = plan.tasks.len();
        let mut tasks: Vec<Entry> = Vec::with_capacity(n);
        for planned in &mut plan.tasks {
            let spec = &mut planned.node.spec;
            let kind = spec.kind;
            let timeout = spec.timeout.unwrap_or(config.default_timeout);
            let backoff = spec.backoff.as_deref().copied().unwrap_or(config.backoff);
            let grace = match kind.observes_token {
                true => config.cancel_grace,
                false => Duration::ZERO,
            };
            tasks.push(Entry {
                category: std::mem::take(&mut spec.category),
                priority: spec.priority,
                effective: planned.effective,
                raised_by: None,
                phase: planned.phase as usize,
                timeout,
                retries: spec.retries,
                backoff,
                blocking: kind.blocking,
                observes_token: kind.observes_token,
                worst_case: task_worst_case(timeout.saturating_add(grace), spec.retries, &backoff),
            });
        }
        for i in 0..n {
            let own = tasks[i].priority;
            tasks[i].raised_by = plan
                .precedes
                .of(i as u32)
                .max_by_key(|&d| (tasks[d as usize].effective, std::cmp::Reverse(d)))
                .filter(|&d| tasks[d as usize].effective > own);
        }
        let concurrency =
            (config.concurrency.get() < usize::MAX).then_some(config.concurrency.get());
        let (phases, unbounded, critical_path) = phases_worst_case(&plan, &tasks, config);
        let final_phase = plan.final_phase();
        let kept = final_phase.and_then(|p| {
            // The runner's reckoning (`Config::kept_for_final`).
            let finals = tasks.iter().filter(|t| t.phase == p);
            let in_line = plan.phase_in_line(p, config.concurrency.get());
            config.kept_for_final(finals.map(|t| (Some(t.timeout), t.observes_token)), in_line)
        });
        let mut worst_case = unbounded.min(config.deadline);
        if let (Some(p), Some(kept)) = (final_phase, kept) {
            // The tasks before the final phase are stopped where its time
            // begins; the final ones run after them.
            let before = unbounded.saturating_sub(phases[p].worst_case);
            let cut = config.deadline.saturating_sub(kept);
            worst_case = before
                .min(cut)
                .saturating_add(phases[p].worst_case)
                .min(config.deadline);
        }
        ShutdownPlan {
            phases,
            names: std::mem::take(&mut plan.names),
            tasks,
            precedes: plan.precedes.clone(),
            warnings: std::mem::take(&mut plan.warnings),
            deadline: config.deadline,
            concurrency,
            worst_case,
            unbounded,
            kept_for_final: kept.unwrap_or_default(),
            critical_path,
            inventory: super::Inventory::default(),
        }
    }

    pub(crate) fn with_inventory(mut self, inventory: super::Inventory) -> ShutdownPlan {
        self.inventory = inventory;
        self
    }

    /// The time kept for the [final](Priority::Final) phase before the
    /// deadline: where the deadline is near, the other tasks are stopped
    /// this long before it (its longest task's timeout and grace, at most
    /// half the deadline). Zero without final tasks.
    pub fn kept_for_final(&self) -> Duration {
        self.kept_for_final
    }

    /// The pending tasks by category and by scope, scopes' own tasks
    /// included (recursively), and the check that every expected kind of
    /// resource has a cleanup ([`Inventory::validate_coverage`](super::Inventory::validate_coverage)).
    pub fn inventory(&self) -> &super::Inventory {
        &self.inventory
    }

    /// The phases, in the order they run.
    pub fn phases(&self) -> &[PlanPhase] {
        &self.phases
    }

    /// Every task, phase by phase, in registration order within a phase.
    pub fn tasks(&self) -> impl ExactSizeIterator<Item = PlanTask<'_>> + '_ {
        (0..self.tasks.len()).map(move |index| PlanTask { plan: self, index })
    }

    /// The tasks of phase `phase` (an index into [`phases`](Self::phases)).
    pub fn tasks_in(&self, phase: usize) -> impl ExactSizeIterator<Item = PlanTask<'_>> + '_ {
        let range = self
            .phases
            .get(phase)
            .map_or(0..0, |p| p.first..p.first + p.tasks);
        range.map(move |index| PlanTask { plan: self, index })
    }

    /// The task called `name`.
    pub fn task(&self, name: &str) -> Option<PlanTask<'_>> {
        let index = self.names.iter().position(|n| &**n == name)?;
        Some(PlanTask { plan: self, index })
    }

    /// What the planner found wrong with the graph (unknown dependencies,
    /// cycles it broke), as the report would show.
    pub fn warnings(&self) -> &[GraphWarning] {
        &self.warnings
    }

    /// The instance's deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The instance's [concurrency limit](crate::Builder::concurrency_limit);
    /// `None` for none.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.concurrency
    }

    /// The longest the run can take (see [the formula](Self#the-worst-case)):
    /// never more than the deadline.
    pub fn worst_case(&self) -> Duration {
        self.worst_case
    }

    /// The longest the tasks' own limits let the run take, before the
    /// deadline caps it. Above [`deadline`](Self::deadline), the deadline may
    /// cut cleanups short.
    pub fn worst_case_without_deadline(&self) -> Duration {
        self.unbounded
    }

    /// The tasks along which the worst case adds up: each phase's longest
    /// chain, phase by phase (a phase bounded by its budget or by the
    /// concurrency limit still names its longest chain).
    pub fn critical_path(&self) -> impl Iterator<Item = PlanTask<'_>> + '_ {
        self.critical_path.iter().map(move |&t| PlanTask {
            plan: self,
            index: t as usize,
        })
    }
}

/// As JSON: `deadline_ms`, `concurrency`, `worst_case_ms`,
/// `worst_case_without_deadline_ms`, `critical_path` (names), `phases`,
/// `warnings`, and `tasks`, each with `name`, `category`, `priority`,
/// `effective_priority`, `raised_by`, `phase`, `depends_on` (names),
/// `timeout_ms`, `retries`, `backoff`, `blocking`, `observes_token`,
/// `worst_case_ms`.
#[cfg(feature = "serde")]
impl serde::Serialize for ShutdownPlan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let critical: Vec<&str> = self.critical_path().map(|t| t.name()).collect();
        let mut s = serializer.serialize_struct("ShutdownPlan", 8)?;
        s.serialize_field("deadline_ms", &ms(self.deadline))?;
        s.serialize_field("concurrency", &self.concurrency)?;
        s.serialize_field("worst_case_ms", &ms(self.worst_case))?;
        s.serialize_field("worst_case_without_deadline_ms", &ms(self.unbounded))?;
        s.serialize_field("critical_path", &critical)?;
        s.serialize_field("phases", &self.phases)?;
        s.serialize_field("warnings", &self.warnings)?;
        s.serialize_field("tasks", &Tasks(self))?;
        s.end()
    }
}

#[cfg(feature = "serde")]
struct Tasks<'a>(&'a ShutdownPlan);

#[cfg(feature = "serde")]
impl serde::Serialize for Tasks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.tasks())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PlanTask<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let depends_on: Vec<&str> = self.depends_on().map(|d| d.name()).collect();
        let mut s = serializer.serialize_struct("PlanTask", 13)?;
        s.serialize_field("name", self.name())?;
        s.serialize_field("category", self.category())?;
        s.serialize_field("priority", &self.priority())?;
        s.serialize_field("effective_priority", &self.effective_priority())?;
        s.serialize_field("raised_by", &self.raised_by())?;
        s.serialize_field("phase", &self.phase())?;
        s.serialize_field("depends_on", &depends_on)?;
        s.serialize_field("timeout_ms", &ms(self.timeout()))?;
        s.serialize_field("retries", &self.retries())?;
        s.serialize_field("backoff", &self.backoff())?;
        s.serialize_field("blocking", &self.is_blocking())?;
        s.serialize_field("observes_token", &self.observes_token())?;
        s.serialize_field("worst_case_ms", &ms(self.worst_case()))?;
        s.end()
    }
}

/// The worst case of one task: `retries + 1` attempts of `attempt` each, and
/// the largest delay before each retry.
fn task_worst_case(attempt: Duration, retries: u32, backoff: &Backoff) -> Duration {
    // The run makes `u32::MAX` attempts at most (see `Runner::is_last`).
    let retries = retries.min(u32::MAX - 1);
    let attempts = attempt.saturating_mul(retries).saturating_add(attempt);
    // The delays double until they reach their cap, then stay there: at
    // most 32 distinct ones, the rest counted by multiplication.
    let mut delays = Duration::ZERO;
    let mut retry = 1;
    while retry <= retries {
        let delay = backoff.delay(retry);
        if retry > 32 || delay == backoff.delay(retry + 1) {
            delays = delays.saturating_add(delay.saturating_mul(retries - retry + 1));
            break;
        }
        delays = delays.saturating_add(delay);
        retry += 1;
    }
    attempts.saturating_add(delays)
}

/// Each phase's worst case, their sum, and the critical path.
fn phases_worst_case(
    plan: &Plan<NodeCopy>,
    tasks: &[Entry],
    config: &Config,
) -> (Vec<PlanPhase>, Duration, Vec<u32>) {
    let n = tasks.len();
    // The longest chain ending at each task within its phase, by a walk in
    // dependency order (Kahn's): `finish[t]` and the task before it.
    let mut remaining = vec![0u32; n];
    for t in 0..n as u32 {
        for d in plan.precedes.of(t) {
            remaining[d as usize] += 1;
        }
    }
    let mut ready: Vec<u32> = (0..n as u32)
        .filter(|&t| remaining[t as usize] == 0)
        .collect();
    let mut finish = vec![Duration::ZERO; n];
    let mut before: Vec<Option<u32>> = vec![None; n];
    while let Some(t) = ready.pop() {
        let ti = t as usize;
        finish[ti] = finish[ti].saturating_add(tasks[ti].worst_case);
        for d in plan.precedes.of(t) {
            let di = d as usize;
            if tasks[di].phase == tasks[ti].phase && finish[ti] > finish[di] {
                finish[di] = finish[ti];
                before[di] = Some(t);
            }
            remaining[di] -= 1;
            if remaining[di] == 0 {
                ready.push(d);
            }
        }
    }
    let limit = config.concurrency.get();
    let mut phases = Vec::with_capacity(plan.phases.len());
    let mut total = Duration::ZERO;
    let mut path = Vec::new();
    // Tasks are numbered phase by phase: each phase is a range.
    let mut start = 0;
    for (p, &priority) in plan.phases.iter().enumerate() {
        let end = start + tasks[start..].iter().take_while(|t| t.phase == p).count();
        let members = start..end;
        start = end;
        let longest = members
            .clone()
            .max_by_key(|&t| (finish[t], std::cmp::Reverse(t)));
        let chain = longest.map_or(Duration::ZERO, |t| finish[t]);
        let work = members
            .clone()
            .fold(Duration::ZERO, |w, t| w.saturating_add(tasks[t].worst_case));
        let mut worst = match limit < members.len() {
            true => work.min(graham(work, chain, limit)),
            false => chain,
        };
        let budget = config.phase_budget(priority);
        if let Some(budget) = budget {
            worst = worst.min(budget);
        }
        let first = path.len();
        let mut at = longest.map(|t| t as u32);
        while let Some(t) = at {
            path.push(t);
            at = before[t as usize];
        }
        path[first..].reverse();
        total = total.saturating_add(worst);
        phases.push(PlanPhase {
            priority,
            first: members.start,
            budget,
            tasks: members.len(),
            worst_case: worst,
        });
    }
    (phases, total, path)
}

/// `W / m + (1 − 1/m) × C`, in whole nanoseconds, saturating.
fn graham(work: Duration, chain: Duration, m: usize) -> Duration {
    let m = m as u128;
    let nanos = work.as_nanos() / m + chain.as_nanos() - chain.as_nanos() / m;
    match u64::try_from(nanos / 1_000_000_000) {
        Ok(secs) => Duration::new(secs, (nanos % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}
