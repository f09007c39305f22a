//! The report, the events, the shutdown token, and running once.

use compactor::cleanup::once;
use futures::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use compactor::{Category, Compactor, Event, Outcome, Priority, report::ShutdownReason};

#[tokio::test(start_paused = true)]
async fn every_caller_gets_the_same_single_run() {
    let c = Compactor::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    c.register("once", move || {
        counter.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10))
    })
    .unwrap();
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { c.wait().await }
    });
    tokio::task::yield_now().await;
    let clone = c.clone();
    let (a, b, c2) = tokio::join!(c.shutdown(), c.shutdown(), clone.shutdown());
    let later = c.shutdown().await;
    let waited = waiter.await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for other in [&b, &c2, &later, &waited] {
        assert_eq!(&a, other);
    }
    assert_eq!(c.wait().now_or_never(), Some(a));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_shutdown_future_does_not_stop_the_run() {
    let c = Compactor::new();
    c.register("slow", || tokio::time::sleep(Duration::from_millis(50)))
        .unwrap();
    let cut_short = tokio::time::timeout(Duration::from_millis(10), c.shutdown()).await;
    assert!(cut_short.is_err());
    let report = c.wait().await;
    assert_eq!(report.tasks()[0].outcome(), &Outcome::Succeeded);
}

/// Four tasks: two that succeed, one stuck at the 100 ms deadline, one that
/// never starts.
async fn four_tasks_past_their_deadline() -> compactor::ShutdownReport {
    let c = Compactor::builder()
        .deadline(Duration::from_millis(100))
        .build();
    let db = c
        .task("db")
        .category(Category::Database)
        .register(|| async {})
        .unwrap();
    c.task("http")
        .priority(Priority::High)
        .category(Category::Network)
        .depends_on(&db)
        .register(|| tokio::time::sleep(Duration::from_millis(20)))
        .unwrap();
    c.task("stuck")
        .priority(Priority::Low)
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("never")
        .priority(Priority::Custom(-200))
        .register(|| async {})
        .unwrap();
    c.shutdown().await
}

#[tokio::test(start_paused = true)]
async fn the_report_accounts_for_every_task_once_in_start_order() {
    let report = four_tasks_past_their_deadline().await;
    let rows: Vec<(&str, Option<Duration>)> = report
        .tasks()
        .iter()
        .map(|t| (t.name(), t.started_at()))
        .collect();
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(
        rows,
        [
            ("http", ms(0)),
            ("db", ms(20)),
            ("stuck", ms(20)),
            ("never", None)
        ]
    );
    assert_eq!(report.duration(), Duration::from_millis(100));
    assert_eq!(report.reason(), &ShutdownReason::Manual);
    assert_eq!(report.count(&Outcome::Succeeded), 2);
    // http must precede db, so http would be raised to db's phase, not db to http's.
    assert_eq!(
        report.task("db").unwrap().effective_priority(),
        Priority::Normal
    );
    assert_eq!(report.task("db").unwrap().category(), &Category::Database);
}

/// The table's own format: what a person reads.
#[tokio::test(start_paused = true)]
async fn the_table_shows_each_task_with_its_outcome_and_start() {
    let report = four_tasks_past_their_deadline().await;
    let table = report.to_string();
    assert!(
        table.starts_with("shutdown (manual) finished in 100ms: 4 tasks, NOT clean"),
        "{table}"
    );
    for needle in [
        "http",
        "network",
        "succeeded",
        "cancelled",
        "skipped",
        "shutdown deadline passed",
        "+20ms",
    ] {
        assert!(table.contains(needle), "`{needle}` missing from\n{table}");
    }
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_report_serializes_to_json() {
    let c = Compactor::new();
    let db = c
        .task("db")
        .register(|| tokio::time::sleep(Duration::from_millis(20)))
        .unwrap();
    c.task("flush")
        .category(Category::File)
        .depends_on(&db)
        .register(|| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err::<(), _>("EIO")
        })
        .unwrap();
    let report = c.shutdown().await;
    let json = serde_json::to_value(&report).unwrap();
    // The clock is paused: the times are exactly those slept.
    assert_eq!(json["duration_ms"], 50.0);
    assert_eq!(json["reason"], "manual");
    assert_eq!(json["clean"], false);
    let task = &json["tasks"][0];
    assert_eq!(task["name"], "flush");
    assert_eq!(task["category"], "file");
    assert_eq!(
        task["outcome"],
        serde_json::json!({"kind": "failed", "detail": "EIO"})
    );
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["priority"], "normal");
    assert_eq!(task["effective_priority"], "normal");
    assert_eq!(task["started_at_ms"], 0.0);
    assert_eq!(task["duration_ms"], 30.0);
    assert!(task["interruption"].is_null());
    assert!(task["leaked"].is_null());
    let db = &json["tasks"][1];
    assert_eq!(db["name"], "db");
    assert_eq!(db["started_at_ms"], 30.0);
    assert_eq!(db["duration_ms"], 20.0);
}

