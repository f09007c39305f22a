//! Where the engine's parts meet: a lane's take-over within a few ms, the
//! runner's stop racing a lane's begin, cleanups let go of together,
//! killed children booked to their own task, and `run_until_shutdown`'s
//! closure.

use compactor::cleanup::child_process;
use futures::FutureExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compactor::report::Interruption;
use compactor::{Compactor, Outcome, Priority};

use crate::common::multi_thread;

const HOLD: Duration = Duration::from_secs(2);

/// Whether a process with this id exists (a zombie counts).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn stubborn_child() -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(false)
        .spawn()
        .expect("sh");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(out)
        .read_line(&mut line)
        .await
        .unwrap();
    child
}

/// Registers `n` quick cleanups recording when they ran, then a holder
/// whose first poll holds its thread for `HOLD`.
fn quick_and_holder(
    c: &Compactor,
    n: usize,
) -> (
    Arc<Mutex<Vec<Instant>>>,
    compactor::TaskHandle,
    Vec<compactor::TaskHandle>,
) {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..n {
        let ran = ran.clone();
        handles.push(
            c.register(format!("quick-{i}"), move || {
                ran.lock().unwrap().push(Instant::now());
                async {}
            })
            .unwrap(),
        );
    }
    let holder = c
        .task("holder")
        .timeout(Duration::from_secs(10))
        .register(|| async { std::thread::sleep(HOLD) })
        .unwrap();
    (ran, holder, handles)
}

/// Shuts `c` down on `runtime` (a hang fails) and reads when the quick
/// cleanups ran.
fn shut_down(
    runtime: &tokio::runtime::Runtime,
    c: &Compactor,
    ran: &Mutex<Vec<Instant>>,
) -> (compactor::ShutdownReport, Vec<Instant>) {
    let report = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), c.shutdown())
            .await
            .expect("hang")
    });
    (report, ran.lock().unwrap().clone())
}

/// A first poll that holds its thread, with 40 attempts queued behind it
/// in its lane: they are taken over within a few ms (two looks 1 ms
/// apart), not after the hold.
#[test]
fn take_over_latency_direct() {
    let runtime = multi_thread(2);
    let c = Compactor::new();
    let (ran, _, _) = quick_and_holder(&c, 40);
    // Goes out alone; the holder heads the lane.
    c.register("alone", || async {}).unwrap();
    let began = Instant::now();
    let (report, ran) = shut_down(&runtime, &c, &ran);
    assert_eq!(ran.len(), 40, "{report}");
    let last = ran.iter().max().unwrap().duration_since(began);
    assert!(
        last < Duration::from_millis(100),
        "queued attempts waited {last:?}\n{report}"
    );
    runtime.shutdown_background();
}

/// The same, with the holder and the queue freed by an end booked in place
/// on a lane while the runner is parked.
#[test]
fn take_over_latency_booked_in_place() {
    for _ in 0..3 {
        let runtime = multi_thread(2);
        let c = Compactor::new();
        let (ran, holder, quick) = quick_and_holder(&c, 40);
        let mut gate = c.task("gate");
        gate = gate.depends_on(&holder);
        for q in &quick {
            gate = gate.depends_on(q);
        }
        let gate_ended = Arc::new(Mutex::new(None));
        let ge = gate_ended.clone();
        gate.register(move || {
            // Long enough for the runner to park.
            std::thread::sleep(Duration::from_millis(5));
            *ge.lock().unwrap() = Some(Instant::now());
            async {}
        })
        .unwrap();
        c.register("alone", || async {}).unwrap();
        let (report, ran) = shut_down(&runtime, &c, &ran);
        let from = gate_ended.lock().unwrap().unwrap();
        assert_eq!(ran.len(), 40, "{report}");
        let last = ran.iter().max().unwrap().duration_since(from);
        assert!(
            last < Duration::from_millis(100),
            "queued attempts waited {last:?}\n{report}"
        );
        runtime.shutdown_background();
    }
}

/// A closure that panics before returning its future: the run goes on, the
/// code is 101.
#[tokio::test]
async fn run_until_shutdown_closure_panics() {
    let c = Compactor::builder().auto_listen(false).build();
    let ran = crate::common::register_flush(&c);
    #[allow(unreachable_code)]
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        c.run_until_shutdown(|_stop| -> std::future::Ready<()> { panic!("closure broke") }),
    )
    .await
    .expect("hang");
    assert_eq!(code.exit_code(), 101);
    assert!(ran.load(Ordering::SeqCst));
    assert!(matches!(
        c.wait().now_or_never().expect("the run is over").reason(),
        compactor::report::ShutdownReason::Panic(m) if m.contains("closure broke")
    ));
}

/// A non-Send service future (an `Rc` held across an await) on a
/// current-thread runtime.
#[tokio::test]
async fn run_until_shutdown_non_send_future() {
    let c = Compactor::builder().auto_listen(false).build();
    let trigger = c.clone();
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        c.run_until_shutdown(|stop| async move {
            let rc = std::rc::Rc::new(1);
            trigger.trigger();
            stop.cancelled().await;
            drop(rc);
        }),
    )
    .await
    .expect("hang");
    assert_eq!(code.exit_code(), 0);
}

