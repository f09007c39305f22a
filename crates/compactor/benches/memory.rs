//! Heap bytes per registered task, counted by a counting global allocator.
//!
//! `cargo bench -p compactor --bench memory`; figures in `docs/benchmarks.md`.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| tasks | kind | heap bytes per task |");
    println!("|---:|---|---:|");
    for n in [1_000usize, 10_000, 100_000] {
        for kind in ["async", "with-dependency", "weak"] {
            let names: Vec<String> = (0..n).map(|i| format!("task-{i}")).collect();
            let value = std::sync::Arc::new(0u64);
            let c = compactor::Compactor::new();
            let region = Region::new(GLOBAL);
            let mut prev = None;
            for name in &names {
                let task = c.task(name.as_str());
                let handle = match kind {
                    "async" => task.register(|| async {}),
                    "with-dependency" => match &prev {
                        Some(p) => task.depends_on(p).register(|| async {}),
                        None => task.register(|| async {}),
                    },
                    _ => task.register_weak(&value, |_v| async {}),
                }
                .unwrap();
                prev = Some(handle);
            }
            let change = region.change();
            // stats_alloc already folds reallocations into these two.
            let live = change.bytes_allocated as isize - change.bytes_deallocated as isize;
            println!("| {n} | {kind} | {:.0} |", live as f64 / n as f64);
            drop(c);
        }
    }
    scope_churn();
}

/// A long-lived parent, 100,000 scopes created and shut down on it with three
/// tasks each: the parent's heap must not grow with them.
fn scope_churn() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let parent = compactor::Compactor::new();
    let churn = |from: usize, to: usize| {
        runtime.block_on(async {
            for i in from..to {
                let scope = parent.task(format!("conn-{i}")).scope().unwrap();
                for task in ["socket", "session", "buffer"] {
                    scope.register(task, || async {}).unwrap();
                }
                assert!(scope.shutdown().await.is_clean());
            }
        });
    };
    // Warm up: the registry's table and the runtime reach their working size.
    churn(0, 1_000);
    let region = Region::new(GLOBAL);
    let mut rows = Vec::new();
    let mut done = 1_000;
    for target in [10_000, 50_000, 101_000] {
        churn(done, target);
        done = target;
        let change = region.change();
        rows.push((
            done - 1_000,
            change.bytes_allocated as isize - change.bytes_deallocated as isize,
        ));
    }
    println!();
    println!(
        "| scopes created and shut down (after 1,000 of warm-up) | live heap change, whole process |"
    );
    println!("|---:|---:|");
    for (n, bytes) in rows {
        println!("| {n} | {bytes} bytes |");
    }
    assert_eq!(parent.plan().inventory().tasks(), 0);
}
