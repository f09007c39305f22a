//! Scopes (a child instance per owner) and the pruning of released weak
//! registrations.

use crate::common;
use futures::FutureExt;

use std::sync::Arc;
use std::time::Duration;

use common::{Log, logged};
use compactor::{Compactor, Outcome, Priority};

#[tokio::test]
async fn a_scope_shut_down_on_its_own_runs_its_cleanups_and_leaves_its_parent() {
    let app = Compactor::new();
    let log = Log::default();
    app.register("db", logged(&log, "db")).unwrap();
    let conn = app.task("conn-1").scope().unwrap();
    conn.register("socket", logged(&log, "socket")).unwrap();
    assert_eq!(app.plan().inventory().tasks(), 2);

    assert!(conn.shutdown().await.is_clean());
    assert_eq!(log.entries(), ["socket"]);
    assert_eq!(
        app.plan().inventory().tasks(),
        1,
        "the scope left its parent"
    );

    let report = app.shutdown().await;
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["db"]);
    assert_eq!(log.entries(), ["socket", "db"]);
}

#[tokio::test]
async fn the_parent_runs_a_scope_as_one_task_with_its_priority_and_dependencies() {
    let app = Compactor::new();
    let log = Log::default();
    let db = app.register("db", logged(&log, "db")).unwrap();
    app.task("metrics")
        .priority(Priority::High)
        .register(logged(&log, "metrics"))
        .unwrap();
    let conn = app
        .task("conn-1")
        .priority(Priority::Critical)
        .depends_on(&db)
        .scope()
        .unwrap();
    let session = conn.register("session", logged(&log, "session")).unwrap();
    conn.task("socket")
        .depends_on(&session)
        .register(logged(&log, "socket"))
        .unwrap();

    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(log.entries(), ["socket", "session", "metrics", "db"]);
    let scope = report.task("conn-1").unwrap();
    assert_eq!(scope.effective_priority(), Priority::Critical);
    // The scope's own report is complete too.
    assert_eq!(
        conn.wait()
            .now_or_never()
            .expect("the run is over")
            .tasks()
            .len(),
        2
    );
}

#[tokio::test]
async fn scopes_nest() {
    // One task at a time, so the order is the LIFO rule's: in the scope
    // `process-7`, `kill` (registered last) runs before the scope `stdin`.
    let app = Compactor::builder().concurrency_limit(1).build();
    let log = Log::default();
    let process = app.task("process-7").scope().unwrap();
    let stdin = process.task("stdin").scope().unwrap();
    stdin
        .register("close-pipe", logged(&log, "close-pipe"))
        .unwrap();
    process.register("kill", logged(&log, "kill")).unwrap();
    drop((process, stdin));
    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(log.entries(), ["kill", "close-pipe"]);
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["process-7"]);
}

#[tokio::test]
async fn a_scope_dropped_without_shutdown_is_still_cleaned_up_by_its_parent() {
    let app = Compactor::new();
    let log = Log::default();
    {
        let conn = app.task("conn-9").scope().unwrap();
        conn.register("flush", logged(&log, "flush")).unwrap();
    }
    assert!(log.entries().is_empty());
    assert!(app.shutdown().await.is_clean());
    assert_eq!(log.entries(), ["flush"]);
}

