//! compactor side by side with the graceful-shutdown crates services use
//! today, in one run on one machine.
//!
//! ```text
//! cargo run --release --manifest-path crates/compactor-bench/Cargo.toml            # every scenario, every system
//! cargo run --release --manifest-path crates/compactor-bench/Cargo.toml -- --quick # fewer runs, under two minutes
//! cargo run --release --manifest-path crates/compactor-bench/Cargo.toml -- --only shutdown-flat   # one scenario
//! cargo run --release --manifest-path crates/compactor-bench/Cargo.toml -- --system compactor     # one system
//! ```
//!
//! Prints a markdown table and writes `target/bench/summary.json`. Each
//! measurement is the median of several runs after a warm-up run, on the
//! same tokio runtime (multi-threaded, 2 workers) for every system. Each run
//! is a fresh process (this program with `--child`), so no system inherits
//! another's allocator state, signal handlers or threads; the systems take
//! turns run by run, so drift in the machine's speed falls on all of them
//! alike.

mod alloc;
mod scenario;
mod systems;

use std::path::PathBuf;

use crate::scenario::{Measurement, Settings};
use crate::systems::SYSTEMS;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, scenario, system, runs] = args.as_slice() {
        if flag == "--child" {
            let runs = runs.parse().expect("--child SCENARIO SYSTEM RUNS");
            #[cfg(feature = "metrics")]
            let _recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("a Prometheus recorder");
            scenario::child(scenario, system, runs);
            return;
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only SCENARIO` and `--system NAME` (each repeatable) narrow the run.
    let only = values(&args, "--only");
    let chosen = values(&args, "--system");
    let systems: Vec<&dyn systems::System> = SYSTEMS
        .iter()
        .copied()
        .filter(|s| chosen.is_empty() || chosen.contains(&s.name()))
        .collect();
    let settings = Settings::new(quick);
    eprintln!(
        "compactor-bench: {} runs per measurement after a warm-up{}",
        settings.runs,
        if quick { " (--quick)" } else { "" }
    );
    let mut results: Vec<Measurement> = Vec::new();
    for scenario in scenario::SCENARIOS {
        if !only.is_empty() && !only.contains(&scenario.name) {
            continue;
        }
        results.extend(scenario::measure(scenario, &systems, &settings));
    }
    println!("{}", scenario::table(&results, &systems, &settings));
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let path = out.join("summary.json");
    let json = serde_json::to_string_pretty(&results).expect("serializable");
    std::fs::write(&path, json + "\n").expect("summary.json written");
    eprintln!("wrote {}", path.display());
}

/// Every value given after `flag`.
fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}
