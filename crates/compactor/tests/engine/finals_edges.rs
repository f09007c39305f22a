//! The final phase and what outlived the run at their edges: finals one at
//! a time or chained, tiny and unlimited deadlines, budgets on the final
//! phase, a second signal with an unlimited exit grace, a run that cannot
//! be built, abandoned attempts that return before the report, abandoned
//! ones inside scopes.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use compactor::{Category, Compactor, Outcome, Priority, Selection};
use tokio::time::Instant;

fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Two final tasks, one at a time: the time kept is the longest one's, not
/// what running both takes.
#[tokio::test(start_paused = true)]
async fn p04_two_finals_concurrency_one() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .concurrency_limit(1)
        .build();
    for name in ["otel", "logs"] {
        c.task(name)
            .priority(Priority::Final)
            .timeout(Duration::from_secs(2))
            .register(|| tokio::time::sleep(Duration::from_millis(1500)))
            .unwrap();
    }
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c.shutdown().await;
    eprintln!("{report}");
    for name in ["otel", "logs"] {
        assert_eq!(
            report.task(name).unwrap().outcome(),
            &Outcome::Succeeded,
            "{name}: {report}"
        );
    }
}

/// Final tasks chained among themselves (one depends on the other).
#[tokio::test(start_paused = true)]
async fn p05_two_finals_chained() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    let logs = c
        .task("logs")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(2))
        .register(|| tokio::time::sleep(Duration::from_millis(1500)))
        .unwrap();
    c.task("otel")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(2))
        .depends_on(&logs)
        .register(|| tokio::time::sleep(Duration::from_millis(1500)))
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let plan = c.plan();
    eprintln!(
        "kept {:?} worst {:?}",
        plan.kept_for_final(),
        plan.worst_case()
    );
    let report = c.shutdown().await;
    eprintln!("{report}");
    for name in ["otel", "logs"] {
        assert_eq!(
            report.task(name).unwrap().outcome(),
            &Outcome::Succeeded,
            "{name}: {report}"
        );
    }
}

/// A blocking cleanup cut by its timeout whose thread ended long before the
/// report: `abandoned()` says "left running when the report was made".
#[tokio::test]
async fn p07_abandoned_lists_a_blocking_task_that_ended_before_the_report() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    let ended = flag();
    let e = ended.clone();
    c.task("blocking")
        .timeout(Duration::from_millis(50))
        .register_blocking(move || {
            std::thread::sleep(Duration::from_millis(150));
            e.store(true, Ordering::SeqCst);
        })
        .unwrap();
    c.task("later")
        .priority(Priority::Low)
        .register(|| tokio::time::sleep(Duration::from_millis(600)))
        .unwrap();
    let report = c.shutdown().await;
    assert!(
        ended.load(Ordering::SeqCst),
        "the thread ended before the report"
    );
    let abandoned: Vec<String> = report
        .abandoned()
        .iter()
        .map(|f| f.path().to_owned())
        .collect();
    assert!(
        abandoned.is_empty(),
        "abandoned() names tasks that had ended before the report: {abandoned:?}\n{report}"
    );
}

/// A skipped final task's cleanup (the run aborted) is dropped, not kept
/// with the run's context for the instance's life.
#[tokio::test(start_paused = true)]
async fn p08_aborted_final_cleanup_is_dropped() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    let dropped = flag();
    let guard = Guard(dropped.clone());
    c.task("flush")
        .priority(Priority::Final)
        .register(move || {
            let _g = &guard;
            async {}
        })
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let c2 = c.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = c2.abort().await;
    });
    let report = c.wait().await;
    let report = if report.tasks().is_empty() {
        c.shutdown().await
    } else {
        report
    };
    eprintln!("{report}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the final cleanup was never dropped"
    );
}

/// Deadline near zero with a final task.
#[tokio::test(start_paused = true)]
async fn p09_tiny_deadline() {
    let c = Compactor::builder()
        .deadline(Duration::from_millis(1))
        .build();
    c.task("flush")
        .priority(Priority::Final)
        .register(|| async {})
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let plan = c.plan();
    eprintln!(
        "kept {:?} worst {:?}",
        plan.kept_for_final(),
        plan.worst_case()
    );
    let report = c.shutdown().await;
    eprintln!("{report}");
}

