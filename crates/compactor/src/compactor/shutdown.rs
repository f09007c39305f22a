//! Beginning a shutdown and driving its run: the gate closes, the token
//! fires, the registry is drained into a plan, and the run goes on a live
//! runtime until its report is published.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tracing::Instrument;

use super::Compactor;
use super::published::publish;
use crate::event::Event;
use crate::priority::{Category, Priority};
use crate::registry::{Taken, TaskNode};
use crate::task::Spec;

/// The name of the drain delay's task.
pub(crate) const DRAIN_DELAY_TASK: &str = "compactor::drain-delay";
/// How much longer than the delay its task's timeout is.
const DRAIN_MARGIN: std::time::Duration = std::time::Duration::from_millis(100);
use crate::plan::Plan;
use crate::report::{GraphWarning, ShutdownReason, ShutdownReport};
use crate::run::contain::drop_contained;
use crate::run::membership::current_chain;
use crate::run::{Head, RunContext, Runner, RunnerParts, Ticker};

impl Compactor {
    /// The plan of `tasks` (in registration order) with the drain delay's
    /// task first, where one is set: `compactor::drain-delay`, a phase of
    /// its own before every other, which waits out the delay and then ends
    /// the drain token.
    pub(crate) fn plan_of<N: TaskNode>(&self, mut tasks: Vec<Taken<N>>) -> Plan<N> {
        let delay = self.inner.config.drain_delay;
        if delay.is_zero() {
            return Plan::new(tasks);
        }
        let drain = self.inner.gates.drain.clone();
        let cleanup = crate::task::cleanup::once(move || async move {
            // Ends the drain token however the task ends (cut off too).
            let _ends = drain.drop_guard();
            tokio::time::sleep(delay).await;
        });
        // A dependency on the delay would make it wait for that task (a
        // task depended on runs after its dependents): it means nothing.
        let mut ignored = Vec::new();
        for task in &mut tasks {
            let on_delay = |d: &crate::task::Dep| &*d.name == DRAIN_DELAY_TASK;
            if task.node.deps().iter().any(on_delay) {
                task.node.retain_deps(|d| !on_delay(d));
                ignored.push(GraphWarning::DrainDelayDependency {
                    task: task.name.to_string(),
                });
            }
        }
        let spec = Spec {
            priority: Priority::Custom(i32::MAX),
            // The sleep ends first; the margin keeps a timer's race from
            // reporting it timed out.
            timeout: Some(delay.saturating_add(DRAIN_MARGIN)),
            category: Category::Timer,
            ..Spec::default()
        };
        // Id 0: before every registration (ids start at 1).
        tasks.insert(
            0,
            Taken {
                id: 0,
                name: std::sync::Arc::from(DRAIN_DELAY_TASK),
                node: N::own(spec, cleanup),
            },
        );
        let mut plan = Plan::new(tasks);
        plan.warnings.splice(0..0, ignored);
        plan
    }

    pub(super) fn run_context(&self, plan: &mut Plan, t0: Instant) -> Arc<RunContext> {
        let mut chain: Vec<u64> = current_chain().map(|c| c.to_vec()).unwrap_or_default();
        chain.push(self.inner.id);
        Arc::new(RunContext::new(
            chain.into(),
            self.inner.out.events.clone(),
            plan,
            t0,
        ))
    }

    /// What a runner of this instance is handed; a shutdown adds its
    /// snapshots, early runs and ticker, an early run its halt.
    pub(super) fn runner_parts(
        &self,
        ctx: Arc<RunContext>,
        reason: ShutdownReason,
        t0: Instant,
    ) -> RunnerParts {
        RunnerParts {
            ctx,
            config: self.inner.config.clone(),
            head: Head {
                reason,
                duration: std::time::Duration::ZERO,
                warnings: Vec::new(),
                policy: self.inner.signals.exit,
                runtime_tasks: None,
            },
            t0,
            snapshots: None,
            halt: None,
            halted: Some(self.inner.gates.halted.clone()),
            services: Some(self.inner.running.services.clone()),
            early_runs: Vec::new(),
            earlier: Vec::new(),
            ticker: None,
        }
    }

    /// What shows the run's progress: the log lines and the terminal line,
    /// and for an instance that listens, the process layer's notifications.
    fn ticker(&self, tasks: usize) -> Option<Ticker> {
        let signals = &self.inner.signals;
        let listening = signals.armed.load(Ordering::Acquire);
        let mut tickers: Vec<Ticker> = Vec::new();
        tickers.extend(crate::inspect::ticker(
            &self.inner.config,
            listening,
            self.inner.id,
        ));
        if let Some(hooks) = signals.hooks.get().filter(|_| listening) {
            tickers.extend((hooks.run_begins)(self, tasks));
        }
        Ticker::joined(tickers)
    }

