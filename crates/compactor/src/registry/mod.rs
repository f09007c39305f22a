//! Pending tasks, keyed by name, and the gate that closes when shutdown begins.
//!
//! Registration is lock-free across shards: each name lives in one shard of a
//! [`DashMap`], and the `closed` flag is read under that shard's write lock.
//! [`Registry::take_all`] sets the flag first and then takes every shard's lock in
//! turn, so a registration either lands in its shard before the take reaches
//! it (and runs) or sees the flag (and is refused). Nothing is lost and nothing
//! runs twice.
//!
//! Here: the registry and a single registration. Beside it: [`node`] (what a
//! pending task is), [`names`] (the key's hash), [`cycles`] (name references
//! and the cycle search), [`batch`] (all-or-none insertion), [`take`] (tasks
//! leaving: early runs, prunes, the shutdown's take, a plan's copy), [`handle`].

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

mod batch;
mod cycles;
mod handle;
mod names;
mod node;
mod take;

pub use handle::TaskHandle;
use node::Stored;
pub(crate) use node::{Node, NodeCopy, Taken, TaskNode};

use crate::error::Error;
use crate::priority::Category;
use crate::task::cleanup::BoxCleanup;
use crate::task::{Dep, Spec};
use names::{HashedName, NameHash};

pub(crate) struct Registry {
    tasks: DashMap<HashedName, Stored, NameHash>,
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

impl Drop for Registry {
    /// Tasks that never ran leave the pending gauge with their instance.
    fn drop(&mut self) {
        if cfg!(feature = "metrics") {
            let left = self.tasks.iter().filter(|t| t.node.is_some()).count();
            crate::telemetry::pending(-(left as isize));
        }
    }
}

// No user code runs under the registry's locks (refused cleanups are
// dropped by the caller, outside them), and its locks do not poison: a
// panic seen through a handle leaves it whole.
impl std::panic::UnwindSafe for Registry {}
impl std::panic::RefUnwindSafe for Registry {}

/// A task to insert, made ready outside every lock: its name hashed, its
/// node built, and what the insertion needs to know of them read while
/// they are fresh in the cache (a batch inserts long after it made them).
pub(crate) struct NewTask {
    key: HashedName,
    /// The name again, for the task's handle.
    name: Arc<str>,
    node: Box<Node>,
    weak: bool,
    /// Whether it has dependencies, and whether any is by name (read here,
    /// so a batch's check touches no node).
    has_deps: bool,
    by_name: bool,
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

/// Weak registrations between two prunes, at least.
const PRUNE_AT_LEAST: usize = 1024;

impl Registry {
    pub(crate) fn new() -> Self {
        Registry::with_tasks(DashMap::with_hasher(NameHash::random()))
    }

    /// A registry for a few tasks (a scope's): two shards, the fewest a
    /// `DashMap` takes, where an application's has one per core or more
    /// (each an aligned allocation: most of a small scope's set-up).
    pub(crate) fn small() -> Self {
        Registry::with_tasks(DashMap::with_hasher_and_shard_amount(NameHash::random(), 2))
    }

    fn with_tasks(tasks: DashMap<HashedName, Stored, NameHash>) -> Self {
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
            has_deps: !deps.is_empty(),
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
            ..
        } = task;
        if self.is_closed() {
            return Err((Error::ShuttingDown, node));
        }
        let deps = &node.deps[..];
        for dep in deps {
            match dep.id {
                Some(id) if !self.is_pending(&dep.name, id) => {
                    // The shutdown closes the registry before it takes any
                    // task: a dependency gone with the registry closed went
                    // to the run, it was not unregistered.
                    let error = match self.is_closed() {
                        true => Error::ShuttingDown,
                        false => Error::UnknownDependency {
                            task: name.to_string(),
                            dependency: dep.name.to_string(),
                        },
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
                e.insert(Stored {
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
        crate::telemetry::pending(1);
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
            Stored {
                node: Some(node), ..
            },
        )) = removed
        else {
            return None;
        };
        self.forget_references([&*node]);
        crate::telemetry::pending(-1);
        Some(node)
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
}
