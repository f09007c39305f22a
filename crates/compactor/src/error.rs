use std::time::Duration;

/// Why a registration or a configuration was refused.
///
/// A refused registration changes nothing: the cleanup closure is dropped
/// without being called and every task registered before stays registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shutdown has begun: the instance no longer takes new cleanups.
    #[error(
        "shutdown has already begun, so no more cleanups can be registered; release the resource directly instead"
    )]
    ShuttingDown,

    /// Another pending task already has this name.
    #[error(
        "a task named `{0}` is already registered; give each task a unique name, or unregister the old one first"
    )]
    DuplicateName(String),

    /// The task name starts with `compactor::`, which the library keeps for
    /// its own tasks.
    #[error(
        "task name `{0}` starts with `compactor::`, which is kept for the library's own tasks; choose another name"
    )]
    ReservedName(String),

    /// The task name was empty (or only white space).
    #[error("task names must not be empty; name the resource the task cleans up, e.g. \"db-pool\"")]
    EmptyName,

    /// The dependencies would form a cycle. `path` starts and ends with the
    /// same task, e.g. `["a", "b", "a"]`.
    #[error(
        "dependency cycle {}: cleanup order cannot be decided; remove one of these dependencies",
        path.join(" -> ")
    )]
    Cycle {
        /// The tasks on the cycle, in dependency order, first one repeated at the end.
        path: Vec<String>,
    },

    /// A one-shot cleanup (`cleanup::once`, a service) was given retries: a
    /// retry calls the cleanup again, which a `FnOnce` cannot be.
    #[error(
        "task `{task}` has a one-shot cleanup (`cleanup::once`, or a one-shot ready-made one) but was given retries; give it a cleanup that can be called again (a `FnMut` closure, called on each retry) or drop `.retries(..)`"
    )]
    RetriesNeedRepeatable {
        /// The task given retries.
        task: String,
    },

    /// A one-shot service (`TaskBuilder::service`) was given a supervision
    /// with restarts: a restart calls the service's closure again.
    #[error(
        "service `{task}` runs once but its supervision has restarts; register it with `restartable` (a closure called again for each restart), or drop `.restarts(..)`"
    )]
    RestartsNeedRestartable {
        /// The service.
        task: String,
    },

    /// A service was registered, or work spawned, outside a tokio runtime,
    /// which it needs to run on.
    #[error(
        "`{task}` needs a tokio runtime to run on; call it from inside one (in `#[tokio::main]`, or after `Runtime::enter`)"
    )]
    NoRuntime {
        /// The service, or `compactor::spawned` for spawned work.
        task: String,
    },

    /// A task chosen for an early run is not pending.
    #[error(
        "task `{task}` is not pending (unknown, unregistered, replaced or already run); nothing was released"
    )]
    NotPending {
        /// The task.
        task: String,
    },

    /// Tasks outside an early run depend on tasks in it, so would have to run
    /// before them.
    #[error(
        "tasks {} depend on tasks of the release and would have to run first; release them too, or unregister them; nothing was released",
        dependents.join(", ")
    )]
    EarlyRunHasDependents {
        /// The tasks that depend on the early run's tasks.
        dependents: Vec<String>,
    },

    /// A timeout of zero was given; an attempt could never finish.
    #[error(
        "task `{task}` was given a zero timeout; give it a positive duration, or leave it unset to use the instance's default"
    )]
    ZeroTimeout {
        /// The task whose timeout is zero.
        task: String,
    },

    /// A [`TaskHandle`](crate::TaskHandle) of another [`Compactor`](crate::Compactor)
    /// was used as a dependency.
    #[error(
        "task `{task}` depends on `{dependency}`, which belongs to another Compactor instance; dependencies must be registered on the same instance (or use a scope)"
    )]
    ForeignHandle {
        /// The task being registered.
        task: String,
        /// The name of the foreign task.
        dependency: String,
    },

    /// A dependency given by handle is no longer registered.
    #[error(
        "task `{task}` depends on `{dependency}`, which is not registered (it was unregistered); register the dependency again or drop the dependency"
    )]
    UnknownDependency {
        /// The task being registered.
        task: String,
        /// The missing dependency.
        dependency: String,
    },

    /// [`Compactor::init_global`](crate::Compactor::init_global) was called after
    /// the global instance already existed.
    #[error(
        "the global Compactor is already initialized; call Compactor::init_global once, before the first Compactor::global()"
    )]
    AlreadyInitialized,

    /// The signal listener could not be set up.
    #[error("cannot listen for signals: {problem}")]
    Signals {
        /// What went wrong.
        problem: String,
    },

    /// A builder option was out of range.
    #[error("invalid Compactor configuration: `{option}` {problem}")]
    InvalidConfig {
        /// The builder method at fault.
        option: &'static str,
        /// What is wrong with its value and what to give instead.
        problem: String,
    },
}

impl Error {
    pub(crate) fn zero_duration(option: &'static str, value: Duration) -> Option<Self> {
        value.is_zero().then(|| Error::InvalidConfig {
            option,
            problem: "must be greater than zero".to_owned(),
        })
    }

    /// The refusal of `Duration::MAX` (any duration too long to add to the
    /// clock), in the one wording every setting that refuses it uses:
    /// `why` says what it would do, `instead` what to give.
    pub(crate) fn no_limit_refused(option: &'static str, why: &str, instead: &str) -> Self {
        Error::InvalidConfig {
            option,
            problem: format!("cannot be `Duration::MAX` (no limit): {why}; {instead}"),
        }
    }
}
