use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::{System, contended, measure_heap};
use crate::scenario::ran;

/// The cost of doing nothing but calling each cleanup: a `Vec` of boxed
/// closures, run in reverse.
pub(crate) struct Floor;

type Cleanup = Box<dyn FnOnce() + Send>;

fn filled(n: usize) -> Vec<Cleanup> {
    (0..n).map(|_| Box::new(ran) as Cleanup).collect()
}

fn run(cleanups: Vec<Cleanup>) -> Duration {
    let start = Instant::now();
    for cleanup in cleanups.into_iter().rev() {
        cleanup();
    }
    start.elapsed()
}

impl System for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn cannot(&self) -> &'static [&'static str] {
        &["signal-latency: no signal handling at all"]
    }

    fn register(&self, n: usize, _rt: &Runtime) -> Option<Duration> {
        let start = Instant::now();
        let mut cleanups: Vec<Cleanup> = Vec::new();
        for _ in 0..n {
            cleanups.push(Box::new(ran));
        }
        Some(start.elapsed())
    }

    fn register_contended(&self, n: usize, threads: usize, _rt: &Runtime) -> Option<Duration> {
        let shared: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());
        let (elapsed, _) = contended(n, threads, |range| {
            for _ in range {
                shared.lock().expect("not poisoned").push(Box::new(ran));
            }
        });
        Some(elapsed)
    }

    fn shutdown_flat(&self, n: usize, _rt: &Runtime) -> Option<Duration> {
        Some(run(filled(n)))
    }

    fn shutdown_chain(&self, n: usize, _rt: &Runtime) -> Option<Duration> {
        Some(run(filled(n)))
    }

    fn shutdown_layered(&self, n: usize, phases: usize, _rt: &Runtime) -> Option<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..phases {
            total += run(filled(n / phases));
        }
        Some(total)
    }

    fn signal_latency(&self, _rt: &Runtime, _settle: Duration) -> Option<Duration> {
        None
    }

    fn memory(&self, n: usize, _rt: &Runtime) -> Option<(Duration, usize)> {
        let (elapsed, bytes, kept) = measure_heap(|| {
            let mut cleanups: Vec<Cleanup> = Vec::new();
            for _ in 0..n {
                cleanups.push(Box::new(ran));
            }
            cleanups
        });
        drop(kept);
        Some((elapsed, bytes))
    }
}