/// Deadline Duration::MAX with a final task: nothing is cut, it runs after.
#[tokio::test(start_paused = true)]
async fn p10_max_deadline() {
    let c = Compactor::builder().deadline(Duration::MAX).build();
    c.task("flush")
        .priority(Priority::Final)
        .register(|| async {})
        .unwrap();
    c.task("slow")
        .register(|| tokio::time::sleep(Duration::from_secs(3)))
        .unwrap();
    let plan = c.plan();
    eprintln!(
        "kept {:?} worst {:?}",
        plan.kept_for_final(),
        plan.worst_case()
    );
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
}

/// A final task with retries: cut by the time kept for one attempt.
#[tokio::test(start_paused = true)]
async fn p11_plan_worst_case_matches_run_with_finals() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    c.task("flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(2))
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("slow")
        .timeout(Duration::from_secs(9))
        .register(std::future::pending::<()>)
        .unwrap();
    let plan = c.plan();
    let worst = plan.worst_case();
    let t0 = Instant::now();
    let report = c.shutdown().await;
    let took = t0.elapsed();
    eprintln!(
        "plan worst {worst:?}, kept {:?}, took {took:?}\n{report}",
        plan.kept_for_final()
    );
    assert!(
        took <= worst + Duration::from_millis(100),
        "took {took:?} > worst {worst:?}"
    );
}

/// Final task in a `run_early(Selection::Category)`: runs and is reported.
#[tokio::test(start_paused = true)]
async fn p12_final_in_category_early_run() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(4))
        .build();
    let flushed = flag();
    let f = flushed.clone();
    c.task("flush")
        .category(Category::File)
        .priority(Priority::Final)
        .timeout(Duration::from_secs(1))
        .register(move || {
            f.store(true, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    c.task("hang")
        .category(Category::File)
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c
        .run_early(Selection::Category(Category::File))
        .await
        .unwrap();
    eprintln!("{report}");
    assert!(flushed.load(Ordering::SeqCst));
    let report = c.shutdown().await;
    assert!(
        report.task("flush").is_none()
            || report.task("flush").unwrap().outcome() == &Outcome::Succeeded
    );
}

/// A Final task with a cancel grace far larger than the deadline.
#[tokio::test(start_paused = true)]
async fn p13_huge_cancel_grace() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .cancel_grace(Duration::MAX)
        .build();
    c.task("flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(1))
        .register(|| async {})
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let plan = c.plan();
    eprintln!(
        "kept {:?} worst {:?}",
        plan.kept_for_final(),
        plan.worst_case()
    );
    let report = c.shutdown().await;
    eprintln!("{report}");
    assert_eq!(report.task("flush").unwrap().outcome(), &Outcome::Succeeded);
}

/// Budget on the final phase itself.
#[tokio::test(start_paused = true)]
async fn p14_budget_on_final_phase() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .phase_budget(Priority::Final, Duration::from_secs(1))
        .build();
    c.task("flush")
        .priority(Priority::Final)
        .timeout(Duration::from_secs(3))
        .register(|| tokio::time::sleep(Duration::from_secs(2)))
        .unwrap();
    let report = c.shutdown().await;
    eprintln!("{report}");
}

/// The JSON `outlived` and runtime_tasks.
#[tokio::test(flavor = "current_thread")]
async fn p15_runtime_tasks() {
    let c = Compactor::new();
    c.register("a", || async {}).unwrap();
    let report = c.shutdown().await;
    eprintln!("runtime tasks {:?}\n{report}", report.runtime_tasks());
}

// ---- forced exit (second signal), in a child process: this binary again ----

fn append(path: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn signal_self_twice() {
    let pid = std::process::id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::process::Command::new("kill")
            .args(["-USR1", &pid])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("kill")
            .args(["-USR1", &pid])
            .status();
    });
}

/// Runs the ignored test `child` in a child process; its lines, whether it
/// exited within `within`, and how long it took.
fn in_child(child: &str, within: Duration) -> (Vec<String>, bool, Duration) {
    in_child_env(child, within, &[])
}

