//! The metrics (feature `metrics`), read back from metrics-util's debugging
//! recorder, installed for the test's thread only: every task, retry,
//! restart and shutdown counted once (an early run merged into a shutdown
//! and a scope's shutdown too), and the gauges back to zero in every corner.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use compactor::service::Supervision;
use compactor::{Backoff, Category, Compactor, Priority, Selection};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

type Values = HashMap<(String, Vec<(String, String)>), DebugValue>;

/// What the recorder got so far: per metric name and sorted labels, its
/// value. A snapshot hands over what came since the last one (a gauge's
/// changes too), so the totals are kept here.
struct Reader {
    snapshotter: Snapshotter,
    totals: Values,
}

impl Reader {
    fn new(recorder: &DebuggingRecorder) -> Reader {
        Reader {
            snapshotter: recorder.snapshotter(),
            totals: HashMap::new(),
        }
    }

    fn read(&mut self) -> &Values {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let total = self.totals.entry((key.name().to_owned(), labels));
            match (total, value) {
                (std::collections::hash_map::Entry::Vacant(e), value) => {
                    e.insert(value);
                }
                (std::collections::hash_map::Entry::Occupied(mut e), value) => {
                    match (e.get_mut(), value) {
                        (DebugValue::Counter(n), DebugValue::Counter(m)) => *n += m,
                        (DebugValue::Gauge(n), DebugValue::Gauge(m)) => *n += m,
                        (DebugValue::Histogram(v), DebugValue::Histogram(w)) => v.extend(w),
                        (total, value) => panic!("{total:?} then {value:?}"),
                    }
                }
            }
        }
        &self.totals
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn counter(values: &Values, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {pairs:?}: {other:?} in {values:#?}"),
    }
}

fn gauge(values: &Values, name: &str) -> f64 {
    match values.get(&(name.to_owned(), Vec::new())) {
        Some(DebugValue::Gauge(n)) => n.into_inner(),
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram(values: &Values, name: &str, pairs: &[(&str, &str)]) -> Vec<f64> {
    match values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        other => panic!("{name} {pairs:?}: {other:?} in {values:#?}"),
    }
}

#[test]
fn every_task_retry_restart_and_shutdown_is_counted_and_the_gauges_return_to_zero() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let c = Compactor::builder()
                .deadline(Duration::from_secs(5))
                .build();
            for i in 0..3 {
                c.task(format!("pool-{i}"))
                    .category(Category::Database)
                    .register(|| tokio::time::sleep(Duration::from_millis(200)))
                    .unwrap();
            }
            let gone = c.register("gone", || async {}).unwrap();
            let mut tries = 0;
            c.task("flaky")
                .retries(2)
                .backoff(Backoff::fixed(Duration::from_millis(10)))
                .register(move || {
                    tries += 1;
                    let fail = tries < 3;
                    async move { if fail { Err("not yet") } else { Ok(()) } }
                })
                .unwrap();
            c.task("hangs")
                .register(std::future::pending::<()>)
                .unwrap();
            c.task("worker")
                .backoff(Backoff::fixed(Duration::from_millis(10)))
                .supervise(
                    Supervision::carry_on()
                        .restarts(2, Duration::from_secs(60))
                        .background(true),
                )
                .restartable(|_ctx| async { Err::<(), _>("down") })
                .unwrap();
            assert!(gone.unregister());
            tokio::time::sleep(Duration::from_secs(1)).await;
            let values = reader.read();
            // pool-0..2, flaky, hangs and the worker's drain.
            assert_eq!(gauge(values, "compactor.tasks.pending"), 6.0);
            assert_eq!(counter(values, "compactor.service.restarts", &[]), 2);

            let shutdown = c.shutdown();
            tokio::pin!(shutdown);
            // The pools run at once, 200 ms each: three running.
            tokio::select! {
                _ = &mut shutdown => unreachable!("the hanging task holds it to the deadline"),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let values = reader.read();
            assert!(gauge(values, "compactor.tasks.running") >= 3.0);
            assert_eq!(gauge(values, "compactor.tasks.pending"), 0.0);
            let report = shutdown.await;
            assert!(!report.is_clean());

            let values = reader.read();
            let db = [
                ("compactor.task.category", "database"),
                ("compactor.task.outcome", "succeeded"),
            ];
            assert_eq!(counter(values, "compactor.task.finished", &db), 3);
            let durations = histogram(values, "compactor.task.duration", &db);
            assert_eq!(durations.len(), 3);
            assert!(
                durations.iter().all(|d| (*d - 0.2).abs() < 1e-3),
                "{durations:?}"
            );
            let other = |outcome| {
                [
                    ("compactor.task.category", "other"),
                    ("compactor.task.outcome", outcome),
                ]
            };
            assert_eq!(
                counter(values, "compactor.task.finished", &other("succeeded")),
                1
            );
            assert_eq!(
                counter(values, "compactor.task.finished", &other("cancelled")),
                1
            );
            assert_eq!(
                counter(
                    values,
                    "compactor.task.retries",
                    &[("compactor.task.category", "other")]
                ),
                2
            );
            let task = [
                ("compactor.task.category", "task"),
                ("compactor.task.outcome", "failed"),
            ];
            assert_eq!(counter(values, "compactor.task.finished", &task), 1);
            let shutdowns = histogram(
                values,
                "compactor.shutdown.duration",
                &[
                    ("compactor.shutdown.reason", "manual"),
                    ("compactor.shutdown.clean", "false"),
                ],
            );
            assert_eq!(shutdowns.len(), 1);
            assert!((shutdowns[0] - 5.0).abs() < 0.1, "{shutdowns:?}");
            assert_eq!(gauge(values, "compactor.tasks.running"), 0.0);
            assert_eq!(gauge(values, "compactor.tasks.pending"), 0.0);
        });
    });
}

