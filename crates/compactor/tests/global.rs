//! The process-wide instance: its own test binary, since it is one per process.

use std::time::Duration;

use compactor::{Compactor, Error};

#[tokio::test(start_paused = true)]
async fn init_global_configures_once_and_refuses_a_second_time() {
    let configured =
        Compactor::init_global(Compactor::builder().deadline(Duration::from_secs(3))).unwrap();
    assert!(std::ptr::eq(configured, Compactor::global()));
    assert_eq!(
        Compactor::init_global(Compactor::builder()).unwrap_err(),
        Error::AlreadyInitialized
    );
    // The refused builder changed nothing: the global instance keeps the
    // first one's 3 s deadline (not the default 25 s).
    Compactor::global()
        .task("global-task")
        .timeout(Duration::from_secs(60))
        .register(std::future::pending::<()>)
        .unwrap();
    let report = Compactor::global().shutdown().await;
    assert_eq!(report.tasks()[0].name(), "global-task");
    assert_eq!(report.duration(), Duration::from_secs(3));
}
