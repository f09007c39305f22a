use std::num::NonZeroU64;
use std::sync::Mutex;

use super::*;
use crate::task::Dep;

/// Nodes named `names`, in that registration order, with by-name dependencies.
fn nodes(names: &[&str], deps: &[(&str, &str)]) -> Vec<Taken> {
    names
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let deps: Vec<Dep> = deps
                .iter()
                .filter(|(from, _)| *from == name)
                .map(|(_, to)| Dep {
                    name: Arc::from(*to),
                    id: None,
                })
                .collect();
            let node = Node {
                cleanup: Mutex::new(Some(Box::new(crate::task::cleanup::AsyncFn(|| async {})))),
                deps: deps.into_boxed_slice(),
                spec: Spec::default(),
            };
            Taken {
                id: i as u64 + 1,
                name: Arc::from(name),
                node: Box::new(node),
            }
        })
        .collect()
}

fn precedes(plan: &Plan, i: u32) -> Vec<u32> {
    plan.precedes.of(i).collect()
}

#[test]
fn a_cycle_is_broken_at_the_latest_registered_task() {
    // a -> b -> c -> a, plus d -> a outside the cycle.
    let plan = Plan::new(nodes(
        &["a", "b", "c", "d"],
        &[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")],
    ));
    assert_eq!(
        plan.warnings,
        [GraphWarning::CycleBroken {
            path: vec!["a".into(), "b".into(), "c".into(), "a".into()],
            dropped: ("c".into(), "a".into()),
        }]
    );
    assert_eq!(precedes(&plan, 2), Vec::<u32>::new());
    assert_eq!(precedes(&plan, 0), [1]);
    assert_eq!(precedes(&plan, 3), [0]);
    // What remains runs d and a before b, b before c.
    assert_eq!(plan.waiting, [1, 1, 1, 0]);
}

#[test]
fn breaking_is_deterministic_and_handles_several_cycles() {
    let build = || {
        Plan::new(nodes(
            &["x", "y", "p", "q", "r"],
            &[("x", "y"), ("y", "x"), ("p", "q"), ("q", "r"), ("r", "p")],
        ))
    };
    let (one, two) = (build(), build());
    assert_eq!(one.warnings, two.warnings);
    assert_eq!(one.warnings.len(), 2);
    // Each cycle loses the dependency of its latest-registered task; the
    // cycle of the latest-registered task is broken first.
    let dropped: Vec<(String, String)> = one
        .warnings
        .iter()
        .map(|warning| match warning {
            GraphWarning::CycleBroken { dropped, .. } => dropped.clone(),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        dropped,
        [
            ("r".to_owned(), "p".to_owned()),
            ("y".to_owned(), "x".to_owned())
        ]
    );
}

#[test]
fn a_handle_dependency_on_a_replaced_task_is_dropped() {
    let mut all = nodes(&["db", "http"], &[]);
    all[1].node.deps = vec![Dep {
        name: Arc::from("db"),
        // The id of an earlier "db" that was unregistered and replaced.
        id: NonZeroU64::new(99),
    }]
    .into_boxed_slice();
    let plan = Plan::new(all);
    assert!(plan.warnings.is_empty());
    assert_eq!(precedes(&plan, 1), Vec::<u32>::new());
}

#[test]
fn phases_are_the_distinct_effective_priorities_highest_first() {
    let mut all = nodes(&["low", "crit", "mid"], &[("low", "crit")]);
    all[0].node.spec.priority = Priority::Low;
    all[1].node.spec.priority = Priority::Critical;
    let plan = Plan::new(all);
    assert_eq!(plan.phases, [Priority::Critical, Priority::Normal]);
    let phases: Vec<u32> = plan.tasks.iter().map(|t| t.phase).collect();
    assert_eq!(phases, [0, 0, 1]);
}

#[test]
fn tasks_are_renumbered_phase_by_phase_in_registration_order() {
    let mut all = nodes(&["a", "b", "c", "d", "e", "f"], &[]);
    let priorities = [
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
        Priority::Critical,
        Priority::Low,
        Priority::Normal,
    ];
    for (i, (d, p)) in all.iter_mut().zip(priorities).enumerate() {
        d.node.spec.priority = p;
        // Marks each node, to check it moves with its name.
        d.node.spec.retries = i as u32;
    }
    let plan = Plan::new(all);
    let names: Vec<&str> = plan.names.iter().map(|n| &**n).collect();
    assert_eq!(names, ["b", "d", "c", "f", "a", "e"]);
    let marks: Vec<u32> = plan.tasks.iter().map(|t| t.spec().retries).collect();
    assert_eq!(marks, [1, 3, 2, 5, 0, 4], "each task moved with its name");
    let phases: Vec<u32> = plan.tasks.iter().map(|t| t.phase).collect();
    assert_eq!(phases, [0, 0, 1, 1, 2, 2]);
}

/// Registers `count` tasks, task `i` at `priority(i)` and, if `chained`,
/// depending on task `i - 1` by handle; returns what the shutdown takes.
fn taken(count: usize, priority: impl Fn(usize) -> Priority, chained: bool) -> Vec<Taken> {
    let registry = crate::registry::Registry::new();
    let mut last: Option<(Arc<str>, NonZeroU64)> = None;
    for i in 0..count {
        let name: Arc<str> = Arc::from(format!("t{i}"));
        let spec = Spec {
            priority: priority(i),
            ..Spec::default()
        };
        let deps = match (&last, chained) {
            (Some((name, id)), true) => vec![Dep {
                name: name.clone(),
                id: Some(*id),
            }],
            _ => Vec::new(),
        };
        let cleanup = Box::new(crate::task::cleanup::AsyncFn(|| async {}));
        let Ok((id, _)) = registry.insert(name.clone(), spec, deps, cleanup) else {
            panic!("{name} registered");
        };
        last = Some((name, id));
    }
    registry.take_all()
}

#[test]
fn tasks_before_a_critical_one_rise_to_its_phase() {
    let one_critical = |i: usize| match i {
        5 => Priority::Critical,
        _ => Priority::Low,
    };
    let plan = Plan::new(taken(12, one_critical, true));
    // t6 .. t11 depend on t5, so run before it: they rise to its phase,
    // ahead of t0 .. t4, which stay in theirs.
    let effective: Vec<(String, Priority)> = plan
        .names
        .iter()
        .zip(&plan.tasks)
        .map(|(n, t)| (n.to_string(), t.effective))
        .collect();
    let expected: Vec<(String, Priority)> = (5..12)
        .map(|i| (format!("t{i}"), Priority::Critical))
        .chain((0..5).map(|i| (format!("t{i}"), Priority::Low)))
        .collect();
    assert_eq!(effective, expected);
    assert_eq!(plan.phases, [Priority::Critical, Priority::Low]);
}

#[test]
fn effective_priorities_are_the_highest_among_the_tasks_each_must_precede() {
    // Every task depends on up to three earlier ones, priorities spread.
    let n = 200u32;
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for t in 1..n {
        let mut deps: Vec<u32> = vec![t * 7 % t, t / 2, t - 1];
        deps.sort_unstable();
        deps.dedup();
        edges.extend(deps.into_iter().map(|d| (t, d)));
    }
    let own = |i: u32| Priority::Custom((i as i32 * 37) % 11);
    let mut tasks: Vec<Step> = nodes(&vec!["t"; n as usize], &[])
        .into_iter()
        .enumerate()
        .map(|(i, d)| Step {
            effective: own(i as u32),
            node: d.node,
            phase: 0,
        })
        .collect();
    let mut precedes = Edges::from_lists(n as usize, &edges);
    let preceded_by = precedes.turned(n as usize);
    let names: Vec<Arc<str>> = (0..n).map(|i| Arc::from(format!("t{i}"))).collect();
    let mut warnings = Vec::new();
    raise_priorities(
        &mut tasks,
        &names,
        &mut precedes,
        preceded_by,
        &mut warnings,
    );
    assert!(warnings.is_empty());

    // The definition, by brute force: the highest own priority among the
    // task and every task reachable through its dependencies.
    let reachable_max = |start: u32| {
        let mut seen = vec![false; n as usize];
        let mut stack = vec![start];
        let mut best = own(start);
        while let Some(t) = stack.pop() {
            for &(from, to) in &edges {
                if from == t && !seen[to as usize] {
                    seen[to as usize] = true;
                    best = best.max(own(to));
                    stack.push(to);
                }
            }
        }
        best
    };
    let expected: Vec<Priority> = (0..n).map(reachable_max).collect();
    let effective: Vec<Priority> = tasks.iter().map(|t| t.effective).collect();
    assert_eq!(effective, expected);
    assert_ne!(
        effective,
        (0..n).map(own).collect::<Vec<_>>(),
        "some task was raised"
    );
}
