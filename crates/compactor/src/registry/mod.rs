//! Pending tasks, keyed by name, and the gate that closes when shutdown begins.
//!
//! Registration is lock-free across shards: each name lives in one shard of a
//! [`DashMap`], and the `closed` flag is read under that shard's write lock.
//! [`Registry::drain`] sets the flag first and then takes every shard's lock in
//! turn, so a registration either lands in its shard before the drain reaches
//! it (and runs) or sees the flag (and is refused). Nothing is lost and nothing
//! runs twice.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use dashmap::SharedValue;
use dashmap::mapref::entry::Entry;

mod handle;
mod names;

pub use handle::TaskHandle;

use crate::error::Error;
use crate::priority::Category;
use crate::task::cleanup::BoxCleanup;
use crate::task::{CleanupKind, Dep, Spec};
use names::{HashedName, NameHash};

/// A pending task.
pub(crate) struct Node {
    /// In a mutex only so the map is `Sync`; it is never contended: the
    /// cleanup is reached through `&mut` when drained. `None` once the run
    /// that drained the node has taken it.
    pub(crate) cleanup: Mutex<Option<BoxCleanup>>,
    pub(crate) deps: Box<[Dep]>,
    pub(crate) spec: Spec,
}

/// A task taken out of the registry: for a run, with its node; for a plan
/// that runs nothing, with a [`NodeCopy`].
pub(crate) struct Drained<N = Box<Node>> {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) node: N,
}

/// What the planner reads of a task, in a run's node or in a copy.
pub(crate) trait TaskNode {
    fn spec(&self) -> &Spec;
    fn deps(&self) -> &[Dep];
    /// Keeps the dependencies `keep` chooses.
    fn retain_deps(&mut self, keep: impl FnMut(&Dep) -> bool);
    /// The node of one of the library's own tasks.
    fn own(spec: Spec, cleanup: BoxCleanup) -> Self;
}

impl TaskNode for Box<Node> {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn deps(&self) -> &[Dep] {
        &self.deps
    }

    fn retain_deps(&mut self, keep: impl FnMut(&Dep) -> bool) {
        let mut kept = std::mem::take(&mut self.deps).into_vec();
        kept.retain(keep);
        self.deps = kept.into_boxed_slice();
    }

    fn own(spec: Spec, cleanup: BoxCleanup) -> Self {
        Node::new(spec, Vec::new(), cleanup)
    }
}

/// A pending task's options and dependencies, without its cleanup: what a
/// plan that runs nothing reads. Kept inline (a plan of 100,000 tasks
/// allocates no node, and one dependency, the usual most, no slice).
pub(crate) struct NodeCopy {
    pub(crate) spec: Spec,
    deps: CopiedDeps,
}

enum CopiedDeps {
    One(Dep),
    Many(Box<[Dep]>),
}

impl TaskNode for NodeCopy {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn deps(&self) -> &[Dep] {
        match &self.deps {
            CopiedDeps::One(dep) => std::slice::from_ref(dep),
            CopiedDeps::Many(deps) => deps,
        }
    }

    fn retain_deps(&mut self, mut keep: impl FnMut(&Dep) -> bool) {
        let kept: Vec<Dep> = self.deps().iter().filter(|d| keep(d)).cloned().collect();
        self.deps = CopiedDeps::Many(kept.into_boxed_slice());
    }

    fn own(mut spec: Spec, cleanup: BoxCleanup) -> Self {
        spec.kind = CleanupKind::of(&*cleanup);
        NodeCopy {
            spec,
            deps: CopiedDeps::Many(Box::new([])),
        }
    }
}

impl Node {
    /// A pending task's node; what its cleanup is like is read once, here.
    #[inline(always)]
    fn new(mut spec: Spec, deps: Vec<Dep>, cleanup: BoxCleanup) -> Box<Node> {
        spec.kind = CleanupKind::of(&*cleanup);
        Box::new(Node {
            cleanup: Mutex::new(Some(cleanup)),
            deps: deps.into_boxed_slice(),
            spec,
        })
    }

    /// Takes the cleanup out, for the run that drained the node.
    pub(crate) fn take_cleanup(&mut self) -> BoxCleanup {
        self.cleanup
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("a task's cleanup is taken once")
    }

    /// Calls `f` with the cleanup while the node is pending.
    fn with_cleanup<T>(
        &self,
        f: impl FnOnce(&dyn crate::task::cleanup::Cleanup) -> T,
    ) -> Option<T> {
        let cleanup = self.cleanup.lock().unwrap_or_else(PoisonError::into_inner);
        cleanup.as_deref().map(f)
    }
}

