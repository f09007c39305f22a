//! The plan of a shutdown before it runs, and its progress while it runs.

use compactor::cleanup::cancellable;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use compactor::{Backoff, Compactor, Priority};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn the_plan_shows_phases_raised_priorities_and_edges_and_runs_nothing() {
    let c = Compactor::new();
    let ran = Arc::new(AtomicBool::new(false));
    let pool = {
        let ran = ran.clone();
        c.register("db-pool", move || {
            ran.store(true, Ordering::SeqCst);
            async {}
        })
        .unwrap()
    };
    c.task("http")
        .priority(Priority::High)
        .depends_on(&pool)
        .timeout(S(5))
        .register(|| async {})
        .unwrap();
    c.task("logs")
        .priority(Priority::Low)
        .register(|| async {})
        .unwrap();

    let plan = c.plan();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        c.plan().inventory().tasks(),
        3,
        "planning takes nothing out of the registry"
    );
    let phases: Vec<Priority> = plan.phases().iter().map(|p| p.priority()).collect();
    assert_eq!(phases, [Priority::High, Priority::Normal, Priority::Low]);
    let names: Vec<&str> = plan.tasks().map(|t| t.name()).collect();
    assert_eq!(names, ["http", "db-pool", "logs"], "phase by phase");
    let pool = plan.task("db-pool").unwrap();
    assert_eq!(pool.priority(), Priority::Normal);
    assert_eq!(pool.effective_priority(), Priority::Normal);
    assert_eq!(
        pool.raised_by(),
        None,
        "a dependency runs after; it is not raised"
    );
    let http = plan.task("http").unwrap();
    assert_eq!(
        http.depends_on().map(|d| d.name()).collect::<Vec<_>>(),
        ["db-pool"]
    );
    assert_eq!(http.timeout(), S(5));
    assert_eq!(plan.tasks_in(0).next().unwrap().name(), "http");
    assert_eq!(plan.tasks_in(2).next().unwrap().name(), "logs");
    assert_eq!(plan.tasks_in(7).len(), 0);
    // High: http 5 s; Normal: the pool's default 10 s; Low: logs 10 s.
    assert_eq!(plan.phases()[0].worst_case(), S(5));
    assert_eq!(plan.worst_case_without_deadline(), S(25));
    assert_eq!(plan.worst_case(), S(25));
    assert_eq!(
        plan.critical_path().map(|t| t.name()).collect::<Vec<_>>(),
        ["http", "db-pool", "logs"]
    );
}

#[test]
fn a_low_priority_task_that_must_run_first_is_raised_by_its_dependency() {
    let c = Compactor::new();
    let server = c
        .task("server")
        .priority(Priority::Critical)
        .register(|| async {})
        .unwrap();
    c.task("drain")
        .priority(Priority::Low)
        .depends_on(&server)
        .register(|| async {})
        .unwrap();
    let plan = c.plan();
    let drain = plan.task("drain").unwrap();
    assert_eq!(drain.effective_priority(), Priority::Critical);
    assert_eq!(drain.raised_by(), Some("server"));
    assert_eq!(plan.phases().len(), 1);
}

#[test]
fn retries_backoff_and_the_cancel_grace_add_up_per_task() {
    let c = Compactor::builder()
        .cancel_grace(MS(300))
        .deadline(S(3600))
        .build();
    // 3 attempts of 1 s, delays 100 + 200 ms (jitter only shortens them).
    c.task("flush")
        .timeout(S(1))
        .retries(2)
        .backoff(Backoff::exponential(MS(100), S(10)))
        .register(|| async {})
        .unwrap();
    // One attempt of 2 s plus the 300 ms grace of a cancellable cleanup.
    c.task("consumer")
        .timeout(S(2))
        .register(cancellable(|_token| async {}))
        .unwrap();
    // The delays stop doubling at their cap: 1 + 2 + 2 + 2 s.
    c.task("capped")
        .timeout(MS(10))
        .retries(4)
        .backoff(Backoff::exponential(S(1), S(2)))
        .register(|| async {})
        .unwrap();
    let plan = c.plan();
    assert_eq!(plan.task("flush").unwrap().worst_case(), MS(3300));
    let consumer = plan.task("consumer").unwrap();
    assert!(consumer.observes_token());
    assert_eq!(consumer.worst_case(), MS(2300));
    assert_eq!(plan.task("capped").unwrap().worst_case(), MS(50 + 7000));
    // All in one phase, no limit: the longest task.
    assert_eq!(plan.worst_case(), MS(7050));
}

