//! [`ShutdownPlan`]: what a shutdown would do now, and the longest it can
//! take.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::plan::Plan;
use crate::priority::{Category, Priority};
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
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ShutdownPlan {
    pub(super) phases: Vec<PlanPhase>,
    pub(super) tasks: Vec<PlanTask>,
    pub(super) warnings: Vec<GraphWarning>,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "deadline_ms", serialize_with = "crate::report::millis")
    )]
    pub(super) deadline: Duration,
    pub(super) concurrency: Option<usize>,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "worst_case_ms", serialize_with = "crate::report::millis")
    )]
    pub(super) worst_case: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "worst_case_without_deadline_ms",
            serialize_with = "crate::report::millis"
        )
    )]
    pub(super) unbounded: Duration,
    pub(super) critical_path: Vec<Arc<str>>,
}

/// One phase of a [`ShutdownPlan`]: the tasks of one effective priority.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanPhase {
    pub(super) priority: Priority,
    /// The index of its first task in [`ShutdownPlan::tasks`].
    #[cfg_attr(feature = "serde", serde(skip))]
    pub(super) first: usize,
    #[cfg_attr(
        feature = "serde",
        serde(
            rename = "budget_ms",
            serialize_with = "crate::report::optional_millis"
        )
    )]
    pub(super) budget: Option<Duration>,
    pub(super) tasks: usize,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "worst_case_ms", serialize_with = "crate::report::millis")
    )]
    pub(super) worst_case: Duration,
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

/// One task of a [`ShutdownPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanTask {
    pub(super) name: Arc<str>,
    pub(super) category: Category,
    pub(super) priority: Priority,
    pub(super) effective_priority: Priority,
    pub(super) raised_by: Option<Arc<str>>,
    pub(super) phase: usize,
    pub(super) depends_on: Vec<Arc<str>>,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "timeout_ms", serialize_with = "crate::report::millis")
    )]
    pub(super) timeout: Duration,
    pub(super) retries: u32,
    pub(super) backoff: Backoff,
    pub(super) blocking: bool,
    pub(super) observes_token: bool,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "worst_case_ms", serialize_with = "crate::report::millis")
    )]
    pub(super) worst_case: Duration,
}

impl PlanTask {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind of resource.
    pub fn category(&self) -> &Category {
        &self.category
    }

    /// The priority it was registered with.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The phase it runs in: its priority raised to that of the tasks it
    /// depends on (they run after it).
    pub fn effective_priority(&self) -> Priority {
        self.effective_priority
    }

    /// The dependency whose priority raised this task's, if one did.
    pub fn raised_by(&self) -> Option<&str> {
        self.raised_by.as_deref()
    }

    /// Its phase, an index into [`ShutdownPlan::phases`].
    pub fn phase(&self) -> usize {
        self.phase
    }

    /// The tasks it depends on, as the shutdown resolves them: they start
    /// only after it has finished.
    pub fn depends_on(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().map(|d| &**d)
    }

    /// The timeout of each attempt (its own, or the instance's default).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many times it is retried after a failed attempt.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delays between its attempts (its own, or the instance's).
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Whether its cleanup runs on a thread of its own.
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// Whether its cleanup gets a cancellation token, and so the cancel grace
    /// after a timeout.
    pub fn observes_token(&self) -> bool {
        self.observes_token
    }

    /// The longest it can take, all attempts and delays included.
    pub fn worst_case(&self) -> Duration {
        self.worst_case
    }
}

impl ShutdownPlan {
    /// The plan of `plan`'s tasks (numbered phase by phase), which it takes
    /// apart.
    pub(crate) fn new(mut plan: Plan, config: &Config) -> ShutdownPlan {
        let n = plan.tasks.len();
        let names = std::mem::take(&mut plan.names);
        // Each task's own name moves in after: one shared placeholder until then.
        let unnamed: Arc<str> = Arc::from("");
        let mut tasks: Vec<PlanTask> = Vec::with_capacity(n);
        for (i, planned) in plan.tasks.iter_mut().enumerate() {
            let kind = planned.node.spec.kind;
            let spec = &mut planned.node.spec;
            let timeout = spec.timeout.unwrap_or(config.default_timeout);
            let backoff = spec.backoff.as_deref().copied().unwrap_or(config.backoff);
            let grace = match kind.observes_token {
                true => config.cancel_grace,
                false => Duration::ZERO,
            };
            tasks.push(PlanTask {
                name: unnamed.clone(),
                category: std::mem::take(&mut spec.category),
                priority: spec.priority,
                effective_priority: planned.effective,
                raised_by: None,
                phase: planned.phase as usize,
                depends_on: plan
                    .precedes
                    .of(i as u32)
                    .map(|d| names[d as usize].clone())
                    .collect(),
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
                .max_by_key(|&d| (tasks[d as usize].effective_priority, std::cmp::Reverse(d)))
                .filter(|&d| tasks[d as usize].effective_priority > own)
                .map(|d| names[d as usize].clone());
        }
        for (task, name) in tasks.iter_mut().zip(names) {
            task.name = name;
        }
        let concurrency =
            (config.concurrency.get() < usize::MAX).then_some(config.concurrency.get());
        let (phases, unbounded, critical_path) = phases_worst_case(&plan, &tasks, config);
        ShutdownPlan {
            phases,
            tasks,
            warnings: std::mem::take(&mut plan.warnings),
            deadline: config.deadline,
            concurrency,
            worst_case: unbounded.min(config.deadline),
            unbounded,
            critical_path,
        }
    }

    /// The phases, in the order they run.
    pub fn phases(&self) -> &[PlanPhase] {
        &self.phases
    }

    /// Every task, phase by phase, in registration order within a phase.
    pub fn tasks(&self) -> &[PlanTask] {
        &self.tasks
    }

    /// The tasks of phase `phase` (an index into [`phases`](Self::phases)),
    pub fn tasks_in(&self, phase: usize) -> &[PlanTask] {
        self.phases
            .get(phase)
            .and_then(|p| self.tasks.get(p.first..p.first + p.tasks))
            .unwrap_or_default()
    }

    /// The task called `name`.
    pub fn task(&self, name: &str) -> Option<&PlanTask> {
        self.tasks.iter().find(|t| t.name() == name)
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
    pub fn critical_path(&self) -> impl Iterator<Item = &str> {
        self.critical_path.iter().map(|n| &**n)
    }
}

/// The worst case of one task: `retries + 1` attempts of `attempt` each, and
/// the largest delay before each retry.
fn task_worst_case(attempt: Duration, retries: u32, backoff: &Backoff) -> Duration {
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
    plan: &Plan,
    tasks: &[PlanTask],
    config: &Config,
) -> (Vec<PlanPhase>, Duration, Vec<Arc<str>>) {
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
            path.push(tasks[t as usize].name.clone());
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
