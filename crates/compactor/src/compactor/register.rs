//! Registration: the task builder, which checks a task's options and puts
//! it in the registry.

use std::sync::Arc;
use std::time::Duration;

use super::Compactor;
use crate::backoff::Backoff;
use crate::cleanup::kind::{Prepared, WeakOutput};
use crate::cleanup::{Blocking, IntoCleanup};
use crate::error::Error;
use crate::priority::{Category, Priority};
use crate::registry::TaskHandle;
use crate::task::cleanup::BoxCleanup;
use crate::task::{Dep, RESERVED_PREFIX, Spec};

impl Compactor {
    /// Starts configuring a task named `name`; finish with one of the
    /// builder's `register*` methods.
    pub fn task(&self, name: impl Into<Arc<str>>) -> TaskBuilder<'_> {
        TaskBuilder::new(self, name.into())
    }

    /// Registers a cleanup with the default options: shorthand for
    /// `self.task(name).register(cleanup)`.
    ///
    /// # Errors
    ///
    /// See [`TaskBuilder::register`].
    pub fn register<M>(
        &self,
        name: impl Into<Arc<str>>,
        cleanup: impl IntoCleanup<M>,
    ) -> Result<TaskHandle, Error> {
        self.task(name).register(cleanup)
    }
}

/// Configures one task; created by [`Compactor::task`], consumed by one of
/// the `register*` methods.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use compactor::{Category, Compactor, Priority};
///
/// let c = Compactor::new();
/// let db = c.task("db-pool").category(Category::Database).register(|| async {}).unwrap();
/// c.task("http")
///     .priority(Priority::High)
///     .depends_on(&db) // http is stopped before the pool closes
///     .timeout(Duration::from_secs(2))
///     .retries(1)
///     .register(|| async { Ok::<(), std::io::Error>(()) })
///     .unwrap();
/// ```
#[must_use = "a task is only registered by one of the `register*` methods"]
pub struct TaskBuilder<'a> {
    compactor: &'a Compactor,
    name: Arc<str>,
    spec: Spec,
    deps: Vec<Dep>,
    error: Option<Error>,
    /// For a service, its supervision; for a scope, its services' default.
    pub(crate) supervision: Option<crate::service::Supervision>,
}

impl<'a> TaskBuilder<'a> {
    pub(crate) fn new(compactor: &'a Compactor, name: Arc<str>) -> Self {
        TaskBuilder {
            compactor,
            name,
            spec: Spec::default(),
            deps: Vec::new(),
            error: None,
            supervision: None,
        }
    }

