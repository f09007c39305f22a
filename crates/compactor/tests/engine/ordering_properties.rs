//! Rules 1 to 4 over random dependency graphs (proptest), checked against a
//! reference scheduler: under paused time every task must start at exactly
//! the instant the rules allow, no sooner and no later.
//!
//! Task `k` sleeps 2^k ms, so no two tasks ever finish at the same instant
//! and the order in which a limited run picks its next task is unambiguous.

// Indices are task identities here, shared by several tables.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::time::Duration;

use compactor::{Compactor, Priority, TaskHandle};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    /// Registration order: `order[k]` is the rank of the k-th registered task.
    order: Vec<usize>,
    priorities: Vec<i32>,
    /// `(a, b)` with rank a < rank b: task of rank a depends on task of rank b.
    edges: Vec<(usize, usize)>,
    limit: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=14).prop_flat_map(|n| {
        let ranks = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let priorities = proptest::collection::vec(
            prop_oneof![Just(-100), Just(0), Just(0), Just(100), Just(200), Just(50)],
            n,
        );
        let edges = proptest::collection::vec((0..n, 0..n), 0..=2 * n);
        let limit = prop_oneof![Just(None), Just(Some(1)), Just(Some(2)), Just(Some(3))];
        (ranks, priorities, edges, limit).prop_map(|(order, priorities, edges, limit)| Case {
            order,
            priorities,
            edges: edges.into_iter().filter(|(a, b)| a < b).collect(),
            limit,
        })
    })
}

fn duration(k: usize) -> Duration {
    Duration::from_millis(1 << k)
}

/// The schedule the ordering rules prescribe, by registration index:
/// each task's start time.
fn reference(n: usize, deps: &[Vec<usize>], own: &[i32], limit: usize) -> Vec<Duration> {
    // Effective priority: own, raised to that of every task it must precede.
    let mut eff = own.to_vec();
    loop {
        let mut changed = false;
        for t in 0..n {
            for &d in &deps[t] {
                if eff[d] > eff[t] {
                    eff[t] = eff[d];
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let dependents: Vec<Vec<usize>> = (0..n)
        .map(|d| (0..n).filter(|&t| deps[t].contains(&d)).collect())
        .collect();
    let mut start = vec![None; n];
    let mut done = vec![false; n];
    let mut running: Vec<(Duration, usize)> = Vec::new();
    let mut now = Duration::ZERO;
    loop {
        let phase = (0..n).filter(|&t| !done[t]).map(|t| eff[t]).max();
        let Some(phase) = phase else { break };
        let mut ready: Vec<usize> = (0..n)
            .filter(|&t| {
                start[t].is_none() && eff[t] == phase && dependents[t].iter().all(|&u| done[u])
            })
            .collect();
        ready.sort_unstable_by(|a, b| b.cmp(a));
        for t in ready {
            if running.len() >= limit {
                break;
            }
            start[t] = Some(now);
            running.push((now + duration(t), t));
        }
        let (i, &(end, t)) = running
            .iter()
            .enumerate()
            .min_by_key(|(_, (end, _))| *end)
            .expect("something runs");
        running.swap_remove(i);
        now = end;
        done[t] = true;
    }
    start
        .into_iter()
        .map(|s| s.expect("every task started"))
        .collect()
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let n = case.order.len();
    // Registration index of each rank.
    let mut index_of_rank = vec![0; n];
    for (k, &rank) in case.order.iter().enumerate() {
        index_of_rank[rank] = k;
    }
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in &case.edges {
        let (t, d) = (index_of_rank[a], index_of_rank[b]);
        if !deps[t].contains(&d) {
            deps[t].push(d);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let mut builder = Compactor::builder()
            .deadline(Duration::from_secs(1 << 20))
            .default_timeout(Duration::from_secs(1 << 20));
        if let Some(limit) = case.limit {
            builder = builder.concurrency_limit(limit);
        }
        let c = builder.build();
        let mut handles: HashMap<usize, TaskHandle> = HashMap::new();
        for k in 0..n {
            let mut task = c
                .task(format!("t{k}"))
                .priority(Priority::Custom(case.priorities[k]));
            for &d in &deps[k] {
                task = match handles.get(&d) {
                    Some(h) => task.depends_on(h),
                    // Registered later: a forward reference by name.
                    None => task.depends_on_name(format!("t{d}")),
                };
            }
            let h = task
                .register(move || tokio::time::sleep(duration(k)))
                .unwrap();
            handles.insert(k, h);
        }
        c.shutdown().await
    });
    prop_assert!(report.is_clean(), "{}", report);
    prop_assert!(report.warnings().is_empty(), "{:?}", report.warnings());
    let expected = reference(n, &deps, &case.priorities, case.limit.unwrap_or(usize::MAX));
    for k in 0..n {
        let task = report.task(&format!("t{k}")).unwrap();
        prop_assert_eq!(task.started_at(), Some(expected[k]), "t{} in {}", k, report);
        prop_assert_eq!(task.duration(), duration(k));
    }
    // Rules 1 and 2 spelled out, on the observed times.
    let span = |k: usize| {
        let t = report.task(&format!("t{k}")).unwrap();
        let s = t.started_at().unwrap();
        (s, s + t.duration(), t.effective_priority())
    };
    for t in 0..n {
        for &d in &deps[t] {
            prop_assert!(
                span(t).1 <= span(d).0,
                "t{} must finish before t{} starts",
                t,
                d
            );
        }
        for u in 0..n {
            if span(u).2 > span(t).2 {
                prop_assert!(span(u).1 <= span(t).0, "phase of t{} before t{}", u, t);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graphs_run_exactly_as_the_rules_prescribe(case in case()) {
        run(&case)?;
    }
}
