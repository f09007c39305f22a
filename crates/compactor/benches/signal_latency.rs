//! From a real `SIGTERM` to the first cleanup starting.
//!
//! `cargo bench -p compactor --bench signal_latency`; figures in
//! `docs/benchmarks.md`. Each round builds an instance that listens for
//! signals, raises `SIGTERM` at the process, and timestamps the first
//! cleanup's start; the instance is dropped between rounds.

#[cfg(unix)]
fn main() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use compactor::{
        Compactor,
        signal::{Signal, SignalExit},
    };

    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = if std::env::args().any(|a| a == "--quick") {
        50
    } else {
        500
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds + 20 {
        let c = Compactor::builder()
            .signals([Signal::Terminate])
            .signal_exit(SignalExit::Return)
            .build();
        let (started, first) = mpsc::channel();
        runtime.block_on(async {
            // A thousand tasks, so planning is part of the measure.
            for i in 0..1000 {
                c.register(format!("noop-{i}"), || async {}).unwrap();
            }
            c.task("first")
                .priority(compactor::Priority::Critical)
                .register(move || {
                    let _ = started.send(Instant::now());
                    async {}
                })
                .unwrap();
            c.listen_for_signals().unwrap();
        });
        let sent = Instant::now();
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
        let at = first
            .recv_timeout(Duration::from_secs(5))
            .expect("the cleanup started");
        let _ = runtime.block_on(c.wait());
        drop(c);
        // The first rounds warm up threads and caches.
        if round >= 20 {
            samples.push(at - sent);
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "signal-latency: SIGTERM -> first cleanup started, {} rounds, 1001 tasks",
        samples.len()
    );
    println!("| median | p90 | p99 | max |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.1} us | {:.1} us | {:.1} us | {:.1} us |",
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.9).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6
    );
}

#[cfg(not(unix))]
fn main() {
    println!("signal-latency: Unix only");
}
