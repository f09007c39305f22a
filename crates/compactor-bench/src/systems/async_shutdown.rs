use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_shutdown::ShutdownManager;
use tokio::runtime::Runtime;

use super::{System, contended, measure_heap, parked, wait_parked};
use crate::scenario::ran;

/// `async-shutdown`: a `ShutdownManager`; each cleanup task delays the
/// completion until it is done. Phases are one manager each, in turn.
pub(crate) struct AsyncShutdown;

fn add(manager: &ShutdownManager<()>) {
    let waiting = manager.clone();
    let task = manager
        .wrap_delay_shutdown(async move {
            parked();
            waiting.wait_shutdown_triggered().await;
            ran();
        })
        .expect("not shut down yet");
    tokio::spawn(task);
}

async fn stop(manager: &ShutdownManager<()>) {
    let _ = manager.trigger_shutdown(());
    manager.wait_shutdown_complete().await;
}

impl System for AsyncShutdown {
    fn name(&self) -> &'static str {
        "async-shutdown"
    }

    fn cannot(&self) -> &'static [&'static str] {
        &[
            "shutdown-chain: delay tokens have no order among themselves; a chain would be hand-rolled, as in tokio-util",
        ]
    }

    fn register(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let manager = ShutdownManager::new();
        let _entered = rt.enter();
        let start = Instant::now();
        for _ in 0..n {
            add(&manager);
        }
        let elapsed = start.elapsed();
        wait_parked(n);
        rt.block_on(stop(&manager));
        Some(elapsed)
    }

    fn register_contended(&self, n: usize, threads: usize, rt: &Runtime) -> Option<Duration> {
        let manager = ShutdownManager::new();
        let (elapsed, _) = contended(n, threads, |range| {
            let _entered = rt.enter();
            for _ in range {
                add(&manager);
            }
        });
        wait_parked(n);
        rt.block_on(stop(&manager));
        Some(elapsed)
    }

    fn shutdown_flat(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let manager = ShutdownManager::new();
        {
            let _entered = rt.enter();
            for _ in 0..n {
                add(&manager);
            }
        }
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(stop(&manager));
        Some(start.elapsed())
    }

    fn shutdown_chain(&self, _n: usize, _rt: &Runtime) -> Option<Duration> {
        None
    }

    fn shutdown_layered(&self, n: usize, phases: usize, rt: &Runtime) -> Option<Duration> {
        let managers: Vec<ShutdownManager<()>> =
            (0..phases).map(|_| ShutdownManager::new()).collect();
        {
            let _entered = rt.enter();
            // Task i in phase i % phases, as every system registers them.
            for i in 0..n {
                add(&managers[i % phases]);
            }
        }
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(async {
            for manager in &managers {
                stop(manager).await;
            }
        });
        Some(start.elapsed())
    }

    fn signal_latency(&self, rt: &Runtime, settle: Duration) -> Option<Duration> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let manager: ShutdownManager<()> = ShutdownManager::new();
            let (started, first) = mpsc::channel();
            rt.block_on(async {
                let mut term = signal(SignalKind::terminate()).expect("a SIGTERM stream");
                let trigger = manager.clone();
                tokio::spawn(async move {
                    term.recv().await;
                    let _ = trigger.trigger_shutdown(());
                });
                let waiting = manager.clone();
                let task = manager
                    .wrap_delay_shutdown(async move {
                        waiting.wait_shutdown_triggered().await;
                        let _ = started.send(Instant::now());
                    })
                    .expect("not shut down yet");
                tokio::spawn(task);
            });
            let sent = super::raise_sigterm(rt, settle);
            let at = first
                .recv_timeout(Duration::from_secs(10))
                .expect("the cleanup started");
            rt.block_on(manager.wait_shutdown_complete());
            Some(at - sent)
        }
        #[cfg(not(unix))]
        {
            let _ = rt;
            None
        }
    }

    fn memory(&self, n: usize, rt: &Runtime) -> Option<(Duration, usize)> {
        let manager = ShutdownManager::new();
        let (elapsed, bytes, ()) = measure_heap(|| {
            let _entered = rt.enter();
            for _ in 0..n {
                add(&manager);
            }
            wait_parked(n);
        });
        rt.block_on(stop(&manager));
        Some((elapsed, bytes))
    }
}
