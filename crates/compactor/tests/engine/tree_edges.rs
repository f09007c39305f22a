//! Where services, scopes and shutdowns meet: a service's end while an
//! instance above it shuts down, tokens of services cut off, aborts
//! through scopes, restarts at their edges, names with `/`, and races of
//! a scope's report with its parent's run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use compactor::report::{ShutdownReason, SkipReason};
use compactor::service::Supervision;
use compactor::{Backoff, Compactor, Error, Event, Outcome};

struct Gone(Arc<AtomicBool>);
impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// P1: an aborted service's token is never cancelled: a sub-task it spawned
/// on `ctx.token()` runs on forever.
#[tokio::test(start_paused = true)]
async fn p1_abort_cancels_the_service_token() {
    let c = Compactor::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.task("svc")
        .service(move |ctx| async move {
            let _ = tx.send(ctx.token());
            std::future::pending::<()>().await;
        })
        .unwrap();
    let token = rx.await.unwrap();
    let _report = c.abort().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        token.is_cancelled(),
        "the service's token is never cancelled after an abort"
    );
}

/// P1b: same when the service's drain is skipped by the deadline.
#[tokio::test(start_paused = true)]
async fn p1b_deadline_skip_cancels_the_service_token() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(1))
        .build();
    c.register("hog", std::future::pending::<()>).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.task("svc")
        .priority(compactor::Priority::Low)
        .service(move |ctx| async move {
            let _ = tx.send(ctx.token());
            std::future::pending::<()>().await;
        })
        .unwrap();
    let token = rx.await.unwrap();
    let report = c.shutdown().await;
    assert!(
        matches!(report.task("svc").unwrap().outcome(), Outcome::Skipped(_)),
        "{report}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        token.is_cancelled(),
        "the service's token is never cancelled after a deadline skip"
    );
}

/// P1c: unregistering a service's task cuts it off; its token?
#[tokio::test(start_paused = true)]
async fn p1c_unregister_cancels_the_service_token() {
    let c = Compactor::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let gone = Arc::new(AtomicBool::new(false));
    let g = Gone(gone.clone());
    let h = c
        .task("svc")
        .service(move |ctx| async move {
            let _g = g;
            let _ = tx.send(ctx.token());
            std::future::pending::<()>().await;
        })
        .unwrap();
    let token = rx.await.unwrap();
    assert!(h.unregister());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(token.is_cancelled());
}

/// P2: a scope named with a '/' is misnamed in its parent's report.
#[tokio::test(start_paused = true)]
async fn p2_scope_with_slash_in_name_left_report() {
    let app = Compactor::new();
    crate::common::keeper(&app);
    let conn = app
        .task("conn/1")
        .supervise(Supervision::end_scope())
        .scope()
        .unwrap();
    conn.task("reader")
        .service(|_ctx| async { Err::<(), _>("protocol error") })
        .unwrap();
    let _ = conn.wait().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = app.shutdown().await;
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert!(names.contains(&"conn/1"), "names: {names:?}");
}