#[tokio::test]
async fn a_failing_scope_fails_its_task_in_the_parent() {
    let app = Compactor::new();
    let job = app.task("job").scope().unwrap();
    job.register("ok", || async {}).unwrap();
    job.register("broken", || async { Err::<(), _>("disk full") })
        .unwrap();
    let report = app.shutdown().await;
    assert!(
        matches!(report.task("job").unwrap().outcome(), Outcome::Failed(_)),
        "{report}"
    );
    let own = job.wait().now_or_never().expect("the scope's run is over");
    assert_eq!(own.task("ok").unwrap().outcome(), &Outcome::Succeeded);
    assert_eq!(
        own.task("broken").unwrap().outcome(),
        &Outcome::Failed("disk full".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_scope_gets_the_whole_deadline_not_the_default_timeout() {
    let app = Compactor::builder()
        .default_timeout(Duration::from_millis(50))
        .deadline(Duration::from_secs(5))
        .build();
    let job = app.task("job").scope().unwrap();
    job.task("a")
        .register(|| tokio::time::sleep(Duration::from_millis(30)))
        .unwrap();
    job.task("b")
        .depends_on_name("a")
        .register(|| tokio::time::sleep(Duration::from_millis(30)))
        .unwrap();
    // 60 ms in all: more than one task's timeout, well within the deadline.
    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.task("job").unwrap().duration(),
        Duration::from_millis(60)
    );
}

#[tokio::test]
async fn scope_churn_leaves_nothing_behind_in_the_parent() {
    let app = Compactor::new();
    for i in 0..10_000 {
        let conn = app.task(format!("conn-{i}")).scope().unwrap();
        conn.register("socket", || async {}).unwrap();
        conn.register("session", || async {}).unwrap();
        assert!(conn.shutdown().await.is_clean());
    }
    assert_eq!(app.plan().inventory().tasks(), 0);
    assert!(app.shutdown().await.tasks().is_empty());
}

#[tokio::test]
async fn released_weak_registrations_are_pruned_as_the_instance_runs() {
    let app = Compactor::new();
    let keep = Arc::new(String::from("kept"));
    app.task("kept")
        .register_weak(&keep, |_v| async {})
        .unwrap();
    for i in 0..5_000 {
        let per_request = Arc::new(i);
        app.task(format!("request-{i}"))
            .register_weak(&per_request, |_v| async {})
            .unwrap();
        // The request ends: its value is dropped, the registration lingers.
    }
    assert!(
        app.plan().inventory().tasks() <= 1 + 1024,
        "pruned along the way: {} pending",
        app.plan().inventory().tasks()
    );
    let report = app.shutdown().await;
    assert_eq!(report.task("kept").unwrap().outcome(), &Outcome::Succeeded);
    assert!(report.tasks().len() <= 1 + 1024, "{report}");
    assert!(
        report
            .tasks()
            .iter()
            .all(|t| t.name() == "kept" || t.outcome() == &Outcome::Released)
    );
}

/// A service of `scope` that ignores its token and counts its ticks, every
/// 5 ms, in the counter returned.
fn ticking_service(
    runtime: &tokio::runtime::Runtime,
    scope: &Compactor,
) -> Arc<std::sync::atomic::AtomicU32> {
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = ticks.clone();
    let _entered = runtime.enter();
    scope
        .task("svc")
        .service(move |_stop| async move {
            loop {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    ticks
}

#[test]
fn a_scope_cut_off_by_its_parents_deadline_has_stopped_everything_by_the_report() {
    use std::sync::atomic::Ordering;
    for _ in 0..common::stress(3) {
        let runtime = common::multi_thread(2);
        let parent = Compactor::builder()
            .deadline(Duration::from_millis(200))
            .build();
        let scope = parent.task("subsys").scope().unwrap();
        // A service that ignores its token, and a cleanup that never ends.
        let ticks = ticking_service(&runtime, &scope);
        scope
            .register("forever", std::future::pending::<()>)
            .unwrap();
        let report = runtime.block_on(parent.shutdown());
        let task = report.task("subsys").unwrap();
        assert_eq!(task.outcome(), &Outcome::Cancelled, "{report}");
        if task.interruption() == Some(compactor::report::Interruption::Abandoned) {
            // Too busy a machine to see the scope stop in time: the report
            // says it may still run, which is all it may say.
            continue;
        }
        let at_report = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            at_report,
            "the scope's service ran on behind the parent's report"
        );
        // The scope's own report says what happened to its tasks.
        let inner = runtime.block_on(scope.wait());
        assert!(!inner.is_clean(), "{inner}");
    }
}

#[test]
fn a_scope_its_parent_skipped_runs_nothing_after_the_report() {
    use std::sync::atomic::Ordering;
    let runtime = common::multi_thread(2);
    let parent = Compactor::builder()
        .deadline(Duration::from_millis(200))
        .build();
    let scope = parent.task("subsys").scope().unwrap();
    let ticks = ticking_service(&runtime, &scope);
    // Holds the run past its deadline: the scope never starts.
    parent
        .task("holder")
        .priority(Priority::Critical)
        .register(std::future::pending::<()>)
        .unwrap();
    let report = runtime.block_on(parent.shutdown());
    assert!(
        matches!(
            report.task("subsys").unwrap().outcome(),
            Outcome::Skipped(_)
        ),
        "{report}"
    );
    let interruption = report.task("subsys").unwrap().interruption();
    if interruption == Some(compactor::report::Interruption::Abandoned) {
        // Too busy a machine to see the scope stop in time: the report says
        // it may still run, which is all it may say.
        return;
    }
    let at_report = ticks.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        at_report,
        "the skipped scope's service ran on behind the parent's report"
    );
}

#[test]
fn a_skipped_service_that_holds_its_thread_is_reported_still_running() {
    let runtime = common::multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(100))
        .build();
    {
        let _entered = runtime.enter();
        c.task("svc")
            .service(|_stop| async {
                std::thread::sleep(Duration::from_millis(400));
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
    }
    c.task("holder")
        .priority(Priority::Critical)
        .register(std::future::pending::<()>)
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    let task = report.task("svc").unwrap();
    assert!(matches!(task.outcome(), Outcome::Skipped(_)), "{report}");
    assert_eq!(
        task.interruption(),
        Some(compactor::report::Interruption::Abandoned),
        "{report}"
    );
    runtime.shutdown_background();
}
