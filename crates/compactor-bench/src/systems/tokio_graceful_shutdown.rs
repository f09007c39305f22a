use std::convert::Infallible;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};
use tokio_util::sync::CancellationToken;

use super::{System, measure_heap, names, parked, wait_parked};
use crate::scenario::ran;

/// `tokio-graceful-shutdown`: one subsystem per cleanup under a `Toplevel`;
/// a chain is subsystems nested 10,000 deep, each waiting for its child.
pub(crate) struct TokioGracefulShutdown;

const PATIENCE: Duration = Duration::from_secs(600);

async fn leaf(handle: &mut SubsystemHandle) -> Result<(), Infallible> {
    parked();
    handle.on_shutdown_requested().await;
    ran();
    Ok(())
}

/// One link of a chain: starts the rest of the chain below it, and cleans
/// up only once that has finished. (Boxed with its `Send` bound spelled out,
/// as a recursive async function must be.)
fn link(
    handle: &mut SubsystemHandle,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Infallible>> + Send + '_>> {
    Box::pin(async move {
        if depth > 1 {
            handle.start(SubsystemBuilder::new(
                "link",
                async move |h: &mut SubsystemHandle| link(h, depth - 1).await,
            ));
        }
        parked();
        handle.on_shutdown_requested().await;
        handle.wait_for_children().await;
        ran();
        Ok(())
    })
}

/// A toplevel that starts `n` leaves, and the time that took.
fn leaves(n: usize, token: CancellationToken) -> (Toplevel, mpsc::Receiver<Duration>) {
    let names = names(n);
    let (took, time) = mpsc::channel();
    let top = Toplevel::new_with_shutdown_token(
        async move |s: &mut SubsystemHandle| {
            let start = Instant::now();
            for name in names {
                s.start(SubsystemBuilder::new(name, leaf));
            }
            let _ = took.send(start.elapsed());
        },
        token,
    );
    (top, time)
}

fn finish(top: Toplevel, token: &CancellationToken, rt: &Runtime) -> Duration {
    let start = Instant::now();
    token.cancel();
    rt.block_on(top.handle_shutdown_requests(PATIENCE))
        .expect("a clean shutdown");
    start.elapsed()
}

impl System for TokioGracefulShutdown {
    fn name(&self) -> &'static str {
        "tokio-graceful-shutdown"
    }

    fn cannot(&self) -> &'static [&'static str] {
        &[
            "register-contended: subsystems are started through a SubsystemHandle, from inside the tree",
            "shutdown-layered: every subsystem gets the shutdown request at once; the only order is children before parents",
        ]
    }

    fn register(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let token = CancellationToken::new();
        let (top, time) = rt.block_on(async { leaves(n, token.clone()) });
        let took = time.recv().expect("the root subsystem ran");
        wait_parked(n);
        finish(top, &token, rt);
        Some(took)
    }

    fn register_contended(&self, _n: usize, _threads: usize, _rt: &Runtime) -> Option<Duration> {
        None
    }

    fn shutdown_flat(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let token = CancellationToken::new();
        let (top, _) = rt.block_on(async { leaves(n, token.clone()) });
        wait_parked(n);
        Some(finish(top, &token, rt))
    }

    fn shutdown_chain(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let token = CancellationToken::new();
        let top = rt.block_on(async {
            Toplevel::new_with_shutdown_token(
                async move |s: &mut SubsystemHandle| {
                    s.start(SubsystemBuilder::new(
                        "link",
                        async move |h: &mut SubsystemHandle| link(h, n).await,
                    ));
                },
                token.clone(),
            )
        });
        wait_parked(n);
        Some(finish(top, &token, rt))
    }

    fn shutdown_layered(&self, _n: usize, _phases: usize, _rt: &Runtime) -> Option<Duration> {
        None
    }

    fn signal_latency(&self, rt: &Runtime, settle: Duration) -> Option<Duration> {
        let (started, first) = mpsc::channel();
        let top = rt.block_on(async {
            Toplevel::new(async move |s: &mut SubsystemHandle| {
                s.start(SubsystemBuilder::new(
                    "first",
                    async move |h: &mut SubsystemHandle| {
                        parked();
                        h.on_shutdown_requested().await;
                        let _ = started.send(Instant::now());
                        Ok::<(), Infallible>(())
                    },
                ));
            })
            .catch_signals()
        });
        wait_parked(1);
        let sent = super::raise_sigterm(rt, settle);
        let at = first
            .recv_timeout(Duration::from_secs(10))
            .expect("the cleanup started");
        rt.block_on(top.handle_shutdown_requests(PATIENCE))
            .expect("a clean shutdown");
        Some(at - sent)
    }

    fn memory(&self, n: usize, rt: &Runtime) -> Option<(Duration, usize)> {
        let token = CancellationToken::new();
        let (elapsed, bytes, top) = measure_heap(|| {
            let (top, _) = rt.block_on(async { leaves(n, token.clone()) });
            wait_parked(n);
            top
        });
        finish(top, &token, rt);
        Some((elapsed, bytes))
    }
}
