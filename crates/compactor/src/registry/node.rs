//! What a pending task is: its node (options, dependencies, cleanup), the
//! map's slot that holds it, and the two forms it leaves the registry in: as
//! it is, for a run, or copied without its cleanup, for a plan.

use std::sync::{Arc, Mutex, PoisonError};

use dashmap::SharedValue;

use super::names::HashedName;
use crate::task::cleanup::BoxCleanup;
use crate::task::{CleanupKind, Dep, Spec};

/// A pending task.
pub(crate) struct Node {
    /// In a mutex only so the map is `Sync`; it is never contended: the
    /// cleanup is reached through `&mut` when taken. `None` once the run
    /// that taken the node has taken it.
    pub(crate) cleanup: Mutex<Option<BoxCleanup>>,
    pub(crate) deps: Box<[Dep]>,
    pub(crate) spec: Spec,
}

/// A task taken out of the registry: for a run, with its node; for a plan
/// that runs nothing, with a [`NodeCopy`].
pub(crate) struct Taken<N = Box<Node>> {
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
    pub(super) deps: CopiedDeps,
}

pub(super) enum CopiedDeps {
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
    pub(super) fn new(mut spec: Spec, deps: Vec<Dep>, cleanup: BoxCleanup) -> Box<Node> {
        spec.kind = CleanupKind::of(&*cleanup);
        Box::new(Node {
            cleanup: Mutex::new(Some(cleanup)),
            deps: deps.into_boxed_slice(),
            spec,
        })
    }

    /// Takes the cleanup out, for the run that taken the node.
    pub(crate) fn take_cleanup(&mut self) -> BoxCleanup {
        self.cleanup
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("a task's cleanup is taken once")
    }

    /// Takes the cleanup out, if it is there (a final task's is held by its
    /// run, not its node).
    pub(crate) fn try_take_cleanup(&mut self) -> Option<BoxCleanup> {
        self.cleanup
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Calls `f` with the cleanup while the node is pending.
    pub(super) fn with_cleanup<T>(
        &self,
        f: impl FnOnce(&dyn crate::task::cleanup::Cleanup) -> T,
    ) -> Option<T> {
        let cleanup = self.cleanup.lock().unwrap_or_else(PoisonError::into_inner);
        cleanup.as_deref().map(f)
    }
}

/// A map entry. The node is boxed so an entry stays small (a hash table is
/// sparse after it grows, and empty entries then cost little); its id sits
/// beside it, so the shutdown's take puts tasks in registration order without
/// reaching into every node.
pub(super) struct Stored {
    pub(super) id: u64,
    /// `None` only transiently, while [`Registry::take_where`](super::Registry::take_where) takes it out.
    pub(super) node: Option<Box<Node>>,
}

/// A table entry as taken: `None` for a slot being taken out.
pub(super) fn taken((name, slot): (HashedName, SharedValue<Stored>)) -> Option<Taken> {
    let Stored { id, node } = slot.into_inner();
    node.map(|node| Taken {
        id,
        name: name.into_name(),
        node,
    })
}
