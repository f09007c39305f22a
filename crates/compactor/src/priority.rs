use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The shutdown phase of a task.
///
/// Phases run from the highest priority to the lowest: no task starts while a
/// task of strictly higher *effective* priority is unfinished. A task that
/// must run before a higher-priority task (because it
/// [depends on](crate::TaskBuilder::depends_on) that task) is pulled up to that
/// priority, so dependencies and phases never conflict. See `docs/design.md`
/// for a worked example.
///
/// `Critical > High > Normal > Low > Final`, and [`Priority::Custom`] places a task
/// anywhere on the same scale: `Low` is -100, `Normal` 0, `High` 100 and
/// `Critical` 200 ([`Final`](Priority::Final), the last flush, is the
/// scale's lowest point). Priorities compare and test equal by that value, so
/// `Priority::Custom(100) == Priority::High`.
///
/// # Examples
///
/// ```
/// use compactor::Priority;
///
/// assert!(Priority::Critical > Priority::High);
/// assert!(Priority::Custom(50) > Priority::Normal);
/// assert_eq!(Priority::default(), Priority::Normal);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub enum Priority {
    /// Runs first: stop taking traffic, fail readiness checks.
    Critical,
    /// Before ordinary resources: drain listeners, stop background workers.
    High,
    /// The default phase.
    #[default]
    Normal,
    /// Late: remove temporary files, close what everything else used.
    Low,
    /// The last flush, after every other task, and sure to run: when the
    /// deadline or a phase budget cuts the run short, the other tasks are
    /// stopped early enough to leave the final tasks their timeouts (the
    /// longest, with its cancel grace, is kept before the deadline: at most
    /// half the deadline). Each is bounded by its own timeout, as any task.
    /// A second signal's forced exit and the deadline watchdog run those
    /// not started yet (all at once, without their retries or their order
    /// among themselves) and wait for those running, before the process
    /// ends, within the [exit grace](crate::Builder::exit_grace) (at most
    /// 5 s). An [abort](crate::Compactor::abort) skips them. They are the
    /// root instance's last flush: a scope's final tasks are its own last
    /// phase, skipped if its parent cuts the scope off, and a forced exit
    /// runs only those of the instance the signal reached (not its scopes',
    /// nor those of an early run under way, which the final phase does not
    /// wait for either).
    /// For OpenTelemetry providers' `shutdown()`, tracing-appender guards
    /// and log flushes. The lowest point of the scale (`i32::MIN`). A final
    /// task that must run before another (it depends on it) is pulled up to
    /// that task's phase, and is no longer final: give final tasks no
    /// dependencies.
    Final,
    /// Any point on the scale (`Low` = -100, `Normal` = 0, `High` = 100, `Critical` = 200).
    Custom(i32),
}

impl Priority {
    /// The position of this priority on the numeric scale.
    pub const fn value(self) -> i32 {
        match self {
            Priority::Critical => 200,
            Priority::High => 100,
            Priority::Normal => 0,
            Priority::Low => -100,
            Priority::Final => i32::MIN,
            Priority::Custom(v) => v,
        }
    }

    /// The named priority with this value, or `Custom(value)`.
    pub const fn from_value(value: i32) -> Self {
        match value {
            200 => Priority::Critical,
            100 => Priority::High,
            0 => Priority::Normal,
            -100 => Priority::Low,
            i32::MIN => Priority::Final,
            v => Priority::Custom(v),
        }
    }
}

impl PartialEq for Priority {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl Eq for Priority {}

impl std::hash::Hash for Priority {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value().hash(state);
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value().cmp(&other.value())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Priority::from_value(self.value()) {
            Priority::Critical => f.write_str("critical"),
            Priority::High => f.write_str("high"),
            Priority::Normal => f.write_str("normal"),
            Priority::Low => f.write_str("low"),
            Priority::Final => f.write_str("final"),
            Priority::Custom(v) => write!(f, "custom({v})"),
        }
    }
}

/// The kind of resource a task releases.
///
/// Categories do not change the order of a shutdown; they group tasks in the
/// report, the events and the logs.
///
/// # Examples
///
/// ```
/// use compactor::Category;
///
/// assert_eq!(Category::Database.to_string(), "database");
/// assert_eq!(Category::custom("gpu").to_string(), "gpu");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Category {
    /// Connection pools, transactions, database files.
    Database,
    /// Open files, write buffers, temporary directories.
    File,
    /// Listeners, connections, clients.
    Network,
    /// Child processes.
    Process,
    /// Background tasks and threads.
    Task,
    /// Timers and scheduled jobs.
    Timer,
    /// Caches, secrets in memory, shared buffers.
    Memory,
    /// Anything else (the default).
    #[default]
    Other,
    /// A category of the application's own.
    Custom(Arc<str>),
}

impl Category {
    /// A category of the application's own.
    pub fn custom(name: impl Into<Arc<str>>) -> Self {
        Category::Custom(name.into())
    }

    /// The category's name, as shown in reports.
    pub fn as_str(&self) -> &str {
        match self {
            Category::Database => "database",
            Category::File => "file",
            Category::Network => "network",
            Category::Process => "process",
            Category::Task => "task",
            Category::Timer => "timer",
            Category::Memory => "memory",
            Category::Other => "other",
            Category::Custom(name) => name,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_priorities_order_and_equal_their_values() {
        let mut all = [
            Priority::Low,
            Priority::Critical,
            Priority::Custom(150),
            Priority::Normal,
            Priority::High,
        ];
        all.sort();
        let values: Vec<i32> = all.iter().map(|p| p.value()).collect();
        assert_eq!(values, [-100, 0, 100, 150, 200]);
        assert_eq!(Priority::Custom(100), Priority::High);
        assert_eq!(Priority::Custom(100).to_string(), "high");
        assert_eq!(Priority::Custom(-3).to_string(), "custom(-3)");
    }
}
