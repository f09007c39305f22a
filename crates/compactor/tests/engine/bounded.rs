//! The run is bounded and complete whatever a cleanup does: cleanups that
//! block their thread, panic in `Drop`, outlive their runtime; settings at
//! their limits; `shutdown_blocking` anywhere; calls back into the run.
//!
//! Where the point is a real block, these use real threads and real time,
//! with bounds far from the blocking (seconds against a deadline of a few
//! hundred milliseconds): they fail when the run waits for the block, not
//! when the machine is slow.

use compactor::cleanup::{cancellable, join_handle, once};
use futures::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use compactor::report::Interruption;
use compactor::{Backoff, Category, Compactor, Error, Outcome, Priority};

use crate::common;

use common::multi_thread;

/// How long the blocking cleanups here block: far longer than any bound
/// the tests check.
const BLOCK: Duration = Duration::from_secs(6);
/// What "came back without waiting for the block" means.
const WELL_BEFORE_THE_BLOCK: Duration = Duration::from_secs(3);

#[test]
fn an_async_cleanup_that_blocks_its_thread_does_not_hold_the_deadline() {
    let runtime = multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(300))
        .build();
    c.register("sync-driver", || async { std::thread::sleep(BLOCK) })
        .unwrap();
    let began = Instant::now();
    let report = runtime.block_on(c.shutdown());
    assert!(began.elapsed() < WELL_BEFORE_THE_BLOCK, "{report}");
    let task = report.task("sync-driver").unwrap();
    assert_eq!(task.outcome(), &Outcome::Cancelled, "{report}");
    // Its code still holds its thread: it could not be dropped.
    assert_eq!(task.interruption(), Some(Interruption::Abandoned));
    assert!(
        report.to_string().contains("abandoned, still running"),
        "{report}"
    );
    runtime.shutdown_background();
}

#[test]
fn an_async_cleanup_that_blocks_its_thread_times_out_and_the_run_goes_on() {
    let runtime = multi_thread(2);
    let c = Compactor::new();
    c.task("std-mutex")
        .priority(Priority::High)
        .timeout(Duration::from_millis(200))
        .register(|| async { std::thread::sleep(BLOCK) })
        .unwrap();
    c.register("after", || async {}).unwrap();
    let began = Instant::now();
    let report = runtime.block_on(c.shutdown());
    assert!(began.elapsed() < WELL_BEFORE_THE_BLOCK, "{report}");
    assert_eq!(
        report.task("std-mutex").unwrap().outcome(),
        &Outcome::TimedOut
    );
    assert_eq!(
        report.task("std-mutex").unwrap().interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    assert_eq!(report.task("after").unwrap().outcome(), &Outcome::Succeeded);
    runtime.shutdown_background();
}

#[test]
fn an_abandoned_blocking_cleanup_does_not_hold_the_runtimes_drop() {
    let runtime = multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(200))
        .build();
    c.task("stuck-fsync")
        .register_blocking(|| std::thread::sleep(BLOCK))
        .unwrap();
    let began = Instant::now();
    let report = runtime.block_on(c.shutdown());
    // As `#[tokio::main]` does when `main` returns.
    drop(runtime);
    assert!(began.elapsed() < WELL_BEFORE_THE_BLOCK, "{report}");
    let task = report.task("stuck-fsync").unwrap();
    assert_eq!(task.outcome(), &Outcome::Cancelled);
    assert_eq!(task.interruption(), Some(Interruption::Abandoned));
}

/// Panics when dropped.
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// An error whose text cannot be written.
#[derive(Debug)]
struct Unprintable;

impl std::fmt::Display for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("no text for this error")
    }
}

#[tokio::test(start_paused = true)]
async fn panics_in_what_the_user_hands_in_and_in_their_drops_are_contained() {
    let c = Compactor::new();
    let closure_guard = PanicOnDrop("closure dropped");
    c.register("closure-drop", move || {
        let _ = &closure_guard;
        async {}
    })
    .unwrap();
    c.register("future-drop", || {
        let guard = PanicOnDrop("future dropped");
        async move {
            let _ = &guard;
        }
    })
    .unwrap();
    c.register("payload-drop", || async {
        if true {
            std::panic::panic_any(PanicOnDrop("payload dropped"));
        }
    })
    .unwrap();
    c.register("error-text", || async { Err::<(), _>(Unprintable) })
        .unwrap();
    c.register("ten-ms", || tokio::time::sleep(Duration::from_millis(10)))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_complete());
    for name in ["closure-drop", "future-drop", "payload-drop", "error-text"] {
        let outcome = report.task(name).unwrap().outcome();
        assert!(matches!(outcome, Outcome::Panicked(_)), "{name}: {outcome}");
    }
    assert_eq!(
        report.task("ten-ms").unwrap().outcome(),
        &Outcome::Succeeded
    );
    assert!(report.duration() < Duration::from_secs(1), "{report}");
}

