//! The drain delay: readiness turns at once, everything else waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use compactor::{Compactor, Priority};

const S: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(start_paused = true)]
async fn readiness_turns_at_once_and_every_cleanup_waits_out_the_delay() {
    let c = Compactor::builder()
        .drain_delay(S(6))
        .deadline(S(25))
        .build();
    let readiness = c.readiness();
    let drain = c.readiness().drained();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served_after_begin = Arc::new(AtomicBool::new(false));
    let served = served_after_begin.clone();
    let stop_seen_at = Arc::new(std::sync::Mutex::new(None));
    let seen = stop_seen_at.clone();
    c.task("http")
        .priority(Priority::Critical)
        .service(move |stop| async move {
            stop.cancelled().await;
            *seen.lock().unwrap() = Some(tokio::time::Instant::now());
            drop(listener);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    c.register("db-pool", || async {}).unwrap();
    assert!(readiness.is_ready());

    let t0 = tokio::time::Instant::now();
    c.trigger();
    assert!(
        !readiness.is_ready(),
        "not ready the moment the shutdown begins"
    );
    assert_eq!(readiness.status_code(), 503);
    assert!(
        !drain.is_cancelled(),
        "the server keeps serving during the delay"
    );
    tokio::time::sleep(S(5)).await;
    served.store(!drain.is_cancelled(), Ordering::SeqCst);
    drain.cancelled().await;
    assert_eq!(t0.elapsed(), S(6));

    let report = c.wait().await;
    assert!(report.is_clean(), "{report}");
    assert!(served_after_begin.load(Ordering::SeqCst));
    let delay = report
        .task("compactor::drain-delay")
        .expect("the delay is in the report");
    assert_eq!(delay.duration(), S(6));
    assert_eq!(delay.started_at(), Some(Duration::ZERO));
    for name in ["http", "db-pool"] {
        let started = report.task(name).unwrap().started_at().unwrap();
        assert!(
            started >= S(6),
            "{name} started at {started:?}, before the delay was over"
        );
    }
    let stopped = stop_seen_at
        .lock()
        .unwrap()
        .expect("the service was stopped");
    assert_eq!(
        stopped - t0,
        S(6),
        "the service's stop comes after the delay"
    );
}

#[test]
fn the_plan_shows_the_delay_first_and_counts_it() {
    let without = Compactor::builder().deadline(S(60)).build();
    without
        .task("flush")
        .timeout(S(2))
        .register(|| async {})
        .unwrap();
    let with = Compactor::builder()
        .deadline(S(60))
        .drain_delay(S(6))
        .build();
    with.task("flush")
        .timeout(S(2))
        .register(|| async {})
        .unwrap();
    let plan = with.plan();
    assert_eq!(
        plan.tasks().next().unwrap().name(),
        "compactor::drain-delay"
    );
    assert_eq!(plan.phases().len(), 2);
    // The delay and its 100 ms margin, then the flush.
    assert_eq!(
        plan.worst_case(),
        without.plan().worst_case() + S(6) + Duration::from_millis(100)
    );
    assert!(without.plan().task("compactor::drain-delay").is_none());
}

#[tokio::test(start_paused = true)]
async fn without_a_delay_the_drain_token_fires_with_the_shutdown() {
    let c = Compactor::new();
    let drain = c.readiness().drained();
    c.trigger();
    assert!(drain.is_cancelled());
    let report = c.wait().await;
    assert!(report.task("compactor::drain-delay").is_none());
}

#[test]
fn a_delay_that_leaves_no_time_is_refused() {
    let error = Compactor::builder()
        .deadline(S(10))
        .drain_delay(S(10))
        .build()
        .register("probe", || async {})
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("drain_delay") && error.contains("deadline"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_still_bounds_a_run_with_a_delay() {
    let c = Compactor::builder()
        .deadline(S(8))
        .drain_delay(S(6))
        .build();
    c.task("slow")
        .timeout(S(60))
        .register(std::future::pending::<()>)
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let report = c.shutdown().await;
    assert_eq!(t0.elapsed(), S(8));
    assert!(
        report
            .task("compactor::drain-delay")
            .unwrap()
            .outcome()
            .is_clean()
    );
    assert!(!report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_scope_has_no_drain_delay_of_its_own() {
    let c = Compactor::builder()
        .drain_delay(S(6))
        .deadline(S(25))
        .build();
    let scope = c.task("connection").scope().unwrap();
    scope.register("buffer", || async {}).unwrap();
    let t0 = tokio::time::Instant::now();
    let report = scope.shutdown().await;
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "a connection's scope closes at once"
    );
    assert!(report.task("compactor::drain-delay").is_none());
    assert!(c.plan().task("compactor::drain-delay").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_dependency_on_the_delay_is_ignored_not_inverted() {
    let c = Compactor::builder()
        .drain_delay(S(3))
        .deadline(S(25))
        .build();
    c.task("http")
        .depends_on_name("compactor::drain-delay")
        .register(|| async {})
        .unwrap();
    let ignored = compactor::report::GraphWarning::DrainDelayDependency {
        task: "http".into(),
    };
    assert_eq!(c.plan().warnings(), std::slice::from_ref(&ignored));
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert!(report.task("http").unwrap().started_at().unwrap() >= S(3));
    assert_eq!(report.warnings(), [ignored]);
}