#[test]
fn huge_limits_saturate_instead_of_overflowing_or_looping() {
    let c = Compactor::new();
    c.task("forever")
        .timeout(Duration::MAX)
        .retries(u32::MAX)
        .register(|| async {})
        .unwrap();
    c.task("retried")
        .timeout(MS(1))
        .retries(u32::MAX)
        .backoff(Backoff::fixed(S(1)))
        .register(|| async {})
        .unwrap();
    let plan = c.plan();
    assert_eq!(plan.task("forever").unwrap().worst_case(), Duration::MAX);
    // The run makes u32::MAX attempts at most: as many 1 ms attempts, and a
    // 1 s delay between each two.
    let retried = plan.task("retried").unwrap().worst_case();
    assert_eq!(
        retried,
        S(u64::from(u32::MAX) - 1) + MS(u64::from(u32::MAX))
    );
    assert_eq!(plan.worst_case_without_deadline(), Duration::MAX);
    assert_eq!(plan.worst_case(), S(25), "the deadline caps the run");
    assert!(plan.to_string().contains("the deadline may cut them short"));
}

#[test]
fn a_concurrency_limit_and_a_phase_budget_bound_a_phase() {
    let c = Compactor::builder()
        .concurrency_limit(2)
        .phase_budget(Priority::Low, S(3))
        .deadline(S(3600))
        .build();
    for name in ["a", "b", "c", "d"] {
        c.task(name).timeout(S(1)).register(|| async {}).unwrap();
    }
    for name in ["l1", "l2"] {
        c.task(name)
            .priority(Priority::Low)
            .timeout(S(10))
            .register(|| async {})
            .unwrap();
    }
    let plan = c.plan();
    // Four 1 s tasks two at a time: W/m + (1 - 1/m) C = 2 + 0.5 s.
    assert_eq!(plan.phases()[0].worst_case(), MS(2500));
    // Two 10 s tasks, limit 2: 10 s, but the budget says 3.
    assert_eq!(plan.phases()[1].budget(), Some(S(3)));
    assert_eq!(plan.phases()[1].worst_case(), S(3));
    assert_eq!(plan.worst_case(), MS(5500));

    let one = Compactor::builder()
        .concurrency_limit(1)
        .deadline(S(3600))
        .build();
    for name in ["a", "b", "c"] {
        one.task(name).timeout(S(1)).register(|| async {}).unwrap();
    }
    assert_eq!(one.plan().worst_case(), S(3), "one at a time: the sum");
}

#[test]
fn the_longest_chain_is_the_critical_path() {
    let c = Compactor::builder().deadline(S(3600)).build();
    let db = c.task("db").timeout(S(1)).register(|| async {}).unwrap();
    let cache = c
        .task("cache")
        .timeout(S(2))
        .depends_on(&db)
        .register(|| async {})
        .unwrap();
    c.task("http")
        .timeout(S(3))
        .depends_on(&cache)
        .register(|| async {})
        .unwrap();
    c.task("side").timeout(S(5)).register(|| async {}).unwrap();
    let plan = c.plan();
    assert_eq!(plan.worst_case(), S(6));
    assert_eq!(
        plan.critical_path().map(|t| t.name()).collect::<Vec<_>>(),
        ["http", "cache", "db"]
    );
}

