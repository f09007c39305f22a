//! Why a shutdown began, and what it had to work around in the graph.

use std::fmt;

use crate::priority::Category;
use crate::signal::Signal;

/// What started a shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ShutdownReason {
    /// [`Compactor::shutdown`](crate::Compactor::shutdown) or
    /// [`Compactor::trigger`](crate::Compactor::trigger).
    Manual,
    /// A process signal (see [`Compactor::listen_for_signals`](crate::Compactor::listen_for_signals)).
    Signal(Signal),
    /// A panic, with the hook of [`Builder::shutdown_on_panic`](crate::Builder::shutdown_on_panic),
    /// or of the service of [`run_until_shutdown`](crate::Compactor::run_until_shutdown):
    /// the thread and the panic message.
    Panic(String),
    /// The service given to [`Compactor::run_until_shutdown`](crate::Compactor::run_until_shutdown)
    /// ended by itself.
    ServiceEnded,
    /// A service ended with an error: `service `path`: ` and its text
    /// (`main`'s: the text alone). See [`Supervision`](crate::service::Supervision).
    ServiceFailed(String),
    /// Every service had ended: the whole ends when its parts do (see
    /// [`compactor::service`](crate::service)).
    ServicesEnded,
    /// [`Compactor::abort`](crate::Compactor::abort) before any shutdown.
    Aborted,
    /// Not a shutdown: one category released early with
    /// [`Compactor::run_early`](crate::Compactor::run_early).
    Category(Category),
    /// Not a shutdown: chosen tasks (how many) released early with
    /// [`Compactor::run_early`](crate::Compactor::run_early).
    Early(usize),
}

impl ShutdownReason {
    /// The reason's kind, as a metric's attribute (`service_failed`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ShutdownReason::Manual => "manual",
            ShutdownReason::Signal(_) => "signal",
            ShutdownReason::Panic(_) => "panic",
            ShutdownReason::ServiceEnded => "service_ended",
            ShutdownReason::ServiceFailed(_) => "service_failed",
            ShutdownReason::ServicesEnded => "services_ended",
            ShutdownReason::Aborted => "aborted",
            ShutdownReason::Category(_) => "category",
            ShutdownReason::Early(_) => "early",
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Manual => f.write_str("manual"),
            ShutdownReason::Signal(signal) => write!(f, "{signal}"),
            ShutdownReason::Panic(message) => write!(f, "panic: {message}"),
            ShutdownReason::ServiceEnded => f.write_str("service ended"),
            ShutdownReason::ServiceFailed(error) => write!(f, "service failed: {error}"),
            ShutdownReason::ServicesEnded => f.write_str("every service ended"),
            ShutdownReason::Aborted => f.write_str("aborted"),
            ShutdownReason::Category(category) => write!(f, "category {category}"),
            ShutdownReason::Early(tasks) => write!(f, "early run of {tasks} task(s)"),
        }
    }
}

/// Something about the dependency graph that the run had to work around.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum GraphWarning {
    /// A dependency by name that no task had at shutdown; it was ignored.
    UnknownDependency {
        /// The task that declared the dependency.
        task: String,
        /// The name no task had.
        dependency: String,
    },
    /// A cycle that could not be refused at registration (tasks registered
    /// concurrently with name dependencies on each other). The dependency
    /// declared by the latest-registered task on the cycle was dropped.
    CycleBroken {
        /// The cycle, first task repeated at the end.
        path: Vec<String>,
        /// The dependency that was dropped: `(task, dependency)`.
        dropped: (String, String),
    },
    /// A dependency on the drain delay's task (`compactor::drain-delay`),
    /// which runs before every other task: it was ignored (kept, it would
    /// make the delay wait for the task instead).
    DrainDelayDependency {
        /// The task that declared the dependency.
        task: String,
    },
}

impl fmt::Display for GraphWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphWarning::UnknownDependency { task, dependency } => {
                write!(
                    f,
                    "task `{task}` depends on `{dependency}`, which was never registered; dependency ignored"
                )
            }
            GraphWarning::CycleBroken { path, dropped } => write!(
                f,
                "dependency cycle {}; dropped `{}` -> `{}`",
                path.join(" -> "),
                dropped.0,
                dropped.1
            ),
            GraphWarning::DrainDelayDependency { task } => write!(
                f,
                "task `{task}` depends on `compactor::drain-delay`, which runs before every task; dependency ignored"
            ),
        }
    }
}
