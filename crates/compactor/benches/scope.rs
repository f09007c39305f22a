//! Closed scopes, one after another, each with two one-shot cleanups: the
//! work of one connection's scope. Run under callgrind at two counts, the
//! difference divided by the difference in scopes is the instructions of
//! one closed scope:
//!
//! ```sh
//! cargo bench -p compactor-shutdown --bench scope --no-run
//! valgrind --tool=callgrind target/release/deps/scope-* 200
//! valgrind --tool=callgrind target/release/deps/scope-* 1200
//! ```
//!
//! Alone, it prints the time per scope. Figures in `docs/benchmarks.md`.

use compactor::cleanup::once;
use std::time::Instant;

use compactor::Compactor;

fn main() {
    // `cargo bench` passes `--bench`; a count is the first number given.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let c = Compactor::builder().auto_listen(false).build();
    let began = Instant::now();
    runtime.block_on(async {
        for i in 0..n {
            let conn = c.task(format!("conn-{i}")).scope().expect("a scope");
            conn.register("flush", once(|| async {}))
                .expect("registered");
            conn.register("close", once(|| async {}))
                .expect("registered");
            assert!(conn.shutdown().await.is_clean());
        }
    });
    println!("{n} closed scopes: {:?} each", began.elapsed() / n as u32);
}
