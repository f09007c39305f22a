//! Services: long-running futures whose drain is a task of the shutdown.

use compactor::cleanup::once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compactor::{Compactor, Error, Outcome, Priority, report::ShutdownReason};
use tokio::time::Instant;

/// Notes when it is dropped.
struct Dropped(Arc<Mutex<Option<Instant>>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_is_stopped_at_its_turn_and_drains_before_what_it_uses() {
    let c = Compactor::new();
    let t0 = Instant::now();
    let drained = Arc::new(AtomicBool::new(false));
    let seen = drained.clone();
    let pool = c
        .register(
            "db-pool",
            once(move || async move {
                assert!(seen.load(Ordering::SeqCst), "closed before the drain");
            }),
        )
        .unwrap();
    // Runs first: the service keeps serving meanwhile.
    c.task("fail-readiness")
        .priority(Priority::Critical)
        .register(|| tokio::time::sleep(Duration::from_millis(50)))
        .unwrap();
    let stopped_at = Arc::new(Mutex::new(None));
    let at = stopped_at.clone();
    c.task("http")
        .depends_on(&pool)
        .service(move |stop| async move {
            stop.cancelled().await;
            *at.lock().unwrap() = Some(Instant::now());
            tokio::time::sleep(Duration::from_millis(30)).await; // in-flight requests
            drained.store(true, Ordering::SeqCst);
        })
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    let stopped = stopped_at.lock().unwrap().expect("the token fired");
    assert_eq!(stopped - t0, Duration::from_millis(50), "at its turn");
    let http = report.task("http").unwrap();
    assert_eq!(http.started_at(), Some(Duration::from_millis(50)));
    assert_eq!(http.duration(), Duration::from_millis(30));
    assert_eq!(
        report.task("db-pool").unwrap().started_at(),
        Some(Duration::from_millis(80))
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_cut_off_by_its_timeout_is_aborted_and_reported() {
    let c = Compactor::new();
    let t0 = Instant::now();
    let dropped_at = Arc::new(Mutex::new(None));
    let when = dropped_at.clone();
    c.task("consumer")
        .timeout(Duration::from_secs(1))
        .service(move |_stop| async move {
            let _dropped = Dropped(when);
            std::future::pending::<()>().await; // never drains
        })
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("consumer").unwrap().outcome(),
        &Outcome::TimedOut
    );
    assert_eq!(
        report.task("consumer").unwrap().interruption(),
        Some(compactor::report::Interruption::Stopped)
    );
    assert!(!report.is_clean());
    // Aborted and waited for by its drain: gone before the report.
    let dropped = dropped_at.lock().unwrap().expect("the service was aborted");
    assert_eq!(dropped - t0, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_service_that_fails_before_any_shutdown_starts_it() {
    let c = Compactor::new();
    c.register("db-pool", once(|| async {})).unwrap();
    c.task("http")
        .service(|_stop| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), _>("address in use")
        })
        .unwrap();
    let report = c.wait().await;
    assert_eq!(
        report.reason(),
        &ShutdownReason::ServiceFailed("service `http`: address in use".into())
    );
    assert_eq!(
        report.task("http").unwrap().outcome(),
        &Outcome::Failed("address in use".into())
    );
    assert_eq!(
        report.task("db-pool").unwrap().outcome(),
        &Outcome::Succeeded
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_panics_starts_the_shutdown_and_is_reported_panicked() {
    let c = Compactor::new();
    c.task("worker")
        .service(|_stop| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let corrupted = true;
            if corrupted {
                panic!("queue corrupted");
            }
        })
        .unwrap();
    let report = c.wait().await;
    assert_eq!(
        report.reason(),
        &ShutdownReason::Panic("service `worker` panicked: queue corrupted".into())
    );
    assert_eq!(
        report.task("worker").unwrap().outcome(),
        &Outcome::Panicked("queue corrupted".into())
    );
    assert_eq!(report.exit_code(), 101);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_may_fail_leaves_the_process_running() {
    let c = Compactor::new();
    c.task("optional")
        // Not counted either: its end does not end the whole.
        .supervise(compactor::service::Supervision::carry_on().background(true))
        .service(|_stop| async { Err::<(), _>("cache warm-up failed") })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!c.shutdown_token().is_cancelled());
    let report = c.shutdown().await;
    assert_eq!(
        report.task("optional").unwrap().outcome(),
        &Outcome::Failed("cache warm-up failed".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_service_never_starts() {
    let c = Compactor::new();
    c.register("http", || async {}).unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let e = c
        .task("http")
        .service(move |_stop| async move { flag.store(true, Ordering::SeqCst) })
        .unwrap_err();
    assert_eq!(e, Error::DuplicateName("http".into()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!started.load(Ordering::SeqCst));
    assert_eq!(
        c.plan().inventory().tasks(),
        1,
        "nothing registered before is lost"
    );
    let e = c
        .task("retried")
        .retries(1)
        .service(|_stop| async {})
        .unwrap_err();
    assert_eq!(
        e,
        Error::RetriesNeedRepeatable {
            task: "retried".into()
        }
    );
}

#[test]
fn a_service_outside_a_runtime_is_refused_with_a_clear_error() {
    let c = Compactor::new();
    let e = c.task("http").service(|_stop| async {}).unwrap_err();
    assert_eq!(
        e,
        Error::NoRuntime {
            task: "http".into()
        }
    );
    assert!(e.to_string().contains("needs a tokio runtime"), "{e}");
    assert_eq!(c.plan().inventory().tasks(), 0);
}

#[test]
fn a_service_unregistered_before_its_first_poll_never_runs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..100 {
            let c = Compactor::new();
            let ran = Arc::new(AtomicBool::new(false));
            let flag = ran.clone();
            let handle = c
                .task("svc")
                .service(move |_stop| async move {
                    flag.store(true, Ordering::SeqCst);
                    Err::<(), _>(std::io::Error::other("failed at once"))
                })
                .unwrap();
            assert!(handle.unregister());
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert!(!ran.load(Ordering::SeqCst), "an unregistered service ran");
            let report = c.shutdown().await;
            assert!(report.tasks().is_empty(), "{report}");
            assert_eq!(report.reason(), &ShutdownReason::Manual, "{report}");
        }
    });
}

#[tokio::test]
async fn a_refused_service_is_dropped_before_the_refusal_returns() {
    let c = Compactor::new();
    c.register("http", || async {}).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = c.task("http").service(move |stop| async move {
        let _listener = listener;
        stop.cancelled().await;
    });
    assert!(
        matches!(refused, Err(Error::DuplicateName(_))),
        "{refused:?}"
    );
    // The listener the closure held is closed already: its port is free.
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("the refused service's listener is gone");
}

#[test]
fn mains_service_holding_its_thread_past_its_cut_off_is_reported_abandoned() {
    let runtime = crate::common::multi_thread(2);
    let c = Compactor::builder()
        .default_timeout(Duration::from_millis(200))
        .cancel_grace(Duration::from_millis(100))
        .build();
    let seen = runtime.spawn({
        let c = c.clone();
        async move { c.wait().await }
    });
    let trigger = c.clone();
    runtime.spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.trigger();
    });
    let report = runtime.block_on(c.run_until_shutdown(|stop| async move {
        stop.cancelled().await;
        std::thread::sleep(Duration::from_millis(800)); // holds the thread
    }));
    let seen = runtime.block_on(seen).unwrap();
    for report in [&seen, &report] {
        let service = report.task("compactor::service").unwrap();
        assert_eq!(service.outcome(), &Outcome::TimedOut, "{report}");
        assert_eq!(
            service.interruption(),
            Some(compactor::report::Interruption::Abandoned),
            "{report}"
        );
    }
}
