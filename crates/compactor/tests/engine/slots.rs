//! The run's table of cleanups (`run/slot.rs`): an attempt takes its
//! task's cleanup out and puts it back; a retry or the disposal waits for
//! an abandoned attempt to let go. Every test is bounded by a wall-clock
//! limit, so a hang fails rather than stalls. They run one at a time (one
//! lock): some count the library's blocking threads.

// A lock held for a whole test (each on its own runtime), across its
// awaits: it only keeps the tests that count threads from running side by
// side.
#![allow(clippy::await_holding_lock)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use compactor::report::Interruption;
use compactor::{Backoff, Compactor, Outcome};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

const LIMIT: Duration = Duration::from_secs(10);

/// Threads of this process named as the library names a blocking
/// attempt's thread ("compactor-blocking", cut to 15 bytes by Linux).
fn blocking_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with("compactor-block"))
        .count()
}

/// Waits (up to `within`) for the library's blocking threads to be down to
/// `count`; how many are left.
fn blocking_threads_down_to(count: usize, within: Duration) -> usize {
    let until = Instant::now() + within;
    loop {
        let now = blocking_threads();
        if now <= count || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Counts its drops, and the drops on the thread that awaits the report.
struct Guard {
    drops: Arc<AtomicUsize>,
    on: Arc<Mutex<Vec<String>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        let thread = std::thread::current();
        self.on
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thread.name().unwrap_or("?").to_owned());
    }
}

fn guard() -> (Guard, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let on = Arc::new(Mutex::new(Vec::new()));
    (
        Guard {
            drops: drops.clone(),
            on: on.clone(),
        },
        drops,
        on,
    )
}

async fn eventually(what: impl Fn() -> bool, within: Duration) -> bool {
    let until = Instant::now() + within;
    while !what() {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Registers `slow-fsync`: a blocking cleanup with a 30 ms timeout and
/// `retries` retries, whose first attempt holds its thread for 300 ms
/// (past every attempt's timeout). Returns its calls and its drops.
fn slow_fsync(c: &Compactor, retries: u32) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (guard, drops, _) = guard();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    c.task("slow-fsync")
        .timeout(Duration::from_millis(30))
        .retries(retries)
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .register_blocking(move || {
            let _ = &guard;
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
        })
        .unwrap();
    (calls, drops)
}

/// A blocking retry that waits (on its own thread) behind an abandoned
/// attempt ends once the disposal has dropped the cleanup: the place is put
/// back empty, the retry finds the cleanup gone, and its thread ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_retry_behind_an_abandoned_attempt_ends_once_the_cleanup_is_disposed_of() {
    let _one = one_at_a_time();
    // Other tests' blocking threads gone first (they are counted too).
    let before = blocking_threads_down_to(0, LIMIT);
    let c = Compactor::new();
    let (calls, drops) = slow_fsync(&c, 1);
    let report = tokio::time::timeout(LIMIT, c.shutdown())
        .await
        .expect("the report");
    let task = report.task("slow-fsync").unwrap();
    assert_eq!(task.outcome(), &Outcome::TimedOut, "{report}");
    assert_eq!(
        task.interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    // Attempt 1 returns at ~300 ms; the disposal drops the cleanup then.
    assert!(
        eventually(|| drops.load(Ordering::SeqCst) == 1, LIMIT).await,
        "cleanup never dropped"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the retry never ran the closure"
    );
    let left = blocking_threads_down_to(before, Duration::from_secs(2));
    assert_eq!(
        left, before,
        "a blocking attempt's thread is still there 2 s after its cleanup was dropped \
         (the retry waiting in take_blocking for a place the disposal never put back)"
    );
}

/// The same, with the retry cut off by the deadline rather than its own
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_retry_cut_off_by_the_deadline_ends_once_the_cleanup_is_disposed_of() {
    let _one = one_at_a_time();
    // Other tests' blocking threads gone first (they are counted too).
    let before = blocking_threads_down_to(0, LIMIT);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(120))
        .build();
    let (_, drops) = slow_fsync(&c, 3);
    let began = Instant::now();
    let report = tokio::time::timeout(LIMIT, c.shutdown())
        .await
        .expect("the report");
    assert!(
        began.elapsed() < Duration::from_millis(120 + 50),
        "{report}"
    );
    let task = report.task("slow-fsync").unwrap();
    assert_eq!(task.outcome(), &Outcome::Cancelled, "{report}");
    assert_eq!(
        task.interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    assert!(
        eventually(|| drops.load(Ordering::SeqCst) == 1, LIMIT).await,
        "cleanup never dropped"
    );
    let left = blocking_threads_down_to(before, Duration::from_secs(2));
    assert_eq!(
        left, before,
        "a blocking attempt's thread is still there 2 s after its cleanup was dropped"
    );
}

/// At the deadline, an async retry waiting behind an attempt whose first
/// poll holds its thread is aborted (no hang), the report comes on time and
/// says abandoned; the cleanup is dropped exactly once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_async_retry_is_cut_off_at_the_deadline_and_the_cleanup_dropped_once() {
    let _one = one_at_a_time();
    let c = Compactor::builder()
        .deadline(Duration::from_millis(100))
        .build();
    let (guard, drops, _) = guard();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    c.task("held")
        .timeout(Duration::from_millis(20))
        .retries(5)
        .backoff(Backoff::fixed(Duration::from_millis(2)))
        .register(move || {
            let _ = &guard;
            let call = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        })
        .unwrap();
    let began = Instant::now();
    let report = tokio::time::timeout(LIMIT, c.shutdown())
        .await
        .expect("the report");
    assert!(began.elapsed() < Duration::from_millis(150), "{report}");
    let task = report.task("held").unwrap();
    assert_eq!(task.outcome(), &Outcome::Cancelled, "{report}");
    assert_eq!(
        task.interruption(),
        Some(Interruption::Abandoned),
        "{report}"
    );
    assert!(eventually(|| drops.load(Ordering::SeqCst) == 1, LIMIT).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a retry ran while attempt 1 held it"
    );
}

