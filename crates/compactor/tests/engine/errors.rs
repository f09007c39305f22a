//! Bad input gets a clear error, and nothing registered is lost because of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common;

use compactor::{Compactor, Error, Outcome};

/// A cleanup that records whether it was ever called.
fn flagged() -> (
    Arc<AtomicBool>,
    impl FnMut() -> std::future::Ready<()> + Send + 'static,
) {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    (flag, move || {
        set.store(true, Ordering::SeqCst);
        std::future::ready(())
    })
}

/// Registers "keeper", lets `bad` fail, and checks keeper still runs.
async fn refused_without_loss(
    bad: impl FnOnce(&Compactor) -> Result<compactor::TaskHandle, Error>,
) -> Error {
    let c = Compactor::new();
    c.register("keeper", || async {}).unwrap();
    let error = bad(&c).expect_err("the registration must be refused");
    let report = c.shutdown().await;
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert!(names.contains(&"keeper"), "{report}");
    assert_eq!(
        report.task("keeper").unwrap().outcome(),
        &Outcome::Succeeded
    );
    error
}

#[tokio::test]
async fn an_empty_name_is_refused() {
    let e = refused_without_loss(|c| c.register("  ", || async {})).await;
    assert_eq!(e, Error::EmptyName);
    assert!(e.to_string().contains("must not be empty"));
}

#[tokio::test]
async fn a_duplicate_name_is_refused_and_the_first_task_kept() {
    let (called, cleanup) = flagged();
    let e = refused_without_loss(|c| c.register("keeper", cleanup)).await;
    assert_eq!(e, Error::DuplicateName("keeper".into()));
    assert!(e.to_string().contains("unique name"));
    assert!(!called.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_zero_timeout_is_refused() {
    let e =
        refused_without_loss(|c| c.task("t").timeout(Duration::ZERO).register(|| async {})).await;
    assert_eq!(e, Error::ZeroTimeout { task: "t".into() });
}

#[tokio::test]
async fn a_handle_of_another_instance_is_refused() {
    let other = Compactor::new();
    let foreign = other.register("db", || async {}).unwrap();
    let e =
        refused_without_loss(|c| c.task("http").depends_on(&foreign).register(|| async {})).await;
    assert_eq!(
        e,
        Error::ForeignHandle {
            task: "http".into(),
            dependency: "db".into()
        }
    );
    assert!(e.to_string().contains("another Compactor"));
}

#[tokio::test]
async fn a_dependency_on_an_unregistered_task_is_refused() {
    let e = refused_without_loss(|c| {
        let gone = c.register("gone", || async {}).unwrap();
        gone.unregister();
        c.task("http").depends_on(&gone).register(|| async {})
    })
    .await;
    assert_eq!(
        e,
        Error::UnknownDependency {
            task: "http".into(),
            dependency: "gone".into()
        }
    );
}

#[tokio::test]
async fn a_cycle_is_refused_with_its_path() {
    let e = refused_without_loss(|c| {
        let a = c
            .task("a")
            .depends_on_name("c")
            .register(|| async {})
            .unwrap();
        let b = c.task("b").depends_on(&a).register(|| async {}).unwrap();
        c.task("c").depends_on(&b).register(|| async {})
    })
    .await;
    assert_eq!(
        e,
        Error::Cycle {
            path: vec!["c".into(), "b".into(), "a".into(), "c".into()]
        }
    );
    assert_eq!(
        e.to_string(),
        "dependency cycle c -> b -> a -> c: cleanup order cannot be decided; remove one of these dependencies"
    );
}

#[tokio::test]
async fn a_task_depending_on_itself_is_a_cycle() {
    let e =
        refused_without_loss(|c| c.task("me").depends_on_name("me").register(|| async {})).await;
    assert_eq!(
        e,
        Error::Cycle {
            path: vec!["me".into(), "me".into()]
        }
    );
}

#[tokio::test]
async fn a_refused_cycle_leaves_the_graph_as_it_was() {
    let c = Compactor::new();
    let a = c
        .task("a")
        .depends_on_name("b")
        .register(|| async {})
        .unwrap();
    assert!(matches!(
        c.task("b").depends_on(&a).register(|| async {}),
        Err(Error::Cycle { .. })
    ));
    // "b" was refused, so the name is free and a later, acyclic "b" is fine.
    c.task("b").register(|| async {}).unwrap();
    let report = c.shutdown().await;
    assert!(
        report.is_clean() && report.warnings().is_empty(),
        "{report}"
    );
    let names: Vec<&str> = report.tasks().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn registration_after_shutdown_began_is_refused_and_never_runs() {
    let c = Compactor::new();
    c.register("keeper", || async {}).unwrap();
    c.trigger();
    let (called, cleanup) = flagged();
    assert_eq!(
        c.register("late", cleanup).unwrap_err(),
        Error::ShuttingDown
    );
    let report = c.shutdown().await;
    assert_eq!(report.tasks().len(), 1);
    assert!(!called.load(Ordering::SeqCst));
    let (called, cleanup) = flagged();
    assert_eq!(
        c.task("later").register(cleanup).unwrap_err(),
        Error::ShuttingDown
    );
    assert!(!called.load(Ordering::SeqCst));
}

#[test]
fn invalid_settings_are_named() {
    let option = |builder: compactor::Builder| match builder.build().register("probe", || async {})
    {
        Err(Error::InvalidConfig { option, .. }) => option,
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("registered"),
    };
    assert_eq!(
        option(Compactor::builder().deadline(Duration::ZERO)),
        "deadline"
    );
    assert_eq!(
        option(Compactor::builder().concurrency_limit(0)),
        "concurrency_limit"
    );
    assert_eq!(
        option(Compactor::builder().default_timeout(Duration::ZERO)),
        "default_timeout"
    );
    // The message says which option and what to give instead.
    let e = Compactor::builder()
        .deadline(Duration::ZERO)
        .build()
        .register("probe", || async {})
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid Compactor configuration: `deadline` must be greater than zero"
    );
    // Built without a panic; what was registered elsewhere is not touched.
    let built = std::panic::catch_unwind(|| Compactor::builder().concurrency_limit(0).build());
    let c = built.expect("build() does not panic");
    let message = c.register("probe", || async {}).unwrap_err().to_string();
    assert!(message.contains("concurrency_limit"), "{message}");
    assert!(c.plan().inventory().tasks() == 0);
}

/// A cleanup whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a cleanup's Drop panicked");
    }
}