#[tokio::test(start_paused = true)]
async fn duration_max_means_no_limit_everywhere() {
    let c = Compactor::builder()
        .deadline(Duration::MAX)
        .default_timeout(Duration::MAX)
        .cancel_grace(Duration::MAX)
        .phase_budget(Priority::Normal, Duration::MAX)
        .backoff(Backoff::fixed(Duration::MAX))
        .exit_grace(Duration::MAX)
        .progress_every(Duration::MAX)
        .build();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let waiting = tokio::spawn(async move {
        let _ = rx.await;
    });
    c.task("joined")
        .register(join_handle(waiting, Duration::MAX))
        .unwrap();
    c.task("slow")
        .timeout(Duration::MAX)
        .register(|| tokio::time::sleep(Duration::from_secs(3600)))
        .unwrap();
    c.task("cancellable")
        .register(cancellable(|_token| async {}))
        .unwrap();
    c.task("sender")
        .register(once(|| async move {
            tokio::time::sleep(Duration::from_secs(1800)).await;
            let _ = tx.send(());
        }))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.duration(), Duration::from_secs(3600));
    assert_eq!(
        report.task("joined").unwrap().duration(),
        Duration::from_secs(1800)
    );
}

#[test]
fn a_drain_delay_without_end_is_refused_in_the_shared_wording() {
    for deadline in [Duration::from_secs(25), Duration::MAX] {
        let built = Compactor::builder()
            .deadline(deadline)
            .drain_delay(Duration::MAX)
            .build()
            .register("probe", || async {});
        let Err(Error::InvalidConfig { option, problem }) = built else {
            panic!("drain_delay(Duration::MAX) was taken: {built:?}");
        };
        assert_eq!(option, "drain_delay");
        assert!(
            problem.starts_with("cannot be `Duration::MAX` (no limit): "),
            "{problem}"
        );
    }
    // Without a deadline, any delay of an end leaves time for the cleanups.
    let c = Compactor::builder()
        .deadline(Duration::MAX)
        .drain_delay(Duration::from_secs(3600))
        .build();
    let probe = c.register("probe", || async {});
    assert!(probe.is_ok(), "{probe:?}");
}

