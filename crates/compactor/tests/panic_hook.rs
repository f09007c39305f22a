//! The panic hook: its own test binary, since a hook is process-wide.

use std::time::Duration;

use compactor::{Compactor, Outcome, report::ShutdownReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_starts_the_shutdown_but_a_cleanup_panic_does_not() {
    let hooked = Compactor::builder().shutdown_on_panic(true).build();
    hooked.register("db", || async {}).unwrap();

    // A cleanup of another instance panics: reported there, not escalated.
    let other = Compactor::new();
    other
        .task("buggy")
        .register(|| -> std::future::Ready<()> { panic!("cleanup bug") })
        .unwrap();
    let report = other.shutdown().await;
    assert!(matches!(report.tasks()[0].outcome(), Outcome::Panicked(_)));
    assert!(
        !hooked.shutdown_token().is_cancelled(),
        "a cleanup's panic must not start another shutdown"
    );

    std::thread::Builder::new()
        .name("worker-7".into())
        .spawn(|| panic!("invariant broken"))
        .unwrap()
        .join()
        .unwrap_err();
    let report = tokio::time::timeout(Duration::from_secs(5), hooked.wait())
        .await
        .unwrap();
    match report.reason() {
        ShutdownReason::Panic(message) => {
            // Which thread, where, and what: not any one layout of them.
            assert!(message.contains("worker-7"), "{message}");
            assert!(message.contains(file!()), "{message}");
            assert!(message.ends_with("invariant broken"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.exit_code(), 101);
}