/// P3: a scope's restartable service is restarted after the root's shutdown began.
#[tokio::test(start_paused = true)]
async fn p3_scope_service_restarted_during_parent_shutdown() {
    let app = Compactor::new();
    let mut events = app.subscribe();
    // A slow high-priority task keeps the scope's turn away.
    app.task("slow")
        .priority(compactor::Priority::Critical)
        .register(|| tokio::time::sleep(Duration::from_secs(5)))
        .unwrap();
    let sub = app.task("sub").scope().unwrap();
    let mut sub_events = sub.subscribe();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    sub.task("worker")
        .backoff(Backoff::fixed(Duration::from_millis(100)).without_jitter())
        .supervise(Supervision::end_all().restarts(100, Duration::from_secs(60)))
        .restartable(move |ctx| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                if ctx.restarts() == 0 {
                    // fail only after the root shutdown began
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                if ctx.is_cancelled() {
                    return Ok(());
                }
                Err::<(), _>("boom")
            }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _report = app.shutdown().await;
    let n = runs.load(Ordering::SeqCst);
    let mut _restarting = 0;
    while let Ok(e) = sub_events.try_recv() {
        if matches!(e, Event::ServiceRestarting { .. }) {
            _restarting += 1;
        }
    }
    while let Ok(e) = events.try_recv() {
        if matches!(e, Event::ServiceRestarting { .. }) {
            _restarting += 1;
        }
    }
    assert_eq!(
        n,
        1,
        "restarted {} times after the shutdown had begun",
        n - 1
    );
}

/// P4: abort() called from inside a cleanup of the same instance.
#[tokio::test(start_paused = true)]
async fn p4_abort_from_inside_own_cleanup() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(3600))
        .default_timeout(Duration::from_secs(3600))
        .build();
    let me = c.clone();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    c.task("late")
        .priority(compactor::Priority::Low)
        .register(move || {
            let r = r.clone();
            async move { r.store(true, Ordering::SeqCst) }
        })
        .unwrap();
    c.task("aborter")
        .priority(compactor::Priority::High)
        .register(move || {
            let me = me.clone();
            async move {
                let _snap = me.abort().await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(100), c.shutdown())
        .await
        .expect("run never finished");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        report.task("late").unwrap().outcome(),
        &Outcome::Skipped(SkipReason::Aborted)
    );
}

/// P5: abort twice and concurrently.
#[test]
fn p5_abort_concurrently_multi_thread() {
    for _ in 0..50 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Compactor::new();
            let sub = c.task("sub").scope().unwrap();
            sub.task("svc")
                .service(|_ctx| std::future::pending::<()>())
                .unwrap();
            c.task("svc")
                .service(|_ctx| std::future::pending::<()>())
                .unwrap();
            let (a, b, d) = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(
                    tokio::spawn({
                        let c = c.clone();
                        async move { c.abort().await }
                    }),
                    tokio::spawn({
                        let sub = sub.clone();
                        async move { sub.abort().await }
                    }),
                    tokio::spawn({
                        let c = c.clone();
                        async move { c.abort().await }
                    }),
                )
            })
            .await
            .expect("abort hung");
            assert_eq!(a.unwrap(), d.unwrap());
            let _ = b.unwrap();
        });
    }
}

/// P6: abort on a current_thread runtime with a blocking cleanup.
#[tokio::test(start_paused = true)]
async fn p6_abort_with_blocking_cleanup_current_thread() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(3600))
        .default_timeout(Duration::from_secs(3600))
        .build();
    c.task("blocker")
        .register(compactor::cleanup::blocking(|| {
            std::thread::sleep(Duration::from_millis(700));
        }))
        .unwrap();
    c.trigger();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t = std::time::Instant::now();
    let _report = c.abort().await;
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// P7: abort before any registration.
#[tokio::test(start_paused = true)]
async fn p7_abort_before_registration() {
    let c = Compactor::new();
    let report = c.abort().await;
    assert_eq!(report.reason(), &ShutdownReason::Aborted);
    assert!(report.is_clean());
    assert!(c.register("x", || async {}).is_err());
}

/// P8: restartable closure panics before returning a future.
#[tokio::test(start_paused = true)]
async fn p8_restartable_closure_panics_before_future() {
    let c = Compactor::new();
    c.task("keep")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let k = calls.clone();
    let h = c
        .task("w")
        .backoff(Backoff::fixed(Duration::from_millis(10)).without_jitter())
        .supervise(Supervision::carry_on().restarts(3, Duration::from_secs(60)))
        .restartable(move |_ctx| -> std::future::Ready<Result<(), String>> {
            k.fetch_add(1, Ordering::SeqCst);
            panic!("before future")
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let st = h.service().unwrap();
    assert_eq!(st.restarts(), 3);
    assert!(matches!(st.ended(), Some(Outcome::Panicked(_))));
    let _report = c.shutdown().await;
}

/// A zero window is refused: it would let every restart through.
#[tokio::test(start_paused = true)]
async fn p9_restarts_within_zero_are_refused() {
    let c = Compactor::new();
    let e = c
        .task("w")
        .supervise(Supervision::end_all().restarts(1, Duration::ZERO))
        .restartable(|_ctx| async { Err::<(), _>("x") })
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                option: "Supervision::restarts",
                ..
            }
        ),
        "{e}"
    );
    let e = c
        .task("sub")
        .supervise(Supervision::end_all().restarts(1, Duration::ZERO))
        .scope()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    assert_eq!(c.plan().tasks().len(), 0);
}

