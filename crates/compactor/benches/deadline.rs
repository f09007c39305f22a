//! The report at a deadline with many cleanups that never return: 20,000
//! and 100,000 of them, a 300 ms deadline, a two-worker runtime; how late
//! the report comes past the deadline, at the caller and by the report's
//! own clock (three runs each, fresh instances).
//!
//! `cargo bench -p compactor-shutdown --bench deadline`; figures in
//! `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use compactor::Compactor;

const DEADLINE: Duration = Duration::from_millis(300);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    for n in [20_000, 100_000] {
        for _ in 0..3 {
            let c = Compactor::builder()
                .auto_listen(false)
                .deadline(DEADLINE)
                .build();
            for i in 0..n {
                c.register(format!("t{i}"), std::future::pending::<()>)
                    .expect("registered");
            }
            let began = Instant::now();
            let report = runtime.block_on(c.shutdown());
            let at_caller = began.elapsed();
            println!(
                "{n} never-returning cleanups, deadline {DEADLINE:?}: report {:?} late at the caller, {:?} by its own clock",
                at_caller.saturating_sub(DEADLINE),
                report.duration().saturating_sub(DEADLINE),
            );
        }
    }
}
