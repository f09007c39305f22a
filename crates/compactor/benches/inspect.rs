//! What seeing a shutdown costs: `plan()` of 100,000 registered tasks, and
//! `progress()` of a run of 10,000 tasks under way (most of them waiting in
//! chains), each the median of its runs.
//!
//! `cargo bench -p compactor-shutdown --bench inspect`; figures in
//! `docs/benchmarks.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use compactor::{Compactor, Priority};

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// `n` tasks in three phases, every fourth depending on the one before it.
fn registered(
    n: usize,
    cleanup: impl Fn() -> tokio::sync::futures::Notified<'static> + Clone + Send + Sync + 'static,
) -> Compactor {
    let c = Compactor::builder().auto_listen(false).build();
    let mut previous = None;
    for i in 0..n {
        let priority = [Priority::High, Priority::Normal, Priority::Low][i % 3];
        let mut task = c.task(format!("task-{i}")).priority(priority);
        if i % 4 != 0 {
            if let Some(previous) = &previous {
                task = task.depends_on(previous);
            }
        }
        let cleanup = cleanup.clone();
        previous = Some(task.register(cleanup).expect("registered"));
    }
    c
}

fn main() {
    let gate: &'static tokio::sync::Notify = Box::leak(Box::new(tokio::sync::Notify::new()));
    let wait = move || gate.notified();

    let c = registered(100_000, wait);
    let mut plans = Vec::new();
    for round in 0..12 {
        let start = Instant::now();
        let plan = c.plan();
        let took = start.elapsed();
        assert_eq!(plan.tasks().len(), 100_000);
        if round > 0 {
            plans.push(took);
        }
    }
    println!(
        "plan() of 100,000 tasks: {:?} (median of {})",
        median(plans.clone()),
        plans.len()
    );
    drop(c);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let c = Arc::new(registered(10_000, wait));
    let run = {
        let c = c.clone();
        runtime.spawn(async move { c.shutdown().await })
    };
    // Wait until the first phase's ready tasks are all under way.
    while c.progress().is_none_or(|p| p.running().len() < 100) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut reads = Vec::new();
    for _ in 0..101 {
        let start = Instant::now();
        let progress = c.progress().expect("under way");
        reads.push(start.elapsed());
        assert_eq!(progress.total(), 10_000);
    }
    let p = c.progress().expect("under way");
    println!(
        "progress() of a 10,000-task run ({} running, {} waiting): {:?} (median of {})",
        p.running().len(),
        p.waiting().len(),
        median(reads.clone()),
        reads.len()
    );
    loop {
        gate.notify_waiters();
        if run.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = runtime.block_on(run).expect("the run");
    assert!(report.is_complete());
}