#[test]
fn a_dropped_instance_takes_its_pending_tasks_off_the_gauge() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    metrics::with_local_recorder(&recorder, || {
        let c = Compactor::new();
        let scope = c.task("conn").scope().unwrap();
        scope.register("flush", || async {}).unwrap();
        c.register_batch([
            c.task("a").define(|| async {}),
            c.task("b").define(|| async {}),
        ])
        .unwrap();
        assert_eq!(gauge(reader.read(), "compactor.tasks.pending"), 4.0);
        drop(scope);
        drop(c);
        assert_eq!(gauge(reader.read(), "compactor.tasks.pending"), 0.0);
    });
}

fn gauge_or_zero(values: &Values, name: &str) -> f64 {
    match values.get(&(name.to_owned(), Vec::new())) {
        Some(DebugValue::Gauge(n)) => n.into_inner(),
        _ => 0.0,
    }
}

fn run<F: std::future::Future<Output = ()>>(recorder: &DebuggingRecorder, f: impl FnOnce() -> F) {
    metrics::with_local_recorder(recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f());
    });
}

/// An early run under way when the shutdown begins: its tasks are counted by
/// the early run, then again by the shutdown whose report merges them.
#[test]
fn m01_early_run_merged_into_shutdown_counted_twice() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::builder()
            .deadline(Duration::from_secs(10))
            .build();
        c.task("db")
            .category(Category::Database)
            .register(|| tokio::time::sleep(Duration::from_secs(3)))
            .unwrap();
        let c2 = c.clone();
        let early =
            tokio::spawn(
                async move { c2.run_early(Selection::Category(Category::Database)).await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = c.shutdown().await;
        let _ = early.await.unwrap().unwrap();
        assert_eq!(report.tasks().len(), 1);
    });
    let values = reader.read();
    let db = [
        ("compactor.task.category", "database"),
        ("compactor.task.outcome", "succeeded"),
    ];
    assert_eq!(
        counter(values, "compactor.task.finished", &db),
        1,
        "one task, one outcome"
    );
    assert_eq!(histogram(values, "compactor.task.duration", &db).len(), 1);
}

/// A scope's run inside the parent's shutdown: one shutdown, how many
/// `compactor.shutdown.duration` samples?
#[test]
fn m02_scope_runs_recorded_as_shutdowns() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::new();
        for i in 0..3 {
            let s = c.task(format!("conn-{i}")).scope().unwrap();
            s.register("flush", || async {}).unwrap();
        }
        let report = c.shutdown().await;
        assert!(report.is_clean());
    });
    let values = reader.read();
    let mut samples = 0;
    for ((name, labels), v) in values.iter() {
        if name == "compactor.shutdown.duration" {
            if let DebugValue::Histogram(h) = v {
                eprintln!("{labels:?}: {}", h.len());
                samples += h.len();
            }
        }
    }
    let other = [
        ("compactor.task.category", "other"),
        ("compactor.task.outcome", "succeeded"),
    ];
    eprintln!(
        "finished(other,succeeded) = {}",
        counter(values, "compactor.task.finished", &other)
    );
    assert_eq!(samples, 1, "one shutdown of the process, {samples} samples");
}

/// Pending gauge across the lifecycle corners.
#[test]
fn m04_pending_gauge_corners() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::new();
        // duplicate refusals, single and batch
        c.register("a", || async {}).unwrap();
        assert!(c.register("a", || async {}).is_err());
        assert!(
            c.register_batch([
                c.task("b").define(|| async {}),
                c.task("a").define(|| async {}),
            ])
            .is_err()
        );
        assert!(
            c.register_batch([
                c.task("x").define(|| async {}),
                c.task("x").define(|| async {}),
            ])
            .is_err()
        );
        // with deps (slow path) refused
        let a = c.task("dep").register(|| async {}).unwrap();
        assert!(
            c.register_batch([
                c.task("y").depends_on(&a).define(|| async {}),
                c.task("a").define(|| async {}),
            ])
            .is_err()
        );
        // weak, released, pruned
        for i in 0..1100 {
            let v = Arc::new(i);
            c.task(format!("w{i}"))
                .register_weak(&v, |_v| async {})
                .unwrap();
        }
        // scopes
        let s = c.task("scope").scope().unwrap();
        s.register("in-scope", || async {}).unwrap();
        let s2 = c.task("scope2").scope().unwrap();
        s2.register("in-scope2", || async {}).unwrap();
        let _ = s2.shutdown().await;
        // early run
        c.task("early")
            .category(Category::File)
            .register(|| async {})
            .unwrap();
        let _ = c.run_early(Selection::Category(Category::File)).await;
        let h = c.register("gone", || async {}).unwrap();
        let report = c.shutdown().await;
        assert!(!h.unregister());
        assert!(c.register("late", || async {}).is_err());
        eprintln!("{} tasks", report.tasks().len());
        drop(s);
        drop(s2);
        drop(c);
    });
    let values = reader.read();
    assert_eq!(gauge_or_zero(values, "compactor.tasks.pending"), 0.0);
    assert_eq!(gauge_or_zero(values, "compactor.tasks.running"), 0.0);
}

