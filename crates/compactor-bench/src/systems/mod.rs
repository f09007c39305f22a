//! One module per system; each runs every scenario it can express.

mod async_shutdown;
mod compactor;
mod floor;
mod tokio_graceful;
mod tokio_graceful_shutdown;
mod tokio_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

/// A graceful-shutdown system under test. Every method returns `None`
/// where the system cannot express the scenario (see [`System::cannot`]).
pub(crate) trait System: Sync {
    fn name(&self) -> &'static str;

    /// Why some scenarios are `n/a`.
    fn cannot(&self) -> &'static [&'static str] {
        &[]
    }

    /// The time to register `n` cleanups from one thread.
    fn register(&self, n: usize, rt: &Runtime) -> Option<Duration>;

    /// The time to register `n` cleanups from `threads` threads at once.
    fn register_contended(&self, n: usize, threads: usize, rt: &Runtime) -> Option<Duration>;

    /// From the trigger to the end of `n` independent no-op cleanups.
    fn shutdown_flat(&self, n: usize, rt: &Runtime) -> Option<Duration>;

    /// From the trigger to the end of `n` cleanups that run one after another.
    fn shutdown_chain(&self, n: usize, rt: &Runtime) -> Option<Duration>;

    /// From the trigger to the end of `n` cleanups in `phases` ordered phases.
    fn shutdown_layered(&self, n: usize, phases: usize, rt: &Runtime) -> Option<Duration>;

    /// `n` connections one after another, each opening a scope with two
    /// cleanups and closing it (running both): per connection.
    fn scope_churn(&self, _n: usize, _rt: &Runtime) -> Option<Duration> {
        None
    }

    /// From a real `SIGTERM` to the first cleanup starting.
    fn signal_latency(&self, rt: &Runtime, settle: Duration) -> Option<Duration>;

    /// The time to register `n` cleanups, and the heap they keep.
    fn memory(&self, n: usize, rt: &Runtime) -> Option<(Duration, usize)>;
}

pub(crate) static SYSTEMS: &[&dyn System] = &[
    &compactor::Compactor,
    &tokio_graceful_shutdown::TokioGracefulShutdown,
    &tokio_graceful::TokioGraceful,
    &async_shutdown::AsyncShutdown,
    &tokio_util::TokioUtil,
    &floor::Floor,
];

/// The names of `n` tasks, made before any timing starts.
pub(crate) fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("task-{i}")).collect()
}

/// Counts cleanups that are parked and waiting for the shutdown, so a
/// measurement starts only once every registered task is in place.
pub(crate) static PARKED: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn parked() {
    PARKED.fetch_add(1, Ordering::Relaxed);
}

/// Waits until `n` cleanups are parked (untimed set-up).
pub(crate) fn wait_parked(n: usize) {
    while PARKED.load(Ordering::Relaxed) < n {
        std::thread::yield_now();
    }
    PARKED.store(0, Ordering::Relaxed);
}

/// Times `register` and counts the heap it keeps.
pub(crate) fn measure_heap<T>(register: impl FnOnce() -> T) -> (Duration, usize, T) {
    let start = Instant::now();
    let (bytes, kept) = crate::alloc::kept_by(register);
    (start.elapsed(), bytes, kept)
}

/// Runs `register(thread, range)` on `threads` threads released together,
/// and times it from the release to the last one's end.
pub(crate) fn contended<T: Send>(
    n: usize,
    threads: usize,
    register: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> (Duration, Vec<T>) {
    let barrier = std::sync::Barrier::new(threads + 1);
    let per = n / threads;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, register) = (&barrier, &register);
                scope.spawn(move || {
                    barrier.wait();
                    register(t * per..(t + 1) * per)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let kept: Vec<T> = handles
            .into_iter()
            .map(|h| h.join().expect("a registering thread"))
            .collect();
        (start.elapsed(), kept)
    })
}

/// Raises `SIGTERM` at this process and returns when it was sent. With a
/// `settle` time, the process is idle first: two short tasks occupy both
/// workers (so where each last ran is alike for every system, not an
/// artifact of its set-up), then nothing runs for `settle`.
#[cfg(unix)]
pub(crate) fn raise_sigterm(rt: &Runtime, settle: Duration) -> Instant {
    if !settle.is_zero() {
        rt.block_on(async {
            let busy = || tokio::spawn(async { std::thread::sleep(Duration::from_micros(50)) });
            let (a, b) = (busy(), busy());
            let _ = tokio::join!(a, b);
        });
        std::thread::sleep(settle);
    }
    let sent = Instant::now();
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).expect("raise SIGTERM");
    sent
}