#[tokio::test(start_paused = true)]
async fn events_trace_the_run_in_order() {
    let c = Compactor::new();
    let mut rx = c.subscribe();
    c.task("retry")
        .retries(1)
        .backoff(compactor::Backoff::fixed(Duration::from_millis(5)))
        .register({
            let calls = Arc::new(AtomicU32::new(0));
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n == 0 { Err("first try") } else { Ok(()) } }
            }
        })
        .unwrap();
    c.register("plain", || async {}).unwrap();
    let report = c.shutdown().await;
    /// What an event says, as plain values.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Started(usize),
        Attempt(String, u32),
        Retrying(String, String),
        Finished(String, Outcome, u32),
        Done,
    }
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(match event {
            Event::ShutdownStarted { tasks, .. } => Seen::Started(tasks),
            Event::TaskStarted { name, attempt, .. } => Seen::Attempt(name.to_string(), attempt),
            Event::TaskRetrying { name, error, .. } => Seen::Retrying(name.to_string(), error),
            Event::TaskFinished {
                name,
                outcome,
                attempts,
                ..
            } => Seen::Finished(name.to_string(), outcome, attempts),
            Event::ShutdownFinished { report: r, .. } => {
                assert_eq!(r, report);
                Seen::Done
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen.first(), Some(&Seen::Started(2)));
    assert_eq!(seen.last(), Some(&Seen::Done));
    let of = |task: &str| -> Vec<&Seen> {
        seen.iter()
            .filter(|s| match s {
                Seen::Attempt(n, _) | Seen::Retrying(n, _) | Seen::Finished(n, _, _) => n == task,
                _ => false,
            })
            .collect()
    };
    assert_eq!(
        of("retry"),
        [
            &Seen::Attempt("retry".into(), 1),
            &Seen::Retrying("retry".into(), "first try".into()),
            &Seen::Attempt("retry".into(), 2),
            &Seen::Finished("retry".into(), Outcome::Succeeded, 2),
        ]
    );
    assert_eq!(
        of("plain"),
        [
            &Seen::Attempt("plain".into(), 1),
            &Seen::Finished("plain".into(), Outcome::Succeeded, 1),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn skipped_tasks_get_one_finished_event_too() {
    let c = Compactor::builder()
        .deadline(Duration::from_millis(10))
        .build();
    let mut rx = c.subscribe();
    let last = c.register("last", || async {}).unwrap();
    c.task("hang")
        .depends_on(&last)
        .register(std::future::pending::<()>)
        .unwrap();
    let _ = c.shutdown().await;
    let mut finished = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::TaskFinished { name, outcome, .. } = event {
            finished.push((name.to_string(), outcome));
        }
    }
    assert_eq!(
        finished,
        [
            ("hang".to_owned(), Outcome::Cancelled),
            (
                "last".to_owned(),
                Outcome::Skipped(compactor::report::SkipReason::Deadline)
            )
        ]
    );
}

#[tokio::test]
async fn the_token_fires_when_the_run_begins() {
    let c = Compactor::new();
    let token = c.shutdown_token();
    let gate = Arc::new(tokio::sync::Notify::new());
    let release = gate.clone();
    c.register("held", move || {
        let gate = release.clone();
        async move { gate.notified().await }
    })
    .unwrap();
    assert!(!token.is_cancelled());
    c.trigger();
    // Fired before `trigger` returns, while the cleanup is still running.
    assert!(token.is_cancelled() && c.shutdown_token().is_cancelled());
    assert!(c.shutdown_token().is_cancelled());
    gate.notify_one();
    assert!(c.wait().await.is_clean());
}

#[tokio::test]
async fn cancelling_the_handed_out_token_does_not_start_a_shutdown() {
    let c = Compactor::new();
    c.shutdown_token().cancel();
    assert!(!c.shutdown_token().is_cancelled());
    assert!(!c.shutdown_token().is_cancelled());
}

#[tokio::test]
async fn weak_registrations_never_keep_the_value_alive() {
    struct Pool;
    let c = Compactor::new();
    let dropped = Arc::new(Pool);
    let alive = Arc::new(Pool);
    let leaked = Arc::new(Pool);
    let extra = leaked.clone();
    let called = Arc::new(AtomicU32::new(0));
    for (name, value) in [
        ("dropped", &dropped),
        ("alive", &alive),
        ("leaked", &leaked),
    ] {
        let called = called.clone();
        c.task(name)
            .register_weak(value, move |pool: Arc<Pool>| {
                called.fetch_add(1, Ordering::SeqCst);
                async move { drop(pool) }
            })
            .unwrap();
    }
    assert_eq!(
        Arc::strong_count(&dropped),
        1,
        "registration took no strong reference"
    );
    drop(dropped);
    drop(alive);
    // `alive`'s last owner is gone too; only `leaked` is still held (twice).
    drop(leaked);
    let report = c.shutdown().await;
    let dropped = report.task("dropped").unwrap();
    assert_eq!(dropped.outcome(), &Outcome::Released);
    assert_eq!(dropped.attempts(), 0);
    assert_eq!(report.task("alive").unwrap().outcome(), &Outcome::Released);
    let leaked = report.task("leaked").unwrap();
    assert_eq!(leaked.outcome(), &Outcome::Succeeded);
    assert_eq!(leaked.leaked(), Some(1));
    assert_eq!(report.leaks().count(), 1);
    assert!(
        report.is_clean(),
        "a possible leak is flagged, not a failure"
    );
    assert_eq!(called.load(Ordering::SeqCst), 1);
    drop(extra);
}

#[tokio::test]
async fn a_weak_blocking_cleanup_runs_off_the_runtime_and_never_keeps_the_value() {
    struct File;
    let c = Compactor::new();
    let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = |threads: &Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>| {
        let threads = threads.clone();
        move |file: Arc<File>| {
            threads.lock().unwrap().push(std::thread::current().id());
            drop(file);
        }
    };
    // Dropped before the shutdown: released, never called.
    let gone = Arc::new(File);
    c.task("gone")
        .register_weak(&gone, noted(&threads))
        .unwrap();
    assert_eq!(
        Arc::strong_count(&gone),
        1,
        "registration took no strong reference"
    );
    drop(gone);
    // Owned by a pool that lets go of it in its own cleanup, which runs
    // after the file's: alive when its cleanup begins, nobody's after the
    // pool's.
    let open = Arc::new(File);
    let pool = Arc::new(std::sync::Mutex::new(Some(open.clone())));
    let owner = pool.clone();
    let pool_task = c
        .task("pool")
        .register_blocking(move || drop(owner.lock().unwrap().take()))
        .unwrap();
    c.task("open")
        .depends_on(&pool_task)
        .register_weak(&open, noted(&threads))
        .unwrap();
    drop(open);
    // Still held by someone else after its cleanup: a possible leak.
    let held = Arc::new(File);
    c.task("held")
        .register_weak(&held, noted(&threads))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.task("gone").unwrap().outcome(), &Outcome::Released);
    assert_eq!(report.task("open").unwrap().outcome(), &Outcome::Succeeded);
    // The pool still held it as the cleanup ended: one other reference.
    assert_eq!(report.task("open").unwrap().leaked(), Some(1), "{report}");
    assert_eq!(report.task("held").unwrap().leaked(), Some(1), "{report}");
    let here = std::thread::current().id();
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 2, "called for the live values only");
    assert!(
        threads.iter().all(|t| *t != here),
        "on threads of their own"
    );
    drop(held);
}

/// An error with a cause, as `thiserror`'s `#[source]` makes one.
#[derive(Debug)]
struct Flushing(std::io::Error);

impl std::fmt::Display for Flushing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flushing the WAL")
    }
}

