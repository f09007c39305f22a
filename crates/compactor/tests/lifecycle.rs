//! The process-lifecycle entry points, in process: `run_until_shutdown`,
//! `request_shutdown`, exit codes. (Real signals: the root `tests/` suites.)

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use compactor::{Compactor, Event, ShutdownReason, Signal};

#[tokio::test]
async fn a_service_that_ends_starts_the_shutdown_and_exits_zero() {
    let c = Compactor::builder().auto_listen(false).build();
    c.register("db", || async {}).unwrap();
    let code = c.run_until_shutdown(async {}).await;
    assert_eq!(code, ExitCode::from(0));
    let report = c.report().unwrap();
    assert_eq!(report.reason(), &ShutdownReason::ServiceEnded);
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test]
async fn a_failed_service_exits_one_with_its_error() {
    let c = Compactor::new();
    c.register("db", || async {}).unwrap();
    let code = c
        .run_until_shutdown(async { Err::<(), _>("bind: address in use") })
        .await;
    assert_eq!(code, ExitCode::from(1));
    assert_eq!(
        c.report().unwrap().reason(),
        &ShutdownReason::ServiceFailed("bind: address in use".into())
    );
}

#[tokio::test(start_paused = true)]
async fn the_service_keeps_running_while_the_cleanup_drains_it() {
    let c = Compactor::new();
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drained = Arc::new(tokio::sync::Mutex::new(Some(drained_rx)));
    c.task("http")
        .timeout(Duration::from_secs(5))
        .register(move || {
            let drained = drained.clone();
            async move {
                // Waits for the service to finish its in-flight work.
                if let Some(rx) = drained.lock().await.take() {
                    rx.await
                        .map_err(|_| "the service was dropped before it drained")?;
                }
                Ok::<(), &str>(())
            }
        })
        .unwrap();
    let stop = c.shutdown_token();
    let service = async move {
        stop.cancelled().await;
        tokio::time::sleep(Duration::from_millis(20)).await; // in-flight requests
        let _ = drained_tx.send(());
        std::future::pending::<()>().await; // never ends on its own
    };
    let trigger = c.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        trigger.request_shutdown("maintenance window");
    });
    let code = c.run_until_shutdown(service).await;
    let report = c.report().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(code, ExitCode::from(0));
    assert_eq!(
        report.reason(),
        &ShutdownReason::Requested("maintenance window".into())
    );
}

#[tokio::test]
async fn the_reason_is_in_the_started_event() {
    let c = Compactor::new();
    let mut events = c.subscribe();
    c.request_shutdown("lost the database");
    c.wait().await;
    match events.recv().await.unwrap() {
        Event::ShutdownStarted { reason, tasks, .. } => {
            assert_eq!(
                reason,
                ShutdownReason::Requested("lost the database".into())
            );
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
