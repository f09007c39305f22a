//! Rules 1 to 4 of the ordering semantics, on hand-picked graphs.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Log;
use compactor::report::GraphWarning;
use compactor::{Compactor, Outcome, Priority};

fn logged(
    log: &Log,
    name: &'static str,
    work: Duration,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + 'static {
    let log = log.clone();
    move || {
        let log = log.clone();
        Box::pin(async move {
            log.push(format!("start:{name}"));
            tokio::time::sleep(work).await;
            log.push(format!("end:{name}"));
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_dependent_finishes_before_its_dependency_starts() {
    let c = Compactor::new();
    let log = Log::default();
    let db = c
        .register("db", logged(&log, "db", Duration::from_millis(5)))
        .unwrap();
    c.task("http")
        .depends_on(&db)
        .register(logged(&log, "http", Duration::from_millis(50)))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert!(
        log.pos("end:http") < log.pos("start:db"),
        "{:?}",
        log.entries()
    );
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["http", "db"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_dependent_still_releases_its_dependency() {
    let c = Compactor::new();
    let log = Log::default();
    let db = c
        .register("db", logged(&log, "db", Duration::ZERO))
        .unwrap();
    let failing = log.clone();
    c.task("http")
        .depends_on(&db)
        .register(move || {
            let log = failing.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                log.push("failed:http");
                Err::<(), _>("connection reset")
            }
        })
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("http").unwrap().outcome(),
        &Outcome::Failed("connection reset".into())
    );
    assert_eq!(report.task("db").unwrap().outcome(), &Outcome::Succeeded);
    assert_eq!(log.entries(), ["failed:http", "start:db", "end:db"]);
}

#[tokio::test(start_paused = true)]
async fn phases_run_from_highest_to_lowest_priority() {
    let c = Compactor::new();
    let log = Log::default();
    // Registered lowest first, so LIFO alone would not give this order.
    for (name, p) in [
        ("low", Priority::Low),
        ("normal", Priority::Normal),
        ("custom-150", Priority::Custom(150)),
        ("high", Priority::High),
        ("critical", Priority::Critical),
    ] {
        c.task(name)
            .priority(p)
            .register(logged(&log, name, Duration::from_millis(3)))
            .unwrap();
    }
    let report = c.shutdown().await;
    assert!(report.is_clean());
    let order = ["critical", "custom-150", "high", "normal", "low"];
    for pair in order.windows(2) {
        assert!(
            log.pos(&format!("end:{}", pair[0])) < log.pos(&format!("start:{}", pair[1])),
            "{:?}",
            log.entries()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_that_must_precede_a_critical_one_is_raised_to_critical() {
    let c = Compactor::new();
    let log = Log::default();
    let audit = c
        .task("audit-log")
        .priority(Priority::Critical)
        .register(logged(&log, "audit-log", Duration::ZERO))
        .unwrap();
    c.task("writer")
        .priority(Priority::Low)
        .depends_on(&audit)
        .register(logged(&log, "writer", Duration::from_millis(10)))
        .unwrap();
    c.task("listener")
        .priority(Priority::High)
        .register(logged(&log, "listener", Duration::from_millis(1)))
        .unwrap();
    let report = c.shutdown().await;
    let writer = report.task("writer").unwrap();
    assert_eq!(writer.priority(), Priority::Low);
    assert_eq!(writer.effective_priority(), Priority::Critical);
    // writer before audit-log (rule 1), both before the High listener (rule 2).
    assert!(log.pos("end:writer") < log.pos("start:audit-log"));
    assert!(log.pos("end:audit-log") < log.pos("start:listener"));
}

#[tokio::test(start_paused = true)]
async fn independent_tasks_of_a_phase_run_concurrently() {
    let c = Compactor::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    for name in ["a", "b", "c"] {
        let barrier = barrier.clone();
        c.task(name)
            .timeout(Duration::from_secs(1))
            .register(move || {
                let barrier = barrier.clone();
                async move {
                    // Only returns if all three run at the same time.
                    barrier.wait().await;
                }
            })
            .unwrap();
    }
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn sequential_mode_runs_one_at_a_time_latest_first() {
    let c = Compactor::builder().concurrency_limit(1).build();
    let log = Log::default();
    for name in ["one", "two", "three", "four"] {
        c.register(name, logged(&log, name, Duration::from_millis(1)))
            .unwrap();
    }
    let _ = c.shutdown().await;
    assert_eq!(
        log.entries(),
        [
            "start:four",
            "end:four",
            "start:three",
            "end:three",
            "start:two",
            "end:two",
            "start:one",
            "end:one"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sequential_mode_keeps_dependencies_over_lifo() {
    let c = Compactor::builder().concurrency_limit(1).build();
    let log = Log::default();
    let pool = c
        .register("pool", logged(&log, "pool", Duration::ZERO))
        .unwrap();
    c.task("server")
        .depends_on(&pool)
        .register(logged(&log, "server", Duration::ZERO))
        .unwrap();
    c.task("cache")
        .register(logged(&log, "cache", Duration::ZERO))
        .unwrap();
    c.task("metrics")
        .depends_on_name("pool")
        .register(logged(&log, "metrics", Duration::ZERO))
        .unwrap();
    let _ = c.shutdown().await;
    let starts: Vec<String> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("start:"))
        .collect();
    // Ready at first: metrics, cache, server (latest first); pool waits for server and metrics.
    assert_eq!(
        starts,
        ["start:metrics", "start:cache", "start:server", "start:pool"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_caps_running_tasks() {
    let c = Compactor::builder().concurrency_limit(2).build();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for i in 0..8 {
        let (running, peak) = (running.clone(), peak.clone());
        c.register(format!("t{i}"), move || {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    }
    let started = tokio::time::Instant::now();
    let report = c.shutdown().await;
    assert!(report.is_clean());
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    // Eight 10 ms tasks two at a time: four rounds (exact under paused time).
    assert_eq!(started.elapsed(), Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn a_forward_reference_by_name_is_resolved_at_shutdown() {
    let c = Compactor::new();
    let log = Log::default();
    c.task("http")
        .depends_on_name("db")
        .register(logged(&log, "http", Duration::from_millis(5)))
        .unwrap();
    c.register("db", logged(&log, "db", Duration::ZERO))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.warnings().is_empty());
    assert!(log.pos("end:http") < log.pos("start:db"));
}

#[tokio::test(start_paused = true)]
async fn a_name_no_task_has_is_ignored_and_reported() {
    let c = Compactor::new();
    c.task("http")
        .depends_on_name("dbb")
        .register(|| async {})
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.task("http").unwrap().outcome(), &Outcome::Succeeded);
    assert_eq!(
        report.warnings(),
        [GraphWarning::UnknownDependency {
            task: "http".into(),
            dependency: "dbb".into()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn unregistering_removes_the_task_and_its_edges() {
    let c = Compactor::new();
    let log = Log::default();
    let db = c
        .register("db", logged(&log, "db", Duration::ZERO))
        .unwrap();
    let http = c
        .task("http")
        .depends_on(&db)
        .register(logged(&log, "http", Duration::ZERO))
        .unwrap();
    assert!(http.unregister());
    assert!(!http.unregister());
    assert!(!http.is_pending());
    let report = c.shutdown().await;
    assert_eq!(report.tasks().len(), 1);
    assert_eq!(log.entries(), ["start:db", "end:db"]);
    assert!(!db.unregister(), "a task in the run cannot be withdrawn");
}

#[tokio::test(start_paused = true)]
async fn a_name_can_be_reused_after_unregister() {
    let c = Compactor::new();
    let log = Log::default();
    let old = c
        .register("cache", logged(&log, "old", Duration::ZERO))
        .unwrap();
    assert!(old.unregister());
    let new = c
        .register("cache", logged(&log, "new", Duration::ZERO))
        .unwrap();
    assert!(
        !old.unregister(),
        "the old handle must not remove the new task"
    );
    assert!(new.is_pending());
    let _ = c.shutdown().await;
    assert_eq!(log.entries(), ["start:new", "end:new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_deep_chain_runs_without_recursion() {
    let c = Compactor::new();
    let count = Arc::new(AtomicUsize::new(0));
    let mut prev: Option<compactor::TaskHandle> = None;
    const N: usize = 100_000;
    for i in 0..N {
        let count = count.clone();
        let mut task = c.task(format!("t{i}"));
        if let Some(p) = &prev {
            task = task.depends_on(p);
        }
        // Each task checks that every later-registered one (its dependents) ran.
        prev = Some(
            task.register(move || {
                let count = count.clone();
                async move {
                    let before = count.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(before, N - 1 - i, "t{i} ran out of order");
                }
            })
            .unwrap(),
        );
    }
    let report = c.shutdown().await;
    assert!(report.is_clean());
    assert_eq!(count.load(Ordering::SeqCst), N);
    assert_eq!(report.tasks()[0].name(), format!("t{}", N - 1));
}

/// The worked example of `docs/design.md`, step by step.
#[tokio::test(start_paused = true)]
async fn the_worked_example_of_the_design_doc() {
    let c = Compactor::new();
    let log = Log::default();
    let step = Duration::from_millis(10);
    let db = c
        .register("db-pool", logged(&log, "db-pool", step))
        .unwrap();
    let audit = c
        .task("audit-log")
        .priority(Priority::Critical)
        .register(logged(&log, "audit-log", step))
        .unwrap();
    c.task("http")
        .priority(Priority::High)
        .depends_on(&db)
        .register(logged(&log, "http", step))
        .unwrap();
    c.task("jobs")
        .depends_on(&db)
        .depends_on(&audit)
        .register(logged(&log, "jobs", step))
        .unwrap();
    c.task("metrics")
        .priority(Priority::Low)
        .register(logged(&log, "metrics", step))
        .unwrap();
    let report = c.shutdown().await;
    let phases: Vec<(&str, Priority)> = report
        .tasks()
        .iter()
        .map(|t| (t.name(), t.effective_priority()))
        .collect();
    assert_eq!(
        phases,
        [
            ("jobs", Priority::Critical),
            ("audit-log", Priority::Critical),
            ("http", Priority::High),
            ("db-pool", Priority::Normal),
            ("metrics", Priority::Low),
        ]
    );
    let starts: Vec<Option<Duration>> = report.tasks().iter().map(|t| t.started_at()).collect();
    assert_eq!(
        starts,
        [0, 10, 20, 30, 40].map(|ms| Some(Duration::from_millis(ms)))
    );
}

/// Long churn leaves task ids sparse; the shutdown must neither size tables
/// by the ids ever given out nor lose the order.
#[tokio::test]
async fn long_registration_churn_keeps_order_and_dependencies() {
    let c = Compactor::builder().concurrency_limit(1).build();
    let log = Log::default();
    // `first` must run before `third`, against LIFO order (`third` is
    // registered last); `second` before `first`, by handle across the churn.
    let first = c
        .task("first")
        .depends_on_name("third")
        .register(logged(&log, "first", Duration::ZERO))
        .unwrap();
    for i in 0..20_000 {
        let h = c.register(format!("churn-{i}"), || async {}).unwrap();
        assert!(h.unregister());
    }
    c.task("second")
        .depends_on(&first)
        .register(logged(&log, "second", Duration::ZERO))
        .unwrap();
    c.register("third", logged(&log, "third", Duration::ZERO))
        .unwrap();
    let report = c.shutdown().await;
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["second", "first", "third"]);
    let starts: Vec<String> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("start:"))
        .collect();
    assert_eq!(starts, ["start:second", "start:first", "start:third"]);
}