#[test]
fn mermaid_dot_and_the_table_draw_the_graph_with_names_escaped() {
    let c = Compactor::new();
    let db = c.register("db \"main\"", || async {}).unwrap();
    c.task("http<1>")
        .depends_on(&db)
        .priority(Priority::High)
        .register(|| async {})
        .unwrap();
    let plan = c.plan();
    let mermaid = plan.to_mermaid();
    assert!(mermaid.starts_with("flowchart TD\n"), "{mermaid}");
    assert!(mermaid.contains("db #quot;main#quot;"), "{mermaid}");
    assert!(mermaid.contains("http#lt;1#gt;"), "{mermaid}");
    let http = plan.tasks().position(|t| t.name() == "http<1>").unwrap();
    let db = plan
        .tasks()
        .position(|t| t.name() == "db \"main\"")
        .unwrap();
    assert!(mermaid.contains(&format!("t{http} --> t{db}")), "{mermaid}");
    let dot = plan.to_dot();
    assert!(dot.contains("db \\\"main\\\""), "{dot}");
    assert!(dot.contains(&format!("t{http} -> t{db};")), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    let table = plan.to_string();
    assert!(
        table.starts_with("shutdown plan: 2 tasks in 2 phases; worst case 20.0s"),
        "{table}"
    );
    assert!(
        table.contains("critical path: http<1> -> db \"main\""),
        "{table}"
    );
}

#[test]
fn an_empty_instance_plans_nothing_and_fits_anything() {
    let c = Compactor::new();
    let plan = c.plan();
    assert!(plan.tasks().len() == 0 && plan.phases().is_empty());
    assert_eq!(plan.worst_case(), Duration::ZERO);
    // Nothing to run, but the exit grace (1 s) to end the process.
    compactor::testing::assert_plan_fits(&c, S(1));
}

#[test]
#[should_panic(expected = "critical path: flush (30s)")]
fn assert_plan_fits_names_the_critical_path() {
    let c = Compactor::builder().deadline(S(60)).build();
    c.task("flush")
        .timeout(S(10))
        .retries(2)
        .backoff(Backoff::fixed(Duration::ZERO))
        .register(|| async {})
        .unwrap();
    compactor::testing::assert_plan_fits(&c, S(29));
}

#[test]
fn assert_plan_fits_passes_within_the_grace() {
    // 2 × 10 s and the exit grace of 1 s: 21 s.
    let c = Compactor::builder().deadline(S(60)).build();
    c.task("flush")
        .timeout(S(10))
        .retries(1)
        .backoff(Backoff::fixed(Duration::ZERO))
        .register(|| async {})
        .unwrap();
    compactor::testing::assert_plan_fits(&c, S(21));
}

#[test]
#[should_panic(expected = "and the exit 1s more")]
fn assert_plan_fits_counts_the_exit_after_the_deadline() {
    let c = Compactor::builder().deadline(S(30)).build();
    c.task("slow").timeout(S(60)).register(|| async {}).unwrap();
    compactor::testing::assert_plan_fits(&c, S(30));
}

#[tokio::test(start_paused = true)]
async fn progress_is_none_before_live_during_and_final_after_the_run() {
    let c = Compactor::builder().deadline(S(60)).build();
    assert!(c.progress().is_none());
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = std::sync::Mutex::new(Some(released));
    let db = c.register("db", || async {}).unwrap();
    let cache = c
        .task("cache")
        .depends_on(&db)
        .register(|| async {})
        .unwrap();
    c.task("http")
        .depends_on(&cache)
        .timeout(S(30))
        .register(move || {
            let rx = released.lock().unwrap().take();
            async move {
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
            }
        })
        .unwrap();
    c.task("logs")
        .priority(Priority::Low)
        .register(|| async {})
        .unwrap();
    c.trigger();
    tokio::time::sleep(S(2)).await;

    let p = c.progress().expect("a run is under way");
    assert!(!p.is_over());
    assert_eq!((p.total(), p.finished()), (4, 0));
    assert_eq!(p.phase(), Some(Priority::Normal));
    assert_eq!(p.running().len(), 1);
    assert_eq!(first_running(&p).name(), "http");
    assert_eq!(first_running(&p).attempt(), 1);
    assert_eq!(first_running(&p).elapsed(), Some(S(2)));
    assert_eq!(p.elapsed(), S(2));
    assert_eq!(p.remaining(), S(58));
    let waiting: Vec<&str> = p.waiting().map(|w| w.name()).collect();
    assert_eq!(waiting, ["db", "cache", "logs"]);
    let db_waits = p.waiting().next().unwrap();
    assert_eq!(db_waits.waits_for().collect::<Vec<_>>(), ["cache"]);
    assert_eq!(db_waits.held_by(), Some("http"));
    assert_eq!(p.chain("db"), ["cache", "http"]);
    let logs = p.waiting().nth(2).unwrap();
    assert_eq!(db_waits.chain(), ["cache", "http"]);
    assert!(logs.waits_for_phase());
    assert_eq!(logs.held_by(), Some("http"));
    assert_eq!(p.chain("logs"), ["http"]);
    let line = p.to_string();
    assert!(line.starts_with("shutdown: 0/4 finished, 58.0s of 60.0s left; running: http (2000ms); 3 waiting (db on cache on http)"), "{line}");

    release.send(()).unwrap();
    let report = c.wait().await;
    assert!(report.is_clean());
    let p = c.progress().expect("the final progress stays");
    assert!(p.is_over());
    let took = p.elapsed();
    assert_eq!(took, report.duration(), "final: the run's own time");
    tokio::time::sleep(S(10)).await;
    let later = c.progress().unwrap();
    assert_eq!(
        (later.elapsed(), later.remaining()),
        (took, S(60) - took),
        "it does not move on"
    );
    assert_eq!(p.finished(), 4);
    assert!(p.running().len() == 0 && p.waiting().len() == 0);
    assert_eq!(p.phase(), None);
}

#[tokio::test(start_paused = true)]
async fn progress_shows_a_task_between_attempts() {
    let c = Compactor::builder().deadline(S(60)).build();
    c.task("flaky")
        .retries(3)
        .backoff(Backoff::fixed(S(5)))
        .register(|| async { Err::<(), _>("not yet") })
        .unwrap();
    c.trigger();
    tokio::time::sleep(S(1)).await;
    let p = c.progress().unwrap();
    assert_eq!(p.running().len(), 1);
    assert_eq!(first_running(&p).attempt(), 1);
    assert_eq!(first_running(&p).elapsed(), None, "waiting out the backoff");
    assert!(
        p.to_string().contains("flaky (retrying after attempt 1)"),
        "{p}"
    );
    tokio::time::sleep(S(5)).await;
    let p = c.progress().unwrap();
    assert_eq!(first_running(&p).attempt(), 2);
}

#[test]
fn progress_answers_while_the_runtime_is_blocked() {
    let c = Compactor::builder().deadline(S(30)).build();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    // An async cleanup that blocks its worker: the runtime has one.
    c.task("stuck")
        .register(move || {
            entered_tx.send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
            async {}
        })
        .unwrap();
    let runner = {
        let c = c.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(c.shutdown())
        })
    };
    entered.recv().unwrap();
    let p = c.progress().expect("under way");
    assert_eq!(first_running(&p).name(), "stuck");
    release.send(()).unwrap();
    assert!(runner.join().unwrap().is_clean());
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_the_report_names_what_blocked_whom() {
    let c = Compactor::builder().deadline(S(5)).build();
    let db = c.register("db", || async {}).unwrap();
    let cache = c
        .task("cache")
        .depends_on(&db)
        .register(|| async {})
        .unwrap();
    c.task("http")
        .depends_on(&cache)
        .timeout(S(60))
        .register(std::future::pending::<()>)
        .unwrap();
    c.task("logs")
        .priority(Priority::Low)
        .register(|| async {})
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.task("db").unwrap().waited_for(), Some("cache"));
    assert_eq!(report.task("cache").unwrap().waited_for(), Some("http"));
    assert_eq!(report.task("logs").unwrap().waited_for(), Some("http"));
    assert_eq!(report.task("http").unwrap().waited_for(), None);
    assert_eq!(report.blocked_chain("db"), ["cache", "http"]);
    assert_eq!(report.blocked_chain("logs"), ["http"]);
    assert!(report.blocked_chain("http").is_empty());
    assert!(report.blocked_chain("nope").is_empty());
    let table = report.to_string();
    assert!(table.contains("waiting on cache"), "{table}");
}