/// P10: restarts(1, MAX) and backoff MAX.
#[tokio::test(start_paused = true)]
async fn p10_restarts_max() {
    let c = Compactor::new();
    let h = c
        .task("w")
        .backoff(Backoff::fixed(Duration::MAX).without_jitter())
        .supervise(Supervision::end_all().restarts(u32::MAX, Duration::MAX))
        .restartable(|_ctx| async { Err::<(), _>("x") })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _st = h.service().unwrap();
    let _report = tokio::time::timeout(Duration::from_secs(60), c.shutdown())
        .await
        .expect("hung");
}

/// P4b: abort() from inside its own cleanup, variants.
#[tokio::test(start_paused = true)]
async fn p4b_abort_from_inside_own_cleanup_variants() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(3600))
        .default_timeout(Duration::from_secs(3600))
        .build();
    let me = c.clone();
    let returned = Arc::new(AtomicBool::new(false));
    let r = returned.clone();
    c.task("aborter")
        .register(move || {
            let me = me.clone();
            let r = r.clone();
            async move {
                let _snap = me.abort().await;
                r.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let _report = c.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(1));
}

/// P4c: on a multi-thread runtime, real time.
#[test]
fn p4c_abort_from_inside_own_cleanup_mt() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Compactor::builder()
            .deadline(Duration::from_secs(5))
            .default_timeout(Duration::from_secs(5))
            .build();
        let me = c.clone();
        c.task("aborter")
            .register(move || {
                let me = me.clone();
                async move {
                    let _snap = me.abort().await;
                }
            })
            .unwrap();
        let t0 = std::time::Instant::now();
        let _report = c.shutdown().await;
        assert!(t0.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn p4d_abort_inside_traced() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Compactor::builder()
            .deadline(Duration::from_secs(2))
            .default_timeout(Duration::from_secs(2))
            .build();
        let me = c.clone();
        c.task("aborter")
            .register(move || {
                let me = me.clone();
                async move {
                    let _snap = me.abort().await;
                }
            })
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(4), c.shutdown()).await;
        assert!(r.is_ok());
    });
}

/// A: a scope-level default with restarts refuses every one-shot service in it.
#[tokio::test(start_paused = true)]
async fn a_scope_default_with_restarts_refuses_one_shot_services() {
    let app = Compactor::new();
    let sub = app
        .task("sub")
        .supervise(Supervision::end_scope().restarts(3, Duration::from_secs(60)))
        .scope()
        .unwrap();
    let nested = sub.task("nested").scope().unwrap();
    let r1 = sub
        .task("once")
        .service(|ctx| async move { ctx.cancelled().await });
    let r2 = nested
        .task("once")
        .service(|ctx| async move { ctx.cancelled().await });
    assert!(
        r1.is_ok(),
        "a one-shot service in a scope whose default has restarts: {r1:?}"
    );
    assert!(r2.is_ok(), "nested: {r2:?}");
}