/// A retry after an attempt stopped while its first poll held the thread,
/// and that then returned Ok: the closure was called once. The report must
/// not count a second attempt that never called it, nor fail the task with
/// "the cleanup was already dropped".
#[test]
fn retry_after_held_attempt_counts_calls() {
    let runtime = multi_thread(2);
    let c = Compactor::new();
    let calls = Arc::new(AtomicU32::new(0));
    let n = calls.clone();
    c.task("held")
        .timeout(Duration::from_millis(50))
        .retries(1)
        .register(move || {
            n.fetch_add(1, Ordering::SeqCst);
            async { std::thread::sleep(Duration::from_millis(300)) }
        })
        .unwrap();
    c.register("alone", || async {}).unwrap();
    let report = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), c.shutdown())
            .await
            .expect("hang")
    });
    let task = report.task("held").unwrap();
    assert_eq!(
        task.attempts(),
        calls.load(Ordering::SeqCst),
        "attempts counted vs closure calls\n{report}"
    );
    runtime.shutdown_background();
}

/// Zero timeouts race the lane's begin against the runner's stop, 100
/// rounds of 200 tasks: exactly one of them comes first, so the report
/// counts an attempt only for a closure that was called.
#[test]
fn stop_begin_race_attempts_match_calls() {
    let runtime = multi_thread(2);
    for _ in 0..100 {
        let c = Compactor::new();
        let calls: Vec<Arc<AtomicU32>> = (0..200).map(|_| Arc::default()).collect();
        for (i, n) in calls.iter().enumerate() {
            let n = n.clone();
            c.task(format!("t{i}"))
                .timeout(Duration::from_nanos(1))
                .register(move || {
                    n.fetch_add(1, Ordering::SeqCst);
                    async { tokio::task::yield_now().await }
                })
                .unwrap();
        }
        let report = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), c.shutdown())
                .await
                .expect("hang")
        });
        for (i, n) in calls.iter().enumerate() {
            let task = report.task(&format!("t{i}")).unwrap();
            assert!(
                task.attempts() <= n.load(Ordering::SeqCst),
                "t{i}: {} attempts, {} calls\n{report}",
                task.attempts(),
                n.load(Ordering::SeqCst)
            );
        }
    }
    runtime.shutdown_background();
}

/// Two tasks each owning a child, both cut off by their timeout: each
/// reports its own child killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_children_each_booked_to_its_task() {
    let a = stubborn_child().await;
    let b = stubborn_child().await;
    let (pa, pb) = (a.id().unwrap(), b.id().unwrap());
    let c = Compactor::new();
    c.task("a")
        .timeout(Duration::from_millis(200))
        .register(child_process(a, Duration::from_secs(10)))
        .unwrap();
    c.task("b")
        .timeout(Duration::from_millis(250))
        .register(child_process(b, Duration::from_secs(10)))
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), c.shutdown())
        .await
        .unwrap();
    let pid_of = |name: &str| match report.task(name).unwrap().interruption() {
        Some(Interruption::Killed { pid, .. }) => pid,
        other => panic!("{name}: {other:?}\n{report}"),
    };
    assert_eq!(pid_of("a"), Some(pa), "{report}");
    assert_eq!(pid_of("b"), Some(pb), "{report}");
    assert!(!exists(pa) && !exists(pb));
}

/// A scope's child, the scope cut off by the parent's deadline: the child
/// is gone by the parent's report, and the parent books no child to a task
/// that did not own it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_child_cut_off_by_parent_deadline() {
    let child = stubborn_child().await;
    let pid = child.id().unwrap();
    let c = Compactor::builder()
        .deadline(Duration::from_millis(300))
        .build();
    let other = stubborn_child().await;
    let other_pid = other.id().unwrap();
    c.task("other")
        .register(child_process(other, Duration::from_secs(10)))
        .unwrap();
    let scope = c.task("conn").scope().unwrap();
    scope
        .task("proc")
        .register(child_process(child, Duration::from_secs(10)))
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), c.shutdown())
        .await
        .unwrap();
    assert!(
        !exists(pid),
        "the scope's child outlived the report\n{report}"
    );
    assert!(!exists(other_pid), "{report}");
    if let Some(Interruption::Killed { pid: p, .. }) = report.task("conn").unwrap().interruption() {
        assert_eq!(p, Some(pid), "{report}");
    }
    if let Some(Interruption::Killed { pid: p, .. }) = report.task("other").unwrap().interruption()
    {
        assert_eq!(p, Some(other_pid), "{report}");
    }
}

/// A skipped child-process task let go of in the same turn as a skipped
/// cleanup whose `Drop` holds its thread: each has a task of its own, so
/// the child is killed and reaped by the report, not behind that `Drop`.
#[test]
fn child_killed_behind_an_unrelated_slow_drop() {
    let runtime = multi_thread(2);
    let (report, pid) = runtime.block_on(async {
        let child = stubborn_child().await;
        let pid = child.id().unwrap();
        let c = Compactor::builder()
            .deadline(Duration::from_millis(150))
            .build();
        crate::common::register_slow_drop(&c, Duration::from_millis(600));
        c.task("proc")
            .register(child_process(child, Duration::from_secs(10)))
            .unwrap();
        c.task("holder")
            .priority(Priority::Critical)
            .register(std::future::pending::<()>)
            .unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), c.shutdown())
            .await
            .unwrap();
        (report, pid)
    });
    let alive = exists(pid);
    let proc = report.task("proc").unwrap();
    assert!(matches!(proc.outcome(), Outcome::Skipped(_)), "{report}");
    assert!(
        !alive,
        "child {pid} still alive at the report ({:?})\n{report}",
        proc.interruption()
    );
    runtime.shutdown_background();
}
