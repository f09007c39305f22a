//! Tasks leaving the registry: those an early run or a prune chooses, every
//! one when shutdown begins, and a copy of every one for a plan.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::Registry;
use super::names::HashedName;
use super::node::{CopiedDeps, Node, NodeCopy, Stored, Taken, taken};
use crate::task::Dep;

impl Registry {
    /// Takes the pending tasks `pick` chooses out of the registry, in
    /// registration order; none once shutdown has begun.
    pub(crate) fn take_where(&self, mut pick: impl FnMut(&str, &Node) -> bool) -> Vec<Taken> {
        let mut taken = Vec::new();
        self.tasks.retain(|name, slot| {
            // Read under the shard lock: once closed, everything belongs to the run.
            let picked = slot
                .node
                .as_deref()
                .is_some_and(|node| pick(name.name(), node));
            if self.closed.load(Ordering::SeqCst) || !picked {
                return true;
            }
            taken.extend(slot.node.take().map(|node| Taken {
                id: slot.id,
                name: name.name().clone(),
                node,
            }));
            false
        });
        taken.sort_unstable_by_key(|d| d.id);
        self.forget_references(taken.iter().map(|d| &*d.node));
        crate::telemetry::pending(-(taken.len() as isize));
        taken
    }

    /// Removes pending weak registrations whose value was dropped.
    pub(crate) fn prune_released(&self) -> usize {
        let mut live = 0;
        let removed = self.take_where(|_, node| {
            let strong = node.with_cleanup(|c| c.strong_count()).flatten();
            live += usize::from(strong.is_some_and(|n| n > 0));
            strong == Some(0)
        });
        self.weak_live.store(live, Ordering::Relaxed);
        if !removed.is_empty() {
            tracing::debug!(
                pruned = removed.len(),
                "pruned weak registrations whose value is gone"
            );
        }
        removed.len()
    }

    /// Closes the registry and takes every pending task, in registration
    /// order.
    pub(crate) fn take_all(&self) -> Vec<Taken> {
        self.close();
        // Each shard's table is taken under its write lock, after the flag
        // is set (see the module docs): names and nodes move out as they are.
        let taken: Vec<Taken> = self
            .tasks
            .shards()
            .iter()
            .flat_map(|shard| std::mem::take(&mut *shard.write()))
            .filter_map(taken)
            .collect();
        crate::telemetry::pending(-(taken.len() as isize));
        in_id_order(taken)
    }

    /// A copy of every pending task without its cleanup, in registration
    /// order (for a plan that runs nothing). Takes each shard's read lock
    /// in turn, and copies its tasks in registration order: their nodes,
    /// names and dependencies were allocated in that order, so the copy
    /// walks memory forwards instead of in hash order (about half the time
    /// for 100,000 tasks). Each shard's names and nodes are first reached in
    /// a short loop, so the processor waits for many of their cache misses
    /// at once, and only then copied (a seventh less for `plan()`).
    pub(crate) fn snapshot(&self) -> Vec<Taken<NodeCopy>> {
        // A dependency by handle resolves by id: its name is not read, and
        // one shared placeholder spares touching every dependency's own.
        let unread: Arc<str> = Arc::from("");
        // A batch is all or none: not half of it in a plan.
        let _no_batch_under_way = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut copies: Vec<Taken<NodeCopy>> = Vec::with_capacity(self.tasks.len());
        // The map's iterator goes shard by shard, each under its read lock
        // for as long as an entry of it is held: one shard's entries are
        // gathered, copied in id order and let go before the next's.
        let mut shard_entries = Vec::new();
        let mut shard = None;
        let copy =
            |entries: &mut Vec<dashmap::mapref::multiple::RefMulti<'_, HashedName, Stored>>,
             copies: &mut Vec<Taken<NodeCopy>>| {
                entries.sort_unstable_by_key(|e| e.value().id);
                // Reached first (the name's count and the node's
                // dependencies are read), then copied.
                let reached: Vec<(u64, Arc<str>, &Node, usize)> = entries
                    .iter()
                    .filter_map(|entry| {
                        let slot = entry.value();
                        let node = slot.node.as_deref()?;
                        Some((slot.id, entry.key().name().clone(), node, node.deps.len()))
                    })
                    .collect();
                copies.extend(reached.into_iter().map(|(id, name, node, deps)| {
                    let copy = |dep: &Dep| Dep {
                        name: match dep.id {
                            Some(_) => unread.clone(),
                            None => dep.name.clone(),
                        },
                        id: dep.id,
                    };
                    let deps = match &*node.deps {
                        [one] => CopiedDeps::One(copy(one)),
                        all => {
                            let mut copied = Vec::with_capacity(deps);
                            copied.extend(all.iter().map(copy));
                            CopiedDeps::Many(copied.into_boxed_slice())
                        }
                    };
                    Taken {
                        id,
                        name,
                        node: NodeCopy {
                            spec: node.spec.clone(),
                            deps,
                        },
                    }
                }));
                entries.clear();
            };
        for entry in self.tasks.iter() {
            let this = self.tasks.determine_map(entry.key());
            if shard != Some(this) {
                copy(&mut shard_entries, &mut copies);
                shard = Some(this);
            }
            shard_entries.push(entry);
        }
        copy(&mut shard_entries, &mut copies);
        // Each shard's run is sorted already: the stable sort merges them.
        copies.sort_by_key(|d| d.id);
        copies
    }
}

/// `taken` in id (registration) order. Ids are given one after another,
/// so they are dense but for unregistered tasks: where they span at most
/// four times their count, each is put straight at its place (linear: a
/// sort of 100,000 was a tenth of a flat shutdown's instructions); else
/// sorted.
fn in_id_order<N>(mut taken: Vec<Taken<N>>) -> Vec<Taken<N>> {
    let (Some(min), Some(max)) = (
        taken.iter().map(|d| d.id).min(),
        taken.iter().map(|d| d.id).max(),
    ) else {
        return taken;
    };
    let span = usize::try_from(max - min).unwrap_or(usize::MAX);
    if span / 4 > taken.len() {
        taken.sort_unstable_by_key(|d| d.id);
        return taken;
    }
    let mut places: Vec<Option<Taken<N>>> =
        std::iter::repeat_with(|| None).take(span + 1).collect();
    for d in taken {
        let at = (d.id - min) as usize;
        places[at] = Some(d);
    }
    places.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(taken: &[Taken<()>]) -> Vec<u64> {
        taken.iter().map(|d| d.id).collect()
    }

    fn of(ids: &[u64]) -> Vec<Taken<()>> {
        ids.iter()
            .map(|&id| Taken {
                id,
                name: Arc::from(format!("t{id}")),
                node: (),
            })
            .collect()
    }

    #[test]
    fn dense_and_sparse_ids_come_out_in_order_with_their_names() {
        // Dense, with gaps (unregistered tasks), in hash order.
        let dense = in_id_order(of(&[7, 3, 9, 4, 12, 5, 10]));
        assert_eq!(ids(&dense), [3, 4, 5, 7, 9, 10, 12]);
        assert!(dense.iter().all(|d| *d.name == *format!("t{}", d.id)));
        // Sparse: sorted instead.
        let sparse = in_id_order(of(&[1_000_000, 2, 500]));
        assert_eq!(ids(&sparse), [2, 500, 1_000_000]);
        assert!(in_id_order(of(&[])).is_empty());
        assert_eq!(ids(&in_id_order(of(&[u64::MAX, 1]))), [1, u64::MAX]);
    }
}
