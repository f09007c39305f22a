//! Timeouts, retries, backoff, deadline, phase budgets and panics, under
//! paused time where tokio's time is all there is (deterministic, no real
//! waiting); blocking cleanups on real threads, with bounds of seconds.

use compactor::cleanup::cancellable;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use compactor::report::{Interruption, SkipReason};
use compactor::{Backoff, Compactor, Event, Outcome, Priority};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_dropped_and_reported() {
    let c = Compactor::new();
    c.task("hang")
        .timeout(100 * MS)
        .register(std::future::pending::<()>)
        .unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    let t = report.task("hang").unwrap();
    assert_eq!(t.outcome(), &Outcome::TimedOut);
    assert_eq!(t.interruption(), Some(Interruption::Dropped));
    assert_eq!(t.attempts(), 1);
    assert_eq!(started.elapsed(), 100 * MS);
    assert!(!report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_applies_to_tasks_without_one() {
    let c = Compactor::builder().default_timeout(30 * MS).build();
    c.register("hang", std::future::pending::<()>).unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    assert_eq!(report.tasks()[0].outcome(), &Outcome::TimedOut);
    assert_eq!(started.elapsed(), 30 * MS);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_growing_backoff() {
    let c = Compactor::new();
    let mut events = c.subscribe();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    c.task("flaky")
        .retries(3)
        .backoff(Backoff::exponential(100 * MS, Duration::from_secs(1)))
        .register(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 3 {
                    Err(format!("attempt {n} failed"))
                } else {
                    Ok(())
                }
            }
        })
        .unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    let t = report.task("flaky").unwrap();
    assert_eq!(t.outcome(), &Outcome::Succeeded);
    assert_eq!(t.attempts(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let mut delays = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::TaskRetrying {
            attempt,
            delay,
            error,
            ..
        } = event
        {
            assert_eq!(error, format!("attempt {attempt} failed"));
            delays.push(delay);
        }
    }
    assert_eq!(delays.len(), 2);
    // Jitter draws each delay from the upper half of 100 ms, then 200 ms.
    assert!(delays[0] >= 50 * MS && delays[0] <= 100 * MS, "{delays:?}");
    assert!(delays[1] >= 100 * MS && delays[1] <= 200 * MS, "{delays:?}");
    assert_eq!(started.elapsed(), delays[0] + delays[1]);
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_and_the_last_one_counts() {
    let c = Compactor::new();
    c.task("hang")
        .timeout(10 * MS)
        .retries(2)
        .backoff(Backoff::fixed(5 * MS))
        .register(std::future::pending::<()>)
        .unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    let t = report.task("hang").unwrap();
    assert_eq!(t.outcome(), &Outcome::TimedOut);
    assert_eq!(t.attempts(), 3);
    assert_eq!(started.elapsed(), 3 * 10 * MS + 2 * 5 * MS);
    assert_eq!(t.duration(), started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_report_the_last_error() {
    let c = Compactor::new();
    c.task("broken")
        .retries(1)
        .backoff(Backoff::fixed(MS))
        .register(|| async { Err::<(), _>(std::io::Error::other("disk full")) })
        .unwrap();
    let report = c.shutdown().await;
    let t = report.task("broken").unwrap();
    assert_eq!(t.outcome(), &Outcome::Failed("disk full".into()));
    assert_eq!(t.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancellable_cleanup_gets_its_token_before_it_is_dropped() {
    let c = Compactor::builder().cancel_grace(50 * MS).build();
    c.task("polite")
        .timeout(100 * MS)
        .register(cancellable(|token| async move {
            token.cancelled().await;
            // A little tidying up after the token fires, within the grace.
            tokio::time::sleep(10 * MS).await;
        }))
        .unwrap();
    c.task("stubborn")
        .timeout(100 * MS)
        .register(cancellable(|_token| std::future::pending::<()>()))
        .unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    let polite = report.task("polite").unwrap();
    assert_eq!(polite.outcome(), &Outcome::TimedOut);
    assert_eq!(polite.interruption(), Some(Interruption::Stopped));
    assert_eq!(polite.duration(), 110 * MS);
    let stubborn = report.task("stubborn").unwrap();
    assert_eq!(stubborn.interruption(), Some(Interruption::Dropped));
    assert_eq!(stubborn.duration(), 150 * MS);
    assert_eq!(started.elapsed(), 150 * MS);
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_running_tasks_are_cancelled_and_the_rest_skipped() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(1))
        .default_timeout(Duration::from_secs(60))
        .build();
    let ran_late = Arc::new(AtomicU32::new(0));
    let db = c
        .register("db", {
            let ran_late = ran_late.clone();
            move || {
                ran_late.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        })
        .unwrap();
    c.task("slow")
        .depends_on(&db)
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("quick").register(|| async {}).unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the report comes at the deadline"
    );
    assert_eq!(report.task("quick").unwrap().outcome(), &Outcome::Succeeded);
    let slow = report.task("slow").unwrap();
    assert_eq!(slow.outcome(), &Outcome::Cancelled);
    assert_eq!(slow.interruption(), Some(Interruption::Dropped));
    let db = report.task("db").unwrap();
    assert_eq!(db.outcome(), &Outcome::Skipped(SkipReason::Deadline));
    assert_eq!(db.attempts(), 0);
    assert_eq!(db.started_at(), None);
    assert_eq!(ran_late.load(Ordering::SeqCst), 0);
    assert_eq!(report.tasks().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_overrunning_phase_does_not_eat_the_next_phase_time() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .default_timeout(Duration::from_secs(60))
        .phase_budget(Priority::High, Duration::from_secs(2))
        .build();
    c.task("drain")
        .priority(Priority::High)
        .register(std::future::pending::<()>)
        .unwrap();
    let waiting = c
        .task("after-drain")
        .priority(Priority::High)
        .register(|| async {})
        .unwrap();
    // Runs after drain within the High phase; skipped when the budget ends.
    c.task("before")
        .priority(Priority::High)
        .depends_on(&waiting)
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("flush")
        .register(|| tokio::time::sleep(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let report = c.shutdown().await;
    assert_eq!(report.task("drain").unwrap().outcome(), &Outcome::Cancelled);
    assert_eq!(
        report.task("before").unwrap().outcome(),
        &Outcome::Cancelled
    );
    assert_eq!(
        report.task("after-drain").unwrap().outcome(),
        &Outcome::Skipped(SkipReason::PhaseBudget)
    );
    let flush = report.task("flush").unwrap();
    assert_eq!(flush.outcome(), &Outcome::Succeeded);
    assert_eq!(flush.started_at(), Some(Duration::from_secs(2)));
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_contained_reported_and_not_retried() {
    let c = Compactor::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    c.task("buggy")
        .retries(3)
        .register(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                if true {
                    panic!("index out of bounds");
                }
            }
        })
        .unwrap();
    c.task("sync-panic")
        .register(|| -> std::future::Ready<()> { panic!("before the future") })
        .unwrap();
    c.task("fine").register(|| async {}).unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("buggy").unwrap().outcome(),
        &Outcome::Panicked("index out of bounds".into())
    );
    assert_eq!(
        report.task("sync-panic").unwrap().outcome(),
        &Outcome::Panicked("before the future".into())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.task("fine").unwrap().outcome(), &Outcome::Succeeded);
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_cleanups_run_off_the_async_thread() {
    let c = Compactor::new();
    let here = std::thread::current().id();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let slot = seen.clone();
    c.task("fsync")
        .register_blocking(move || {
            *slot.lock().unwrap() = Some(std::thread::current().id());
            // Blocking the thread here must not stall the runtime.
            std::thread::sleep(Duration::from_millis(20));
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    c.register("async", || async {}).unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    let ran_on = seen.lock().unwrap().expect("the blocking cleanup ran");
    assert_ne!(ran_on, here);
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocking_cleanup_past_its_timeout_is_abandoned_and_a_retry_waits_for_it() {
    let c = Compactor::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    c.task("stuck-fsync")
        .timeout(Duration::from_millis(30))
        .retries(1)
        .backoff(Backoff::fixed(Duration::ZERO))
        .register_blocking(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            // Blocked until the test lets it go, after the report.
            let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(10));
        })
        .unwrap();
    let report = c.shutdown().await;
    let t = report.task("stuck-fsync").unwrap();
    assert_eq!(t.outcome(), &Outcome::TimedOut);
    assert_eq!(t.interruption(), Some(Interruption::Abandoned));
    assert_eq!(t.attempts(), 2);
    // Two 30 ms timeouts, not the block.
    assert!(report.duration() < Duration::from_secs(5), "{report}");
    // The second attempt waited on the first, which was still blocked.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Released, the first call returns; the waiting retry sees the run
    // is over and does not call the cleanup.
    drop(release);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_blocking_panic_is_contained() {
    let c = Compactor::new();
    c.task("bad-sync")
        .register_blocking(|| -> () { panic!("poisoned") })
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.tasks()[0].outcome(),
        &Outcome::Panicked("poisoned".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_cancelled_at_the_deadline_reports_the_attempts_it_began() {
    let c = Compactor::builder().deadline(35 * MS).build();
    c.task("stubborn")
        .timeout(10 * MS)
        .retries(10)
        .backoff(Backoff::fixed(Duration::ZERO))
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c.shutdown().await;
    let t = report.task("stubborn").unwrap();
    assert_eq!(t.outcome(), &Outcome::Cancelled);
    // Attempts began at 0, 10, 20 and 30 ms.
    assert_eq!(t.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn each_phase_budget_counts_from_the_start_of_its_phase() {
    let c = Compactor::builder()
        .default_timeout(Duration::from_secs(60))
        .phase_budget(Priority::High, Duration::from_secs(1))
        .phase_budget(Priority::Normal, Duration::from_secs(1))
        .build();
    c.task("instant")
        .priority(Priority::Critical)
        .register(|| async {})
        .unwrap();
    c.task("drain")
        .priority(Priority::High)
        .register(|| tokio::time::sleep(300 * MS))
        .unwrap();
    c.task("hang").register(std::future::pending::<()>).unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.task("drain").unwrap().outcome(), &Outcome::Succeeded);
    let hang = report.task("hang").unwrap();
    assert_eq!(hang.outcome(), &Outcome::Cancelled);
    assert_eq!(hang.started_at(), Some(300 * MS));
    assert_eq!(report.duration(), 1300 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_a_phase_whose_budget_would_end_later() {
    let c = Compactor::builder()
        .deadline(2500 * MS)
        .default_timeout(Duration::from_secs(60))
        .phase_budget(Priority::High, Duration::from_secs(1))
        .phase_budget(Priority::Normal, Duration::from_secs(5))
        .build();
    c.task("hang-high")
        .priority(Priority::High)
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("hang-normal")
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c.shutdown().await;
    // The first budget ends its phase at 1 s; the second phase would have
    // until 6 s, but the whole shutdown ends at the deadline.
    let high = report.task("hang-high").unwrap();
    assert_eq!(high.outcome(), &Outcome::Cancelled);
    let normal = report.task("hang-normal").unwrap();
    assert_eq!(normal.started_at(), Some(Duration::from_secs(1)));
    assert_eq!(normal.outcome(), &Outcome::Cancelled);
    assert_eq!(report.duration(), 2500 * MS);
}
