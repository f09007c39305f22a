//! Services as a tree: failures travel up with their paths and causes, the
//! whole ends when its parts do, a service's state, aborts, restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use compactor::report::{ShutdownReason, SkipReason};
use compactor::service::Supervision;
use compactor::{Backoff, Compactor, Error, Event, Outcome};

/// An error with a cause, as a service returns it.
fn io_error(outer: &str, inner: &str) -> std::io::Error {
    std::io::Error::other(Wrapped(
        outer.to_owned(),
        std::io::Error::other(inner.to_owned()),
    ))
}

#[derive(Debug)]
struct Wrapped(String, std::io::Error);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.1)
    }
}

use crate::common::Gone;

#[tokio::test(start_paused = true)]
async fn nested_failures_reach_the_root_with_their_paths_and_causes() {
    let app = Compactor::new();
    let subsys = app.task("subsys").scope().unwrap();
    subsys
        .task("nested1")
        .service(|_ctx| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), _>(io_error("lost the queue", "connection reset"))
        })
        .unwrap();
    subsys
        .task("nested2")
        .service(|ctx| async move {
            ctx.cancelled().await;
            if ctx.is_cancelled() {
                panic!("nested2 broke while draining");
            }
        })
        .unwrap();
    let report = app.wait().await;
    assert_eq!(
        report.reason(),
        &ShutdownReason::ServiceFailed(
            "service `subsys/nested1`: lost the queue: connection reset".into()
        )
    );
    let failures = report.failures();
    let paths: Vec<&str> = failures.iter().map(|f| f.path()).collect();
    assert_eq!(paths.len(), 2, "{report}");
    assert!(paths.contains(&"subsys/nested1") && paths.contains(&"subsys/nested2"));
    let nested1 = failures
        .iter()
        .find(|f| f.path() == "subsys/nested1")
        .unwrap();
    match nested1.outcome() {
        Outcome::Failed(error) => assert_eq!(
            error.chain().collect::<Vec<_>>(),
            ["lost the queue", "connection reset"]
        ),
        other => panic!("{other:?}"),
    }
    let nested2 = failures
        .iter()
        .find(|f| f.path() == "subsys/nested2")
        .unwrap();
    assert_eq!(
        nested2.outcome(),
        &Outcome::Panicked("nested2 broke while draining".into())
    );
    let table = report.to_string();
    assert!(
        table.contains("subsys/nested1  failed: lost the queue: connection reset"),
        "{table}"
    );
    assert!(
        table.contains("subsys/nested2  panicked: nested2 broke"),
        "{table}"
    );
    assert_eq!(report.exit_code(), 1);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_json_lists_every_failure_with_its_path() {
    let app = Compactor::new();
    let subsys = app.task("subsys").scope().unwrap();
    subsys
        .register("flush", || async {
            Err::<(), _>(io_error("flush", "disk full"))
        })
        .unwrap();
    let report = app.shutdown().await;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["failures"][0]["path"], "subsys/flush");
    assert_eq!(json["failures"][0]["outcome"]["causes"][1], "disk full");
}

#[tokio::test(start_paused = true)]
async fn end_scope_ends_only_the_scope_and_the_parent_reports_it() {
    let app = Compactor::new();
    app.task("http")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    let conn = app
        .task("conn-1")
        .supervise(Supervision::end_scope())
        .scope()
        .unwrap();
    let flushed = Arc::new(AtomicBool::new(false));
    let flag = flushed.clone();
    conn.register("flush", move || {
        let flag = flag.clone();
        async move { flag.store(true, Ordering::SeqCst) }
    })
    .unwrap();
    conn.task("reader")
        .service(|_ctx| async { Err::<(), _>("protocol error") })
        .unwrap();
    let conn_report = conn.wait().await;
    assert_eq!(
        conn_report.reason(),
        &ShutdownReason::ServiceFailed("service `conn-1/reader`: protocol error".into())
    );
    assert!(flushed.load(Ordering::SeqCst), "the scope ran its cleanups");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!app.shutdown_token().is_cancelled(), "the parent goes on");
    assert_eq!(app.plan().tasks().len(), 1, "the scope left its parent");
    let report = app.shutdown().await;
    assert!(!report.is_clean());
    let failures = report.failures();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0].path(), "conn-1/reader");
    assert_eq!(
        failures[0].outcome(),
        &Outcome::Failed("protocol error".into())
    );
}

