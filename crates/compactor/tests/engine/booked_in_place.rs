//! An attempt's end booked where it ended while the runner waits
//! (`Runner::book_here`): no lost wake-up, no user code run while the
//! runner's state is held, no task left behind a lane that holds its
//! thread, and runtimes that go away.
//!
//! Real time throughout: a paused clock skips to the next limit when idle,
//! which hides a runner that was not woken.

use compactor::cleanup::once;
use futures::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use compactor::{Backoff, Compactor, Outcome, Priority, TaskHandle};

use crate::common::multi_thread;

/// Far longer than any test here should take: a limit the runner waits
/// for instead of being woken shows as a test timing out.
const LONG: Duration = Duration::from_secs(30);
/// How long a test may take (two cores, shared).
const SOON: Duration = Duration::from_secs(5);

/// An error that runs `on_drop` when dropped: the output of a cleanup, as
/// the user hands it back (a `Box<dyn Error>` is kept as it is, so it is
/// dropped where the run lets go of it).
struct DropsWith(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for DropsWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropsWith")
    }
}

impl std::fmt::Display for DropsWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flaky")
    }
}

impl std::error::Error for DropsWith {}

impl Drop for DropsWith {
    fn drop(&mut self) {
        (self.0)();
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Registers `flaky`, with one retry after 1 ms: its first attempt fails
/// with an error that runs `on_drop` when dropped, its second succeeds.
/// Returns how many times it was called.
fn flaky(c: &Compactor, on_drop: impl Fn() + Clone + Send + Sync + 'static) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    c.task("flaky")
        .retries(1)
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .register(move || {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            let on_drop = on_drop.clone();
            async move {
                match call {
                    0 => Err::<(), BoxError>(Box::new(DropsWith(Box::new(on_drop)))),
                    _ => Ok(()),
                }
            }
        })
        .unwrap();
    calls
}

/// A failed attempt whose error panics when dropped: the retry still comes
/// after its backoff and the report is published (the runner lets go of
/// the error off its own code, the panic contained).
#[tokio::test]
async fn a_panic_in_a_failed_attempts_error_drop_does_not_stall_the_retry() {
    let c = Compactor::builder()
        .deadline(Duration::MAX)
        .default_timeout(Duration::MAX)
        .build();
    let calls = flaky(&c, || panic!("error dropped"));
    let report = tokio::time::timeout(SOON, c.shutdown()).await;
    let report = report.unwrap_or_else(|_| {
        panic!(
            "no report {SOON:?} after a 1 ms backoff; the cleanup was called {} time(s)",
            calls.load(Ordering::SeqCst)
        )
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2, "{report}");
    assert!(report.is_complete(), "{report}");
}

/// A lane of 63 first polls, all started in the runner's first turn:
/// `frees`, then `holds-its-thread` (which holds its thread for seconds),
/// then 61 quick ones. `frees` ends in its first poll and frees three
/// trivial cleanups. A second worker is idle: every quick cleanup must run,
/// long before the deadline.
///
/// `frees`'s end is booked on its lane and fills it past its size: the
/// booking spawns a fresh lane from inside the lane's poll, which tokio
/// keeps in that worker's own slot (no other worker takes from it), and
/// the lane's next first poll holds the thread. The lane yields before that
/// poll, so the freed cleanups run.
#[test]
fn a_cleanup_freed_into_a_fresh_lane_does_not_wait_behind_the_thread_its_lane_then_holds() {
    const QUEUED: usize = 61;
    const FREED: usize = 3;
    let mut stranded = Vec::new();
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        let runtime = multi_thread(2);
        let c = Compactor::builder()
            .deadline(Duration::from_millis(800))
            .build();
        let ran = Arc::new(AtomicUsize::new(0));
        let count = |ran: &Arc<AtomicUsize>| {
            let ran = ran.clone();
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        };
        let freed: Vec<TaskHandle> = (0..FREED)
            .map(|i| c.register(format!("freed-{i}"), count(&ran)).unwrap())
            .collect();
        for i in 0..QUEUED {
            c.register(format!("queued-{i}"), count(&ran)).unwrap();
        }
        c.task("holds-its-thread")
            .timeout(Duration::from_millis(200))
            .register(once(|| async {
                std::thread::sleep(Duration::from_secs(4));
            }))
            .unwrap();
        let mut frees = c.task("frees");
        for handle in &freed {
            frees = frees.depends_on(handle);
        }
        frees.register(|| async {}).unwrap();
        // The first of the turn: goes out alone, ends later.
        c.register("alone", || tokio::time::sleep(Duration::from_millis(100)))
            .unwrap();
        let began = Instant::now();
        let report = runtime
            .block_on(async { tokio::time::timeout(SOON, c.shutdown()).await })
            .expect("the report came");
        let took = began.elapsed();
        let not_run: Vec<String> = report
            .tasks()
            .iter()
            .filter(|t| t.name().starts_with("freed-") || t.name().starts_with("queued-"))
            .filter(|t| t.outcome() != &Outcome::Succeeded)
            .map(|t| format!("{}: {}", t.name(), t.outcome()))
            .collect();
        if !not_run.is_empty() {
            stranded.push(format!(
                "round {round} (report after {took:?}): {not_run:?}\n{report}"
            ));
        }
        runtime.shutdown_background();
    }
    assert!(
        stranded.is_empty(),
        "trivial cleanups never ran while a worker was idle in {} of {ROUNDS} rounds:\n{}",
        stranded.len(),
        stranded.join("\n")
    );
}

/// The runtime driving the run goes away while a cleanup holds one of its
/// workers; the run goes on on compactor's own runtime. That cleanup then
/// ends, on the dying runtime, and frees `after`, which runs (on
/// compactor's runtime): the end goes through the mailbox, not booked on
/// the runtime going away.
#[test]
fn a_cleanup_freed_by_an_end_on_a_runtime_going_away_runs_on_compactors_own() {
    let c = Compactor::builder()
        .deadline(Duration::from_secs(3))
        .default_timeout(Duration::from_secs(1))
        .build();
    let after_ran = Arc::new(AtomicBool::new(false));
    let flag = after_ran.clone();
    let after = c
        .register("after", move || {
            flag.store(true, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    let began = Arc::new(AtomicBool::new(false));
    let holder_began = began.clone();
    c.task("holds-its-thread")
        .depends_on(&after)
        .timeout(Duration::from_secs(10))
        .register(once(move || {
            holder_began.store(true, Ordering::SeqCst);
            async { std::thread::sleep(Duration::from_millis(500)) }
        }))
        .unwrap();
    let short_lived = multi_thread(2);
    short_lived.block_on(async {
        c.trigger();
        while !began.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // Goes away while `holds-its-thread` holds a worker.
    short_lived.shutdown_background();
    let report = multi_thread(1)
        .block_on(async { tokio::time::timeout(SOON, c.wait()).await })
        .expect("the report came");
    assert_eq!(
        report.task("holds-its-thread").unwrap().outcome(),
        &Outcome::Succeeded,
        "{report}"
    );
    assert!(
        after_ran.load(Ordering::SeqCst),
        "`after` never ran: {}\n{report}",
        report.task("after").unwrap().outcome()
    );
}

/// A chain of 10,000 whose middle link holds its thread for seconds: the
/// link times out, the rest of the chain goes on on the other worker, the
/// report comes long before the block ends and nothing starts after it.
#[test]
fn a_chain_of_10_000_with_a_link_that_holds_its_thread_goes_on_and_reports_on_time() {
    const N: usize = 10_000;
    const HOLDER: usize = N / 2;
    let runtime = multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_secs(3))
        .build();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut previous: Option<TaskHandle> = None;
    for i in 0..N {
        let mut task = c
            .task(format!("link-{i}"))
            .timeout(Duration::from_millis(200));
        if let Some(p) = &previous {
            task = task.depends_on(p);
        }
        let ran = ran.clone();
        let handle = match i == HOLDER {
            true => task.register(once(|| async {
                std::thread::sleep(Duration::from_secs(6));
            })),
            false => task.register(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                async {}
            }),
        };
        previous = Some(handle.unwrap());
    }
    let began = Instant::now();
    let report = runtime
        .block_on(async { tokio::time::timeout(SOON, c.shutdown()).await })
        .expect("the report came");
    let took = began.elapsed();
    let ran_at_report = ran.load(Ordering::SeqCst);
    assert!(took < Duration::from_secs(3), "took {took:?}\n{report}");
    assert_eq!(
        report.task(&format!("link-{HOLDER}")).unwrap().outcome(),
        &Outcome::TimedOut
    );
    assert_eq!(report.count(&Outcome::Succeeded), N - 1, "took {took:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        ran_at_report,
        "a link ran after the report"
    );
    runtime.shutdown_background();
}

/// Shapes where an end booked while the runner is parked must wake it (or
/// start what it frees itself): a chain, a concurrency limit, phases with
/// budgets, retries after a backoff, pending cleanups, blocking ones, a
/// scope, cleanups asking for the report so far. With timeouts and a
/// deadline of 30 s and more, each run must still be over at once, on a
/// current-thread runtime and on a multi-thread one.
#[test]
fn ends_booked_while_the_runner_is_parked_never_leave_it_waiting_for_a_limit() {
    type Shape = fn() -> Compactor;
    fn chain(c: &Compactor, n: usize, name: &str) {
        chain_of(c, n, name, |task, _| task.register(|| async {}));
    }
    let shapes: Vec<(&str, Shape)> = vec![
        ("chain", || {
            let c = long().build();
            chain(&c, 2_000, "link");
            c
        }),
        ("concurrency limit 1", || {
            let c = long().concurrency_limit(1).build();
            for i in 0..300 {
                c.register(format!("t-{i}"), || async {}).unwrap();
            }
            c
        }),
        ("concurrency limit 3, pending", || {
            let c = long().concurrency_limit(3).build();
            for i in 0..60 {
                c.register(format!("t-{i}"), || {
                    tokio::time::sleep(Duration::from_micros(200))
                })
                .unwrap();
            }
            c
        }),
        ("phases with budgets", || {
            let mut b = long();
            for p in [
                Priority::Critical,
                Priority::High,
                Priority::Normal,
                Priority::Low,
            ] {
                b = b.phase_budget(p, LONG);
            }
            let c = b.build();
            for (k, p) in [
                Priority::Critical,
                Priority::High,
                Priority::Normal,
                Priority::Low,
            ]
            .into_iter()
            .enumerate()
            {
                for i in 0..20 {
                    c.task(format!("p{k}-{i}"))
                        .priority(p)
                        .register(|| async {})
                        .unwrap();
                }
            }
            c
        }),
        ("retries after a backoff", || {
            let c = long()
                .backoff(Backoff::fixed(Duration::from_millis(2)))
                .build();
            for i in 0..50 {
                let calls = Arc::new(AtomicUsize::new(0));
                c.task(format!("flaky-{i}"))
                    .retries(2)
                    .register(move || {
                        let call = calls.fetch_add(1, Ordering::SeqCst);
                        async move {
                            match call {
                                0 => Err::<(), String>("once".into()),
                                _ => Ok(()),
                            }
                        }
                    })
                    .unwrap();
            }
            c
        }),
        ("a chain of pending cleanups", || {
            let c = long().build();
            chain_of(&c, 100, "pending", |task, _| {
                task.register(|| tokio::time::sleep(Duration::from_micros(100)))
            });
            c
        }),
        ("blocking and async mixed", || {
            let c = long().build();
            chain_of(&c, 100, "mixed", |task, i| match i % 3 {
                0 => task.register_blocking(|| {}),
                _ => task.register(|| async {}),
            });
            c
        }),
        ("scopes", || {
            let c = long().build();
            for s in 0..10 {
                let scope = c.task(format!("scope-{s}")).scope().unwrap();
                chain(&scope, 50, "link");
            }
            chain(&c, 50, "outer");
            c
        }),
        ("cleanups asking for the report so far", || {
            let c = long().build();
            chain_of(&c, 50, "asks", |task, _| {
                let me = c.clone();
                task.register(move || {
                    let me = me.clone();
                    async move {
                        let so_far = me.shutdown().await;
                        assert!(!so_far.is_complete());
                    }
                })
            });
            c
        }),
    ];
    for (name, shape) in shapes {
        for flavor in ["current-thread", "multi-thread"] {
            let runtime = runtime_of(flavor);
            for _ in 0..3 {
                let c = shape();
                let began = Instant::now();
                let report = runtime
                    .block_on(async { tokio::time::timeout(SOON, c.shutdown()).await })
                    .unwrap_or_else(|_| panic!("{name} on {flavor}: no report in {SOON:?}"));
                assert!(report.is_clean(), "{name} on {flavor}\n{report}");
                assert!(
                    began.elapsed() < Duration::from_secs(2),
                    "{name} on {flavor}: took {:?}",
                    began.elapsed()
                );
            }
            runtime.shutdown_background();
        }
    }
}

/// A scope whose task its parent cuts off while the scope's chain goes on
/// by bookings on the parked runner: the scope is halted, nothing of it
/// runs after the parent's report, and the report comes on time.
#[test]
fn a_scope_cut_off_while_its_chain_books_itself_runs_nothing_after_the_report() {
    for flavor in ["current-thread", "multi-thread"] {
        let runtime = match flavor {
            "current-thread" => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            _ => multi_thread(2),
        };
        let c = Compactor::builder()
            .deadline(Duration::from_secs(3))
            .build();
        let scope = c
            .task("scope")
            .timeout(Duration::from_millis(100))
            .scope()
            .unwrap();
        // About 50 µs each: the chain takes about a second.
        let ran = spinning_chain(&scope, 20_000, Duration::from_micros(50));
        let began = Instant::now();
        let report = runtime
            .block_on(async { tokio::time::timeout(SOON, c.shutdown()).await })
            .unwrap_or_else(|_| panic!("{flavor}: no report"));
        let took = began.elapsed();
        let at_report = ran.load(Ordering::SeqCst);
        assert!(
            took < Duration::from_secs(1),
            "{flavor}: took {took:?}\n{report}"
        );
        assert_eq!(
            report.task("scope").unwrap().outcome(),
            &Outcome::TimedOut,
            "{flavor}\n{report}"
        );
        assert!(at_report < 20_000, "{flavor}: the whole chain ran");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            at_report,
            "{flavor}: the scope ran cleanups after the parent's report"
        );
        runtime.shutdown_background();
    }
}

/// A cleanup that begins the shutdown of another instance (`trigger`) and
/// returns; next in its lane is a cleanup that holds its thread for
/// seconds. The other instance's report must come by its deadline + 50 ms
/// (a second worker is idle), as it does when the lane yields after each
/// attempt.
///
/// A cleanup begins another instance's run (spawned from the lane's
/// worker, into its own slot), and the next first poll on that lane holds
/// the thread: the lane yields before it, so the other run starts and keeps
/// its deadline.
#[test]
fn a_run_begun_by_a_cleanup_keeps_its_deadline_though_the_next_first_poll_holds_the_thread() {
    let mut late = Vec::new();
    for round in 0..3 {
        let runtime = multi_thread(2);
        let c = Compactor::builder()
            .deadline(Duration::from_secs(2))
            .build();
        let other = Compactor::builder()
            .deadline(Duration::from_millis(300))
            .build();
        other.register("quick", || async {}).unwrap();
        c.task("holds-its-thread")
            .timeout(Duration::from_millis(200))
            .register(once(|| async {
                std::thread::sleep(Duration::from_secs(3));
            }))
            .unwrap();
        let triggered = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let (to_trigger, at) = (other.clone(), triggered.clone());
        c.register("begins-another", move || {
            *at.lock().unwrap() = Some(Instant::now());
            to_trigger.trigger();
            async {}
        })
        .unwrap();
        c.register("alone", || tokio::time::sleep(Duration::from_millis(50)))
            .unwrap();
        let report = runtime
            .block_on(async {
                let (_, report) = tokio::join!(c.shutdown(), async {
                    tokio::time::timeout(SOON, other.wait()).await
                });
                report
            })
            .expect("the other report came");
        let after = triggered.lock().unwrap().expect("triggered").elapsed();
        if report.duration() > Duration::from_millis(350) {
            late.push(format!(
                "round {round}: its report took {:?}\n{report}",
                report.duration()
            ));
        }
        let _ = after;
        runtime.shutdown_background();
    }
    assert!(late.is_empty(), "{}", late.join("\n"));
}

/// A chain of `links` cleanups on `c`, each spinning for `each` in its
/// first poll (they end there, so each end is booked on its lane); counts
/// the cleanups called.
fn spinning_chain(c: &Compactor, links: usize, each: Duration) -> Arc<AtomicUsize> {
    let ran = Arc::new(AtomicUsize::new(0));
    chain_of(c, links, "link", |task, _| {
        let ran = ran.clone();
        task.register(move || {
            ran.fetch_add(1, Ordering::SeqCst);
            let until = Instant::now() + each;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            async {}
        })
    });
    ran
}

/// An instance whose run may take long: what runs here ends on its own.
fn long() -> compactor::Builder {
    Compactor::builder()
        .deadline(LONG * 2)
        .default_timeout(LONG)
}

/// `n` tasks `{name}-0`, `{name}-1`, ... each depending on the one before
/// (so the last registered runs first), each registered by `register`
/// (given its builder and its number).
fn chain_of(
    c: &Compactor,
    n: usize,
    name: &str,
    mut register: impl FnMut(compactor::TaskBuilder<'_>, usize) -> Result<TaskHandle, compactor::Error>,
) {
    let mut previous: Option<TaskHandle> = None;
    for i in 0..n {
        let mut task = c.task(format!("{name}-{i}"));
        if let Some(p) = &previous {
            task = task.depends_on(p);
        }
        previous = Some(register(task, i).unwrap());
    }
}

fn runtime_of(flavor: &str) -> tokio::runtime::Runtime {
    match flavor {
        "current-thread" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        _ => multi_thread(2),
    }
}

/// A chain that goes on by bookings on the parked runner, far longer than
/// the deadline: the report comes by the deadline + 50 ms and no link
/// starts after it.
#[test]
fn a_chain_that_books_itself_stops_at_the_deadline_and_runs_nothing_after_the_report() {
    // About 200 µs each: the chain would take about a second. (Not more
    // links: skipping tens of thousands at the deadline alone takes longer
    // than 50 ms in a debug build, with the change or without.)
    const LINKS: usize = 5_000;
    for flavor in ["multi-thread", "current-thread"] {
        let runtime = runtime_of(flavor);
        let deadline = Duration::from_millis(150);
        let c = Compactor::builder().deadline(deadline).build();
        let ran = spinning_chain(&c, LINKS, Duration::from_micros(200));
        let began = Instant::now();
        let report = runtime
            .block_on(async { tokio::time::timeout(SOON, c.shutdown()).await })
            .unwrap_or_else(|_| panic!("{flavor}: no report"));
        let took = began.elapsed();
        let at_report = ran.load(Ordering::SeqCst);
        assert!(at_report < LINKS, "{flavor}: the whole chain ran");
        assert!(
            report.duration() < deadline + Duration::from_millis(50),
            "{flavor}: the report took {:?} (wall clock {took:?})",
            report.duration()
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            at_report,
            "{flavor}: links started after the report"
        );
        runtime.shutdown_background();
    }
}

/// A limit that an end booked on the parked runner brings sooner than the
/// runner's alarm (set for 30 s and more): a freed cleanup that never ends
/// is stopped at its own timeout, and a phase reached by bookings is
/// stopped at its budget, not at the deadline.
#[test]
fn limits_brought_sooner_by_an_end_booked_while_parked_are_kept() {
    type Shape = fn() -> (Compactor, &'static str, Outcome);
    let shapes: Vec<(&str, Shape)> = vec![
        ("a freed cleanup's timeout", || {
            let c = long().build();
            let hangs = c
                .task("hangs")
                .timeout(Duration::from_millis(50))
                .register(std::future::pending::<()>)
                .unwrap();
            let mut previous = hangs;
            for i in 0..50 {
                previous = c
                    .task(format!("link-{i}"))
                    .depends_on(&previous)
                    .register(|| async {})
                    .unwrap();
            }
            (c, "hangs", Outcome::TimedOut)
        }),
        ("a phase's budget, the phase reached by a booking", || {
            let c = long()
                .phase_budget(Priority::Normal, Duration::from_millis(50))
                .build();
            c.register("hangs", std::future::pending::<()>).unwrap();
            let mut previous: Option<TaskHandle> = None;
            for i in 0..50 {
                let mut task = c.task(format!("first-{i}")).priority(Priority::High);
                if let Some(p) = &previous {
                    task = task.depends_on(p);
                }
                previous = Some(task.register(|| async {}).unwrap());
            }
            (c, "hangs", Outcome::Cancelled)
        }),
    ];
    for (name, shape) in shapes {
        for flavor in ["current-thread", "multi-thread"] {
            let runtime = runtime_of(flavor);
            let (c, hangs, outcome) = shape();
            let began = Instant::now();
            let report = runtime
                .block_on(async { tokio::time::timeout(SOON, c.shutdown()).await })
                .unwrap_or_else(|_| panic!("{name} on {flavor}: no report in {SOON:?}"));
            assert_eq!(
                report.task(hangs).unwrap().outcome(),
                &outcome,
                "{name} on {flavor}\n{report}"
            );
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "{name} on {flavor}: took {:?}\n{report}",
                began.elapsed()
            );
            runtime.shutdown_background();
        }
    }
}

/// Calls back into an instance when dropped.
struct CallsBack {
    own: Compactor,
    parent: Compactor,
}

impl Drop for CallsBack {
    fn drop(&mut self) {
        for c in [&self.own, &self.parent] {
            let _ = c.progress();
            let _ = c.wait().now_or_never();
            assert!(c.register("late", || async {}).is_err());
            let so_far = c.shutdown_blocking();
            assert!(!so_far.tasks().is_empty());
        }
    }
}

/// Cleanups of a scope's chain (whose ends are booked while its runner is
/// parked) whose closure and future, when dropped, ask their own instance
/// and its parent for progress and the report, try to register, and call
/// `shutdown_blocking`: no deadlock, every link runs, the reports come.
#[test]
fn drops_that_call_back_into_their_instance_and_its_parent_while_the_chain_books_itself() {
    for flavor in ["multi-thread", "current-thread"] {
        let runtime = runtime_of(flavor);
        let parent = Compactor::builder()
            .deadline(Duration::from_secs(10))
            .build();
        let scope = parent.task("scope").scope().unwrap();
        let mut previous: Option<TaskHandle> = None;
        for i in 0..20 {
            let mut task = scope.task(format!("link-{i}"));
            if let Some(p) = &previous {
                task = task.depends_on(p);
            }
            let closure_guard = CallsBack {
                own: scope.clone(),
                parent: parent.clone(),
            };
            let (own, up) = (scope.clone(), parent.clone());
            previous = Some(
                task.register(once(move || {
                    let _ = &closure_guard;
                    let future_guard = CallsBack { own, parent: up };
                    async move {
                        let _ = &future_guard;
                    }
                }))
                .unwrap(),
            );
        }
        let report = runtime
            .block_on(async { tokio::time::timeout(SOON, parent.shutdown()).await })
            .unwrap_or_else(|_| panic!("{flavor}: no report in {SOON:?}"));
        assert!(report.is_clean(), "{flavor}\n{report}");
        let scope_report = scope.wait().now_or_never().expect("the scope's report");
        assert!(scope_report.is_clean(), "{flavor}\n{scope_report}");
        runtime.shutdown_background();
    }
}

/// A failed attempt's error whose `Drop` calls `shutdown_blocking` on its
/// own instance (documented for a `Drop`: "called from inside the run it
/// returns the report as it stands"): the runner lets go of the error on a
/// task of its own, part of the run, so the call gets the report so far
/// and the run ends on time.
#[test]
fn an_errors_drop_that_calls_shutdown_blocking_on_its_instance_does_not_wedge_the_run() {
    let runtime = multi_thread(2);
    let c = Compactor::builder()
        .deadline(Duration::from_secs(2))
        .build();
    let me = c.clone();
    // The error asks its instance for the report as it is dropped.
    flaky(&c, move || {
        let _ = me.progress();
        let _ = me.shutdown_blocking();
    });
    let report = runtime.block_on(async { tokio::time::timeout(SOON, c.shutdown()).await });
    // Its threads may be wedged for good: not waited for.
    runtime.shutdown_background();
    let report =
        report.unwrap_or_else(|_| panic!("no report {SOON:?} into a run with a 2 s deadline"));
    assert!(report.duration() < Duration::from_millis(2050), "{report}");
}