/// B: abort on a scope while the parent's shutdown is running it.
#[tokio::test(start_paused = true)]
async fn b_abort_scope_while_parent_runs_it() {
    let app = Compactor::builder()
        .deadline(Duration::from_secs(3600))
        .default_timeout(Duration::from_secs(3600))
        .build();
    let sub = app.task("sub").scope().unwrap();
    sub.register("hangs", std::future::pending::<()>).unwrap();
    sub.task("late")
        .priority(compactor::Priority::Low)
        .register(|| async {})
        .unwrap();
    let waiter = tokio::spawn({
        let app = app.clone();
        async move { app.shutdown().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _sub_report = tokio::time::timeout(Duration::from_secs(5), sub.abort())
        .await
        .expect("abort hung");
    let report = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("parent hung")
        .unwrap();
    let failures = report.failures();
    assert!(failures.iter().any(|f| f.path() == "sub/hangs"));
    assert!(failures.iter().any(|f| f.path() == "sub/late"));
}

/// C: a scope cut off by its task's timeout: what is inside is lost from failures().
#[tokio::test(start_paused = true)]
async fn c_cut_off_scope_failures_lost() {
    let app = Compactor::new();
    let sub = app
        .task("sub")
        .timeout(Duration::from_secs(1))
        .scope()
        .unwrap();
    sub.register("ok", || async {}).unwrap();
    sub.task("stuck")
        .priority(compactor::Priority::Low)
        .register(std::future::pending::<()>)
        .unwrap();
    let report = app.shutdown().await;
    let failures = report.failures();
    assert!(
        failures.iter().any(|f| f.path() == "sub/stuck"),
        "which task in the scope held it up is lost: {failures:?}"
    );
}

/// D: the root aborted while a scope runs: what its scope's tasks say.
#[tokio::test(start_paused = true)]
async fn d_root_abort_while_scope_runs() {
    let app = Compactor::builder()
        .deadline(Duration::from_secs(3600))
        .default_timeout(Duration::from_secs(3600))
        .build();
    let sub = app.task("sub").scope().unwrap();
    sub.register("hangs", std::future::pending::<()>).unwrap();
    sub.task("late")
        .priority(compactor::Priority::Low)
        .register(|| async {})
        .unwrap();
    app.trigger();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _report = app.abort().await;
    let sub_report = sub.wait().await;
    assert_eq!(
        sub_report.task("late").unwrap().outcome(),
        &Outcome::Skipped(SkipReason::Aborted)
    );
}

/// E: abort() called from a service's own code.
#[tokio::test(start_paused = true)]
async fn e_abort_from_a_service() {
    let c = Compactor::new();
    let me = c.clone();
    c.register("flush", || async {}).unwrap();
    c.task("admin")
        .service(move |_ctx| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = me.abort().await;
        })
        .unwrap();
    let _report = tokio::time::timeout(Duration::from_secs(60), c.wait())
        .await
        .expect("hung");
}

/// F: run_until_shutdown in a scope: its name is not a path.
#[tokio::test(start_paused = true)]
async fn f_run_until_shutdown_in_scope_name() {
    let app = Compactor::builder().auto_listen(false).build();
    let sub = app.task("sub").scope().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s2 = sub.clone();
    let h = tokio::spawn(async move {
        s2.run_until_shutdown(move |ctx| async move {
            let _ = tx.send(ctx.name().to_owned());
            ctx.cancelled().await;
        })
        .await
    });
    let name = rx.await.unwrap();
    sub.trigger();
    let _ = h.await;
    assert_eq!(name, "sub/compactor::service");
}

/// G: ServicesEnded race: the last service ends as a new one registers (multi-thread).
#[test]
fn g_services_ended_race() {
    let mut cut_right_after = 0;
    let n = 200;
    for _ in 0..n {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Compactor::builder()
                .default_timeout(Duration::from_secs(1))
                .build();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            c.task("first")
                .service(move |_ctx| async move {
                    let _ = rx.await;
                })
                .unwrap();
            tokio::task::yield_now().await;
            let _ = tx.send(());
            let r = c
                .task("second")
                .service(|ctx| async move { ctx.cancelled().await });
            if r.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if c.shutdown_token().is_cancelled() {
                    cut_right_after += 1;
                }
            }
            c.trigger();
        });
    }
}

/// H: failing service in a scope whose parent dropped every handle.
#[tokio::test(start_paused = true)]
async fn h_escalate_parent_gone() {
    let app = Compactor::new();
    let sub = app.task("sub").scope().unwrap();
    drop(app);
    sub.task("svc")
        .service(|_ctx| async { Err::<(), _>("boom") })
        .unwrap();
    let _report = tokio::time::timeout(Duration::from_secs(60), sub.wait())
        .await
        .expect("hung");
}