/// A map entry. The node is boxed so an entry stays small (a hash table is
/// sparse after it grows, and empty entries then cost little); its id sits
/// beside it, so the drain puts tasks in registration order without
/// reaching into every node.
struct Slot {
    id: u64,
    /// `None` only transiently, while [`Registry::take_where`] takes it out.
    node: Option<Box<Node>>,
}

/// A table entry as drained: `None` for a slot being taken out.
fn drained((name, slot): (HashedName, SharedValue<Slot>)) -> Option<Drained> {
    let Slot { id, node } = slot.into_inner();
    node.map(|node| Drained {
        id,
        name: name.into_name(),
        node,
    })
}

pub(crate) struct Registry {
    tasks: DashMap<HashedName, Slot, NameHash>,
    closed: AtomicBool,
    next_id: AtomicU64,
    /// How many names are referenced by name-dependencies of pending tasks.
    /// While zero, no registration can close a cycle and none takes `names`.
    referenced: AtomicUsize,
    /// Names referenced by name-dependencies, with how many tasks reference
    /// each. Registrations that add or might close such a reference are
    /// serialised by this lock.
    names: Mutex<HashMap<Arc<str>, usize>>,
    /// Weak registrations since the last prune, and how many were alive then.
    weak_since_prune: AtomicUsize,
    weak_live: AtomicUsize,
    /// Held by a batch for its whole insertion, and by closing: a shutdown
    /// begins before a batch or after it, never in its middle.
    batches: Mutex<()>,
}

/// A task to insert, made ready outside every lock: its name hashed, its
/// node built, and what the insertion needs to know of them read while
/// they are fresh in the cache (a batch inserts long after it made them).
pub(crate) struct NewTask {
    key: HashedName,
    /// The name again, for the task's handle.
    name: Arc<str>,
    node: Box<Node>,
    weak: bool,
    /// Whether any dependency is by name, and whether any is by handle.
    by_name: bool,
    by_handle: bool,
}

