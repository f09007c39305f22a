use std::sync::mpsc;
use std::time::{Duration, Instant};

use compactor::cleanup::once;
use compactor::{
    Priority,
    signal::{Signal, SignalExit},
};
use tokio::runtime::Runtime;

use super::{System, contended, measure_heap, names};
use crate::scenario::ran;

pub(crate) struct Compactor;

fn instance() -> compactor::Compactor {
    compactor::Compactor::builder()
        .auto_listen(false)
        .deadline(Duration::from_secs(600))
        .build()
}

fn shutdown(c: &compactor::Compactor, rt: &Runtime) -> Duration {
    let start = Instant::now();
    let report = rt.block_on(c.shutdown());
    let elapsed = start.elapsed();
    assert!(report.is_clean());
    elapsed
}

impl System for Compactor {
    fn name(&self) -> &'static str {
        "compactor"
    }

    fn register(&self, n: usize, _rt: &Runtime) -> Option<Duration> {
        let names = names(n);
        let c = instance();
        let start = Instant::now();
        for name in &names {
            c.register(name.as_str(), || async { ran() })
                .expect("registered");
        }
        Some(start.elapsed())
    }

    fn register_contended(&self, n: usize, threads: usize, _rt: &Runtime) -> Option<Duration> {
        let names = names(n);
        let c = instance();
        let (elapsed, _) = contended(n, threads, |range| {
            for name in &names[range] {
                c.register(name.as_str(), || async { ran() })
                    .expect("registered");
            }
        });
        Some(elapsed)
    }

    fn shutdown_flat(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let c = instance();
        for name in names(n) {
            c.register(name, || async { ran() }).expect("registered");
        }
        Some(shutdown(&c, rt))
    }

    fn shutdown_chain(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let c = instance();
        let mut previous = None;
        for name in names(n) {
            let mut task = c.task(name);
            if let Some(p) = &previous {
                task = task.depends_on(p);
            }
            previous = Some(task.register(|| async { ran() }).expect("registered"));
        }
        Some(shutdown(&c, rt))
    }

    fn scope_churn(&self, n: usize, rt: &Runtime) -> Option<Duration> {
        let c = instance();
        let start = Instant::now();
        rt.block_on(async {
            for i in 0..n {
                let conn = c.task(format!("conn-{i}")).scope().expect("a scope");
                conn.register("flush", once(|| async { ran() }))
                    .expect("registered");
                conn.register("close", once(|| async { ran() }))
                    .expect("registered");
                assert!(conn.shutdown().await.is_clean());
            }
        });
        let elapsed = start.elapsed();
        assert_eq!(
            c.plan().inventory().tasks(),
            0,
            "closed scopes leave nothing behind"
        );
        Some(elapsed)
    }

    fn shutdown_layered(&self, n: usize, phases: usize, rt: &Runtime) -> Option<Duration> {
        let c = instance();
        for (i, name) in names(n).into_iter().enumerate() {
            let phase = (i % phases) as i32;
            c.task(name)
                .priority(Priority::Custom(-phase))
                .register(|| async { ran() })
                .expect("registered");
        }
        Some(shutdown(&c, rt))
    }

    fn signal_latency(&self, rt: &Runtime, settle: Duration) -> Option<Duration> {
        if cfg!(not(unix)) {
            return None;
        }
        let c = compactor::Compactor::builder()
            .signals([Signal::Terminate])
            .signal_exit(SignalExit::Return)
            .build();
        let (started, first) = mpsc::channel();
        c.register("first", move || {
            let _ = started.send(Instant::now());
            async {}
        })
        .expect("registered");
        rt.block_on(async { c.listen_for_signals() })
            .expect("listening");
        let sent = super::raise_sigterm(rt, settle);
        let at = first
            .recv_timeout(Duration::from_secs(10))
            .expect("the cleanup started");
        let _ = rt.block_on(c.wait());
        Some(at - sent)
    }

    fn memory(&self, n: usize, _rt: &Runtime) -> Option<(Duration, usize)> {
        let names = names(n);
        let (elapsed, bytes, c) = measure_heap(|| {
            let c = instance();
            for name in &names {
                c.register(name.as_str(), || async { ran() })
                    .expect("registered");
            }
            c
        });
        drop(c);
        Some((elapsed, bytes))
    }
}
