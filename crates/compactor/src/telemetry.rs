//! Metrics on the [`metrics`](https://docs.rs/metrics) facade, with the
//! feature `metrics`: any exporter the application installs (Prometheus,
//! OpenTelemetry, StatsD) gets them. Without the feature every function here
//! is empty and inlined away.
//!
//! A run records its tasks once its report is made (one pass over the
//! report, a handle per category and outcome), so a task costs the run two
//! atomic operations on a gauge while it runs and nothing else.
//!
//! | name | kind | unit | attributes | what |
//! |---|---|---|---|---|
//! | `compactor.task.finished` | counter | `{task}` | `compactor.task.category`, `compactor.task.outcome` | tasks that reached their outcome, in shutdowns and early runs |
//! | `compactor.task.duration` | histogram | `s` | `compactor.task.category`, `compactor.task.outcome` | from a task's first attempt to its end (tasks that started) |
//! | `compactor.task.retries` | counter | `{retry}` | `compactor.task.category` | attempts after the first |
//! | `compactor.service.restarts` | counter | `{restart}` | | restarts of restartable services |
//! | `compactor.shutdown.duration` | histogram | `s` | `compactor.shutdown.reason`, `compactor.shutdown.clean` | shutdowns of root instances (a scope's is a task of its parent's), from their start to the report |
//! | `compactor.tasks.pending` | gauge | `{task}` | | tasks registered and waiting for a shutdown, in every instance |
//! | `compactor.tasks.running` | gauge | `{task}` | | tasks started and not finished, in every run |

#[cfg(feature = "metrics")]
mod on {
    use std::time::Duration;

    use metrics::{Gauge, Unit};

    use crate::report::{ShutdownReport, TaskReport};

    const FINISHED: &str = "compactor.task.finished";
    const DURATION: &str = "compactor.task.duration";
    const RETRIES: &str = "compactor.task.retries";
    const RESTARTS: &str = "compactor.service.restarts";
    const SHUTDOWN: &str = "compactor.shutdown.duration";
    const PENDING: &str = "compactor.tasks.pending";
    const RUNNING: &str = "compactor.tasks.running";

    fn describe() {
        metrics::describe_counter!(FINISHED, Unit::Count, "tasks that reached their outcome");
        metrics::describe_histogram!(
            DURATION,
            Unit::Seconds,
            "from a task's first attempt to its end"
        );
        metrics::describe_counter!(RETRIES, Unit::Count, "attempts after a task's first");
        metrics::describe_counter!(RESTARTS, Unit::Count, "restarts of restartable services");
        metrics::describe_histogram!(
            SHUTDOWN,
            Unit::Seconds,
            "shutdowns, from their start to the report"
        );
        metrics::describe_gauge!(
            PENDING,
            Unit::Count,
            "tasks registered and waiting for a shutdown"
        );
        metrics::describe_gauge!(RUNNING, Unit::Count, "tasks started and not finished");
    }

    /// Tasks registered (`delta` > 0) or gone from the registries.
    pub(crate) fn pending(delta: isize) {
        if delta != 0 {
            metrics::gauge!(PENDING).increment(delta as f64);
        }
    }

    /// The running gauge, for one run.
    pub(crate) struct Running(Gauge);

    impl Running {
        pub(crate) fn new() -> Running {
            Running(metrics::gauge!(RUNNING))
        }

        pub(crate) fn started(&self) {
            self.0.increment(1.0);
        }

        pub(crate) fn finished(&self) {
            self.0.decrement(1.0);
        }
    }

    pub(crate) fn restarted() {
        metrics::counter!(RESTARTS).increment(1);
    }

    /// A run's own tasks, as its report has them (not an early run's it
    /// merged, which that run recorded).
    pub(crate) fn reported(tasks: &[TaskReport]) {
        describe();
        // (category, outcome, finished, retries): a handful per run.
        let mut sums: Vec<(String, &'static str, u64, u64)> = Vec::new();
        let mut durations: Vec<(usize, Duration)> = Vec::new();
        for task in tasks {
            let category = task.category().as_str();
            let outcome = task.outcome().kind();
            let at = match sums
                .iter()
                .position(|(c, o, ..)| c == category && *o == outcome)
            {
                Some(at) => at,
                None => {
                    sums.push((category.to_owned(), outcome, 0, 0));
                    sums.len() - 1
                }
            };
            sums[at].2 += 1;
            sums[at].3 += u64::from(task.attempts().saturating_sub(1));
            if task.started_at().is_some() {
                durations.push((at, task.duration()));
            }
        }
        let mut histograms = Vec::with_capacity(sums.len());
        for (category, outcome, finished, retries) in &sums {
            let labels = [
                ("compactor.task.category", category.clone()),
                ("compactor.task.outcome", (*outcome).to_owned()),
            ];
            metrics::counter!(FINISHED, &labels).increment(*finished);
            if *retries > 0 {
                let category = [("compactor.task.category", category.clone())];
                metrics::counter!(RETRIES, &category).increment(*retries);
            }
            histograms.push(metrics::histogram!(DURATION, &labels));
        }
        for (at, duration) in durations {
            histograms[at].record(duration.as_secs_f64());
        }
    }

    /// The report of a root instance's shutdown (a scope's is one of its
    /// parent's tasks).
    pub(crate) fn shutdown_reported(report: &ShutdownReport) {
        let labels = [
            (
                "compactor.shutdown.reason",
                report.reason().kind().to_owned(),
            ),
            ("compactor.shutdown.clean", report.is_clean().to_string()),
        ];
        metrics::histogram!(SHUTDOWN, &labels).record(report.duration().as_secs_f64());
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use crate::report::{ShutdownReport, TaskReport};

    #[inline(always)]
    pub(crate) fn pending(_delta: isize) {}

    pub(crate) struct Running;

    impl Running {
        #[inline(always)]
        pub(crate) fn new() -> Running {
            Running
        }

        #[inline(always)]
        pub(crate) fn started(&self) {}

        #[inline(always)]
        pub(crate) fn finished(&self) {}
    }

    #[inline(always)]
    pub(crate) fn restarted() {}

    #[inline(always)]
    pub(crate) fn reported(_tasks: &[TaskReport]) {}

    #[inline(always)]
    pub(crate) fn shutdown_reported(_report: &ShutdownReport) {}
}

pub(crate) use on::{Running, pending, reported, restarted, shutdown_reported};