impl NewTask {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// A refused insertion: why, and the node (or, for a batch, the nodes) it
/// did not take. Their cleanups are the caller's to drop: a `Drop` is user
/// code, which the registry never runs.
pub(crate) type Refused<T = Box<Node>> = (Error, T);

/// How many tasks the cycle search of one registration visits at most.
pub(crate) const CYCLE_SEARCH: usize = 64;

/// Weak registrations between two prunes, at least.
const PRUNE_AT_LEAST: usize = 1024;

impl Registry {
    pub(crate) fn new() -> Self {
        let tasks = DashMap::with_hasher(NameHash::random());
        Registry {
            tasks,
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            referenced: AtomicUsize::new(0),
            names: Mutex::new(HashMap::new()),
            batches: Mutex::new(()),
            weak_since_prune: AtomicUsize::new(0),
            weak_live: AtomicUsize::new(0),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Inserts one task; gives back its id and its name, for its handle.
    #[inline]
    pub(crate) fn insert(
        &self,
        name: Arc<str>,
        spec: Spec,
        deps: Vec<Dep>,
        cleanup: BoxCleanup,
    ) -> Result<(NonZeroU64, Arc<str>), Refused> {
        self.insert_new(self.new_task(name, spec, deps, cleanup), self.next_ids(1))
    }

    /// A task for [`insert_batch`](Self::insert_batch).
    #[inline(always)]
    pub(crate) fn new_task(
        &self,
        name: Arc<str>,
        spec: Spec,
        deps: Vec<Dep>,
        cleanup: BoxCleanup,
    ) -> NewTask {
        NewTask {
            weak: cleanup.strong_count().is_some(),
            by_name: deps.iter().any(|d| d.id.is_none()),
            by_handle: deps.iter().any(|d| d.id.is_some()),
            key: self.tasks.hasher().name(name.clone()),
            name,
            node: Node::new(spec, deps, cleanup),
        }
    }

    /// The first of `n` ids never given before.
    fn next_ids(&self, n: usize) -> NonZeroU64 {
        let first = self.next_id.fetch_add(n as u64, Ordering::Relaxed);
        NonZeroU64::new(first).expect("ids start at 1")
    }

    /// Inserts the task with the id `id`; gives back its id and name, or,
    /// refused, the error and its node (what its cleanup owns is the
    /// caller's to drop, outside its locks).
    fn insert_new(&self, task: NewTask, id: NonZeroU64) -> Result<(NonZeroU64, Arc<str>), Refused> {
        let NewTask {
            key,
            name,
            node,
            weak,
            by_name,
            by_handle,
        } = task;
        if self.is_closed() {
            return Err((Error::ShuttingDown, node));
        }
        let deps = match by_name || by_handle {
            true => &node.deps[..],
            false => &[],
        };
        for dep in deps {
            match dep.id {
                Some(id) if !self.is_pending(&dep.name, id) => {
                    let error = Error::UnknownDependency {
                        task: name.to_string(),
                        dependency: dep.name.to_string(),
                    };
                    return Err((error, node));
                }
                None if dep.name == name => {
                    let path = vec![name.to_string(), name.to_string()];
                    return Err((Error::Cycle { path }, node));
                }
                _ => {}
            }
        }
        // Only a task whose name some pending task references by name can close
        // a cycle: every other edge points at a task that existed before it.
        let mut names =
            (by_name || self.referenced.load(Ordering::Acquire) > 0).then(|| self.lock_names());
        if let Some(names) = &names {
            if names.contains_key(&name) {
                if let Some(path) = self.find_path_back(&name, deps) {
                    return Err((Error::Cycle { path }, node));
                }
            }
        }

        let referenced_now: Vec<Arc<str>> = match by_name {
            true => deps
                .iter()
                .filter(|d| d.id.is_none())
                .map(|d| d.name.clone())
                .collect(),
            false => Vec::new(),
        };
        match self.tasks.entry(key) {
            Entry::Occupied(e) => {
                let error = Error::DuplicateName(e.key().name().to_string());
                return Err((error, node));
            }
            Entry::Vacant(e) => {
                // Read under the shard lock: see the module docs.
                if self.closed.load(Ordering::SeqCst) {
                    return Err((Error::ShuttingDown, node));
                }
                e.insert(Slot {
                    id: id.get(),
                    node: Some(node),
                });
            }
        }
        if let Some(names) = &mut names {
            self.add_references(names, referenced_now);
        }
        drop(names);
        if weak {
            self.weak_registered();
        }
        Ok((id, name))
    }

    /// Whether the task `name` with this id is still pending.
    pub(crate) fn is_pending(&self, name: &str, id: NonZeroU64) -> bool {
        !self.is_closed() && self.node_id(name) == Some(id.get())
    }

    pub(crate) fn unregister(&self, name: &str, id: NonZeroU64) -> bool {
        self.remove(name, id).is_some()
    }

    /// Takes the pending task `name` with this id out; its node, if it was.
    fn remove(&self, name: &str, id: NonZeroU64) -> Option<Box<Node>> {
        let removed = self.tasks.remove_if(name, |_, slot| {
            // Read under the shard lock, like `insert`.
            slot.id == id.get() && slot.node.is_some() && !self.closed.load(Ordering::SeqCst)
        });
        let Some((
            _,
            Slot {
                node: Some(node), ..
            },
        )) = removed
        else {
            return None;
        };
        self.release_references([&*node]);
        Some(node)
    }

    /// Drops the name references held by removed tasks.
    fn release_references<'n>(&self, removed: impl IntoIterator<Item = &'n Node>) {
        let mut by_name = removed
            .into_iter()
            .flat_map(|node| node.deps.iter())
            .filter(|d| d.id.is_none())
            .peekable();
        if by_name.peek().is_none() {
            return;
        }
        let mut names = self.lock_names();
        for dep in by_name {
            if let Some(count) = names.get_mut(&dep.name) {
                *count -= 1;
                if *count == 0 {
                    names.remove(&dep.name);
                    self.referenced.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Notes a weak registration; every so often (amortised O(1) per
    /// registration) prunes those whose value is gone.
    fn weak_registered(&self) {
        let since = self.weak_since_prune.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.weak_live.load(Ordering::Relaxed).max(PRUNE_AT_LEAST);
        if since >= due && self.weak_since_prune.swap(0, Ordering::Relaxed) >= due {
            self.prune_released();
        }
    }

    /// Takes the pending tasks `pick` chooses out of the registry, in
    /// registration order; none once shutdown has begun.
    pub(crate) fn take_where(&self, mut pick: impl FnMut(&str, &Node) -> bool) -> Vec<Drained> {
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
            taken.extend(slot.node.take().map(|node| Drained {
                id: slot.id,
                name: name.name().clone(),
                node,
            }));
            false
        });
        taken.sort_unstable_by_key(|d| d.id);
        self.release_references(taken.iter().map(|d| &*d.node));
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

    /// Calls `visit` with each pending task (name, category, and the scope
    /// it stands for, if any).
    pub(crate) fn for_each_pending(
        &self,
        mut visit: impl FnMut(&str, &Category, Option<Box<dyn std::any::Any>>),
    ) {
        for entry in self.tasks.iter() {
            let Some(node) = &entry.value().node else {
                continue;
            };
            let scope = node.with_cleanup(|c| c.scope()).flatten();
            visit(entry.key().name(), &node.spec.category, scope);
        }
    }

    /// Refuses every registration from now on.
    pub(crate) fn close(&self) {
        let _no_batch_under_way = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::SeqCst);
    }

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
        };
        let unrelated = self.referenced.load(Ordering::Acquire) == 0
            && items.iter().all(|t| !t.by_name && !t.by_handle);
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
    fn insert_unrelated(
        &self,
        items: impl Iterator<Item = (NewTask, NonZeroU64)>,
        handle: impl Fn(Arc<str>, NonZeroU64) -> TaskHandle,
        refused: &mut Vec<Box<Node>>,
    ) -> Result<Vec<TaskHandle>, Error> {
        let shards = self.tasks.shards();
        let mut per_shard: Vec<Vec<(HashedName, Slot)>> =
            shards.iter().map(|_| Vec::new()).collect();
        let mut handles = Vec::with_capacity(items.size_hint().0);
        let mut weak = 0;
        for (task, id) in items {
            weak += usize::from(task.weak);
            let slot = Slot {
                id: id.get(),
                node: Some(task.node),
            };
            per_shard[self.tasks.determine_map(&task.key)].push((task.key, slot));
            handles.push(handle(task.name, id));
        }
        let hasher = self.tasks.hasher();
        let hash = |key: &HashedName| std::hash::BuildHasher::hash_one(hasher, key);
        let mut shards_left = shards.iter().zip(per_shard);
        while let Some((shard, tasks)) = shards_left.next() {
            let mut table = shard.write();
            table.reserve(tasks.len(), |(key, _)| hash(key));
            let mut tasks = tasks.into_iter();
            while let Some((key, slot)) = tasks.next() {
                let h = hash(&key);
                if table.find(h, |(k, _)| *k == key).is_none() {
                    table.insert(h, (key, SharedValue::new(slot)), |(key, _)| hash(key));
                    continue;
                }
                drop(table);
                let left = std::iter::once(slot)
                    .chain(tasks.map(|(_, slot)| slot))
                    .chain(shards_left.flat_map(|(_, tasks)| tasks.into_iter().map(|(_, s)| s)));
                refused.extend(left.filter_map(|slot| slot.node));
                self.take_back(&handles, refused);
                return Err(Error::DuplicateName(key.name().to_string()));
            }
        }
        for _ in 0..weak {
            self.weak_registered();
        }
        Ok(handles)
    }

    /// Takes back the tasks of a refused batch that were inserted, into
    /// `refused` (a handle whose task is not in, or is another task of the
    /// same name, takes nothing back).
    #[expect(clippy::vec_box, reason = "the nodes are boxed already")]
    fn take_back(&self, handles: &[TaskHandle], refused: &mut Vec<Box<Node>>) {
        for handle in handles.iter().rev() {
            refused.extend(self.remove(&handle.name, handle.id));
        }
    }

    /// [`take_where`](Self::take_where) between batches: a release takes
    /// all of a batch or none of it.
    pub(crate) fn take_chosen(&self, pick: impl FnMut(&str, &Node) -> bool) -> Vec<Drained> {
        let _no_batch_under_way = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        self.take_where(pick)
    }

    /// Closes the registry and takes every pending task, in registration
    /// order.
    pub(crate) fn drain(&self) -> Vec<Drained> {
        self.close();
        // Each shard's table is taken under its write lock, after the flag
        // is set (see the module docs): names and nodes move out as they are.
        let mut drained: Vec<Drained> = self
            .tasks
            .shards()
            .iter()
            .flat_map(|shard| std::mem::take(&mut *shard.write()))
            .filter_map(drained)
            .collect();
        drained.sort_unstable_by_key(|d| d.id);
        drained
    }

    /// A copy of every pending task without its cleanup, in registration
    /// order (for a plan that runs nothing). Takes each shard's read lock
    /// in turn, and copies its tasks in registration order: their nodes,
    /// names and dependencies were allocated in that order, so the copy
    /// walks memory forwards instead of in hash order (about half the time
    /// for 100,000 tasks). Each shard's names and nodes are first reached in
    /// a short loop, so the processor waits for many of their cache misses
    /// at once, and only then copied (a seventh less for `plan()`).
    pub(crate) fn snapshot(&self) -> Vec<Drained<NodeCopy>> {
        // A dependency by handle resolves by id: its name is not read, and
        // one shared placeholder spares touching every dependency's own.
        let unread: Arc<str> = Arc::from("");
        // A batch is all or none: not half of it in a plan.
        let _no_batch_under_way = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut copies: Vec<Drained<NodeCopy>> = Vec::with_capacity(self.tasks.len());
        // The map's iterator goes shard by shard, each under its read lock
        // for as long as an entry of it is held: one shard's entries are
        // gathered, copied in id order and let go before the next's.
        let mut shard_entries = Vec::new();
        let mut shard = None;
        let copy =
            |entries: &mut Vec<dashmap::mapref::multiple::RefMulti<'_, HashedName, Slot>>,
             copies: &mut Vec<Drained<NodeCopy>>| {
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
                    Drained {
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

    /// The id of the pending task `name`, if any.
    pub(crate) fn pending_id(&self, name: &str) -> Option<u64> {
        self.node_id(name)
    }

    /// The pending tasks outside `chosen` (names with their ids) that
    /// depend on one in it, by name or by handle.
    pub(crate) fn dependents_of(&self, chosen: &HashMap<Arc<str>, u64>) -> Vec<String> {
        let mut dependents: Vec<String> = self
            .tasks
            .iter()
            .filter(|entry| !chosen.contains_key(entry.key().name()))
            .filter(|entry| {
                entry.value().node.as_ref().is_some_and(|node| {
                    node.deps.iter().any(|dep| {
                        chosen
                            .get(&dep.name)
                            .is_some_and(|&id| dep.id.is_none_or(|d| d.get() == id))
                    })
                })
            })
            .map(|entry| entry.key().name().to_string())
            .collect();
        dependents.sort();
        dependents
    }

    fn node_id(&self, name: &str) -> Option<u64> {
        self.tasks
            .get(name)
            .and_then(|slot| slot.node.is_some().then_some(slot.id))
    }

    fn lock_names(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_references(&self, names: &mut HashMap<Arc<str>, usize>, added: Vec<Arc<str>>) {
        for name in added {
            let count = names.entry(name).or_insert(0);
            if *count == 0 {
                self.referenced.fetch_add(1, Ordering::AcqRel);
            }
            *count += 1;
        }
    }

    /// Searches the pending graph for a path from `deps` back to the task
    /// `name` that is being registered; returns it as a cycle if found.
    ///
    /// The search visits at most [`CYCLE_SEARCH`] tasks, so a registration
    /// costs the same however large the graph: a cycle longer than that is
    /// not refused here, and the plan breaks it at shutdown (reported as
    /// [`GraphWarning::CycleBroken`](crate::GraphWarning::CycleBroken)).
    fn find_path_back(&self, name: &Arc<str>, deps: &[Dep]) -> Option<Vec<String>> {
        // Iterative depth-first search; `parent` rebuilds the path.
        let mut parent: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        let mut seen: HashSet<Arc<str>> = HashSet::new();
        let mut stack: Vec<Arc<str>> = Vec::new();
        for dep in deps {
            if seen.insert(dep.name.clone()) {
                parent.insert(dep.name.clone(), name.clone());
                stack.push(dep.name.clone());
            }
        }
        let mut visited = 0;
        while let Some(current) = stack.pop() {
            visited += 1;
            if visited > CYCLE_SEARCH {
                return None;
            }
            let next: Vec<Dep> = match self.tasks.get(&*current).as_deref() {
                Some(Slot {
                    node: Some(node), ..
                }) => node.deps.to_vec(),
                _ => continue,
            };
            for dep in next {
                if let Some(id) = dep.id {
                    if self.node_id(&dep.name) != Some(id.get()) {
                        continue;
                    }
                }
                if dep.name == *name {
                    let mut path = vec![name.to_string(), current.to_string()];
                    let mut at = current.clone();
                    while let Some(p) = parent.get(&at) {
                        path.push(p.to_string());
                        if p == name {
                            break;
                        }
                        at = p.clone();
                    }
                    path.reverse();
                    return Some(path);
                }
                if seen.insert(dep.name.clone()) {
                    parent.insert(dep.name.clone(), current.clone());
                    stack.push(dep.name);
                }
            }
        }
        None
    }
}
