//! The handle of a registered task.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, Weak};

use super::Registry;

/// A registered task: use it to declare dependencies or to unregister it.
///
/// Cheap to clone. Dropping a handle does **not** unregister the task, and a
/// handle does not keep its [`Compactor`](crate::Compactor) alive.
#[derive(Clone)]
pub struct TaskHandle {
    pub(crate) registry: Weak<Registry>,
    pub(crate) name: Arc<str>,
    pub(crate) id: NonZeroU64,
    /// For a service: how it stands.
    pub(crate) service: Option<Arc<crate::service::StateCell>>,
}

impl TaskHandle {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the task from its instance, so it does not run at shutdown.
    ///
    /// Returns `true` if the task was still pending, `false` if it was already
    /// unregistered, its instance is gone, or shutdown has begun (the task is
    /// then part of the run and cannot be withdrawn). Tasks that depended on it
    /// lose that dependency.
    ///
    /// # Examples
    ///
    /// ```
    /// # let c = compactor::Compactor::new();
    /// let h = c.register("temp-dir", || async {}).unwrap();
    /// assert!(h.unregister());
    /// assert!(!h.unregister());
    /// ```
    pub fn unregister(&self) -> bool {
        self.registry
            .upgrade()
            .is_some_and(|registry| registry.unregister(&self.name, self.id))
    }

    /// For a service's task: how the service stands (running, restarts,
    /// how it ended); `None` for any other task. The task itself stays
    /// [pending](Self::is_pending) until its drain runs.
    pub fn service(&self) -> Option<crate::service::ServiceState> {
        self.service.as_ref().map(|state| state.get())
    }

    /// Whether the task is still registered and shutdown has not begun.
    pub fn is_pending(&self) -> bool {
        self.registry
            .upgrade()
            .is_some_and(|registry| registry.is_pending(&self.name, self.id))
    }
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish()
    }
}
