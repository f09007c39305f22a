//! Turns the tasks the shutdown took into a schedule: resolved dependency edges,
//! effective priorities and phases. Linear in tasks plus edges, iterative
//! throughout (a 100,000-deep chain is fine).

use std::collections::HashMap;
use std::sync::Arc;

use crate::priority::Priority;
use crate::registry::{Node, Taken, TaskNode};
use crate::report::GraphWarning;
use crate::task::Spec;

const REMOVED: u32 = u32::MAX;

/// Adjacency lists in one allocation: the targets of `i` are
/// `targets[offsets[i]..offsets[i + 1]]`; a broken edge's target is `REMOVED`.
#[derive(Debug, Default)]
pub(crate) struct Edges {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Edges {
    fn from_lists(n: usize, lists: &[(u32, u32)]) -> Self {
        // `lists` holds (from, to) pairs sorted by `from`.
        let mut offsets = Vec::with_capacity(n + 1);
        let mut targets = Vec::with_capacity(lists.len());
        let mut at = 0;
        for i in 0..n as u32 {
            offsets.push(targets.len() as u32);
            while at < lists.len() && lists[at].0 == i {
                targets.push(lists[at].1);
                at += 1;
            }
        }
        offsets.push(targets.len() as u32);
        Edges { offsets, targets }
    }

    /// The edges turned around, for `n` tasks.
    pub(crate) fn turned(&self, n: usize) -> Self {
        let mut pairs: Vec<(u32, u32)> = (0..n as u32)
            .flat_map(|from| self.of(from).map(move |to| (to, from)))
            .collect();
        pairs.sort_unstable();
        Edges::from_lists(n, &pairs)
    }

    pub(crate) fn has_edges(&self) -> bool {
        !self.targets.is_empty()
    }

    pub(crate) fn of(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        let range = match self.offsets.get(i as usize..i as usize + 2) {
            Some(&[start, end]) => start as usize..end as usize,
            _ => 0..0,
        };
        self.targets[range]
            .iter()
            .copied()
            .filter(|&t| t != REMOVED)
    }

    fn remove(&mut self, from: u32, to: u32) {
        let (start, end) = (self.offsets[from as usize], self.offsets[from as usize + 1]);
        if let Some(slot) = self.targets[start as usize..end as usize]
            .iter_mut()
            .find(|t| **t == to)
        {
            *slot = REMOVED;
        }
    }
}

/// A task of the plan: its node, as taken from the registry, and where it
/// runs.
pub(crate) struct Step<N = Box<Node>> {
    pub(crate) node: N,
    /// Its own priority raised to that of any task it must precede.
    pub(crate) effective: Priority,
    /// Index into [`Plan::phases`].
    pub(crate) phase: u32,
}

impl<N> Plan<N> {
    /// The final phase ([`Priority::Final`]), if the plan has one: always
    /// the last.
    pub(crate) fn final_phase(&self) -> Option<usize> {
        let last = self.phases.len().checked_sub(1)?;
        (self.phases[last] == Priority::Final).then_some(last)
    }

    /// Whether phase `phase`'s tasks may have to run one after another: a
    /// dependency among them, or more of them than `limit` at once.
    pub(crate) fn phase_in_line(&self, phase: usize, limit: usize) -> bool {
        let members = || {
            (0..self.tasks.len() as u32).filter(|&t| self.tasks[t as usize].phase as usize == phase)
        };
        members().count() > limit
            || members().any(|t| {
                self.precedes
                    .of(t)
                    .any(|d| self.tasks[d as usize].phase as usize == phase)
            })
    }
}

impl<N: TaskNode> Step<N> {
    pub(crate) fn spec(&self) -> &Spec {
        self.node.spec()
    }
}

/// The schedule of one run. Tasks are numbered phase by phase, in
/// registration order within a phase.
pub(crate) struct Plan<N = Box<Node>> {
    /// The name of each task; apart, so the run can share them with other
    /// threads without copying.
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) tasks: Vec<Step<N>>,
    /// `precedes.of(t)`: the tasks `t` depends on, which start only after `t`.
    /// Shared with the run's progress, which reads what each task waits for.
    pub(crate) precedes: Arc<Edges>,
    /// How many tasks must finish before each task may start; empty when
    /// there are no dependencies at all (every task may start at once).
    pub(crate) waiting: Vec<u32>,
    /// The effective priorities of the phases, highest first.
    pub(crate) phases: Vec<Priority>,
    pub(crate) warnings: Vec<GraphWarning>,
}