    pub(crate) fn compactor(&self) -> &'a Compactor {
        self.compactor
    }

    pub(crate) fn has_timeout(&self) -> bool {
        self.spec.timeout.is_some()
    }

    pub(crate) fn has_category(&self) -> bool {
        self.spec.category != Category::Other
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Why a service (`restartable` or not) with this builder's
    /// supervision, or a scope giving it to its services, is refused:
    /// restarts asked of a one-shot service, or a zero window.
    pub(crate) fn restarts_refusal(&self, restartable: bool) -> Option<Error> {
        let own = self.supervision.and_then(|s| s.restarts);
        let effective = own.or_else(|| {
            let inherited = self.compactor.supervision().restarts;
            inherited.filter(|_| restartable)
        });
        if own.is_some() && !restartable {
            return Some(Error::RestartsNeedRestartable {
                task: self.name.to_string(),
            });
        }
        match effective {
            Some((_, within)) if within.is_zero() => Some(Error::InvalidConfig {
                option: "Supervision::restarts",
                problem: format!(
                    "was given a zero window for `{}`; give the span the restarts are counted in (Duration::MAX for a budget over the service's whole life)",
                    self.name
                ),
            }),
            _ => None,
        }
    }

    /// The delay between a service's restarts: its backoff, or the instance's.
    pub(crate) fn restart_backoff(&self) -> Backoff {
        self.spec
            .backoff
            .as_deref()
            .copied()
            .unwrap_or(self.compactor.config().backoff)
    }

    pub(crate) fn spec_priority(&self) -> Priority {
        self.spec.priority
    }

    pub(crate) fn spec_category(&self) -> Category {
        self.spec.category.clone()
    }

    /// The shutdown phase (default [`Priority::Normal`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.spec.priority = priority;
        self
    }

    /// This task uses `dependency`: it is cleaned up **before** `dependency`
    /// starts (an HTTP server depends on the database pool it queries).
    pub fn depends_on(mut self, dependency: &TaskHandle) -> Self {
        if !std::ptr::eq(
            dependency.registry.as_ptr(),
            Arc::as_ptr(&self.compactor.inner.registry),
        ) {
            self.error.get_or_insert_with(|| Error::ForeignHandle {
                task: self.name.to_string(),
                dependency: dependency.name.to_string(),
            });
        } else {
            self.deps.push(Dep {
                name: dependency.name.clone(),
                id: Some(dependency.id),
            });
        }
        self
    }

    /// Like [`depends_on`](Self::depends_on), by name: the task may be
    /// registered later. A name that no task has at shutdown is ignored and
    /// listed in [`ShutdownReport::warnings`](crate::ShutdownReport::warnings).
    pub fn depends_on_name(mut self, dependency: impl Into<Arc<str>>) -> Self {
        self.deps.push(Dep {
            name: dependency.into(),
            id: None,
        });
        self
    }

    /// The time one attempt may take (default: the instance's
    /// [`default_timeout`](crate::Builder::default_timeout)). Must not be
    /// zero; `Duration::MAX` means no timeout (the deadline still holds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout);
        self
    }

    /// How many more attempts follow a failed or timed-out one (default 0).
    /// Panics are not retried: a panic is a bug, not a passing fault.
    pub fn retries(mut self, retries: u32) -> Self {
        self.spec.retries = retries;
        self
    }

    /// The delays between attempts (default: the instance's
    /// [`backoff`](crate::Builder::backoff)).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.spec.backoff = Some(Box::new(backoff));
        self
    }

    /// The kind of resource (default [`Category::Other`]).
    pub fn category(mut self, category: Category) -> Self {
        self.spec.category = category;
        self
    }

    /// Registers a cleanup: an async closure (`|| async { .. }`, called
    /// again for each retry), or any other kind of [`compactor::cleanup`](crate::cleanup)
    /// ([`once`](crate::cleanup::once), [`cancellable`](crate::cleanup::cancellable),
    /// [`blocking`](crate::cleanup::blocking), the ready-made ones).
    ///
    /// # Errors
    ///
    /// See [`Error`]: on any error nothing is registered and `cleanup` is
    /// dropped without being called. A one-shot cleanup with
    /// [`retries`](Self::retries) is [`Error::RetriesNeedRepeatable`].
    pub fn register<M>(self, cleanup: impl IntoCleanup<M>) -> Result<TaskHandle, Error> {
        let Prepared {
            cleanup,
            repeatable,
            category,
            armed,
        } = cleanup.into_cleanup(self.compactor);
        if let Err(error) = self.refusal(repeatable) {
            return Err(dropped_refused(error, [cleanup]));
        }
        let builder = match category {
            Some(category) if !self.has_category() => self.category(category),
            _ => self,
        };
        // Checked above, whatever the category.
        let handle = builder.insert(cleanup)?;
        crate::cleanup::arm(armed);
        Ok(handle)
    }

    /// Registers a synchronous cleanup: shorthand for
    /// `self.register(cleanup::blocking(cleanup))`, run on a thread of its
    /// own so it never stalls the async workers. It may be a `FnMut`, a
    /// [`once`](crate::cleanup::once) or a [`cancellable`](crate::cleanup::cancellable).
    /// A blocking call cannot be interrupted: on timeout it is abandoned (it
    /// goes on in its thread, which nothing waits for: not the runtime's
    /// drop, not the process's exit) and a retry waits for it to return
    /// first.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn register_blocking<C, M>(self, cleanup: C) -> Result<TaskHandle, Error>
    where
        Blocking<C>: IntoCleanup<M>,
    {
        self.register(crate::cleanup::blocking(cleanup))
    }

    /// Registers a cleanup that holds only a [`Weak`](std::sync::Weak) reference to `value`, so
    /// registration never keeps the resource alive. At shutdown the cleanup is
    /// called with the value if it is still alive; if it was dropped, the task
    /// is [`Outcome::Released`](crate::Outcome::Released) and not called. The
    /// cleanup may be async (it returns a future) or synchronous (it returns
    /// what a cleanup returns, and is called on a thread of its own, as
    /// [`register_blocking`](Self::register_blocking)'s). A value still alive after its cleanup
    /// is flagged as a possible leak
    /// ([`TaskReport::leaked`](crate::TaskReport::leaked)), which counts
    /// every strong reference, the caller's own binding too: drop yours
    /// before the shutdown (a `main` that keeps the `Arc` to the end would
    /// see its own), or, for a value only the cleanup needs, move it into a
    /// [`once`](crate::cleanup::once) cleanup instead.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn register_weak<T, F, O, M>(self, value: &Arc<T>, cleanup: F) -> Result<TaskHandle, Error>
    where
        T: Send + Sync + 'static,
        F: FnMut(Arc<T>) -> O + Send + 'static,
        O: WeakOutput<M>,
    {
        self.finish(O::weak(Arc::downgrade(value), cleanup).cleanup)
    }

    /// Registers a repeatable cleanup, or says why it is refused.
    pub(crate) fn finish(self, cleanup: BoxCleanup) -> Result<TaskHandle, Error> {
        if let Err(error) = self.refusal(true) {
            return Err(dropped_refused(error, [cleanup]));
        }
        self.insert(cleanup)
    }

    /// Registers one of the library's own tasks, whose name is in
    /// [`RESERVED_PREFIX`].
    pub(crate) fn finish_internal(self, cleanup: BoxCleanup) -> Result<TaskHandle, Error> {
        if let Err(error) = self.check(true) {
            return Err(dropped_refused(error, [cleanup]));
        }
        self.insert(cleanup)
    }

    fn check(&self, internal: bool) -> Result<(), Error> {
        // Whatever else is wrong, a registration after shutdown began is refused for that.
        if self.compactor.inner.registry.is_closed() {
            return Err(Error::ShuttingDown);
        }
        if let Some(error) = self
            .error
            .as_ref()
            .or(self.compactor.inner.config.refused.as_ref())
        {
            return Err(error.clone());
        }
        if self.name.trim().is_empty() {
            return Err(Error::EmptyName);
        }
        if !internal && self.name.starts_with(RESERVED_PREFIX) {
            return Err(Error::ReservedName(self.name.to_string()));
        }
        Ok(())
    }

    /// The task as the registry takes it, or why it is refused.
    pub(super) fn checked(self, repeatable: bool) -> Result<(Arc<str>, Spec, Vec<Dep>), Error> {
        self.refusal(repeatable)?;
        Ok((self.name, self.spec, self.deps))
    }

    /// Why the task would be refused, if it would: the instance's own
    /// refusals first (shutting down, a refused setting), then the task's
    /// (its name, a zero timeout, retries for a cleanup that cannot be
    /// called again).
    pub(super) fn refusal(&self, repeatable: bool) -> Result<(), Error> {
        self.check(false)?;
        if self.spec.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::ZeroTimeout {
                task: self.name.to_string(),
            });
        }
        match (repeatable, self.spec.retries) {
            (true, _) | (false, 0) => Ok(()),
            (false, _) => Err(Error::RetriesNeedRepeatable {
                task: self.name.to_string(),
            }),
        }
    }

    /// Puts a task its [`refusal`](Self::refusal) let through in the
    /// registry (which still refuses a name twice, or a cycle).
    pub(super) fn insert(self, cleanup: BoxCleanup) -> Result<TaskHandle, Error> {
        let compactor = self.compactor;
        let inner = &compactor.inner;
        let (id, name) = inner
            .registry
            .insert(self.name, self.spec, self.deps, cleanup)
            .map_err(|(error, refused)| dropped_refused(error, [refused]))?;
        compactor.registered();
        Ok(TaskHandle {
            registry: Arc::downgrade(&inner.registry),
            name,
            id,
            service: None,
        })
    }
}

/// Drops what a refused registration did not take (its cleanups: user
/// code), one by one with a panic in a `Drop` contained and logged; returns
/// the refusal.
pub(super) fn dropped_refused<T>(error: Error, refused: impl IntoIterator<Item = T>) -> Error {
    for node in refused {
        if let Err(panic) = crate::run::contain::drop_contained(node) {
            tracing::warn!(%error, %panic, "a refused task's cleanup panicked as it was dropped");
        }
    }
    error
}

impl Compactor {
    /// After a registration: an instance that listens from its first one
    /// starts listening.
    pub(super) fn registered(&self) {
        let signals = &self.inner.signals;
        if signals.auto_listen && !signals.armed.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(hooks) = signals.hooks.get() {
                if let Err(error) = (hooks.listen)(self) {
                    tracing::warn!(%error, "the instance runs without signal handling");
                }
            }
        }
    }
}
