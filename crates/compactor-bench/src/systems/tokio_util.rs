use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{System, contended, measure_heap, parked, wait_parked};
use crate::scenario::ran;

/// Hand-rolled: a `CancellationToken` every cleanup task waits on, and a
/// `TaskTracker` to wait for them; orderings are built from channels and
/// one token per phase. The best code a service writes without a library.
pub(crate) struct TokioUtil;

struct Group {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Group {
    fn new() -> Group {
        Group {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Must be called inside the runtime.
    fn add(&self) {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            parked();
            token.cancelled().await;
            ran();
        });
    }

    async fn stop(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl System for TokioUtil {
    fn name(&self) -> &'static str {
        "tokio-util"
    }

    fn register(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let group = Group::new();
        let _entered = rt.enter();
        let start = Instant::now();
        for _ in 0..n {
            group.add();
        }
        let elapsed = start.elapsed();
        wait_parked(n);
        rt.block_on(group.stop());
        Some(elapsed)
    }

    fn scope_churn(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        // Per connection: a child of the process's token and a tracker for
        // its two cleanup tasks; closing cancels the child and waits.
        let parent = CancellationToken::new();
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                let conn = Group {
                    token: parent.child_token(),
                    tracker: TaskTracker::new(),
                };
                for _ in 0..2 {
                    let token = conn.token.clone();
                    conn.tracker.spawn(async move {
                        token.cancelled().await;
                        ran();
                    });
                }
                conn.stop().await;
            }
        });
        Some(start.elapsed())
    }

    fn register_contended(&self, n: usize, threads: usize, rt: &Runtime) -> Option<Duration> {
        let group = Group::new();
        let (elapsed, _) = contended(n, threads, |range| {
            let _entered = rt.enter();
            for _ in range {
                group.add();
            }
        });
        wait_parked(n);
        rt.block_on(group.stop());
        Some(elapsed)
    }

    fn shutdown_flat(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let group = Group::new();
        {
            let _entered = rt.enter();
            for _ in 0..n {
                group.add();
            }
        }
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(group.stop());
        Some(start.elapsed())
    }

    fn shutdown_chain(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        // Task i waits for the shutdown and for task i - 1.
        let group = Group::new();
        {
            let _entered = rt.enter();
            let mut previous: Option<oneshot::Receiver<()>> = None;
            for _ in 0..n {
                let (done, next) = oneshot::channel();
                let (token, before) = (group.token.clone(), previous.replace(next));
                group.tracker.spawn(async move {
                    parked();
                    token.cancelled().await;
                    if let Some(before) = before {
                        let _ = before.await;
                    }
                    ran();
                    let _ = done.send(());
                });
            }
        }
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(group.stop());
        Some(start.elapsed())
    }

    fn shutdown_layered(&self, n: usize, phases: usize, rt: &Runtime) -> Option<Duration> {
        let groups: Vec<Group> = (0..phases).map(|_| Group::new()).collect();
        {
            let _entered = rt.enter();
            // Task i in phase i % phases, as every system registers them.
            for i in 0..n {
                groups[i % phases].add();
            }
        }
        wait_parked(n);
        let start = Instant::now();
        rt.block_on(async {
            for group in &groups {
                group.stop().await;
            }
        });
        Some(start.elapsed())
    }

    fn signal_latency(&self, rt: &Runtime, settle: Duration) -> Option<Duration> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let token = CancellationToken::new();
            let (started, first) = mpsc::channel();
            let listening = rt.block_on(async {
                // Returns the listener's handle, to wait for it below.
                let mut term = signal(SignalKind::terminate()).expect("a SIGTERM stream");
                let trigger = token.clone();
                let listener = tokio::spawn(async move {
                    term.recv().await;
                    trigger.cancel();
                });
                let waiting = token.clone();
                tokio::spawn(async move {
                    waiting.cancelled().await;
                    let _ = started.send(Instant::now());
                });
                Some(listener)
            });
            let sent = super::raise_sigterm(rt, settle);
            let at = first
                .recv_timeout(Duration::from_secs(10))
                .expect("the cleanup started");
            if let Some(listening) = listening {
                let _ = rt.block_on(listening);
            }
            Some(at - sent)
        }
        #[cfg(not(unix))]
        {
            let _ = rt;
            None
        }
    }

    fn memory(&self, n: usize, rt: &Runtime) -> Option<(Duration, usize)> {
        let group = Group::new();
        let (elapsed, bytes, ()) = measure_heap(|| {
            let _entered = rt.enter();
            for _ in 0..n {
                group.add();
            }
            wait_parked(n);
        });
        rt.block_on(group.stop());
        Some((elapsed, bytes))
    }
}