fn dropping_panics() -> impl compactor::cleanup::IntoCleanup<compactor::cleanup::kind::AsyncOnce> {
    let held = PanicsOnDrop;
    compactor::cleanup::once(move || async move { drop(held) })
}

#[tokio::test]
async fn a_refused_definition_drops_its_cleanup_without_the_panic_reaching_the_caller() {
    let bad = Compactor::builder().deadline(Duration::ZERO).build();
    let c = Compactor::new();
    c.register("taken", || async {}).unwrap();
    let defs = [
        c.task("zero")
            .timeout(Duration::ZERO)
            .define(dropping_panics()),
        c.task("retried").retries(1).define(dropping_panics()),
        c.task(" ").define(dropping_panics()),
        bad.task("bad").define(dropping_panics()),
    ];
    for def in defs {
        assert!(c.register_batch([def]).is_err());
    }
    let _ = c.shutdown().await;
    let late = c.task("late").define(dropping_panics());
    assert_eq!(c.register_batch([late]).unwrap_err(), Error::ShuttingDown);
}

#[tokio::test]
async fn a_refused_setting_comes_before_the_tasks_own_refusals() {
    let c = Compactor::builder().deadline(Duration::ZERO).build();
    let refused = c
        .task("once")
        .retries(1)
        .register(compactor::cleanup::once(|| async {}));
    assert!(
        matches!(&refused, Err(Error::InvalidConfig { option, .. }) if *option == "deadline"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn main_on_an_instance_with_a_refused_setting_runs_nothing_and_exits_1() {
    let c = Compactor::builder().deadline(Duration::ZERO).build();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let report = c
        .run_until_shutdown(|_stop| async move { flag.store(true, Ordering::SeqCst) })
        .await;
    assert!(!ran.load(Ordering::SeqCst), "the service ran");
    assert_eq!(report.exit_code(), 1, "{report}");
    let compactor::report::ShutdownReason::ServiceFailed(why) = report.reason() else {
        panic!("{report}");
    };
    assert!(why.contains("deadline"), "{why}");
}

#[tokio::test]
async fn shutdown_from_inside_a_cleanup_returns_the_report_so_far() {
    let c = Compactor::new();
    c.register("first", || async {}).unwrap();
    let inner = c.clone();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let slot = seen.clone();
    c.task("reentrant")
        .depends_on_name("first")
        .timeout(Duration::from_secs(5))
        .register(move || {
            let (inner, slot) = (inner.clone(), slot.clone());
            async move {
                let report = inner.shutdown().await;
                *slot.lock().unwrap() = Some(report);
            }
        })
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(3), c.shutdown())
        .await
        .expect("a cleanup calling shutdown() must not deadlock");
    assert!(report.is_complete() && report.is_clean(), "{report}");
    let partial = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the cleanup got a report");
    assert!(!partial.is_complete());
    assert_eq!(
        partial.task("reentrant").unwrap().outcome(),
        &Outcome::Pending
    );
    assert_eq!(partial.task("first").unwrap().outcome(), &Outcome::Pending);
}

#[tokio::test]
async fn wait_from_inside_a_blocking_cleanup_does_not_deadlock() {
    let c = Compactor::new();
    let inner = c.clone();
    let handle = tokio::runtime::Handle::current();
    c.task("sync")
        .register_blocking(move || {
            let report = handle.block_on(inner.wait());
            assert!(!report.is_complete());
        })
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(3), c.shutdown())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

/// A cleanup that spawns work which calls `shutdown()`, and awaits it.
fn spawning_cleanup(c: &Compactor, inherit: bool) {
    let inner = c.clone();
    c.task("spawner")
        .timeout(Duration::from_secs(2))
        .register(move || {
            let inner = inner.clone();
            async move {
                let work = async move { inner.shutdown().await };
                let so_far = match inherit {
                    true => tokio::spawn(compactor::cleanup::inherit_run(work)).await,
                    false => tokio::spawn(work).await,
                };
                assert!(!so_far.unwrap().is_complete());
            }
        })
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn work_a_cleanup_spawns_with_inherit_run_gets_the_report_so_far_at_once() {
    let c = Compactor::new();
    spawning_cleanup(&c, true);
    let report = c.shutdown().await;
    let task = report.task("spawner").unwrap();
    assert_eq!(task.outcome(), &Outcome::Succeeded, "{report}");
    assert_eq!(task.duration(), Duration::ZERO, "at once: {report}");
}

#[tokio::test(start_paused = true)]
async fn work_a_cleanup_spawns_plainly_waits_for_the_run_until_the_cleanups_timeout() {
    // The limit `inherit_run` is for: tokio gives a spawned task nothing of
    // the cleanup that spawned it.
    let c = Compactor::new();
    spawning_cleanup(&c, false);
    let report = c.shutdown().await;
    let task = report.task("spawner").unwrap();
    assert_eq!(task.outcome(), &Outcome::TimedOut, "{report}");
    assert_eq!(task.duration(), Duration::from_secs(2), "{report}");
}

#[test]
fn a_thread_a_blocking_cleanup_starts_with_inherit_run_blocking_gets_the_report_so_far() {
    let runtime = common::multi_thread(2);
    let c = Compactor::new();
    let inner = c.clone();
    let complete = Arc::new(AtomicBool::new(true));
    let seen = complete.clone();
    c.task("sync-spawner")
        .timeout(Duration::from_secs(20))
        .register_blocking(move || {
            let inner = inner.clone();
            let report = std::thread::spawn(compactor::cleanup::inherit_run_blocking(move || {
                inner.shutdown_blocking()
            }))
            .join()
            .unwrap();
            seen.store(report.is_complete(), Ordering::SeqCst);
        })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    assert!(report.is_clean(), "{report}");
    assert!(
        !complete.load(Ordering::SeqCst),
        "the thread got the report so far"
    );
    assert!(
        report.task("sync-spawner").unwrap().duration() < Duration::from_secs(10),
        "{report}"
    );
}

#[test]
fn the_public_handles_cross_threads_and_catch_unwind() {
    fn handle<T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    handle::<compactor::Compactor>();
    handle::<compactor::TaskHandle>();
    handle::<compactor::Builder>();
    handle::<compactor::service::Readiness>();
    handle::<compactor::service::ServiceContext>();
    handle::<compactor::ShutdownReport>();
    handle::<compactor::TaskReport>();
    handle::<compactor::Outcome>();
    handle::<compactor::inspect::ShutdownPlan>();
    handle::<compactor::inspect::Progress>();
    handle::<compactor::Error>();
    handle::<compactor::Event>();
    handle::<compactor::testing::TestCompactor>();
}