#[tokio::test(start_paused = true)]
async fn a_phase_budget_records_what_its_skipped_tasks_waited_for() {
    let c = Compactor::builder()
        .phase_budget(Priority::High, S(2))
        .deadline(S(60))
        .build();
    let after = c
        .task("after")
        .priority(Priority::High)
        .register(|| async {})
        .unwrap();
    c.task("slow")
        .priority(Priority::High)
        .depends_on(&after)
        .timeout(S(30))
        .register(std::future::pending::<()>)
        .unwrap();
    c.register("normal", || async {}).unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.task("after").unwrap().waited_for(), Some("slow"));
    assert!(
        report.task("normal").unwrap().outcome().is_clean(),
        "the next phase still runs"
    );
    assert_eq!(report.task("normal").unwrap().waited_for(), None);
}

#[cfg(feature = "serde")]
#[test]
fn the_plan_serializes() {
    let c = Compactor::new();
    c.task("flush")
        .timeout(S(2))
        .retries(1)
        .register(|| async {})
        .unwrap();
    let json = serde_json::to_value(c.plan()).unwrap();
    assert_eq!(json["tasks"][0]["name"], "flush");
    assert_eq!(json["tasks"][0]["timeout_ms"], 2000.0);
    assert_eq!(json["tasks"][0]["backoff"]["initial_ms"], 100.0);
    assert_eq!(json["worst_case_ms"], 4100.0);
    assert_eq!(json["phases"][0]["tasks"], 1);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn progress_serializes() {
    let c = Compactor::builder().deadline(S(60)).build();
    let db = c.register("db", || async {}).unwrap();
    c.task("http")
        .depends_on(&db)
        .timeout(S(30))
        .register(|| tokio::time::sleep(S(10)))
        .unwrap();
    c.trigger();
    tokio::time::sleep(S(1)).await;
    let json = serde_json::to_value(c.progress().unwrap()).unwrap();
    assert_eq!(json["total"], 2);
    assert_eq!(json["finished"], 0);
    assert_eq!(json["elapsed_ms"], 1000.0);
    assert_eq!(json["phase"], "normal");
    assert_eq!(json["running"][0]["name"], "http");
    assert_eq!(json["running"][0]["attempt_elapsed_ms"], 1000.0);
    assert_eq!(json["waiting"][0]["name"], "db");
    assert_eq!(json["waiting"][0]["waits_for"][0], "http");
    assert_eq!(json["waiting"][0]["held_by"], "http");
    assert!(c.wait().await.is_clean());
}

fn first_running(p: &compactor::inspect::Progress) -> compactor::inspect::RunningTask<'_> {
    p.running().next().expect("a running task")
}

