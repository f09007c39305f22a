//! Name references and the cycle search: only a task whose name a pending
//! task references by name can close a cycle, so registrations count those
//! names and search the graph only for them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};

use super::Registry;
use super::node::{Node, Stored};
use crate::task::Dep;

/// How many tasks the cycle search of one registration visits at most.
pub(crate) const CYCLE_SEARCH: usize = 64;

impl Registry {
    /// Drops the name references held by removed tasks.
    pub(super) fn forget_references<'n>(&self, removed: impl IntoIterator<Item = &'n Node>) {
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

    pub(super) fn lock_names(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn add_references(
        &self,
        names: &mut HashMap<Arc<str>, usize>,
        added: Vec<Arc<str>>,
    ) {
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
    /// [`GraphWarning::CycleBroken`](crate::report::GraphWarning::CycleBroken)).
    pub(super) fn find_path_back(&self, name: &Arc<str>, deps: &[Dep]) -> Option<Vec<String>> {
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
                Some(Stored {
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
