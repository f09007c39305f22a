//! How registration scales with the number of tasks, for each mix of
//! dependencies: 100,000 and 1,000,000 tasks, nanoseconds per registration
//! (the median of 5 runs at 100,000 and of 3 at 1,000,000, the mixes taking
//! turns). Linear registration shows as the same figure for both sizes.
//!
//! `cargo bench -p compactor-shutdown --bench registration`; figures in
//! `docs/benchmarks.md`.

use std::time::Instant;

use compactor::{Compactor, TaskHandle};

/// Registers `n` tasks in one of the mixes; returns the time taken.
fn run(mix: &str, n: usize) -> std::time::Duration {
    let c = Compactor::new();
    let start = Instant::now();
    let mut previous: Option<TaskHandle> = None;
    match mix {
        "none" => {
            for i in 0..n {
                c.register(format!("t{i}"), || async {}).unwrap();
            }
        }
        "handle-chain" => {
            for i in 0..n {
                let task = c.task(format!("t{i}"));
                let task = match &previous {
                    Some(p) => task.depends_on(p),
                    None => task,
                };
                previous = Some(task.register(|| async {}).unwrap());
            }
        }
        "forward-names" => {
            // Each task names the next, registered after it.
            for i in 0..n {
                c.task(format!("t{i}"))
                    .depends_on_name(format!("t{}", i + 1))
                    .register(|| async {})
                    .unwrap();
            }
        }
        "handles-and-forward-names" => {
            // A chain by handle, then tasks that each name a task to come,
            // then those tasks, each depending on the chain's end: every one
            // of the last could close a cycle, and the search for one walks
            // the chain.
            let third = n / 3;
            for i in 0..third {
                let task = c.task(format!("c{i}"));
                let task = match &previous {
                    Some(p) => task.depends_on(p),
                    None => task,
                };
                previous = Some(task.register(|| async {}).unwrap());
            }
            for i in 0..third {
                c.task(format!("t{i}"))
                    .depends_on_name(format!("x{i}"))
                    .register(|| async {})
                    .unwrap();
            }
            let end = previous.take().expect("a chain");
            for i in 0..n - 2 * third {
                c.task(format!("x{i}"))
                    .depends_on(&end)
                    .register(|| async {})
                    .unwrap();
            }
        }
        "one-batch" => {
            // The "none" mix, in one batch.
            let batch = (0..n).map(|i| c.task(format!("t{i}")).define(|| async {}));
            c.register_batch(batch).unwrap();
        }
        other => unreachable!("{other}"),
    }
    let took = start.elapsed();
    drop(c);
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mixes = [
        "none",
        "one-batch",
        "handle-chain",
        "forward-names",
        "handles-and-forward-names",
    ];
    // The mixes take turns, run by run, so a slow spell of the machine
    // falls on all of them alike.
    let per_task = |n: usize, runs: usize| -> Vec<u128> {
        let mut times = vec![Vec::new(); mixes.len()];
        for _ in 0..runs {
            for (mix, times) in mixes.iter().zip(&mut times) {
                times.push(run(mix, n).as_nanos() / n as u128);
            }
        }
        times
            .into_iter()
            .map(|mut t| {
                t.sort_unstable();
                t[t.len() / 2]
            })
            .collect()
    };
    let (small, large) = (per_task(100_000, 5), per_task(1_000_000, 3));
    println!("| mix | 100k: ns per task | 1M: ns per task |");
    println!("|---|---:|---:|");
    for (mix, (small, large)) in mixes.iter().zip(small.into_iter().zip(large)) {
        println!("| {mix} | {small} | {large} |");
    }
}