/// Running gauge when a run is aborted with attempts in flight.
#[test]
fn m05_running_gauge_abort_and_deadline() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::builder()
            .deadline(Duration::from_secs(5))
            .build();
        for i in 0..4 {
            c.task(format!("h{i}"))
                .register(std::future::pending::<()>)
                .unwrap();
        }
        c.task("blocking")
            .register_blocking(|| std::thread::sleep(Duration::from_millis(50)))
            .unwrap();
        c.task("flush")
            .priority(Priority::Final)
            .register(|| async {})
            .unwrap();
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = c2.abort().await;
        });
        let r = c.shutdown().await;
        eprintln!("{r}");
    });
    let values = reader.read();
    assert_eq!(gauge_or_zero(values, "compactor.tasks.running"), 0.0);
    assert_eq!(gauge_or_zero(values, "compactor.tasks.pending"), 0.0);
}

/// A run whose runtime goes away mid-run (moved to the library's runtime).
#[test]
fn m06_running_gauge_runtime_dropped() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    let c = Compactor::builder()
        .deadline(Duration::from_millis(300))
        .build();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            c.task("h").register(std::future::pending::<()>).unwrap();
            c.task("s")
                .register(|| tokio::time::sleep(Duration::from_millis(100)))
                .unwrap();
            let c2 = c.clone();
            tokio::spawn(async move { c2.shutdown().await });
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        drop(rt);
    });
    std::thread::sleep(Duration::from_millis(600));
    let values = reader.read();
    eprintln!("{values:#?}");
    assert_eq!(gauge_or_zero(values, "compactor.tasks.running"), 0.0);
}

/// Early run (Selection::Task) then a shutdown: counted once each.
#[test]
fn m07_early_then_shutdown_counts() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::new();
        let h = c.register("a", || async {}).unwrap();
        c.register("b", || async {}).unwrap();
        let _ = c.run_early(Selection::Task(h)).await.unwrap();
        let _ = c.shutdown().await;
    });
    let values = reader.read();
    let other = [
        ("compactor.task.category", "other"),
        ("compactor.task.outcome", "succeeded"),
    ];
    assert_eq!(counter(values, "compactor.task.finished", &other), 2);
}

/// Failed scopes kept for the parent's report (end_scope): counted as tasks.
#[test]
fn m08_failed_scope_left_reports_counted() {
    use compactor::service::Supervision;
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::new();
        let s = c.task("conn").scope().unwrap();
        s.register("flush", || async { Err::<(), _>("boom") })
            .unwrap();
        s.task("svc")
            .supervise(Supervision::end_scope())
            .restartable(|_ctx| async { Err::<(), _>("down") })
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = c.shutdown().await;
        eprintln!("{r}");
    });
    let values = reader.read();
    let mut keys: Vec<_> = values
        .iter()
        .filter(|((n, _), _)| n == "compactor.task.finished" || n == "compactor.shutdown.duration")
        .map(|(k, v)| format!("{k:?} = {v:?}"))
        .collect();
    keys.sort();
    eprintln!("{keys:#?}");
}

/// A scope its parent never started (the deadline came first), and one cut
/// off while running: the gauges come back to zero.
#[test]
fn m09_gauges_after_halted_scopes() {
    let recorder = DebuggingRecorder::new();
    let mut reader = Reader::new(&recorder);
    run(&recorder, || async {
        let c = Compactor::builder()
            .deadline(Duration::from_secs(2))
            .build();
        c.task("first")
            .priority(Priority::Critical)
            .register(std::future::pending::<()>)
            .unwrap();
        let never = c.task("never").scope().unwrap();
        never.register("a", || async {}).unwrap();
        never.register("b", std::future::pending::<()>).unwrap();
        let cut = c.task("cut").priority(Priority::Critical).scope().unwrap();
        cut.register("c", std::future::pending::<()>).unwrap();
        cut.task("f")
            .priority(Priority::Final)
            .register(|| async {})
            .unwrap();
        let r = c.shutdown().await;
        eprintln!("{r}");
        let _ = never.wait().await;
        let _ = cut.wait().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let values = reader.read();
    assert_eq!(gauge_or_zero(values, "compactor.tasks.running"), 0.0);
    assert_eq!(gauge_or_zero(values, "compactor.tasks.pending"), 0.0);
}
