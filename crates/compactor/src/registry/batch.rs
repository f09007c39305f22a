//! Batches: many tasks inserted all or none, between two batches of which
//! a shutdown, an early run or a plan may come, never inside one.

use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use dashmap::SharedValue;

use super::names::HashedName;
use super::node::{Node, Stored, Taken};
use super::{NewTask, Refused, Registry, TaskHandle};
use crate::error::Error;

impl Registry {
    /// Inserts every task of a batch, or none: the first refusal (a name
    /// twice in the batch or already taken, a cycle, shutdown begun) takes
    /// back the ones already in (a name twice in the batch is found as its
    /// second insertion meets the first). Returns their handles, in order;
    /// their ids follow the batch's order.
    #[expect(clippy::vec_box, reason = "the nodes are boxed already")]
    pub(crate) fn insert_batch(
        self: &Arc<Self>,
        items: Vec<NewTask>,
    ) -> Result<Vec<TaskHandle>, Refused<Vec<Box<Node>>>> {
        let _batch = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        // Closing waits for the batch: read once, it holds for the whole of it.
        if self.is_closed() {
            return Err((
                Error::ShuttingDown,
                items.into_iter().map(|t| t.node).collect(),
            ));
        }
        // What a refused batch leaves, for the caller to drop after the lock
        // (a cleanup's `Drop` may call back into the instance).
        let mut refused: Vec<Box<Node>> = Vec::new();
        let first = self.next_ids(items.len()).get();
        let ids = (first..).map(|id| NonZeroU64::new(id).expect("ids start at 1"));
        let registry = Arc::downgrade(self);
        let handle = |name, id| TaskHandle {
            registry: registry.clone(),
            name,
            id,
            service: None,
        };
        let unrelated =
            self.referenced.load(Ordering::Acquire) == 0 && items.iter().all(|t| !t.has_deps);
        if unrelated {
            return self
                .insert_unrelated(items.into_iter().zip(ids), handle, &mut refused)
                .map_err(|error| (error, refused));
        }
        let mut inserted: Vec<TaskHandle> = Vec::with_capacity(items.len());
        let mut items = items.into_iter().zip(ids);
        while let Some((task, id)) = items.next() {
            match self.insert_new(task, id) {
                Ok((id, name)) => inserted.push(handle(name, id)),
                Err((error, node)) => {
                    refused.push(node);
                    refused.extend(items.map(|(task, _)| task.node));
                    self.take_back(&inserted, &mut refused);
                    return Err((error, refused));
                }
            }
        }
        Ok(inserted)
    }

    /// Inserts tasks with no dependency while no pending task names another
    /// (so none can close a cycle): each shard's tasks under one write lock
    /// taken once, its table grown once for them.
    #[expect(clippy::vec_box, reason = "the nodes are boxed already")]
    pub(super) fn insert_unrelated(
        &self,
        items: impl Iterator<Item = (NewTask, NonZeroU64)>,
        handle: impl Fn(Arc<str>, NonZeroU64) -> TaskHandle,
        refused: &mut Vec<Box<Node>>,
    ) -> Result<Vec<TaskHandle>, Error> {
        let shards = self.tasks.shards();
        let mut per_shard: Vec<Vec<(HashedName, Stored)>> =
            shards.iter().map(|_| Vec::new()).collect();
        let mut handles = Vec::with_capacity(items.size_hint().0);
        let mut weak = 0;
        for (task, id) in items {
            weak += usize::from(task.weak);
            let slot = Stored {
                id: id.get(),
                node: Some(task.node),
            };
            per_shard[self.tasks.determine_map(&task.key)].push((task.key, slot));
            handles.push(handle(task.name, id));
        }
        let hasher = self.tasks.hasher();
        let hash = |key: &HashedName| std::hash::BuildHasher::hash_one(hasher, key);
        let mut shards_left = shards.iter().zip(per_shard);
        let mut inserted: isize = 0;
        while let Some((shard, tasks)) = shards_left.next() {
            let mut table = shard.write();
            table.reserve(tasks.len(), |(key, _)| hash(key));
            let mut tasks = tasks.into_iter();
            while let Some((key, slot)) = tasks.next() {
                let h = hash(&key);
                if table.find(h, |(k, _)| *k == key).is_none() {
                    table.insert(h, (key, SharedValue::new(slot)), |(key, _)| hash(key));
                    inserted += 1;
                    continue;
                }
                drop(table);
                let left = std::iter::once(slot)
                    .chain(tasks.map(|(_, slot)| slot))
                    .chain(shards_left.flat_map(|(_, tasks)| tasks.into_iter().map(|(_, s)| s)));
                refused.extend(left.filter_map(|slot| slot.node));
                // In, for the moment: taken back one by one.
                crate::telemetry::pending(inserted);
                self.take_back(&handles, refused);
                return Err(Error::DuplicateName(key.name().to_string()));
            }
        }
        for _ in 0..weak {
            self.weak_registered();
        }
        crate::telemetry::pending(handles.len() as isize);
        Ok(handles)
    }

    /// Takes back the tasks of a refused batch that were inserted, into
    /// `refused` (a handle whose task is not in, or is another task of the
    /// same name, takes nothing back).
    #[expect(clippy::vec_box, reason = "the nodes are boxed already")]
    pub(super) fn take_back(&self, handles: &[TaskHandle], refused: &mut Vec<Box<Node>>) {
        for handle in handles.iter().rev() {
            refused.extend(self.remove(&handle.name, handle.id));
        }
    }

    /// [`take_where`](Self::take_where) between batches: an early run takes
    /// all of a batch or none of it.
    pub(crate) fn take_chosen(&self, pick: impl FnMut(&str, &Node) -> bool) -> Vec<Taken> {
        let _no_batch_under_way = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        self.take_where(pick)
    }
}
