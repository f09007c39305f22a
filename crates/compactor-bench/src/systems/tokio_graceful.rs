use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_graceful::Shutdown;

use super::{System, contended, measure_heap, parked, wait_parked};
use crate::scenario::ran;

/// `tokio-graceful`: a `Shutdown` whose guards each cleanup task holds;
/// phases are one `Shutdown` each, stopped in turn.
pub(crate) struct TokioGraceful;

/// A `Shutdown` triggered by hand.
struct Manual {
    shutdown: Shutdown,
    trigger: oneshot::Sender<()>,
}

impl Manual {
    /// Must be called inside the runtime.
    fn new() -> Manual {
        let (trigger, signal) = oneshot::channel::<()>();
        Manual {
            shutdown: Shutdown::new(async move {
                let _ = signal.await;
            }),
            trigger,
        }
    }

    fn add(&self) {
        self.shutdown.spawn_task_fn(|guard| async move {
            parked();
            guard.cancelled().await;
            ran();
        });
    }

    async fn stop(self) {
        let _ = self.trigger.send(());
        self.shutdown.shutdown().await;
    }
}

impl System for TokioGraceful {
    fn name(&self) -> &'static str {
        "tokio-graceful"
    }

    fn cannot(&self) -> &'static [&'static str] {
        &[
            "shutdown-chain: guards have no order among themselves; a chain would be hand-rolled, as in tokio-util",
        ]
    }

    fn register(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let _entered = rt.enter();
        let manual = Manual::new();
        let start = Instant::now();
        for _ in 0..n {
            manual.add();
        }
        let elapsed = start.elapsed();
        wait_parked(n);
        rt.block_on(manual.stop());
        Some(elapsed)
    }

    fn register_contended(&self, n: usize, threads: usize, rt: &Runtime) -> Option<Duration> {
        let manual = {
            let _entered = rt.enter();
            Manual::new()
        };
        let (elapsed, _) = contended(n, threads, |range| {
            let _entered = rt.enter();
            for _ in range {
                manual.add();
            }
        });
        wait_parked(n);
        rt.block_on(manual.stop());
        Some(elapsed)
    }

    fn shutdown_flat(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let manual = {
            let _entered = rt.enter();
            let manual = Manual::new();
            for _ in 0..n {
                manual.add();
            }
            manual
        };
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(manual.stop());
        Some(start.elapsed())
    }

    fn shutdown_chain(&self, _n: usize, _rt: &Runtime) -> Option<Duration> {
        None
    }

    fn shutdown_layered(&self, n: usize, phases: usize, rt: &Runtime) -> Option<Duration> {
        let layers: Vec<Manual> = {
            let _entered = rt.enter();
            let layers: Vec<Manual> = (0..phases).map(|_| Manual::new()).collect();
            // Task i in phase i % phases, as every system registers them.
            for i in 0..n {
                layers[i % phases].add();
            }
            layers
        };
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(async {
            for layer in layers {
                layer.stop().await;
            }
        });
        Some(start.elapsed())
    }

    fn signal_latency(&self, rt: &Runtime, settle: Duration) -> Option<Duration> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (started, first) = mpsc::channel();
            let shutdown = rt.block_on(async {
                let mut term = signal(SignalKind::terminate()).expect("a SIGTERM stream");
                let shutdown = Shutdown::new(async move {
                    term.recv().await;
                });
                shutdown.spawn_task_fn(|guard| async move {
                    guard.cancelled().await;
                    let _ = started.send(Instant::now());
                });
                shutdown
            });
            let sent = super::raise_sigterm(rt, settle);
            let at = first
                .recv_timeout(Duration::from_secs(10))
                .expect("the cleanup started");
            rt.block_on(shutdown.shutdown());
            Some(at - sent)
        }
        #[cfg(not(unix))]
        {
            let _ = rt;
            None
        }
    }

    fn memory(&self, n: usize, rt: &Runtime) -> Option<(Duration, usize)> {
        let _entered = rt.enter();
        let manual = Manual::new();
        let (elapsed, bytes, ()) = measure_heap(|| {
            for _ in 0..n {
                manual.add();
            }
            wait_parked(n);
        });
        rt.block_on(manual.stop());
        Some((elapsed, bytes))
    }
}
