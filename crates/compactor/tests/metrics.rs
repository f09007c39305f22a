//! The metrics (feature `metrics`), read back from metrics-util's debugging
//! recorder, installed for the test's thread only: every task, retry,
//! restart and shutdown counted once, and the gauges back to zero.

use std::collections::HashMap;
use std::time::Duration;

use compactor::service::Supervision;
use compactor::{Backoff, Category, Compactor};
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