#[tokio::test(start_paused = true)]
async fn a_backoff_past_the_clock_waits_for_the_deadline() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(2))
        .backoff(Backoff::exponential(Duration::MAX, Duration::MAX))
        .build();
    c.task("flaky")
        .retries(u32::MAX)
        .register(|| async { Err::<(), _>("refused") })
        .unwrap();
    let report = c.shutdown().await;
    let task = report.task("flaky").unwrap();
    assert_eq!(task.outcome(), &Outcome::Cancelled);
    assert_eq!(task.attempts(), 1);
    assert_eq!(report.duration(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn every_retry_count_is_honoured() {
    for retries in [0, 1, 5] {
        let c = Compactor::new();
        c.task("flaky")
            .retries(retries)
            .backoff(Backoff::fixed(Duration::from_millis(1)))
            .register(|| async { Err::<(), _>("refused") })
            .unwrap();
        let report = c.shutdown().await;
        assert_eq!(report.task("flaky").unwrap().attempts(), retries + 1);
    }
}

#[test]
fn settings_out_of_range_are_refused_with_the_option_named() {
    let refused = [
        Compactor::builder().deadline(Duration::ZERO),
        Compactor::builder().default_timeout(Duration::ZERO),
        Compactor::builder().concurrency_limit(0),
        Compactor::builder().phase_budget(Priority::High, Duration::ZERO),
    ];
    let options = [
        "deadline",
        "default_timeout",
        "concurrency_limit",
        "phase_budget",
    ];
    for (builder, option) in refused.into_iter().zip(options) {
        // Built without a panic; every registration refused, naming it.
        let c = builder.build();
        let registered = c.register("probe", || async {});
        match registered {
            Err(Error::InvalidConfig { option: named, .. }) => assert_eq!(named, option),
            other => panic!("{option}: {other:?}"),
        }
    }
    let c = Compactor::builder()
        .concurrency_limit(usize::MAX)
        .cancel_grace(Duration::ZERO)
        .build();
    drop(c.subscribe());
}

#[test]
fn a_runtime_without_timers_still_gets_its_report() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let c = Compactor::new();
    let ran = crate::common::register_flush(&c);
    let report = runtime.block_on(c.shutdown());
    assert!(report.is_clean(), "{report}");
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn a_run_whose_runtime_went_away_is_completed_and_waited_for_elsewhere() {
    let c = Compactor::new();
    let began = Arc::new(AtomicBool::new(false));
    let first_began = began.clone();
    c.task("first")
        .priority(Priority::High)
        .register(move || {
            first_began.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60))
        })
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    c.register("second", move || {
        flag.store(true, Ordering::SeqCst);
        async {}
    })
    .unwrap();
    let short_lived = multi_thread(1);
    short_lived.block_on(async {
        c.trigger();
        while !began.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    drop(short_lived);
    let report = multi_thread(1).block_on(c.wait());
    assert!(report.is_complete());
    // Its attempt went with the runtime it ran on.
    assert!(matches!(
        report.task("first").unwrap().outcome(),
        Outcome::Failed(why) if why.contains("runtime")
    ));
    assert_eq!(
        report.task("second").unwrap().outcome(),
        &Outcome::Succeeded
    );
    assert!(ran.load(Ordering::SeqCst));
    assert!(c.wait().now_or_never().is_some());
}

#[tokio::test]
async fn shutdown_blocking_works_on_a_current_thread_runtime() {
    let c = Compactor::new();
    c.register("async-flush", tokio::task::yield_now).unwrap();
    let report = c.shutdown_blocking();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn shutdown_blocking_works_on_the_worker_of_a_one_worker_runtime() {
    let runtime = multi_thread(1);
    let c = Compactor::new();
    c.register("async-flush", || {
        tokio::time::sleep(Duration::from_millis(5))
    })
    .unwrap();
    let report =
        runtime.block_on(async { tokio::spawn(async move { c.shutdown_blocking() }).await });
    assert!(report.unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_blocking_inside_a_cleanup_returns_the_report_so_far() {
    let c = Compactor::new();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (inner, slot) = (c.clone(), seen.clone());
    c.register("asks", move || {
        let (inner, slot) = (inner.clone(), slot.clone());
        async move {
            *slot.lock().unwrap() = Some(inner.shutdown_blocking());
        }
    })
    .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    let so_far = seen.lock().unwrap().take().unwrap();
    assert!(!so_far.is_complete());
    assert_eq!(so_far.task("asks").unwrap().outcome(), &Outcome::Pending);
}

#[tokio::test(start_paused = true)]
async fn run_until_shutdown_runs_the_cleanup_when_the_service_panics() {
    let c = Compactor::builder().auto_listen(false).build();
    let ran = crate::common::register_flush(&c);
    let code = c
        .run_until_shutdown(|_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if true {
                panic!("service broke");
            }
        })
        .await;
    assert_eq!(code.exit_code(), 101);
    assert!(ran.load(Ordering::SeqCst));
    let report = c.wait().now_or_never().expect("the run is over");
    assert!(
        matches!(report.reason(), compactor::report::ShutdownReason::Panic(m) if m.contains("service broke"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_waits_for_an_early_run_in_flight() {
    let c = Compactor::new();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    c.task("cache-flush")
        .category(Category::Memory)
        .register(move || {
            let flag = flag.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                flag.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
    c.register("db", || async {}).unwrap();
    let releasing = c.clone();
    let release = tokio::spawn(async move {
        releasing
            .run_early(compactor::Selection::Category(Category::Memory))
            .await
            .expect("a category release")
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = c.shutdown().await;
    assert!(done.load(Ordering::SeqCst), "{report}");
    let flush = report
        .task("cache-flush")
        .expect("the release's task is reported");
    assert_eq!(flush.outcome(), &Outcome::Succeeded);
    assert_eq!(report.tasks().len(), 2);
    assert!(release.await.unwrap().is_clean());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_an_early_run_in_flight() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(1))
        .build();
    c.task("cache-flush")
        .category(Category::Memory)
        .timeout(Duration::from_secs(60))
        .register(|| tokio::time::sleep(Duration::from_secs(30)))
        .unwrap();
    let releasing = c.clone();
    let release = tokio::spawn(async move {
        releasing
            .run_early(compactor::Selection::Category(Category::Memory))
            .await
            .expect("a category release")
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = c.shutdown().await;
    assert_eq!(
        report.task("cache-flush").unwrap().outcome(),
        &Outcome::Cancelled
    );
    assert!(report.duration() <= Duration::from_secs(1), "{report}");
    drop(release.await.unwrap());
}

#[tokio::test]
async fn every_refusal_after_shutdown_began_is_shutting_down() {
    let c = Compactor::new();
    let other = Compactor::new();
    let foreign = other.register("elsewhere", || async {}).unwrap();
    let _ = c.shutdown().await;
    let refusals = [
        c.register("   ", || async {}),
        c.task("zero").timeout(Duration::ZERO).register(|| async {}),
        c.task("foreign").depends_on(&foreign).register(|| async {}),
        c.register("compactor::mine", || async {}),
    ];
    for refused in refusals {
        assert_eq!(refused.unwrap_err(), Error::ShuttingDown);
    }
}

#[tokio::test(start_paused = true)]
async fn a_scope_cleanup_that_calls_its_parents_shutdown_gets_the_report_so_far() {
    let app = Compactor::new();
    let conn = app.task("conn").scope().unwrap();
    let parent = app.clone();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let slot = seen.clone();
    conn.task("asks-parent")
        .timeout(Duration::from_secs(10))
        .register(move || {
            let (parent, slot) = (parent.clone(), slot.clone());
            async move {
                *slot.lock().unwrap() = Some(parent.shutdown().await);
            }
        })
        .unwrap();
    let report = app.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        report.duration(),
        Duration::ZERO,
        "no timeout was waited out"
    );
    let so_far = seen.lock().unwrap().take().unwrap();
    assert!(!so_far.is_complete());
    assert_eq!(so_far.task("conn").unwrap().outcome(), &Outcome::Pending);
}

#[tokio::test]
async fn the_library_takes_no_name_from_the_users_namespace() {
    let c = Compactor::new();
    c.register("service", || async {}).unwrap();
    c.task("main")
        .service(|stop| async move { stop.cancelled().await })
        .expect("the library's task has a name of its own");
    assert!(matches!(
        c.register("compactor::service", || async {}),
        Err(Error::ReservedName(_))
    ));
    let report = c.shutdown().await;
    assert_eq!(report.tasks().len(), 2);
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn the_table_stays_bounded_and_escapes_what_it_prints() {
    let c = Compactor::new();
    let long: String = "n".repeat(70_000);
    c.register(long.as_str(), || async {}).unwrap();
    c.register("red\u{1b}[31m\nname", || async {
        Err::<(), _>(format!("disk full\u{7}{}", "x".repeat(10_000)))
    })
    .unwrap();
    for i in 0..1000 {
        c.register(format!("t{i}"), || async {}).unwrap();
    }
    let report = c.shutdown().await;
    let table = report.to_string();
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}'));
    assert!(table.contains("red\\u{1b}[31m\\nname"));
    let widest = table.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest < 400, "a line of {widest} characters");
    // The full texts stay in the API.
    assert!(report.task(&long).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_reaching_its_own_instance_from_a_blocking_thread_gets_the_report_so_far() {
    let c = Compactor::new();
    let calls = Arc::new(AtomicU32::new(0));
    let (inner, counter) = (c.clone(), calls.clone());
    c.task("sync")
        .register_blocking(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            assert!(!inner.shutdown_blocking().is_complete());
        })
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shutdown_blocking_on_the_thread_that_drives_the_run_returns_instead_of_waiting_on_itself()
{
    let c = Compactor::new();
    c.register("flush", || tokio::time::sleep(Duration::from_millis(5)))
        .unwrap();
    c.trigger();
    // Let the run start on this current-thread runtime.
    tokio::task::yield_now().await;
    let so_far = c.shutdown_blocking();
    assert!(!so_far.is_complete());
    assert!(c.wait().await.is_clean());
}

#[tokio::test]
async fn a_cycle_too_long_to_find_at_registration_is_broken_at_shutdown() {
    let c = Compactor::new();
    // t0 names the last task; each other task depends on the one before by
    // handle: a cycle of n + 1 tasks, closed by the last registration.
    let n = 500;
    let mut previous = c
        .task("t0")
        .depends_on_name(format!("t{n}"))
        .register(|| async {})
        .unwrap();
    for i in 1..n {
        previous = c
            .task(format!("t{i}"))
            .depends_on(&previous)
            .register(|| async {})
            .unwrap();
    }
    // The search from t{n}'s dependency would have to walk ~500 tasks to
    // find t0's reference: registration does not go that far.
    c.task(format!("t{n}"))
        .depends_on(&previous)
        .register(|| async {})
        .expect("a long cycle is not searched for at registration");
    let report = c.shutdown().await;
    // Broken at the latest-registered task on it: t{n}'s dependency goes.
    match report.warnings() {
        [compactor::report::GraphWarning::CycleBroken { path, dropped }] => {
            assert_eq!(dropped, &(format!("t{n}"), format!("t{}", n - 1)));
            assert_eq!(path.len(), n + 2, "every task of the cycle, closed");
        }
        other => panic!("the cycle is broken and reported: {other:?}"),
    }
    assert_eq!(report.tasks().len(), n + 1);
    assert!(
        report
            .tasks()
            .iter()
            .all(|t| t.outcome() == &Outcome::Succeeded)
    );

    // A short one is refused.
    let c = Compactor::new();
    c.task("a")
        .depends_on_name("b")
        .register(|| async {})
        .unwrap();
    let refused = c.task("b").depends_on_name("a").register(|| async {});
    assert!(matches!(refused, Err(Error::Cycle { .. })));
}

#[tokio::test]
async fn shutdown_blocking_right_after_trigger_on_a_current_thread_runtime_returns() {
    let c = Compactor::new();
    c.register("flush", || async {}).unwrap();
    c.trigger();
    // The run is spawned on this thread and has not been polled yet.
    let so_far = c.shutdown_blocking();
    assert!(!so_far.is_complete());
    assert!(c.wait().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_cancellable_cleanup_that_stops_on_its_token_is_retried() {
    let c = Compactor::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    c.task("drain")
        .timeout(Duration::from_millis(100))
        .retries(2)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .register(cancellable(move |token| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { token.cancelled().await }
        }))
        .unwrap();
    let report = c.shutdown().await;
    let task = report.task("drain").unwrap();
    assert_eq!(task.outcome(), &Outcome::TimedOut, "{report}");
    assert_eq!(task.interruption(), Some(Interruption::Stopped));
    assert_eq!(task.attempts(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn abandoned_blocking_attempts_never_call_the_cleanup_after_the_run() {
    let runtime = multi_thread(2);
    let c = Compactor::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // The first call blocks until the test lets it go, after the report.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    c.task("slow-fsync")
        .timeout(Duration::from_millis(100))
        .retries(2)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .register_blocking(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = held.lock().unwrap().recv_timeout(BLOCK);
            Err::<(), _>("disk full")
        })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    assert_eq!(
        report.task("slow-fsync").unwrap().outcome(),
        &Outcome::TimedOut
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Let the first call return: the retries that waited for it see that
    // the run moved on, and do not call the cleanup.
    drop(release);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_async_retry_never_overlaps_the_attempt_it_replaces() {
    let runtime = multi_thread(2);
    let c = Compactor::new();
    let busy = Arc::new(AtomicBool::new(false));
    let overlapped = Arc::new(AtomicBool::new(false));
    let (b, o) = (busy.clone(), overlapped.clone());
    c.task("sync-client")
        .timeout(Duration::from_millis(100))
        .retries(1)
        .backoff(Backoff::fixed(Duration::ZERO))
        .register(move || {
            let (busy, overlapped) = (b.clone(), o.clone());
            async move {
                if busy.swap(true, Ordering::SeqCst) {
                    overlapped.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(300));
                busy.store(false, Ordering::SeqCst);
            }
        })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    assert_eq!(
        report.task("sync-client").unwrap().outcome(),
        &Outcome::TimedOut
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(!overlapped.load(Ordering::SeqCst));
    runtime.shutdown_background();
}

#[tokio::test(start_paused = true)]
async fn an_early_run_cleanup_asking_for_the_report_while_the_shutdown_waits_gets_it_at_once() {
    let c = Compactor::new();
    let asked = Arc::new(std::sync::Mutex::new(None));
    let (inner, slot) = (c.clone(), asked.clone());
    c.task("cache")
        .category(Category::Memory)
        .register(move || {
            let (inner, slot) = (inner.clone(), slot.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                *slot.lock().unwrap() = Some(inner.shutdown().await);
            }
        })
        .unwrap();
    let releasing = c.clone();
    let release = tokio::spawn(async move {
        releasing
            .run_early(compactor::Selection::Category(Category::Memory))
            .await
            .expect("a category release")
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = c.shutdown().await;
    assert_eq!(report.duration(), Duration::from_millis(990), "{report}");
    assert!(!asked.lock().unwrap().take().unwrap().is_complete());
    assert!(release.await.unwrap().is_clean());
}

#[tokio::test(start_paused = true)]
async fn every_duration_setting_works_at_its_smallest() {
    let tiny = Duration::from_nanos(1);
    let c = Compactor::builder()
        .default_timeout(tiny)
        .cancel_grace(tiny)
        .backoff(Backoff::fixed(tiny))
        .concurrency_limit(1)
        .build();
    let mut events = c.subscribe();
    c.task("slow")
        .retries(1)
        .register(|| tokio::time::sleep(Duration::from_secs(1)))
        .unwrap();
    c.task("cancellable")
        .timeout(tiny)
        .register(cancellable(|token| async move { token.cancelled().await }))
        .unwrap();
    let report = c.shutdown().await;
    let slow = report.task("slow").unwrap();
    assert_eq!((slow.outcome(), slow.attempts()), (&Outcome::TimedOut, 2));
    let cancellable = report.task("cancellable").unwrap();
    assert_eq!(cancellable.outcome(), &Outcome::TimedOut);
    // The run's events, the last one its end.
    let mut last = None;
    while let Ok(event) = events.try_recv() {
        last = Some(event);
    }
    assert!(matches!(
        last,
        Some(compactor::Event::ShutdownFinished { .. })
    ));

    let c = Compactor::builder()
        .deadline(tiny)
        .phase_budget(Priority::Normal, tiny)
        .build();
    c.register("late", || tokio::time::sleep(Duration::from_secs(1)))
        .unwrap();
    let report = c.shutdown().await;
    // Started at once (the clock is paused at the run's start), then
    // stopped as the deadline passes.
    assert_eq!(report.task("late").unwrap().outcome(), &Outcome::Cancelled);
    assert!(report.duration() <= Duration::from_millis(1), "{report}");
}

/// How many threads of this process carry the name `name`.
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn a_blocking_cleanup_costs_one_thread_not_one_of_the_runtimes_too() {
    const NAME: &str = "one-thread-rt";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(NAME)
        .enable_all()
        .build()
        .unwrap();
    let c = Compactor::new();
    let (began, running) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    c.task("block")
        .register_blocking(once(move || {
            let _ = began.send(());
            let _ = released.recv();
        }))
        .unwrap();
    let run = runtime.spawn({
        let c = c.clone();
        async move { c.shutdown().await }
    });
    running.recv().unwrap();
    // Give a stand-in on the runtime's blocking pool the time to start.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        threads_named(NAME),
        2,
        "the runtime's two workers and nothing more"
    );
    release.send(()).unwrap();
    let report = runtime.block_on(run).unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn an_async_cleanup_cut_off_is_gone_before_the_report() {
    // Its future holds a guard whose drop is seen: by the report, the
    // future has been dropped, and the report says so.
    struct Seen(Arc<AtomicBool>);
    impl Drop for Seen {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    for _ in 0..common::stress(20) {
        let runtime = multi_thread(2);
        let c = Compactor::builder()
            .deadline(Duration::from_millis(50))
            .build();
        let gone = Arc::new(AtomicBool::new(false));
        let guard = gone.clone();
        c.register(
            "forever",
            once(move || async move {
                let _seen = Seen(guard);
                std::future::pending::<()>().await;
            }),
        )
        .unwrap();
        let report = runtime.block_on(c.shutdown());
        let gone_by_the_report = gone.load(Ordering::SeqCst);
        let task = report.task("forever").unwrap();
        // Dropped only if it is gone; on a machine too busy to drop it in
        // time, the report says it may still run.
        match task.interruption() {
            Some(Interruption::Dropped) => assert!(gone_by_the_report, "{report}"),
            Some(Interruption::Abandoned) => {}
            other => panic!("{other:?}\n{report}"),
        }
    }
}

#[test]
fn on_a_current_thread_runtime_a_cleanup_past_its_timeout_is_not_a_success() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Compactor::new();
    c.task("holds-the-thread")
        .timeout(Duration::from_millis(50))
        .register(|| async { std::thread::sleep(Duration::from_millis(300)) })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    let task = report.task("holds-the-thread").unwrap();
    assert_eq!(task.outcome(), &Outcome::TimedOut, "{report}");
    assert_eq!(task.interruption(), Some(Interruption::Overran), "{report}");
    assert!(!report.is_clean());
}

#[test]
fn on_a_current_thread_runtime_a_cleanup_past_the_deadline_is_not_a_success() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Compactor::builder()
        .deadline(Duration::from_millis(50))
        .build();
    c.task("holds-the-thread")
        .register(|| async { std::thread::sleep(Duration::from_millis(300)) })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    let task = report.task("holds-the-thread").unwrap();
    assert_eq!(task.outcome(), &Outcome::Cancelled, "{report}");
    assert_eq!(task.interruption(), Some(Interruption::Overran), "{report}");
}

#[test]
fn an_attempt_past_its_timeout_with_retries_left_is_timed_out_not_lost() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Compactor::new();
    c.task("holds-the-thread")
        .timeout(Duration::from_millis(50))
        .retries(2)
        .register(|| async { std::thread::sleep(Duration::from_millis(100)) })
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    let task = report.task("holds-the-thread").unwrap();
    assert_eq!(task.outcome(), &Outcome::TimedOut, "{report}");
    assert_eq!(task.interruption(), Some(Interruption::Overran), "{report}");
    assert_eq!(task.attempts(), 1, "{report}");
}

#[test]
fn a_skipped_cleanup_whose_drop_is_slow_is_reported_still_running() {
    let runtime = multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(100))
        .build();
    common::register_slow_drop(&c, Duration::from_millis(300));
    c.task("holder")
        .priority(Priority::Critical)
        .register(std::future::pending::<()>)
        .unwrap();
    let began = Instant::now();
    let report = runtime.block_on(c.shutdown());
    assert!(began.elapsed() < Duration::from_millis(250), "{report}");
    let task = report.task("slow-drop").unwrap();
    assert!(matches!(task.outcome(), Outcome::Skipped(_)), "{report}");
    assert_eq!(
        task.interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    runtime.shutdown_background();
}

#[test]
fn a_first_poll_that_holds_its_thread_does_not_hold_the_cleanups_queued_behind_it() {
    // Started in one turn, these share their first polls' lane; the
    // latest registered goes first and holds its thread for a while.
    let runtime = multi_thread(2);
    let c = Compactor::new();
    let released = Arc::new(AtomicBool::new(false));
    let ran_while_held = Arc::new(AtomicU32::new(0));
    for i in 0..40 {
        let (released, ran) = (released.clone(), ran_while_held.clone());
        c.register(format!("quick-{i}"), move || {
            let (released, ran) = (released.clone(), ran.clone());
            async move {
                if !released.load(Ordering::SeqCst) {
                    ran.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    }
    let release = released.clone();
    c.task("holder")
        .timeout(Duration::from_secs(10))
        .register(once(move || async move {
            std::thread::sleep(Duration::from_millis(1500));
            release.store(true, Ordering::SeqCst);
        }))
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        ran_while_held.load(Ordering::SeqCst),
        40,
        "cleanups queued behind a held first poll waited for it\n{report}"
    );
}

#[test]
fn a_first_poll_that_holds_its_thread_does_not_hold_the_runner_it_woke() {
    // In one lane: `quick` ends in its first poll (telling the runner),
    // then `holder`'s first poll holds the thread. The runner must keep the
    // deadline all the same.
    for _ in 0..common::stress(3) {
        let runtime = multi_thread(2);
        let c = Compactor::builder()
            .deadline(Duration::from_millis(300))
            .build();
        c.register("holder", || async { std::thread::sleep(BLOCK) })
            .unwrap();
        c.register("quick", || async {}).unwrap();
        let began = Instant::now();
        let report = runtime.block_on(c.shutdown());
        assert!(began.elapsed() < WELL_BEFORE_THE_BLOCK, "{report}");
        assert_eq!(report.task("quick").unwrap().outcome(), &Outcome::Succeeded);
        runtime.shutdown_background();
    }
}

#[test]
fn a_first_poll_that_holds_its_thread_does_not_hold_a_pending_cleanup_it_spawned() {
    // `flush` is pending after its first poll and goes on on a task of its
    // own; `holder`, next in the lane, holds the thread for a second.
    let runtime = multi_thread(2);
    let c = Compactor::new();
    c.register("holder", || async {
        std::thread::sleep(Duration::from_secs(1));
    })
    .unwrap();
    c.task("flush")
        .timeout(Duration::from_millis(300))
        .register(|| tokio::time::sleep(Duration::from_millis(1)))
        .unwrap();
    let report = runtime.block_on(c.shutdown());
    assert_eq!(
        report.task("flush").unwrap().outcome(),
        &Outcome::Succeeded,
        "{report}"
    );
    runtime.shutdown_background();
}

#[test]
fn a_lane_that_drops_a_stopped_attempt_does_not_hold_the_runner_it_told() {
    // `z` goes out alone; the lane holds `a`, `b`, `c`. `a` holds its
    // thread; `b` times out meanwhile, so a take-over drops it (telling the
    // runner) and then begins `c`, which holds its thread too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    let c = Compactor::builder()
        .deadline(Duration::from_millis(300))
        .build();
    c.register("c", || async { std::thread::sleep(BLOCK) })
        .unwrap();
    c.task("b")
        .timeout(Duration::from_millis(1))
        .register(|| async {})
        .unwrap();
    c.register("a", || async { std::thread::sleep(BLOCK) })
        .unwrap();
    c.register("z", || async {}).unwrap();
    let began = Instant::now();
    let report = runtime.block_on(c.shutdown());
    assert!(began.elapsed() < WELL_BEFORE_THE_BLOCK, "{report}");
    runtime.shutdown_background();
}

/// Skipped at the deadline, many cleanups are let go of together: the one
/// whose `Drop` holds its thread is reported abandoned, still running; one
/// reported without it was dropped by the report; the report keeps its
/// deadline.
#[test]
fn skipped_cleanups_let_go_of_together_are_each_reported_as_they_are() {
    struct Holds(bool, Arc<AtomicBool>);
    impl Drop for Holds {
        fn drop(&mut self) {
            if self.0 {
                std::thread::sleep(Duration::from_millis(400));
            }
            self.1.store(true, Ordering::SeqCst);
        }
    }
    let runtime = multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(150))
        .build();
    let dropped: Vec<Arc<AtomicBool>> = (0..50).map(|_| Arc::default()).collect();
    for (i, flag) in dropped.iter().enumerate() {
        let holds = Holds(i == 25, flag.clone());
        c.register(format!("skipped-{i}"), move || {
            let _ = &holds;
            async {}
        })
        .unwrap();
    }
    c.task("first")
        .priority(Priority::Critical)
        .register(std::future::pending::<()>)
        .unwrap();
    let began = std::time::Instant::now();
    let report = runtime.block_on(c.shutdown());
    // Read as the report came out.
    let gone: Vec<bool> = dropped.iter().map(|d| d.load(Ordering::SeqCst)).collect();
    assert!(
        began.elapsed() < Duration::from_millis(300),
        "{:?}\n{report}",
        began.elapsed()
    );
    let mut reported_gone = 0;
    for (i, gone) in gone.into_iter().enumerate() {
        let task = report.task(&format!("skipped-{i}")).unwrap();
        assert!(matches!(task.outcome(), Outcome::Skipped(_)), "{report}");
        let abandoned = task.interruption() == Some(Interruption::Abandoned);
        assert!(
            abandoned || gone,
            "skipped-{i} reported gone, not dropped\n{report}"
        );
        reported_gone += usize::from(!abandoned);
    }
    let holder = report.task("skipped-25").unwrap();
    assert_eq!(
        holder.interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    assert!(
        reported_gone > 0,
        "each cleanup is reported as it is\n{report}"
    );
    runtime.shutdown_background();
}
