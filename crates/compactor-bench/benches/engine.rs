//! Speed of the engine: registration and shutdown runs.
//!
//! `cargo bench --manifest-path crates/compactor-bench/Cargo.toml --bench engine`;
//! figures in `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use compactor::{Compactor, TaskHandle};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("task-{i}")).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("register");
    group.throughput(Throughput::Elements(1));
    // One registration into an instance of up to 100,000 tasks: criterion's
    // iterations are spread over fresh instances, created and dropped untimed.
    let all = names(100_000);
    group.bench_function("one", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let batch = &all[..left.min(all.len())];
                let c = Compactor::new();
                let start = Instant::now();
                for name in batch {
                    black_box(c.register(name.as_str(), || async {}).unwrap());
                }
                total += start.elapsed();
                left -= batch.len();
                drop(c);
            }
            total
        });
    });
    group.finish();

    let mut group = c.benchmark_group("register");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000-fresh-instance", |b| {
        let names = names(1000);
        b.iter(|| {
            let c = Compactor::new();
            for name in &names {
                black_box(c.register(name.as_str(), || async {}).unwrap());
            }
            c
        });
    });
    group.finish();
}

/// Times `iters` shutdowns of instances made by `build` (building is not timed).
fn time_shutdowns(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    build: impl Fn() -> Compactor,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let c = build();
        let start = Instant::now();
        let report = rt.block_on(c.shutdown());
        total += start.elapsed();
        assert!(report.is_clean());
    }
    total
}

fn shutdown(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("shutdown");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for n in [1_000usize, 100_000] {
        let names = names(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("flat", n), &names, |b, names| {
            b.iter_custom(|iters| {
                time_shutdowns(&rt, iters, || {
                    let c = Compactor::new();
                    for name in names {
                        c.register(name.as_str(), || async {}).unwrap();
                    }
                    c
                })
            });
        });
        group.bench_with_input(BenchmarkId::new("chain", n), &names, |b, names| {
            b.iter_custom(|iters| {
                time_shutdowns(&rt, iters, || {
                    let c = Compactor::new();
                    let mut prev: Option<TaskHandle> = None;
                    for name in names {
                        let mut task = c.task(name.as_str());
                        if let Some(p) = &prev {
                            task = task.depends_on(p);
                        }
                        prev = Some(task.register(|| async {}).unwrap());
                    }
                    c
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, register, shutdown);
criterion_main!(benches);