#[tokio::test(start_paused = true)]
async fn carry_on_starts_nothing_and_the_failure_waits_in_the_report() {
    let c = Compactor::new();
    crate::common::keeper(&c);
    c.task("warmup")
        .supervise(Supervision::carry_on())
        .service(|_ctx| async { Err::<(), _>("cold") })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!c.shutdown_token().is_cancelled());
    let report = c.shutdown().await;
    assert_eq!(report.reason(), &ShutdownReason::Manual);
    assert_eq!(
        report.task("warmup").unwrap().outcome(),
        &Outcome::Failed("cold".into())
    );
}

#[tokio::test(start_paused = true)]
async fn the_whole_ends_when_every_service_has_ended() {
    let app = Compactor::new();
    let subsys = app.task("subsys").scope().unwrap();
    for (name, after) in [("a", 10), ("b", 20)] {
        subsys
            .task(name)
            .service(move |_ctx| async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
            })
            .unwrap();
    }
    let background_gone = Arc::new(AtomicBool::new(false));
    let gone = Gone(background_gone.clone());
    app.task("metrics")
        .supervise(Supervision::end_all().background(true))
        .service(move |ctx| async move {
            let _gone = gone;
            ctx.cancelled().await;
        })
        .unwrap();
    let report = app.wait().await;
    assert_eq!(report.reason(), &ShutdownReason::ServicesEnded);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.exit_code(), 0);
    assert!(
        background_gone.load(Ordering::SeqCst),
        "the background service was drained"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_service_nothing_ends_by_itself() {
    let c = Compactor::new();
    c.task("bg")
        .supervise(Supervision::end_all().background(true))
        .service(|_ctx| async {})
        .unwrap();
    c.register("flush", || async {}).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!c.shutdown_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_service_stopped_by_its_scope_does_not_end_the_parent() {
    let app = Compactor::new();
    let conn = app.task("conn").scope().unwrap();
    conn.task("reader")
        .service(|ctx| async move { ctx.cancelled().await })
        .unwrap();
    assert!(conn.shutdown().await.is_clean());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!app.shutdown_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_service_says_how_it_stands() {
    let c = Compactor::new();
    crate::common::keeper(&c);
    let plain = c.register("flush", || async {}).unwrap();
    assert_eq!(plain.service(), None);
    let ends = c
        .task("ends")
        .supervise(Supervision::carry_on())
        .service(|_ctx| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<(), _>("done badly")
        })
        .unwrap();
    let stuck = c
        .task("stuck")
        .timeout(Duration::from_secs(1))
        .service(|_ctx| std::future::pending::<()>())
        .unwrap();
    tokio::task::yield_now().await;
    assert!(ends.service().unwrap().is_running());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = ends.service().unwrap();
    assert!(!state.is_running());
    assert_eq!(state.ended(), Some(&Outcome::Failed("done badly".into())));
    assert!(ends.is_pending(), "its drain is still to run");
    let report = c.shutdown().await;
    assert_eq!(report.task("stuck").unwrap().outcome(), &Outcome::TimedOut);
    assert_eq!(stuck.service().unwrap().ended(), Some(&Outcome::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn an_aborted_scope_stops_everything_in_it_and_leaves() {
    let app = Compactor::new();
    let conn = app.task("conn").scope().unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    conn.register("flush", move || {
        let flag = flag.clone();
        async move { flag.store(true, Ordering::SeqCst) }
    })
    .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let gone = Gone(dropped.clone());
    // Ignores its token: only a cut-off ends it.
    conn.task("reader")
        .service(move |_ctx| async move {
            let _gone = gone;
            std::future::pending::<()>().await;
        })
        .unwrap();
    let inner = conn.task("inner").scope().unwrap();
    inner.register("inner-flush", || async {}).unwrap();
    let report = conn.abort().await;
    assert_eq!(report.reason(), &ShutdownReason::Aborted);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the service is gone by the report"
    );
    assert!(!ran.load(Ordering::SeqCst), "nothing in it ran");
    for task in report.tasks() {
        assert!(
            matches!(
                task.outcome(),
                Outcome::Skipped(SkipReason::Aborted) | Outcome::Cancelled
            ),
            "{report}"
        );
    }
    assert_eq!(app.plan().tasks().len(), 0, "the scope left its parent");
    assert!(!app.shutdown_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn abort_ends_a_running_shutdown_at_once() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(3600))
        .default_timeout(Duration::from_secs(3600))
        .build();
    c.register("pool", || async {}).unwrap();
    let pool = c.plan().task("pool").map(|t| t.name().to_owned()).unwrap();
    c.task("hangs")
        .depends_on_name(pool)
        .register(std::future::pending::<()>)
        .unwrap();
    c.trigger();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tokio::time::Instant::now();
    let report = c.abort().await;
    assert!(before.elapsed() < Duration::from_secs(1));
    assert_eq!(
        report.reason(),
        &ShutdownReason::Manual,
        "the run's reason stays"
    );
    assert_eq!(report.task("hangs").unwrap().outcome(), &Outcome::Cancelled);
    assert_eq!(
        report.task("pool").unwrap().outcome(),
        &Outcome::Skipped(SkipReason::Aborted)
    );
    assert_eq!(c.shutdown().await, report, "one run, one report");
}

#[tokio::test(start_paused = true)]
async fn a_restartable_service_is_restarted_within_its_budget() {
    let c = Compactor::new();
    let mut events = c.subscribe();
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let worker = c
        .task("worker")
        .backoff(Backoff::fixed(Duration::from_secs(1)))
        .supervise(Supervision::end_all().restarts(3, Duration::from_secs(60)))
        .restartable(move |ctx| {
            let counter = counter.clone();
            async move {
                assert_eq!(ctx.name(), "worker");
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("first"),
                    1 => panic!("second"),
                    _ => {
                        ctx.cancelled().await;
                        Ok(())
                    }
                }
            }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let state = worker.service().unwrap();
    assert!(state.is_running());
    assert_eq!(state.restarts(), 2);
    assert!(!c.shutdown_token().is_cancelled());
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    let mut restarts = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::ServiceRestarting {
            restart,
            error,
            delay,
            ..
        } = event
        {
            assert_eq!(delay, Duration::from_secs(1));
            restarts.push((restart, error));
        }
    }
    assert_eq!(
        restarts,
        [(1, "first".to_owned()), (2, "panicked: second".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn past_its_budget_a_failure_ends_what_its_supervision_says() {
    let app = Compactor::new();
    let subsys = app.task("subsys").scope().unwrap();
    let worker = subsys
        .task("worker")
        .backoff(Backoff::fixed(Duration::from_millis(100)).without_jitter())
        .supervise(Supervision::end_all().restarts(2, Duration::from_secs(60)))
        .restartable(|ctx| async move { Err::<(), _>(format!("run {}", ctx.restarts())) })
        .unwrap();
    let report = app.wait().await;
    assert_eq!(
        report.reason(),
        &ShutdownReason::ServiceFailed("service `subsys/worker`: after 2 restarts: run 2".into())
    );
    assert_eq!(worker.service().unwrap().restarts(), 2);
    assert_eq!(report.failures()[0].path(), "subsys/worker");
}

#[tokio::test(start_paused = true)]
async fn restarts_are_counted_within_their_window() {
    let c = Compactor::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    // One restart a second at most, a failure every 2 s: never past it.
    c.task("flaky")
        .backoff(Backoff::fixed(Duration::from_secs(2)).without_jitter())
        .supervise(Supervision::end_all().restarts(1, Duration::from_secs(1)))
        .restartable(move |_ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("again") }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert!(runs.load(Ordering::SeqCst) >= 10);
    assert!(!c.shutdown_token().is_cancelled());
    let report = c.shutdown().await;
    assert!(matches!(
        report.task("flaky").unwrap().outcome(),
        Outcome::Failed(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_service_is_never_restarted_once_the_shutdown_has_begun() {
    let c = Compactor::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    c.task("worker")
        .backoff(Backoff::fixed(Duration::from_secs(5)))
        .supervise(Supervision::end_all().restarts(10, Duration::from_secs(60)))
        .restartable(move |_ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("down") }
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = c.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        report.task("worker").unwrap().outcome(),
        &Outcome::Failed("down".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_service_with_restarts_is_refused() {
    let c = Compactor::new();
    let e = c
        .task("worker")
        .supervise(Supervision::end_all().restarts(3, Duration::from_secs(60)))
        .service(|_ctx| async {})
        .unwrap_err();
    assert_eq!(
        e,
        Error::RestartsNeedRestartable {
            task: "worker".into()
        }
    );
    assert!(e.to_string().contains("restartable"));
    assert_eq!(c.plan().tasks().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_scope_s_supervision_is_its_services_default_and_names_are_paths() {
    let app = Compactor::new();
    crate::common::keeper(&app);
    let outer = app
        .task("outer")
        .supervise(Supervision::carry_on())
        .scope()
        .unwrap();
    let inner = outer.task("inner").scope().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    inner
        .task("svc")
        .service(move |ctx| async move {
            let _ = tx.send(ctx.name().to_owned());
            Err::<(), _>("ignored by policy")
        })
        .unwrap();
    assert_eq!(rx.await.unwrap(), "outer/inner/svc");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!app.shutdown_token().is_cancelled());
    // Its only service ended: the inner scope ended (so did the outer one),
    // and left its failure with its parent.
    assert!(inner.shutdown_token().is_cancelled());
    let report = app.shutdown().await;
    assert_eq!(report.failures()[0].path(), "outer/inner/svc");
}

/// Registers a random tree under `at` (its path `prefix`): cleanups that
/// succeed, fail or panic, services that fail with their failure carried,
/// and scopes below, to `depth`. Returns the paths expected to fail.
fn random_tree(
    at: &Compactor,
    prefix: &str,
    depth: usize,
    rng: &mut crate::ordering_properties::Rng,
) -> Vec<String> {
    let mut failing = Vec::new();
    for i in 0..rng.below(4) {
        let name = format!("t{i}");
        let path = format!("{prefix}{name}");
        match rng.below(3) {
            0 => drop(at.register(name, || async {}).unwrap()),
            1 => {
                failing.push(path);
                at.register(name, || async { Err::<(), _>("broke") })
                    .unwrap();
            }
            _ => {
                failing.push(path);
                at.register(name, || async { panic!("burst") as () })
                    .unwrap();
            }
        }
    }
    if rng.below(3) == 0 {
        failing.push(format!("{prefix}svc"));
        at.task("svc")
            .supervise(Supervision::carry_on())
            .service(|_ctx| async { Err::<(), _>("svc down") })
            .unwrap();
    }
    if depth > 0 {
        for i in 0..rng.below(3) {
            let name = format!("s{i}");
            let scope = at.task(name.as_str()).scope().unwrap();
            failing.extend(random_tree(
                &scope,
                &format!("{prefix}{name}/"),
                depth - 1,
                rng,
            ));
        }
    }
    failing
}

#[tokio::test(start_paused = true)]
async fn random_trees_report_every_failure_once_with_its_path() {
    for number in 0..200u64 {
        let mut rng = crate::ordering_properties::Rng(number);
        let app = Compactor::new();
        // Keeps the root up while scopes whose services end close themselves.
        crate::common::keeper(&app);
        let mut expected = random_tree(&app, "", 3, &mut rng);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let report = app.shutdown().await;
        let mut got: Vec<String> = report
            .failures()
            .iter()
            .map(|f| f.path().to_owned())
            .collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "tree {number}:\n{report}");
        assert_eq!(report.is_clean(), expected.is_empty(), "tree {number}");
        assert!(
            report.reason() == &ShutdownReason::Manual,
            "tree {number}: only the keeper's end may end the root: {report}"
        );
    }
}
