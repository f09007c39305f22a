//! `compactor::testing`: the per-test instance fails the test when its
//! cleanup does not go well.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use compactor::testing;

#[tokio::test]
async fn a_clean_cleanup_passes_and_returns_the_report() {
    let c = testing::instance();
    c.register("flush", || async {}).unwrap();
    let report = c.finish().await;
    assert_eq!(report.tasks().len(), 1);
}

#[tokio::test]
#[should_panic(expected = "did not go well (1 not clean, 0 possible leak(s))")]
async fn a_failed_cleanup_fails_the_test() {
    let c = testing::instance();
    c.register("flush", || async { Err::<(), _>("disk full") })
        .unwrap();
    let _ = c.finish().await;
}

#[tokio::test]
#[should_panic(expected = "did not go well (0 not clean, 1 possible leak(s))")]
async fn a_leak_fails_the_test() {
    let c = testing::instance();
    let pool = Arc::new(());
    c.task("pool").register_weak(&pool, |_p| async {}).unwrap();
    let _ = c.finish().await; // `pool` is still held here
    drop(pool);
}

#[tokio::test]
async fn dropping_the_instance_runs_and_checks_the_cleanup() {
    let ran = Arc::new(AtomicBool::new(false));
    {
        let c = testing::instance();
        let flag = ran.clone();
        c.register("flush", move || {
            flag.store(true, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    }
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn dropping_an_instance_whose_cleanup_fails_panics_with_the_report() {
    let panicked = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let c = testing::instance();
            c.register("broken", || async { Err::<(), _>("EIO") })
                .unwrap();
        });
    })
    .join()
    .unwrap_err();
    let message = panicked.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("broken") && message.contains("EIO"),
        "{message}"
    );
}