impl std::error::Error for Flushing {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Writes its context chain in the alternate format, as anyhow and eyre do.
struct WithContext;

impl std::fmt::Display for WithContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match f.alternate() {
            true => f.write_str("closing the pool: connection reset"),
            false => f.write_str("closing the pool"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_keeps_its_causes() {
    let c = Compactor::new();
    c.register(
        "wal",
        once(|| async {
            let full = std::io::Error::other("disk full (ENOSPC)");
            Err::<(), Box<dyn std::error::Error + Send + Sync>>(Box::new(Flushing(full)))
        }),
    )
    .unwrap();
    c.register("pool", once(|| async { Err::<(), _>(WithContext) }))
        .unwrap();
    let report = c.shutdown().await;
    let Outcome::Failed(wal) = report.task("wal").unwrap().outcome() else {
        panic!("{report}");
    };
    assert_eq!(wal.as_str(), "flushing the WAL: disk full (ENOSPC)");
    assert_eq!(
        wal.chain().collect::<Vec<_>>(),
        ["flushing the WAL", "disk full (ENOSPC)"]
    );
    let error = wal.error().expect("the error itself is kept");
    assert_eq!(error.to_string(), "flushing the WAL");
    assert_eq!(
        error.source().map(ToString::to_string).as_deref(),
        Some("disk full (ENOSPC)")
    );
    let Outcome::Failed(pool) = report.task("pool").unwrap().outcome() else {
        panic!("{report}");
    };
    assert_eq!(pool, &"closing the pool: connection reset");
    assert!(pool.error().is_none());
    // The table shows the whole chain.
    assert!(
        report
            .to_string()
            .contains("flushing the WAL: disk full (ENOSPC)"),
        "{report}"
    );
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&report).unwrap();
        let wal = json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "wal")
            .unwrap();
        assert_eq!(
            wal["outcome"],
            serde_json::json!({
                "kind": "failed",
                "detail": "flushing the WAL: disk full (ENOSPC)",
                "causes": ["flushing the WAL", "disk full (ENOSPC)"]
            })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_what_outlived_the_run() {
    let c = Compactor::builder()
        .deadline(Duration::from_millis(200))
        .build();
    c.task("stuck-flush")
        // Short: other tests count the blocking threads of this process.
        .register_blocking(|| std::thread::sleep(Duration::from_millis(700)))
        .unwrap();
    c.register("quick", || async {}).unwrap();
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    // Work nobody tracked: three tasks that never end.
    for _ in 0..3 {
        drop(tokio::spawn(std::future::pending::<()>()));
    }
    let report = c.shutdown().await;
    let abandoned: Vec<String> = report
        .abandoned()
        .iter()
        .map(|f| f.path().to_owned())
        .collect();
    assert_eq!(abandoned, ["stuck-flush"], "{report}");
    let alive = report.runtime_tasks().expect("made on a runtime");
    assert!(
        alive >= before + 3,
        "{alive} alive, {before} before the three"
    );
    let table = report.to_string();
    assert!(
        table.contains("still running after the report: stuck-flush"),
        "{table}"
    );
    assert!(
        table.contains("tokio tasks alive on the runtime at the report: "),
        "{table}"
    );
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["outlived"]["abandoned"][0], "stuck-flush");
        assert_eq!(json["outlived"]["runtime_tasks"], alive);
    }
}
