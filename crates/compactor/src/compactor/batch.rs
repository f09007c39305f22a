//! Batches: many task definitions registered at once, all or none.

use std::sync::{Arc, Weak};

use super::register::dropped_refused;
use super::{Compactor, TaskBuilder};
use crate::cleanup::IntoCleanup;
use crate::cleanup::kind::Prepared;
use crate::error::Error;
use crate::registry::{NewTask, Registry, TaskHandle};
use crate::task::cleanup::BoxCleanup;

/// A task defined for [`Compactor::register_batch`], not registered yet:
/// made by [`TaskBuilder::define`], with every option of
/// the builder. An option that was refused (a zero timeout, a handle of
/// another instance) refuses the whole batch.
#[must_use = "a definition is only registered by `register_batch`"]
pub struct TaskDef {
    defined: Result<NewTask, Error>,
    /// The registry it was defined for (its name is hashed with that
    /// registry's key): compared only. Held weakly, so the address cannot
    /// be another registry's while the definition lives.
    registry: Weak<Registry>,
    /// A ready-made cleanup's guard, armed once the batch is registered.
    armed: Option<crate::cleanup::Armed>,
}

impl TaskBuilder<'_> {
    /// Defines a task for a [batch](Compactor::register_batch), as
    /// [`register`](Self::register) would register it: any kind of
    /// [cleanup](crate::cleanup), with every option of the builder.
    pub fn define<M>(self, cleanup: impl IntoCleanup<M>) -> TaskDef {
        let Prepared {
            cleanup,
            repeatable,
            category,
            armed,
        } = cleanup.into_cleanup(self.compactor());
        let builder = match category {
            Some(category) if !self.has_category() => self.category(category),
            _ => self,
        };
        let mut def = builder.defined(cleanup, repeatable);
        def.armed = armed;
        def
    }

    /// The definition, or its refusal (the cleanup dropped, a panic in
    /// its `Drop` contained, as a refused registration drops it).
    fn defined(self, cleanup: BoxCleanup, repeatable: bool) -> TaskDef {
        let registry = &self.compactor().inner.registry;
        let weak = Arc::downgrade(registry);
        let defined = match self.checked(repeatable) {
            Ok((name, spec, deps)) => Ok(registry.new_task(name, spec, deps, cleanup)),
            Err(error) => Err(dropped_refused(error, [cleanup])),
        };
        TaskDef {
            defined,
            registry: weak,
            armed: None,
        }
    }
}

impl Compactor {
    /// Registers many tasks at once, all or none: if any is refused (a name
    /// twice, in the batch or already registered; a cycle; an invalid
    /// option; shutdown begun), none is registered, the whole batch's
    /// closures are dropped uncalled, and the error names the first
    /// refusal. A shutdown that begins meanwhile waits for the batch (it
    /// takes no user code: the closures are only moved). Dependencies by
    /// name may point anywhere in the batch; an empty batch registers
    /// nothing and returns no handles.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// let c = compactor::Compactor::new();
    /// let handles = c.register_batch((0..3).map(|i| {
    ///     c.task(format!("conn-{i}")).define(compactor::cleanup::once(|| async { /* close it */ }))
    /// }))?;
    /// assert_eq!(handles.len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The first refusal, as the single registrations give them; a
    /// definition made on another instance is [`Error::ForeignHandle`].
    pub fn register_batch<I: IntoIterator<Item = TaskDef>>(
        &self,
        tasks: I,
    ) -> Result<Vec<TaskHandle>, Error> {
        let registry = &self.inner.registry;
        let mut tasks = tasks.into_iter();
        let mut items = Vec::with_capacity(tasks.size_hint().0);
        // A refusal before the insertion drops what was collected, and the
        // definitions not read yet, one by one as a refused insertion does.
        let refuse = |error, items: Vec<NewTask>, rest: I::IntoIter| {
            let error = dropped_refused(error, items);
            dropped_refused(error, rest)
        };
        let mut guards = Vec::new();
        while let Some(def) = tasks.next() {
            guards.extend(def.armed);
            let item = match def.defined {
                Ok(item) => item,
                Err(error) => return Err(refuse(error, items, tasks)),
            };
            if !std::ptr::eq(def.registry.as_ptr(), Arc::as_ptr(registry)) {
                let error = Error::ForeignHandle {
                    task: item.name().to_string(),
                    dependency: "(the definition itself)".to_owned(),
                };
                items.push(item);
                return Err(refuse(error, items, tasks));
            }
            items.push(item);
        }
        let handles = registry
            .insert_batch(items)
            .map_err(|(error, refused)| dropped_refused(error, refused))?;
        self.registered();
        guards
            .into_iter()
            .for_each(|armed| crate::cleanup::arm(Some(armed)));
        Ok(handles)
    }
}
