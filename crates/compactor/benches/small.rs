//! The figures a small service sees: 1,000 registrations, and a shutdown of
//! 100 cleanups, each from a fresh instance on a two-worker runtime (the
//! median of 51 runs, after 5 of warm-up). The heap for 1,000 registrations
//! is in the `memory` bench.
//!
//! `cargo bench -p compactor --bench small`; figures in `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use compactor::Compactor;

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn instance() -> Compactor {
    Compactor::builder().auto_listen(false).build()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let names: Vec<String> = (0..1_000).map(|i| format!("task-{i}")).collect();
    let register = |_: usize| {
        let c = instance();
        let start = Instant::now();
        for name in &names {
            c.register(name.clone(), || async {}).expect("registered");
        }
        start.elapsed()
    };
    let shutdown = |_: usize| {
        let c = instance();
        for name in &names[..100] {
            c.register(name.clone(), || async {}).expect("registered");
        }
        let start = Instant::now();
        let report = runtime.block_on(c.shutdown());
        let elapsed = start.elapsed();
        assert!(report.is_clean() && report.tasks().len() == 100);
        elapsed
    };
    for i in 0..5 {
        register(i);
        shutdown(i);
    }
    let registered = median((0..51).map(register).collect());
    let shut_down = median((0..51).map(shutdown).collect());
    println!("| what | time |");
    println!("|---|---:|");
    println!(
        "| 1,000 registrations | {:.2} ms |",
        registered.as_secs_f64() * 1e3
    );
    println!(
        "| a shutdown of 100 cleanups | {:.2} ms |",
        shut_down.as_secs_f64() * 1e3
    );
}