/// I: ServiceState after run_early drained it, and counting.
#[tokio::test(start_paused = true)]
async fn i_early_run_drains_service_then_other_ends() {
    let c = Compactor::new();
    let _a = c
        .task("a")
        .category(compactor::Category::Network)
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    c.task("b")
        .service(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // b ended by itself; a still runs.
    assert!(!c.shutdown_token().is_cancelled());
    let _early = c
        .run_early(compactor::Selection::Category(compactor::Category::Network))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// M1: a scope shut down by hand, or aborted, while its restartable
/// service waits out its backoff: the failure must not end the whole tree.
#[tokio::test(start_paused = true)]
async fn m1_scope_closed_during_backoff_does_not_escalate_to_root() {
    for abort in [false, true] {
        let app = Compactor::new();
        crate::common::keeper(&app);
        let sub = app.task("sub").scope().unwrap();
        sub.task("worker")
            .backoff(Backoff::fixed(Duration::from_secs(10)).without_jitter())
            .supervise(Supervision::end_all().restarts(5, Duration::from_secs(60)))
            .restartable(|_ctx| async { Err::<(), _>("down") })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = match abort {
            false => sub.shutdown().await,
            true => sub.abort().await,
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !app.shutdown_token().is_cancelled(),
            "abort {abort}: the root was shut down: {}",
            app.wait().await
        );
    }
}

/// M2: a scope's service failing by itself while its own scope shuts down
/// (before its drain's turn) ends the whole tree.
#[tokio::test(start_paused = true)]
async fn m2_scope_service_failing_during_scope_shutdown_escalates() {
    let app = Compactor::new();
    crate::common::keeper(&app);
    let sub = app.task("sub").scope().unwrap();
    sub.task("slow")
        .priority(compactor::Priority::Critical)
        .register(|| tokio::time::sleep(Duration::from_secs(5)))
        .unwrap();
    sub.task("svc")
        .service(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err::<(), _>("lost it")
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _sub_report = sub.shutdown().await;
    assert!(
        !app.shutdown_token().is_cancelled(),
        "the root was shut down: {}",
        app.wait().await
    );
}

/// M3: end_scope failure during the parent's shutdown: the scope runs its
/// cleanups before its phase.
#[tokio::test(start_paused = true)]
async fn m3_end_scope_during_parent_shutdown_runs_out_of_order() {
    let app = Compactor::new();
    let t0 = tokio::time::Instant::now();
    app.task("http")
        .priority(compactor::Priority::High)
        .register(|| tokio::time::sleep(Duration::from_secs(5)))
        .unwrap();
    let sub = app
        .task("sub")
        .priority(compactor::Priority::Low)
        .supervise(Supervision::end_scope())
        .scope()
        .unwrap();
    let at = Arc::new(std::sync::Mutex::new(None));
    let a = at.clone();
    sub.register("flush", move || {
        let a = a.clone();
        async move {
            *a.lock().unwrap() = Some(t0.elapsed());
        }
    })
    .unwrap();
    sub.task("svc")
        .service(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err::<(), _>("lost it")
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _report = app.shutdown().await;
    let ran_at = at.lock().unwrap().unwrap();
    assert!(
        ran_at >= Duration::from_secs(5),
        "the Low scope's cleanup ran at {ran_at:?}, during the High phase"
    );
}

/// I2: the order of two ends decides whether the instance shuts down.
#[tokio::test(start_paused = true)]
async fn i2_early_run_first_then_other_ends() {
    let c = Compactor::new();
    c.task("a")
        .category(compactor::Category::Network)
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    c.task("b")
        .service(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .unwrap();
    let _ = c
        .run_early(compactor::Selection::Category(compactor::Category::Network))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// N: the scope's left report and its parent's own ServicesEnded race
/// (multi-thread): is the failure ever lost from the parent's report?
#[test]
fn n_left_report_race() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lost = 0;
    let n = 2000;
    for _ in 0..n {
        let ok = rt.block_on(async {
            let outer = Compactor::new();
            let inner = outer
                .task("inner")
                .supervise(Supervision::carry_on())
                .scope()
                .unwrap();
            inner
                .task("svc")
                .service(|_ctx| async { Err::<(), _>("bad") })
                .unwrap();
            let report = tokio::time::timeout(Duration::from_secs(10), outer.wait())
                .await
                .expect("hung");
            report.failures().iter().any(|f| f.path() == "inner/svc")
        });
        if !ok {
            lost += 1;
        }
    }
    assert_eq!(lost, 0);
}

/// N2: a scope shutting itself down (end_scope) as its parent is triggered.
#[test]
fn n2_left_report_vs_parent_trigger_race() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lost = 0;
    let mut _both = 0;
    let n = 3000;
    for i in 0..n {
        let (ok, dup) = rt.block_on(async {
            let outer = Compactor::new();
            outer
                .task("keeper")
                .service(|ctx| async move { ctx.cancelled().await })
                .unwrap();
            let inner = outer
                .task("inner")
                .supervise(Supervision::end_scope())
                .scope()
                .unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            inner
                .task("svc")
                .service(move |_ctx| async move {
                    let _ = rx.await;
                    Err::<(), _>("bad")
                })
                .unwrap();
            let _ = tx.send(());
            // spin a little, varying
            let spin = i % 200;
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_micros(spin as u64) {
                std::hint::spin_loop();
            }
            outer.trigger();
            let report = tokio::time::timeout(Duration::from_secs(10), outer.wait())
                .await
                .expect("hung");
            let hits = report
                .failures()
                .iter()
                .filter(|f| f.path() == "inner/svc")
                .count();
            (hits >= 1, hits > 1)
        });
        if !ok {
            lost += 1;
        }
        if dup {
            _both += 1;
        }
    }
    assert_eq!(lost, 0);
}

/// M4: a scope's service that stops on the scope's shutdown_token (as the
/// docs of shutdown_token suggest) counts as "ended by itself": closing one
/// connection ends the whole server.
#[tokio::test(start_paused = true)]
async fn m4_service_stopping_on_scope_shutdown_token_ends_the_root() {
    let app = Compactor::new();
    let conn = app.task("conn").scope().unwrap();
    let stop = conn.shutdown_token();
    conn.task("reader")
        .service(move |_ctx| async move { stop.cancelled().await })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(conn.shutdown().await.is_clean());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !app.shutdown_token().is_cancelled(),
        "the root shut down: {}",
        app.wait().await
    );
}

/// M5: same on the root: a service that stops on the instance's shutdown
/// token; with end_all, a failure then names it as the reason? (control)
#[tokio::test(start_paused = true)]
async fn m5_panic_in_drop_of_aborted_service() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb in drop");
        }
    }
    let c = Compactor::new();
    let _h = c
        .task("svc")
        .service(|_ctx| async move {
            let _b = Bomb;
            std::future::pending::<()>().await;
        })
        .unwrap();
    tokio::task::yield_now().await;
    let _report = tokio::time::timeout(Duration::from_secs(60), c.abort())
        .await
        .expect("hung");
}

