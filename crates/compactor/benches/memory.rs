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
}