#[tokio::test(start_paused = true)]
async fn a_deep_chain_keeps_every_line_short_and_the_report_quick() {
    const N: usize = 10_000;
    let c = Compactor::builder().deadline(S(5)).build();
    let mut previous = c.task("t-last").register(|| async {}).unwrap();
    for i in (0..N - 1).rev() {
        let timeout = if i == 0 { S(60) } else { S(1) };
        let task = c
            .task(format!("t-{i}"))
            .depends_on(&previous)
            .timeout(timeout);
        previous = match i {
            0 => task.register(std::future::pending::<()>).unwrap(),
            _ => task.register(|| async {}).unwrap(),
        };
    }
    c.trigger();
    tokio::time::sleep(S(1)).await;
    let p = c.progress().unwrap();
    let line = p.to_string();
    assert!(line.len() < 1_000, "{} bytes: {line}", line.len());
    assert!(
        line.contains("(t-last on t-9998 on t-9997 on t-9996 on t-9995 on … (9994 more) on t-0)"),
        "{line}"
    );
    assert_eq!(
        p.chain("t-last").len(),
        N - 1,
        "the API has the whole chain"
    );
    let detail = format!("{p:#}");
    assert!(detail.lines().count() <= 53, "{detail}");
    assert!(detail.len() < 10_000);
    let report = c.wait().await;
    let started = std::time::Instant::now();
    let chain = report.blocked_chain("t-last");
    assert_eq!(chain.len(), N - 1);
    assert_eq!(chain.last(), Some(&"t-0"));
    // Linear: a quadratic walk of 10,000 names takes seconds.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_plan_reads_every_kind_of_dependency_as_the_run_does() {
    // By handle, by name (to a task registered later, and to none), and to
    // the drain delay (ignored): a task of several dependencies, and tasks
    // of one, in the plan's own copy of the registry.
    let c = Compactor::builder().drain_delay(S(1)).build();
    let a = c.register("a", || async {}).unwrap();
    let b = c.register("b", || async {}).unwrap();
    c.task("x")
        .depends_on(&a)
        .depends_on(&b)
        .depends_on_name("later")
        .depends_on_name("compactor::drain-delay")
        .depends_on_name("ghost")
        .register(|| tokio::time::sleep(S(2)))
        .unwrap();
    c.task("y")
        .depends_on(&a)
        .register(|| tokio::time::sleep(S(1)))
        .unwrap();
    c.task("z")
        .depends_on_name("compactor::drain-delay")
        .register(|| async {})
        .unwrap();
    c.task("w")
        .depends_on_name("later")
        .register(|| tokio::time::sleep(S(3)))
        .unwrap();
    c.register("later", || async {}).unwrap();

    let plan = c.plan();
    let deps = |name: &str| -> Vec<String> {
        let mut d: Vec<String> = plan
            .task(name)
            .unwrap()
            .depends_on()
            .map(|t| t.name().to_owned())
            .collect();
        d.sort();
        d
    };
    assert_eq!(deps("x"), ["a", "b", "later"]);
    assert_eq!(deps("y"), ["a"]);
    assert_eq!(deps("w"), ["later"]);
    assert!(
        deps("z").is_empty(),
        "the dependency on the delay is dropped"
    );
    // The unknown name and the two dependencies on the delay.
    assert_eq!(plan.warnings().len(), 3, "{:?}", plan.warnings());
    assert!(plan.task("compactor::drain-delay").is_some());

    // The run agrees: x (2 s) before a, b and later; y (1 s) before a.
    let report = c.shutdown().await;
    assert_eq!(report.warnings(), plan.warnings());
    let start = |n: &str| report.task(n).unwrap().started_at().unwrap();
    for d in ["a", "b", "later"] {
        assert!(start(d) >= start("x") + S(2), "x before {d}: {report}");
    }
    assert!(start("a") >= start("y") + S(1), "{report}");
    assert!(start("z") < start("a"), "z waits for none: {report}");
    assert!(start("later") >= start("w") + S(3), "{report}");
}