fn in_child_env(
    child: &str,
    within: Duration,
    env: &[(&str, &str)],
) -> (Vec<String>, bool, Duration) {
    let out = std::env::temp_dir().join(format!("finals-edges-{child}-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let t0 = std::time::Instant::now();
    let mut proc = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("finals_edges::{child}"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PROBE_OUT", &out)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut exited = false;
    while t0.elapsed() < within {
        if proc.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    if !exited {
        let _ = proc.kill();
    }
    let _ = proc.wait();
    let lines = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, exited, took)
}

#[test]
#[ignore]
fn child_wedged_final_exit_grace_max() {
    let Ok(out) = std::env::var("PROBE_OUT") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Compactor::builder()
            .signals([compactor::signal::Signal::User1])
            .exit_grace(match std::env::var("PROBE_GRACE_DEFAULT") {
                Ok(_) => Duration::from_secs(1),
                Err(_) => Duration::MAX,
            })
            .build();
        c.listen_for_signals().unwrap();
        let o = out.clone();
        c.task("flush")
            .priority(Priority::Final)
            .register(move || {
                append(&o, "final-started");
                // Blocking I/O inside an async flush: holds the runtime's thread.
                std::thread::sleep(Duration::from_secs(20));
                async {}
            })
            .unwrap();
        signal_self_twice();
        tokio::time::sleep(Duration::from_secs(30)).await;
        append(&out, "not-exited");
    });
}

#[test]
fn p18_second_signal_exits_despite_a_wedged_final_with_exit_grace_max() {
    let (lines, exited, took) =
        in_child("child_wedged_final_exit_grace_max", Duration::from_secs(8));
    assert!(lines.contains(&"final-started".to_owned()), "{lines:?}");
    assert!(
        exited,
        "second signal did not end the process within 8 s (exit_grace MAX): {lines:?}"
    );
    eprintln!("took {took:?}");
}

#[test]
fn p18b_control_default_exit_grace() {
    let (lines, exited, took) = in_child_env(
        "child_wedged_final_exit_grace_max",
        Duration::from_secs(8),
        &[("PROBE_GRACE_DEFAULT", "1")],
    );
    eprintln!("control: exited {exited} in {took:?}: {lines:?}");
    assert!(exited);
}

/// A tracing layer that panics on the run's "shutdown started" line: the
/// run cannot be built, the report is the stalled one. What happens to the
/// final task's cleanup, held by the run's context?
#[test]
fn p19_final_cleanup_leaked_when_the_run_cannot_be_built() {
    use tracing_subscriber::layer::SubscriberExt;
    struct Panicky;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Panicky {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct V(bool);
            impl tracing::field::Visit for V {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" && format!("{v:?}").contains("shutdown started") {
                        self.0 = true;
                    }
                }
            }
            let mut v = V(false);
            event.record(&mut v);
            if v.0 {
                panic!("layer panics");
            }
        }
    }
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let subscriber = tracing_subscriber::registry().with(Panicky);
    let final_dropped = flag();
    let normal_dropped = flag();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Compactor::new();
            let g = Guard(final_dropped.clone());
            c.task("flush")
                .priority(Priority::Final)
                .register(move || {
                    let _ = &g;
                    async {}
                })
                .unwrap();
            let g = Guard(normal_dropped.clone());
            c.task("db")
                .register(move || {
                    let _ = &g;
                    async {}
                })
                .unwrap();
            let report = c.shutdown().await;
            eprintln!("{report}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            eprintln!(
                "normal cleanup dropped: {}, final cleanup dropped: {}",
                normal_dropped.load(Ordering::SeqCst),
                final_dropped.load(Ordering::SeqCst)
            );
            assert!(normal_dropped.load(Ordering::SeqCst));
            assert!(
                final_dropped.load(Ordering::SeqCst),
                "final task's cleanup kept while the instance lives"
            );
        });
    });
}

/// A scope whose blocking cleanup is abandoned: does the parent's
/// `abandoned()` (what outlived the run) say so?
#[tokio::test]
async fn p20_abandoned_in_a_scope() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(10))
        .build();
    let s = c.task("conn").scope().unwrap();
    s.task("blocking")
        .timeout(Duration::from_millis(50))
        .register_blocking(|| std::thread::sleep(Duration::from_millis(700)))
        .unwrap();
    let report = c.shutdown().await;
    let inner = report
        .task("conn")
        .unwrap()
        .scope()
        .map(|r| r.abandoned().len());
    let outer: Vec<String> = report
        .abandoned()
        .iter()
        .map(|f| f.path().to_owned())
        .collect();
    eprintln!("{report}\nscope's abandoned: {inner:?}, parent's abandoned(): {outer:?}");
    assert!(
        !outer.is_empty(),
        "a thread left running in a scope is not in the parent's abandoned()"
    );
}