/// Many tasks whose retries wait behind held attempts at once (the one
/// `Notify` for all of them, `notify_waiters`): each gets its cleanup back,
/// none hangs, every cleanup dropped once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_retries_waiting_at_once_all_get_their_cleanup() {
    let _one = one_at_a_time();
    const TASKS: usize = 40;
    let c = Compactor::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let on = Arc::new(Mutex::new(Vec::new()));
    let succeeded = Arc::new(AtomicUsize::new(0));
    for t in 0..TASKS {
        let guard = Guard {
            drops: drops.clone(),
            on: on.clone(),
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let ok = succeeded.clone();
        c.task(format!("t{t}"))
            .timeout(Duration::from_millis(2))
            .retries(4)
            .backoff(Backoff::fixed(Duration::from_millis(1)))
            .register(move || {
                let _ = &guard;
                let call = calls.fetch_add(1, Ordering::SeqCst);
                let ok = ok.clone();
                async move {
                    if call == 0 {
                        // Held a while, then pending: dropped once it yields.
                        std::thread::sleep(Duration::from_millis(1 + (t as u64 % 4)));
                        std::future::pending::<()>().await;
                    }
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            })
            .unwrap();
    }
    let report = tokio::time::timeout(LIMIT, c.shutdown())
        .await
        .expect("the report: a retry waiting for its cleanup hung");
    assert!(
        eventually(|| drops.load(Ordering::SeqCst) == TASKS, LIMIT).await,
        "{} of {TASKS} cleanups dropped: {report}",
        drops.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(drops.load(Ordering::SeqCst), TASKS);
    let clean = report.count(&Outcome::Succeeded) + report.count(&Outcome::TimedOut);
    assert_eq!(clean, TASKS, "{report}");
}

/// Weak registrations, released (async and blocking), and panics in
/// `start`, with retries set: reported as before, not abandoned (their
/// attempts put the place back empty, so no disposal waits on them), each
/// cleanup dropped once; a skipped task's cleanup dropped before the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_panicked_and_skipped_tasks_with_retries() {
    let _one = one_at_a_time();
    let c = Compactor::builder()
        .deadline(Duration::from_millis(100))
        .build();
    let value = Arc::new(5_u32);
    let (g1, weak_drops, _) = guard();
    c.task("weak")
        .priority(compactor::Priority::Critical)
        .retries(2)
        .register_weak(&value, move |_v: Arc<u32>| {
            let _ = &g1;
            async {}
        })
        .unwrap();
    let value_b = Arc::new(6_u32);
    let (g2, weak_b_drops, _) = guard();
    c.task("weak-blocking")
        .priority(compactor::Priority::Critical)
        .retries(2)
        .register_weak(&value_b, move |_v: Arc<u32>| {
            let _ = &g2;
        })
        .unwrap();
    drop((value, value_b));
    let (g3, panic_drops, _) = guard();
    c.task("panics")
        .priority(compactor::Priority::Critical)
        .retries(2)
        .register(move || -> std::future::Ready<()> {
            let _ = &g3;
            panic!("in start")
        })
        .unwrap();
    // Holds the Critical phase past the deadline: "skipped" never starts.
    c.task("holds-phase")
        .priority(compactor::Priority::Critical)
        .timeout(Duration::from_secs(5))
        .register(std::future::pending::<()>)
        .unwrap();
    let (g4, skipped_drops, _) = guard();
    c.task("skipped")
        .retries(2)
        .register(move || {
            let _ = &g4;
            async {}
        })
        .unwrap();
    let report = tokio::time::timeout(LIMIT, c.shutdown())
        .await
        .expect("the report");
    assert_eq!(
        report.task("weak").unwrap().outcome(),
        &Outcome::Released,
        "{report}"
    );
    assert_eq!(
        report.task("weak-blocking").unwrap().outcome(),
        &Outcome::Released,
        "{report}"
    );
    assert!(
        matches!(
            report.task("panics").unwrap().outcome(),
            Outcome::Panicked(_)
        ),
        "{report}"
    );
    assert!(
        matches!(
            report.task("skipped").unwrap().outcome(),
            Outcome::Skipped(_)
        ),
        "{report}"
    );
    // Each put its place back (empty): nothing left for a disposal to
    // wait on, so none is reported abandoned.
    for name in ["weak", "weak-blocking", "panics", "skipped"] {
        let task = report.task(name).unwrap();
        assert_eq!(task.interruption(), None, "{name}: {report}");
    }
    assert_eq!(
        skipped_drops.load(Ordering::SeqCst),
        1,
        "skipped cleanup not dropped before the report"
    );
    assert_eq!(weak_drops.load(Ordering::SeqCst), 1);
    assert_eq!(panic_drops.load(Ordering::SeqCst), 1);
    assert!(eventually(|| weak_b_drops.load(Ordering::SeqCst) == 1, LIMIT).await);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(weak_b_drops.load(Ordering::SeqCst), 1);
}