    pub(crate) fn begin(&self, reason: ShutdownReason) -> bool {
        let Some(started) = self.start(reason) else {
            return false;
        };
        self.drive(started, false);
        true
    }

    /// The report of a run that cannot be asked for one: every task of it
    /// pending.
    pub(crate) fn stalled_report(&self) -> ShutdownReport {
        let names = self
            .inner
            .running
            .run
            .get()
            .map(|ctx| ctx.names.clone())
            .unwrap_or_default();
        crate::run::stalled_report(&names, self.inner.signals.exit)
    }

    /// Drives a begun shutdown: here, or on the library's own runtime.
    pub(crate) fn drive(&self, started: Started, own: bool) {
        // Built here, from user-visible state (and with tracing, whose
        // layers are the user's): a panic must not leave a shutdown begun
        // that no run will finish.
        let run = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| started.build())) {
            Ok(run) => run,
            Err(panic) => {
                let message = crate::run::contain::message_of(panic);
                tracing::error!(panic = %message, "the shutdown's run could not be built");
                self.inner.gates.drain.cancel();
                if let Some(ctx) = self.current_run() {
                    ctx.finals.let_go();
                }
                self.inner
                    .out
                    .published
                    .report
                    .send_replace(Some(self.stalled_report()));
                return;
            }
        };
        if let Some(ctx) = self.inner.running.run.get() {
            ctx.driven_here(own);
        }
        crate::run::spawn_run(run, own);
    }

    /// Begins the shutdown (closes registration, fires the token) and
    /// returns what the run needs, or `None` if it had begun already.
    pub(crate) fn start(&self, reason: ShutdownReason) -> Option<Started> {
        let inner = &self.inner;
        if inner.gates.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        let t0 = Instant::now();
        if matches!(reason, ShutdownReason::Signal(_)) {
            inner.signals.started_run.store(true, Ordering::Release);
        }
        inner.registry.close();
        inner.gates.token.cancel();
        if inner.config.drain_delay.is_zero() {
            inner.gates.drain.cancel();
        }
        Some(Started {
            compactor: self.clone(),
            reason,
            t0,
        })
    }
}

/// A shutdown begun, its run still to be driven.
#[must_use = "the shutdown has begun: its run must be driven, or no report comes"]
pub(crate) struct Started {
    compactor: Compactor,
    reason: ShutdownReason,
    t0: Instant,
}

impl Started {
    /// Builds the shutdown's run: drains the registry into a plan and
    /// returns the future that drives the run until its report is published.
    pub(crate) fn build(self) -> impl Future<Output = ()> + Send + 'static {
        let Started {
            compactor,
            reason,
            t0,
        } = self;
        let span = tracing::info_span!(
            "shutdown",
            instance = compactor.inner.id,
            %reason,
            tasks = tracing::field::Empty,
            clean = tracing::field::Empty,
        );
        let mut plan = compactor.plan_of(compactor.inner.registry.take_all());
        let ctx = compactor.run_context(&mut plan, t0);
        let _ = compactor.inner.running.run.set(ctx.clone());
        ctx.refresh_listening();
        ctx.emit(|| Event::ShutdownStarted {
            reason: reason.clone(),
            tasks: plan.tasks.len(),
        });
        span.record("tasks", plan.tasks.len());
        {
            let _entered = span.enter();
            tracing::info!(tasks = plan.tasks.len(), %reason, "shutdown started");
            for warning in &plan.warnings {
                tracing::warn!(%warning, "dependency graph");
            }
        }
        let early_runs = compactor
            .early_runs()
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        let snapshots = Some(compactor.inner.running.snapshots.clone());
        let ticker = compactor.ticker(plan.tasks.len());
        let parts = RunnerParts {
            snapshots,
            early_runs,
            earlier: compactor.left_reports(),
            ticker,
            ..compactor.runner_parts(ctx.clone(), reason, t0)
        };
        let runner = Runner::new(plan, parts);
        let inner = compactor.inner;
        let finish_span = span.clone();
        let finish = Box::new(move |report: ShutdownReport, spent: Plan| {
            let _entered = finish_span.enter();
            // However the run ended, nothing waits on the delay any more.
            inner.gates.drain.cancel();
            publish(inner, &ctx, report);
            let _ = drop_contained(spent);
        });
        // Made here, not in the future, so a run dropped before it ever ran
        // still goes on elsewhere.
        let driven = crate::run::drive(runner, finish);
        async move {
            driven.await;
        }
        .instrument(span)
    }
}