impl<N: TaskNode> Plan<N> {
    /// The plan of a whole shutdown; `nodes` must be in registration order.
    pub(crate) fn new(nodes: Vec<Taken<N>>) -> Plan<N> {
        Plan::build(nodes, true)
    }

    /// The plan of some of the tasks: dependencies on the others are dropped
    /// without a warning.
    pub(crate) fn partial(nodes: Vec<Taken<N>>) -> Plan<N> {
        Plan::build(nodes, false)
    }

    /// How many tasks must finish before task `i` may start.
    pub(crate) fn waiting(&self, i: usize) -> u32 {
        self.waiting.get(i).copied().unwrap_or(0)
    }

    fn build(nodes: Vec<Taken<N>>, whole: bool) -> Plan<N> {
        let n = nodes.len();
        let mut warnings = Vec::new();
        let edges = resolve(&nodes, whole, &mut warnings);
        let mut names: Vec<Arc<str>> = Vec::with_capacity(n);
        let mut tasks: Vec<Step<N>> = nodes
            .into_iter()
            .map(|Taken { name, node, .. }| {
                names.push(name);
                Step {
                    effective: node.spec().priority,
                    node,
                    phase: 0,
                }
            })
            .collect();
        // No edges, no tables (every task may start at once).
        let mut precedes = match edges.is_empty() {
            true => Edges::default(),
            false => Edges::from_lists(n, &edges),
        };
        let preceded_by = precedes.turned(n);
        drop(edges);
        raise_priorities(
            &mut tasks,
            &names,
            &mut precedes,
            preceded_by,
            &mut warnings,
        );

        let phases = distinct_descending(tasks.iter().map(|t| t.effective));
        if phases.len() > 1 {
            for t in &mut tasks {
                t.phase = phases
                    .binary_search_by(|p| t.effective.cmp(p))
                    .expect("every phase is listed") as u32;
            }
            if tasks.windows(2).any(|w| w[0].phase > w[1].phase) {
                let new_index = phase_order(&tasks, phases.len());
                if precedes.has_edges() {
                    precedes = renumber(&precedes, &new_index);
                }
                permute(&mut tasks, &mut names, &new_index);
            }
        }
        let mut waiting = Vec::new();
        if precedes.has_edges() {
            waiting = vec![0u32; n];
            for i in 0..n as u32 {
                for d in precedes.of(i) {
                    waiting[d as usize] += 1;
                }
            }
        }
        Plan {
            names,
            tasks,
            precedes: Arc::new(precedes),
            waiting,
            phases,
            warnings,
        }
    }
}

/// The dependency edges `(task, dependency)` by task index, sorted, with a
/// warning for each unknown name (in a whole shutdown).
fn resolve<N: TaskNode>(
    nodes: &[Taken<N>],
    whole: bool,
    warnings: &mut Vec<GraphWarning>,
) -> Vec<(u32, u32)> {
    let mut edges: Vec<(u32, u32)> = Vec::new();
    // Handle dependencies resolve by id (the nodes are in id order); only
    // dependencies by name need the name index.
    let by_id = |id: u64| {
        nodes
            .binary_search_by_key(&id, |d| d.id)
            .ok()
            .map(|i| i as u32)
    };
    let by_name: Option<HashMap<&str, u32>> = nodes
        .iter()
        .any(|d| d.node.deps().iter().any(|dep| dep.id.is_none()))
        .then(|| {
            nodes
                .iter()
                .enumerate()
                .map(|(i, d)| (&*d.name, i as u32))
                .collect()
        });
    for (i, Taken { name, node, .. }) in nodes.iter().enumerate() {
        let start = edges.len();
        for dep in node.deps() {
            let target = match dep.id {
                // Not found: the handle's task was unregistered, and the
                // dependency went with it.
                Some(id) => by_id(id.get()),
                None => {
                    let found = by_name
                        .as_ref()
                        .and_then(|index| index.get(&*dep.name))
                        .copied();
                    if found.is_none() && whole {
                        warnings.push(GraphWarning::UnknownDependency {
                            task: name.to_string(),
                            dependency: dep.name.to_string(),
                        });
                    }
                    found
                }
            };
            if let Some(j) = target {
                edges.push((i as u32, j));
            }
        }
        if edges.len() - start > 1 {
            edges[start..].sort_unstable();
            let mut mine = edges.split_off(start);
            mine.dedup();
            edges.append(&mut mine);
        }
    }
    edges
}