/// M6: panic in the Drop of a restartable closure after a clean drain.
#[tokio::test(start_paused = true)]
async fn m6_panic_in_drop_of_restartable_closure() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("closure bomb");
        }
    }
    let c = Compactor::new();
    let bomb = Bomb;
    let _h = c
        .task("svc")
        .supervise(Supervision::end_all().restarts(1, Duration::from_secs(1)))
        .restartable(move |ctx| {
            let _ = &bomb;
            async move { ctx.cancelled().await }
        })
        .unwrap();
    tokio::task::yield_now().await;
    let _report = tokio::time::timeout(Duration::from_secs(60), c.shutdown())
        .await
        .expect("hung");
}

/// A service that fails at once, restarted without a pause and without a
/// limit, on a current-thread runtime: the shutdown still comes, and the
/// service is not restarted past it.
#[tokio::test]
async fn an_unlimited_restart_loop_without_backoff_does_not_hold_the_shutdown() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(5))
        .build();
    let worker = c
        .task("spin")
        .backoff(Backoff::fixed(Duration::ZERO))
        .supervise(Supervision::end_all().restarts(u32::MAX, Duration::MAX))
        .restartable(|_ctx| async { Err::<(), _>("down") })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = tokio::time::timeout(Duration::from_secs(5), c.shutdown())
        .await
        .expect("the shutdown comes");
    assert!(worker.service().unwrap().restarts() > 0);
    assert!(
        matches!(report.task("spin").unwrap().outcome(), Outcome::Failed(_)),
        "{report}"
    );
    let after = worker.service().unwrap().restarts();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        worker.service().unwrap().restarts(),
        after,
        "restarted after the shutdown"
    );
}
