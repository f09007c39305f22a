//! More seams of services as a tree: a scope's service holding its thread,
//! aborts during early runs, withdrawals and the whole-ends count, a run's
//! guard on its own token, the panic hook beside supervision, late scope
//! tasks, `main` in a scope and beside services, deep paths, capped
//! reports of scopes, names holding `/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use compactor::report::{Interruption, ShutdownReason};
use compactor::service::Supervision;
use compactor::{Category, Compactor, Outcome, Priority, Selection};

use crate::common;

/// Q1: a scope's service that holds its thread past its cut-off is not
/// reported abandoned (the live list holds its path, the run its name).
/// Control: the same at the root is (services.rs).
#[test]
fn q1_scope_service_holding_its_thread_is_reported_abandoned() {
    let runtime = common::multi_thread(2);
    let app = Compactor::builder()
        .deadline(Duration::from_millis(100))
        .build();
    let sub = app.task("sub").scope().unwrap();
    {
        let _entered = runtime.enter();
        sub.task("svc")
            .service(|_stop| async {
                std::thread::sleep(Duration::from_millis(400));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
    }
    sub.task("holder")
        .priority(Priority::Critical)
        .register(std::future::pending::<()>)
        .unwrap();
    let report = runtime.block_on(sub.shutdown());
    let task = report.task("svc").unwrap();
    assert!(matches!(task.outcome(), Outcome::Skipped(_)), "{report}");
    assert_eq!(
        task.interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    runtime.shutdown_background();
}

/// Q2: abort() is "published at once", but waits for an early run under
/// way, up to its tasks' end or the deadline.
#[tokio::test(start_paused = true)]
async fn q2_abort_waits_for_an_early_run() {
    let c = Compactor::new();
    c.task("slow")
        .category(Category::Network)
        .register(|| tokio::time::sleep(Duration::from_secs(8)))
        .unwrap();
    let c2 = c.clone();
    let early =
        tokio::spawn(async move { c2.run_early(Selection::Category(Category::Network)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t0 = tokio::time::Instant::now();
    let report = c.abort().await;
    let took = t0.elapsed();
    let _ = early.await;
    assert!(
        took < Duration::from_secs(1),
        "abort took {took:?}:\n{report}"
    );
}

/// Q3: one service ended by itself long ago (one_ended is sticky); later
/// another is unregistered to be replaced: the instance shuts down, and
/// the replacement is refused.
#[tokio::test(start_paused = true)]
async fn q3_replacing_a_service_after_another_ended_shuts_the_instance_down() {
    let c = Compactor::new();
    let a = c
        .task("http")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    c.task("migrate").service(|_ctx| async {}).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!c.shutdown_token().is_cancelled());
    // Replace `http` (new config), after one await.
    assert!(a.unregister());
    tokio::task::yield_now().await;
    let again = c
        .task("http")
        .service(|ctx| async move { ctx.cancelled().await });
    assert!(
        again.is_ok(),
        "replacement refused: {again:?}; reason {}",
        c.wait().await.reason()
    );
}

/// Q3b: the same through a per-connection scope: a connection that closed
/// by itself makes the root shut down when its listener is replaced.
#[tokio::test(start_paused = true)]
async fn q3b_a_closed_connection_makes_replacing_the_listener_fatal() {
    let app = Compactor::new();
    let listener = app
        .task("listener")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    let conn = app.task("conn-1").scope().unwrap();
    conn.task("reader").service(|_ctx| async {}).unwrap();
    let _ = conn.wait().await; // the client hung up: the scope ends
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!app.shutdown_token().is_cancelled());
    assert!(listener.unregister());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        !app.shutdown_token().is_cancelled(),
        "root shut down: {}",
        app.wait().await.reason()
    );
}

/// Q4: a scope's task that returns only after its timeout (Overran, its
/// code held the current-thread runtime): its failures are lost.
#[tokio::test]
async fn q4_overran_scope_keeps_its_failures() {
    let app = Compactor::new();
    let sub = app
        .task("sub")
        .timeout(Duration::from_millis(50))
        .scope()
        .unwrap();
    sub.register("hog", || async {
        std::thread::sleep(Duration::from_millis(300));
        Err::<(), _>("disk full")
    })
    .unwrap();
    let report = app.shutdown().await;
    let failures: Vec<String> = report.failures().iter().map(|f| f.to_string()).collect();
    assert!(
        failures.iter().any(|f| f.starts_with("sub/hog")),
        "{report}\nfailures: {failures:?}\nscope: {:?}",
        report.task("sub").unwrap().scope().is_some()
    );
}

/// Q5: the DropGuard idiom (sub-tasks stop when the service returns)
/// cancels the service's own token before its end is read: a failure is
/// taken for a stop, so end_all ends nothing.
#[tokio::test(start_paused = true)]
async fn q5_drop_guard_on_own_token_disables_supervision() {
    let c = Compactor::new();
    c.task("svc")
        .service(|ctx| async move {
            let _stop_children = ctx.token().drop_guard();
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<(), _>("lost the database")
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        c.shutdown_token().is_cancelled(),
        "a failing end_all service ended nothing"
    );
}

/// Q5b: same with restarts: never restarted.
#[tokio::test(start_paused = true)]
async fn q5b_drop_guard_on_own_token_disables_restarts() {
    let c = Compactor::new();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let h = c
        .task("svc")
        .supervise(Supervision::carry_on().restarts(3, Duration::from_secs(60)))
        .restartable(move |ctx| {
            let r = r.clone();
            async move {
                let _stop_children = ctx.token().drop_guard();
                r.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("flaky")
            }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4, "{:?}", h.service());
}

/// Q6: with `shutdown_on_panic`, a restartable service's first panic ends
/// the instance (the panic hook), before its supervision can restart it.
#[tokio::test(start_paused = true)]
async fn q6_shutdown_on_panic_overrides_a_restartable_service() {
    let c = Compactor::builder().shutdown_on_panic(true).build();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let h = c
        .task("worker")
        .supervise(Supervision::carry_on().restarts(5, Duration::from_secs(60)))
        .restartable(move |ctx| {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run blows up");
                }
                ctx.cancelled().await;
            }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !c.shutdown_token().is_cancelled(),
        "shut down: {} (restarts {:?})",
        c.wait().await.reason(),
        h.service()
    );
}

/// Q8: the table cuts a nested failure's path at its end: the failing
/// task's own name is what is lost.
#[tokio::test(start_paused = true)]
async fn q8_table_keeps_the_leaf_of_a_deep_path() {
    let app = Compactor::new();
    let mut at = app.clone();
    for name in [
        "tenant-acme-corporation",
        "connection-10.0.0.1:51234",
        "session-7f3a9c",
        "pipeline",
    ] {
        at = at.task(name).scope().unwrap();
    }
    at.register("flush-wal", || async { Err::<(), _>("disk full") })
        .unwrap();
    let report = app.shutdown().await;
    let table = report.to_string();
    assert!(report.failures()[0].path().ends_with("/flush-wal"));
    assert!(table.contains("flush-wal"), "{table}");
}

/// Q9: equal reports, every way they are had, with a left report and a
/// cut-off scope.
#[tokio::test(start_paused = true)]
async fn q9_every_caller_gets_an_equal_report() {
    let app = Compactor::new();
    crate::common::keeper(&app);
    let conn = app
        .task("conn")
        .supervise(Supervision::end_scope())
        .scope()
        .unwrap();
    conn.task("reader")
        .service(|_ctx| async { Err::<(), _>("protocol") })
        .unwrap();
    let _ = conn.wait().await;
    let cut = app
        .task("cut")
        .timeout(Duration::from_secs(1))
        .scope()
        .unwrap();
    cut.register("stuck", std::future::pending::<()>).unwrap();
    let mut events = app.subscribe();
    let a = app.shutdown().await;
    let b = app.shutdown().await;
    let w = app.wait().await;
    assert_eq!(a, b);
    assert_eq!(a, w);
    let mut from_event = None;
    while let Ok(e) = events.try_recv() {
        if let compactor::Event::ShutdownFinished { report, .. } = e {
            from_event = Some(report);
        }
    }
    assert_eq!(Some(a.clone()), from_event);
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains("conn/reader"), "{json}");
    assert!(json.contains("cut/stuck"), "{json}");
    let _ = ShutdownReason::Manual;
    let _ = AtomicBool::new(false);
}

/// Q10: `run_until_shutdown` on a scope: its service failing while the
/// parent shuts down (before the scope's turn) starts the scope's own
/// shutdown out of order, as a failure "by itself" (M3's fix, not applied
/// to main's service).
#[tokio::test(start_paused = true)]
async fn q10_run_until_shutdown_in_a_scope_during_the_parent_s_shutdown() {
    let app = Compactor::builder().auto_listen(false).build();
    let t0 = tokio::time::Instant::now();
    app.task("http")
        .priority(Priority::High)
        .register(|| tokio::time::sleep(Duration::from_secs(5)))
        .unwrap();
    let sub = app.task("sub").priority(Priority::Low).scope().unwrap();
    let at = Arc::new(std::sync::Mutex::new(None));
    let a = at.clone();
    sub.register("flush", move || {
        let a = a.clone();
        async move {
            *a.lock().unwrap() = Some(t0.elapsed());
        }
    })
    .unwrap();
    let s2 = sub.clone();
    let main = tokio::spawn(async move {
        s2.run_until_shutdown(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err::<(), _>("lost it")
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = app.shutdown().await;
    let sub_report = main.await.unwrap();
    let ran_at = at.lock().unwrap().unwrap();
    assert!(
        ran_at >= Duration::from_secs(5),
        "the Low scope's cleanup ran at {ran_at:?}, during the High phase; scope reason {}\n{report}",
        sub_report.reason()
    );
}

/// Q11: a cleanup that returns a scope's error (taken from a report)
/// gets that scope's report as its own `TaskReport::scope`, and
/// `failures()` names the other scope's tasks under its path.
#[tokio::test(start_paused = true)]
async fn q11_a_plain_task_returning_a_scope_error_gets_a_scope() {
    let other = Compactor::new();
    let sub = other.task("sub").scope().unwrap();
    sub.register("flush", || async { Err::<(), _>("disk full") })
        .unwrap();
    let first = other.shutdown().await;
    let Outcome::Failed(error) = first.task("sub").unwrap().outcome().clone() else {
        panic!("{first}")
    };
    let c = Compactor::new();
    c.register("supervisor", move || {
        let error = error.clone();
        async move { Err::<(), _>(error) }
    })
    .unwrap();
    let report = c.shutdown().await;
    let t = report.task("supervisor").unwrap();
    let paths: Vec<String> = report
        .failures()
        .iter()
        .map(|f| f.path().to_owned())
        .collect();
    assert!(
        t.scope().is_none(),
        "a plain task has a scope; failures: {paths:?}"
    );
}

/// Q12: a server with per-connection scopes each failing (end_scope):
/// the root keeps 64 reports and says how many more it did not keep.
#[tokio::test(start_paused = true)]
async fn q12_left_reports_past_64_are_counted() {
    let app = Compactor::new();
    app.task("listener")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    for i in 0..100 {
        let conn = app
            .task(format!("conn-{i}"))
            .supervise(Supervision::end_scope())
            .scope()
            .unwrap();
        conn.task("reader")
            .service(|_ctx| async { Err::<(), _>("reset by peer") })
            .unwrap();
        let _ = conn.wait().await;
    }
    let report = app.shutdown().await;
    let failures = report.failures();
    assert_eq!(failures.len(), 65, "{report}");
    let not_kept = report.task("compactor::scopes-not-kept").unwrap();
    assert!(
        not_kept.outcome().to_string().contains("36 more scopes"),
        "{report}"
    );
}

/// Q13: the crate's own `main` layout (`run_until_shutdown(|stop|
/// stop.cancelled_owned())` beside a service): main's waiter is counted,
/// so "every service has ended" can never fire; a server that ends by
/// itself leaves the process up, serving nothing.
#[tokio::test(start_paused = true)]
async fn q13_main_waiter_keeps_the_whole_up_after_its_only_service_ended() {
    let c = Compactor::builder().auto_listen(false).build();
    c.task("http")
        .service(|_stop| async {
            tokio::time::sleep(Duration::from_secs(1)).await; // listener closed
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(600),
        c.run_until_shutdown(|stop| stop.cancelled_owned()),
    )
    .await;
    assert!(
        report.is_ok(),
        "still up 10 minutes after its only server ended"
    );
}

/// Q14: a task name with `/` makes a path ambiguous (a root task
/// `conn/reader`, a scope `conn`'s task `reader`); the names are not.
#[tokio::test(start_paused = true)]
async fn q14_names_tell_apart_what_paths_do_not() {
    let app = Compactor::new();
    app.register("conn/reader", || async { Err::<(), _>("a") })
        .unwrap();
    let conn = app.task("conn").scope().unwrap();
    conn.register("reader", || async { Err::<(), _>("b") })
        .unwrap();
    let report = app.shutdown().await;
    let names: Vec<Vec<String>> = report
        .failures()
        .iter()
        .map(|f| f.names().to_vec())
        .collect();
    assert_ne!(names[0], names[1], "{names:?}");
    assert!(names.contains(&vec!["conn".to_owned(), "reader".to_owned()]));
}

/// Q6 control: without `shutdown_on_panic`, the same service is restarted.
#[tokio::test(start_paused = true)]
async fn q6_control_without_the_hook_it_is_restarted() {
    let c = Compactor::new();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let h = c
        .task("worker")
        .supervise(Supervision::carry_on().restarts(5, Duration::from_secs(60)))
        .restartable(move |ctx| {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run blows up");
                }
                ctx.cancelled().await;
            }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!c.shutdown_token().is_cancelled());
    assert_eq!(h.service().unwrap().restarts(), 1);
}

/// Q7: a service withdrawn while it holds its thread, replaced under the
/// same name: the replacement, drained clean, is not blamed for it.
#[test]
fn q7_a_replaced_service_is_not_blamed_for_the_one_it_replaced() {
    let runtime = common::multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_secs(2))
        .build();
    let _entered = runtime.enter();
    let (tx, rx) = std::sync::mpsc::channel();
    let old = c
        .task("svc")
        .service(move |_ctx| async move {
            let _ = tx.send(());
            std::thread::sleep(Duration::from_millis(700)); // holds its thread
        })
        .unwrap();
    rx.recv().unwrap();
    assert!(old.unregister());
    std::thread::sleep(Duration::from_millis(20));
    c.task("svc")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    let task = report.task("svc").unwrap();
    assert_eq!(task.outcome(), &Outcome::Succeeded, "{report}");
    assert_eq!(task.interruption(), None, "{report}");
    drop(_entered);
    runtime.shutdown_background();
}
