//! The process-lifecycle entry points, in process: `run_until_shutdown`,
//! `request_shutdown`, exit codes. (Real signals: the root `tests/` suites.)

use compactor::cleanup::once;
use futures::FutureExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use compactor::{Compactor, Event, Outcome, report::ShutdownReason, signal::Signal};

#[tokio::test]
async fn a_service_that_ends_starts_the_shutdown_and_exits_zero() {
    let c = Compactor::builder().auto_listen(false).build();
    c.register("db", || async {}).unwrap();
    let code = c.run_until_shutdown(|_| async {}).await;
    assert_eq!(code.exit_code(), 0);
    let report = c.wait().now_or_never().expect("the run is over");
    assert_eq!(report.reason(), &ShutdownReason::ServiceEnded);
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test]
async fn a_failed_service_exits_one_with_its_error() {
    let c = Compactor::new();
    c.register("db", || async {}).unwrap();
    let code = c
        .run_until_shutdown(|_| async { Err::<(), _>("bind: address in use") })
        .await;
    assert_eq!(code.exit_code(), 1);
    assert_eq!(
        c.wait().now_or_never().expect("the run is over").reason(),
        &ShutdownReason::ServiceFailed("bind: address in use".into())
    );
}

#[tokio::test(start_paused = true)]
async fn the_service_drains_inside_the_shutdown_before_the_other_cleanups() {
    let c = Compactor::new();
    let drained = Arc::new(AtomicBool::new(false));
    let seen = drained.clone();
    // The pool the service uses: closed only once the service has drained.
    c.register(
        "db-pool",
        once(move || async move {
            assert!(
                seen.load(Ordering::SeqCst),
                "the pool closed before the drain"
            );
        }),
    )
    .unwrap();
    let service = |stop: compactor::service::ServiceContext| async move {
        stop.cancelled().await;
        tokio::time::sleep(Duration::from_millis(20)).await; // in-flight requests
        drained.store(true, Ordering::SeqCst);
    };
    let trigger = c.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        trigger.trigger();
    });
    let code = c.run_until_shutdown(service).await;
    let report = c.wait().now_or_never().expect("the run is over");
    assert!(report.is_clean(), "{report}");
    assert_eq!(code.exit_code(), 0);
    assert_eq!(report.reason(), &ShutdownReason::Manual);
    let service = report.task("compactor::service").unwrap();
    assert_eq!(service.duration(), Duration::from_millis(20));
    assert_eq!(
        report.task("db-pool").unwrap().started_at(),
        Some(Duration::from_millis(20))
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_never_drains_is_cut_off_dropped_and_reported() {
    let c = Compactor::builder()
        .default_timeout(Duration::from_secs(2))
        .build();
    let dropped_at = Arc::new(std::sync::Mutex::new(None));
    let when = dropped_at.clone();
    let service_gone = dropped_at.clone();
    c.register(
        "db-pool",
        once(move || async move {
            assert!(
                service_gone.lock().unwrap().is_some(),
                "the pool closed while the service still ran"
            );
        }),
    )
    .unwrap();
    /// Notes when the service is dropped.
    struct Dropped(Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(tokio::time::Instant::now());
        }
    }
    let began = tokio::time::Instant::now();
    let service = |_stop| async move {
        let _dropped = Dropped(when);
        std::future::pending::<()>().await; // ignores the token
    };
    let trigger = c.clone();
    tokio::spawn(async move { trigger.trigger() });
    let code = c.run_until_shutdown(service).await;
    let report = c.wait().now_or_never().expect("the run is over");
    assert_eq!(code.exit_code(), 1, "{report}");
    let service = report.task("compactor::service").unwrap();
    assert_eq!(service.outcome(), &Outcome::TimedOut, "{report}");
    // The other cleanups still ran, after the cut-off.
    assert_eq!(
        report.task("db-pool").unwrap().outcome(),
        &Outcome::Succeeded
    );
    let dropped = dropped_at.lock().unwrap().expect("the service was dropped");
    assert_eq!(
        dropped - began,
        Duration::from_secs(2),
        "dropped at the cut-off"
    );
}

#[tokio::test]
async fn the_reason_is_in_the_started_event() {
    let c = Compactor::new();
    let mut events = c.subscribe();
    c.trigger();
    let _ = c.wait().await;
    match events.recv().await.unwrap() {
        Event::ShutdownStarted { reason, tasks, .. } => {
            assert_eq!(reason, ShutdownReason::Manual);
            assert_eq!(tasks, 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn signals_have_their_conventional_numbers_and_codes() {
    let table: Vec<(&str, i32, u8)> = [
        Signal::Interrupt,
        Signal::Terminate,
        Signal::Hangup,
        Signal::Quit,
    ]
    .into_iter()
    .map(|s| (s.name(), s.number(), s.exit_code()))
    .collect();
    assert_eq!(
        table,
        [
            ("SIGINT", 2, 130),
            ("SIGTERM", 15, 143),
            ("SIGHUP", 1, 129),
            ("SIGQUIT", 3, 131)
        ]
    );
}

#[test]
fn shutdown_blocking_works_without_a_runtime() {
    let c = Compactor::new();
    c.register("flush", || async {
        tokio::time::sleep(Duration::from_millis(5)).await;
    })
    .unwrap();
    c.task("sync").register_blocking(|| {}).unwrap();
    let report = c.shutdown_blocking();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.tasks().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_service_after_the_shutdown_began_is_never_polled() {
    let c = Compactor::new();
    c.trigger();
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let code = c
        .run_until_shutdown(|_| async move { flag.store(true, Ordering::SeqCst) })
        .await;
    assert_eq!(code.exit_code(), 0);
    assert!(!polled.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_run_until_shutdown_withdraws_its_drain() {
    let c = Compactor::new();
    c.register("db-pool", once(|| async {})).unwrap();
    let running = c.run_until_shutdown(|_| std::future::pending::<()>());
    // Polled for a while, then dropped before any shutdown.
    let _ = tokio::time::timeout(Duration::from_millis(10), running).await;
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert!(report.task("compactor::service").is_none(), "{report}");
}

#[tokio::test]
async fn the_main_with_nothing_to_serve_stops_on_its_token_not_at_the_timeout() {
    // `main` whose work is all registered cleanups: the service is handed
    // the token it stops on, so a SIGTERM (here a trigger) is never held
    // for the service's timeout.
    let c = Compactor::builder()
        .auto_listen(false)
        .default_timeout(Duration::from_secs(30))
        .build();
    c.register("db", || async {}).unwrap();
    let trigger = c.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        trigger.trigger();
    });
    let began = std::time::Instant::now();
    let code = c
        .run_until_shutdown(|stop| async move { stop.cancelled().await })
        .await;
    assert_eq!(code.exit_code(), 0);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "held for {:?}",
        began.elapsed()
    );
    let report = c.wait().now_or_never().expect("the run is over");
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn a_report_returned_from_main_exits_with_its_code() {
    use std::process::Termination;
    let clean = Compactor::new();
    clean.register("db", || async {}).unwrap();
    let report = clean.shutdown().await;
    assert_eq!(report.report(), ExitCode::from(0));
    let failed = Compactor::new();
    failed
        .register("db", || async { Err::<(), _>("refused") })
        .unwrap();
    let report = failed.shutdown().await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.report(), ExitCode::from(1));
}
