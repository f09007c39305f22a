//! Early runs: chosen tasks run now, while the process goes on.

use crate::common;

use std::time::Duration;

use common::Log;
use compactor::{Category, Compactor, Error, Outcome, Selection, report::ShutdownReason};

fn logged(
    log: &Log,
    name: &'static str,
) -> impl FnMut() -> std::future::Ready<()> + Send + 'static {
    let log = log.clone();
    move || {
        log.push(name);
        std::future::ready(())
    }
}

#[tokio::test(start_paused = true)]
async fn one_task_is_released_by_its_handle_and_the_rest_stays() {
    let c = Compactor::new();
    let log = Log::default();
    let conn = c.register("conn-7", logged(&log, "conn-7")).unwrap();
    c.register("pool", logged(&log, "pool")).unwrap();
    let report = c.run_early(Selection::Task(conn.clone())).await.unwrap();
    assert_eq!(report.reason(), &ShutdownReason::Early(1));
    assert_eq!(report.tasks().len(), 1);
    assert_eq!(report.tasks()[0].outcome(), &Outcome::Succeeded);
    assert_eq!(log.entries(), ["conn-7"]);
    assert!(!conn.is_pending());
    assert_eq!(c.plan().inventory().tasks(), 1);
    // Released once: a second release of it is refused.
    assert_eq!(
        c.run_early(Selection::Task(conn)).await.unwrap_err(),
        Error::NotPending {
            task: "conn-7".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn chosen_tasks_run_in_their_order_with_retries_and_timeouts() {
    let c = Compactor::new();
    let log = Log::default();
    let db = c.register("db", logged(&log, "db")).unwrap();
    let cache = c
        .task("cache")
        .depends_on(&db) // stopped before the db
        .register(logged(&log, "cache"))
        .unwrap();
    let slow = c
        .task("slow")
        .timeout(Duration::from_millis(50))
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c
        .run_early(Selection::Tasks(vec![db, cache, slow]))
        .await
        .unwrap();
    assert_eq!(log.entries(), ["cache", "db"]);
    assert_eq!(report.task("slow").unwrap().outcome(), &Outcome::TimedOut);
    assert_eq!(c.plan().inventory().tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_name_or_an_outside_dependent_runs_nothing_early() {
    let c = Compactor::new();
    let log = Log::default();
    c.register("db", logged(&log, "db")).unwrap();
    c.task("http")
        .depends_on_name("db")
        .register(logged(&log, "http"))
        .unwrap();
    let e = c
        .run_early(Selection::Names(vec!["db".into(), "nope".into()]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::NotPending {
            task: "nope".into()
        }
    );
    // `http` depends on `db`: it would have to run first.
    let e = c
        .run_early(Selection::Names(vec!["db".into()]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::EarlyRunHasDependents {
            dependents: vec!["http".into()]
        }
    );
    assert!(e.to_string().contains("release them too"), "{e}");
    assert_eq!(c.plan().inventory().tasks(), 2, "nothing was released");
    assert!(log.entries().is_empty());
    // Both together are fine, in their order.
    let _ = c
        .run_early(Selection::Names(vec!["db".into(), "http".into()]))
        .await
        .unwrap();
    assert_eq!(log.entries(), ["http", "db"]);
}

#[tokio::test(start_paused = true)]
async fn a_chosen_tasks_dependency_outside_the_early_run_is_dropped_not_run() {
    let c = Compactor::new();
    let log = Log::default();
    let pool = c.register("pool", logged(&log, "pool")).unwrap();
    let worker = c
        .task("worker")
        .depends_on(&pool)
        .register(logged(&log, "worker"))
        .unwrap();
    let report = c.run_early(Selection::Task(worker)).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(log.entries(), ["worker"]);
    assert!(pool.is_pending());
}

#[tokio::test(start_paused = true)]
async fn a_category_selection_runs_early_and_a_shutdown_ends_early_runs() {
    let c = Compactor::new();
    c.task("f")
        .category(Category::File)
        .register(|| async {})
        .unwrap();
    let report = c
        .run_early(Selection::Category(Category::File))
        .await
        .unwrap();
    assert_eq!(report.reason(), &ShutdownReason::Category(Category::File));
    assert_eq!(report.tasks().len(), 1);
    c.register("late", || async {}).unwrap();
    let _ = c.shutdown().await;
    assert_eq!(
        c.run_early(Selection::Names(vec!["late".into()]))
            .await
            .unwrap_err(),
        Error::ShuttingDown
    );
}