/// Raises each task's effective priority to that of the tasks it must
/// precede (Kahn's order, dependencies first), breaking any cycle on the way.
fn raise_priorities<N>(
    tasks: &mut [Step<N>],
    names: &[Arc<str>],
    precedes: &mut Edges,
    mut preceded_by: Edges,
    warnings: &mut Vec<GraphWarning>,
) {
    let n = tasks.len();
    let mut remaining: Vec<u32> = (0..n as u32)
        .map(|i| precedes.of(i).count() as u32)
        .collect();
    let mut done = vec![false; n];
    let mut queue: Vec<u32> = (0..n as u32)
        .filter(|&i| remaining[i as usize] == 0)
        .collect();
    let mut processed = 0;
    loop {
        while let Some(d) = queue.pop() {
            done[d as usize] = true;
            processed += 1;
            let raised = tasks[d as usize].effective;
            for t in preceded_by.of(d) {
                let t = t as usize;
                tasks[t].effective = tasks[t].effective.max(raised);
                remaining[t] -= 1;
                if remaining[t] == 0 {
                    queue.push(t as u32);
                }
            }
        }
        if processed == n {
            break;
        }
        let (from, to, path) = find_cycle(precedes, &done, names);
        precedes.remove(from, to);
        preceded_by.remove(to, from);
        warnings.push(GraphWarning::CycleBroken {
            path,
            dropped: (
                names[from as usize].to_string(),
                names[to as usize].to_string(),
            ),
        });
        remaining[from as usize] -= 1;
        if remaining[from as usize] == 0 {
            queue.push(from);
        }
    }
}

/// The distinct priorities, highest first.
fn distinct_descending(priorities: impl Iterator<Item = Priority>) -> Vec<Priority> {
    let mut all: Vec<Priority> = priorities.collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.dedup();
    all
}

/// New numbers for the tasks that make each phase's contiguous, in
/// registration order within the phase (so "latest registered first" still
/// compares indices). The runner then walks each phase through adjacent
/// memory instead of striding across all tasks.
fn phase_order<N>(tasks: &[Step<N>], phases: usize) -> Vec<u32> {
    // A counting sort: phases are few.
    let mut starts = vec![0u32; phases + 1];
    for t in tasks {
        starts[t.phase as usize + 1] += 1;
    }
    for p in 0..phases {
        starts[p + 1] += starts[p];
    }
    tasks
        .iter()
        .map(|t| {
            let slot = &mut starts[t.phase as usize];
            *slot += 1;
            *slot - 1
        })
        .collect()
}

/// The edges with every task renumbered.
fn renumber(edges: &Edges, new_index: &[u32]) -> Edges {
    let mut pairs: Vec<(u32, u32)> = (0..new_index.len() as u32)
        .flat_map(|old| {
            edges
                .of(old)
                .map(move |d| (new_index[old as usize], new_index[d as usize]))
        })
        .collect();
    pairs.sort_unstable();
    Edges::from_lists(new_index.len(), &pairs)
}

/// Moves `tasks[i]` and `names[i]` to position `new_index[i]`, in place:
/// each swap puts one task where it belongs, following the permutation's
/// cycles, so no second vector of either is allocated.
fn permute<N>(tasks: &mut [Step<N>], names: &mut [Arc<str>], new_index: &[u32]) {
    let mut to = new_index.to_vec();
    for at in 0..to.len() {
        loop {
            let target = to[at] as usize;
            if target == at {
                break;
            }
            tasks.swap(at, target);
            names.swap(at, target);
            to.swap(at, target);
        }
    }
}

/// Finds a cycle among the tasks Kahn's walk could not reach and picks the
/// dependency to drop: the one declared by the latest-registered task on the
/// cycle. Deterministic for a given set of registrations.
fn find_cycle(precedes: &Edges, done: &[bool], names: &[Arc<str>]) -> (u32, u32, Vec<String>) {
    let start = (0..done.len())
        .rev()
        .find(|&i| !done[i])
        .expect("a task is left") as u32;
    let mut position: HashMap<u32, usize> = HashMap::new();
    let mut walk = vec![start];
    let mut at = start;
    loop {
        position.insert(at, walk.len() - 1);
        // Every task left has a dependency that is also left.
        at = precedes
            .of(at)
            .filter(|&d| !done[d as usize])
            .max()
            .expect("a blocked task has a blocked dependency");
        if let Some(&p) = position.get(&at) {
            let cycle = &walk[p..];
            let from_pos = (0..cycle.len())
                .max_by_key(|&k| cycle[k])
                .expect("cycle is not empty");
            let from = cycle[from_pos];
            let to = cycle[(from_pos + 1) % cycle.len()];
            let mut path: Vec<String> = cycle
                .iter()
                .map(|&t| names[t as usize].to_string())
                .collect();
            path.push(path[0].clone());
            return (from, to, path);
        }
        walk.push(at);
    }
}

#[cfg(test)]
mod tests;
