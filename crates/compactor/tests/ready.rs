//! The ready-made cleanups, each against the real thing: tokio tasks,
//! threads, a file on disk, a directory, a child process, a secret.
//! (`cargo test --workspace` builds the crate with `process` and `zeroize`.)

use compactor::cleanup::{
    cancel_token, child_process, flush_file, join_handle, join_set, once, secret, temp_dir, thread,
};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compactor::{Category, Compactor, Error, Outcome};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("compactor-ready-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A task that never stops by itself, counting its ticks (one per 5 ms).
fn ticking() -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let ticks = Arc::new(AtomicUsize::new(0));
    let counter = ticks.clone();
    let task = tokio::spawn(async move {
        while counter.fetch_add(1, Ordering::SeqCst) < usize::MAX {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (task, ticks)
}

#[tokio::test]
async fn a_task_that_stops_on_the_token_is_joined() {
    let c = Compactor::new();
    let stop = c.shutdown_token();
    let worker = tokio::spawn(async move { stop.cancelled().await });
    c.task("worker")
        .register(join_handle(worker, Duration::from_secs(5)))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.tasks()[0].category(), &Category::Task);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ignores_the_token_is_aborted_after_the_grace() {
    let c = Compactor::new();
    let (stubborn, ticks) = ticking();
    c.task("stubborn")
        .register(join_handle(stubborn, Duration::from_millis(50)))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.tasks()[0].outcome(),
        &Outcome::Failed("did not finish within 50ms; aborted".into())
    );
    let after = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        after,
        "the task no longer runs"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_that_returns_an_error_fails_the_cleanup_with_it() {
    let c = Compactor::new();
    let worker = tokio::spawn(async { Err::<(), _>("queue closed uncleanly") });
    c.task("worker")
        .register(join_handle(worker, Duration::from_secs(5)))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.tasks()[0].outcome(),
        &Outcome::Failed("queue closed uncleanly".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_cut_off_by_the_cleanups_timeout_is_aborted_not_detached() {
    let c = Compactor::new();
    let (stubborn, ticks) = ticking();
    // The task's timeout (100 ms) ends the cleanup before its grace (10 s).
    c.task("stubborn")
        .timeout(Duration::from_millis(100))
        .register(join_handle(stubborn, Duration::from_secs(10)))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.tasks()[0].outcome(), &Outcome::TimedOut);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let after = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        after,
        "the task no longer runs"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_join_handle_leaves_the_task_as_it_was() {
    let c = Compactor::new();
    c.register("worker", || async {}).unwrap();
    let (worker, ticks) = ticking();
    let e = c
        .task("worker")
        .register(join_handle(worker, Duration::from_secs(1)))
        .unwrap_err();
    assert_eq!(e, Error::DuplicateName("worker".into()));
    let before = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ticks.load(Ordering::SeqCst) > before, "still running");
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_cleanup_owns_what_it_cleans_up() {
    let c = Compactor::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
    let flushed = Arc::new(AtomicUsize::new(0));
    let seen = flushed.clone();
    c.register(
        "queue",
        once(move || async move {
            tx.send(7).await.unwrap();
            drop(tx);
        }),
    )
    .unwrap();
    c.task("sync-flush")
        .register_blocking(once(move || seen.store(1, Ordering::SeqCst)))
        .unwrap();
    assert!(c.shutdown().await.is_clean());
    assert_eq!(rx.recv().await, Some(7));
    assert_eq!(rx.recv().await, None, "the sender went with the cleanup");
    assert_eq!(flushed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_one_shot_cleanup_with_retries_is_refused_and_nothing_is_lost() {
    let c = Compactor::new();
    c.register("kept", || async {}).unwrap();
    let e = c
        .task("once")
        .retries(2)
        .register(once(|| async {}))
        .unwrap_err();
    assert_eq!(
        e,
        Error::RetriesNeedRepeatable {
            task: "once".into()
        }
    );
    assert_eq!(c.plan().inventory().tasks(), 1);
    let _ = c.shutdown().await;
    let e = c
        .task("late")
        .retries(2)
        .register(once(|| async {}))
        .unwrap_err();
    assert_eq!(
        e,
        Error::ShuttingDown,
        "after the shutdown began, that first"
    );
}

#[tokio::test(start_paused = true)]
async fn a_join_set_is_drained_then_aborted() {
    let c = Compactor::new();
    let mut set = tokio::task::JoinSet::new();
    let stop = c.shutdown_token();
    for _ in 0..3 {
        let stop = stop.clone();
        set.spawn(async move { stop.cancelled().await });
    }
    set.spawn(std::future::pending::<()>());
    c.task("workers")
        .register(join_set(set, Duration::from_millis(50)))
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.tasks()[0].outcome(),
        &Outcome::Failed("1 task(s) aborted after 50ms, 0 panicked".into())
    );
}

#[tokio::test]
async fn a_thread_is_joined_off_the_async_threads() {
    let c = Compactor::new();
    let done = Arc::new(AtomicUsize::new(0));
    let flag = done.clone();
    // The thread waits for a message from a task on this (one-thread)
    // runtime, sent once the shutdown began: a join on the runtime's thread
    // would keep that task from running until the wait gave up.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let io_thread = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            flag.store(1, Ordering::SeqCst);
        }
    });
    c.task("io-thread").register(thread(io_thread)).unwrap();
    let began = c.shutdown_token();
    tokio::spawn(async move {
        began.cancelled().await;
        let _ = tx.send(());
    });
    let panicking = std::thread::spawn(|| panic!("thread bug"));
    c.task("bad-thread").register(thread(panicking)).unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("io-thread").unwrap().outcome(),
        &Outcome::Succeeded
    );
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(
        report.task("bad-thread").unwrap().outcome(),
        &Outcome::Failed("the thread panicked: thread bug".into())
    );
}

#[tokio::test]
async fn a_buffered_file_is_flushed_and_synced_to_disk() {
    let dir = scratch("file");
    let path = dir.join("events.log");
    let writer = Arc::new(Mutex::new(std::io::BufWriter::with_capacity(
        1 << 16,
        std::fs::File::create(&path).unwrap(),
    )));
    writeln!(writer.lock().unwrap(), "buffered line").unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "still in the buffer"
    );
    let c = Compactor::new();
    c.task("log").register(flush_file(writer.clone())).unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "buffered line\n");
    assert_eq!(report.tasks()[0].category(), &Category::File);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_temporary_directory_is_removed() {
    let dir = scratch("tmp");
    std::fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    std::fs::write(dir.join("nested/deeper/data.bin"), [1, 2, 3]).unwrap();
    let c = Compactor::new();
    c.task("scratch").register(temp_dir(&dir)).unwrap();
    c.task("already-gone")
        .register(temp_dir(dir.join("never-created")))
        .unwrap();
    let report = c.shutdown().await;
    assert!(report.is_clean(), "{report}");
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_token_is_cancelled_as_a_step_of_the_graph() {
    let c = Compactor::new();
    let workers = tokio_util::sync::CancellationToken::new();
    let stop_workers = c
        .task("stop-workers")
        .register(cancel_token(workers.clone()))
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let (token, slot) = (workers.clone(), seen.clone());
    c.task("drain-queue")
        .depends_on(&stop_workers)
        .register(move || {
            // Runs before the workers are stopped.
            *slot.lock().unwrap() = Some(token.is_cancelled());
            std::future::ready(())
        })
        .unwrap();
    assert!(c.shutdown().await.is_clean());
    assert_eq!(*seen.lock().unwrap(), Some(false));
    assert!(workers.is_cancelled());
}

#[tokio::test]
async fn a_secret_is_wiped() {
    let key = Arc::new(Mutex::new([0x5au8; 32]));
    let c = Compactor::new();
    c.task("api-key").register(secret(key.clone())).unwrap();
    let report = c.shutdown().await;
    assert_eq!(*key.lock().unwrap(), [0u8; 32]);
    assert_eq!(report.tasks()[0].category(), &Category::Memory);
}

#[tokio::test]
async fn a_join_set_or_a_thread_with_retries_is_refused_not_reported_clean() {
    // One-shot: a retry would find the set or thread gone and report a
    // failure as a success.
    let c = Compactor::new();
    let mut set = tokio::task::JoinSet::new();
    set.spawn(async {});
    let set = c
        .task("set")
        .retries(1)
        .register(join_set(set, Duration::from_secs(1)));
    assert_eq!(
        set.unwrap_err(),
        Error::RetriesNeedRepeatable { task: "set".into() }
    );
    let worker = std::thread::spawn(|| ());
    let joined = c.task("thread").retries(1).register(thread(worker));
    assert_eq!(
        joined.unwrap_err(),
        Error::RetriesNeedRepeatable {
            task: "thread".into()
        }
    );
    assert!(c.shutdown().await.tasks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_set_leaves_its_tasks_running() {
    let c = Compactor::new();
    c.register("dup", || async {}).unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    let flag = finished.clone();
    set.spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        flag.store(1, Ordering::SeqCst);
    });
    assert!(matches!(
        c.register("dup", join_set(set, Duration::from_secs(1))),
        Err(Error::DuplicateName(_))
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 1, "detached, not aborted");
    // An accepted one whose cleanup never runs aborts them.
    let mut set = tokio::task::JoinSet::new();
    let flag = finished.clone();
    set.spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        flag.store(2, Ordering::SeqCst);
    });
    let handle = c
        .register("set", join_set(set, Duration::from_secs(1)))
        .unwrap();
    assert!(handle.unregister());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 1, "aborted with its task");
}

#[cfg(unix)]
mod child_process {
    use super::*;

    /// Whether a process with this id exists (a zombie counts).
    fn exists(pid: u32) -> bool {
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a process id");
        rustix::process::test_kill_process(pid).is_ok()
    }

    #[tokio::test]
    async fn a_child_that_honours_sigterm_exits_within_the_grace() {
        let child = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let c = Compactor::new();
        c.task("sleeper")
            .register(child_process(child, Duration::from_secs(5)))
            .unwrap();
        let report = c.shutdown().await;
        assert!(report.is_clean(), "{report}");
        assert!(report.tasks()[0].duration() < Duration::from_secs(5));
        assert!(!exists(pid), "exited and reaped");
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_and_reaped() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the trap is set.
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        let pid = child.id().unwrap();
        let c = Compactor::new();
        c.task("stubborn")
            .register(child_process(child, Duration::from_millis(200)))
            .unwrap();
        let report = c.shutdown().await;
        assert_eq!(
            report.tasks()[0].outcome(),
            &Outcome::Failed("did not exit within 200ms of SIGTERM; killed".into())
        );
        assert!(!exists(pid), "killed and reaped, no zombie left");
    }

    /// Starts `sh -c script` and waits for its first line (`ready`).
    async fn shell(script: &str) -> tokio::process::Child {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        child
    }

    #[tokio::test]
    async fn a_child_that_exits_with_an_error_fails_the_cleanup() {
        let child = shell("trap 'exit 3' TERM; echo ready; while :; do sleep 1; done").await;
        let c = Compactor::new();
        c.task("worker")
            .register(child_process(child, Duration::from_secs(5)))
            .unwrap();
        let report = c.shutdown().await;
        assert_eq!(
            report.tasks()[0].outcome(),
            &Outcome::Failed("exited with exit status: 3".into())
        );
    }

    #[tokio::test]
    async fn a_child_that_had_already_failed_fails_the_cleanup() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        // Let it end first (without reaping it here).
        while exists(child.id().unwrap()) && child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = Compactor::new();
        c.task("batch")
            .register(child_process(child, Duration::from_secs(5)))
            .unwrap();
        let report = c.shutdown().await;
        assert_eq!(
            report.tasks()[0].outcome(),
            &Outcome::Failed("had exited before: exited with exit status: 7".into())
        );
    }

    #[tokio::test]
    async fn a_child_cut_off_by_the_tasks_timeout_is_killed_not_left_running() {
        // Ignores SIGTERM; the grace (10 s) is longer than the task's
        // timeout (300 ms), so the timeout cuts the cleanup off.
        let child = shell("trap '' TERM; echo ready; while :; do sleep 1; done").await;
        let pid = child.id().unwrap();
        let c = Compactor::new();
        c.task("stubborn")
            .timeout(Duration::from_millis(300))
            .register(child_process(child, Duration::from_secs(10)))
            .unwrap();
        let report = c.shutdown().await;
        assert_eq!(report.tasks()[0].outcome(), &Outcome::TimedOut);
        // How the child ended is in the report.
        assert_eq!(
            report.tasks()[0].interruption(),
            Some(compactor::report::Interruption::Killed {
                pid: Some(pid),
                code: None,
                signal: Some(9),
            })
        );
        let table = report.to_string();
        assert!(
            table.contains(&format!(
                "its child process {pid} killed, ended by signal 9"
            )),
            "{table}"
        );
        assert!(
            !exists(pid),
            "killed and reaped by the report, no zombie left"
        );
    }

    #[tokio::test]
    async fn a_child_whose_cleanup_never_ran_is_killed() {
        let child = shell("trap '' TERM; echo ready; while :; do sleep 1; done").await;
        let pid = child.id().unwrap();
        let c = Compactor::builder()
            .deadline(Duration::from_millis(200))
            .build();
        c.task("child")
            .register(child_process(child, Duration::from_secs(10)))
            .unwrap();
        // Runs first and holds the run past its deadline: the child's
        // cleanup is skipped.
        c.task("holder")
            .priority(compactor::Priority::Critical)
            .register(std::future::pending::<()>)
            .unwrap();
        let report = c.shutdown().await;
        let task = report.task("child").unwrap();
        assert!(matches!(task.outcome(), Outcome::Skipped(_)));
        assert_eq!(
            task.interruption(),
            Some(compactor::report::Interruption::Killed {
                pid: Some(pid),
                code: None,
                signal: Some(9),
            }),
            "{report}"
        );
        assert!(
            !exists(pid),
            "a skipped child is killed and reaped by the report"
        );
    }

    #[test]
    fn a_hundred_skipped_children_are_reaped_by_a_report_on_time() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let c = Compactor::builder()
            .deadline(Duration::from_millis(200))
            .build();
        let mut pids = Vec::new();
        runtime.block_on(async {
            for i in 0..100 {
                let child = tokio::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap();
                pids.push(child.id().unwrap());
                c.task(format!("child-{i}"))
                    .register(child_process(child, Duration::from_secs(10)))
                    .unwrap();
            }
        });
        // Holds the run past its deadline: every child's cleanup is skipped.
        c.task("holder")
            .priority(compactor::Priority::Critical)
            .register(std::future::pending::<()>)
            .unwrap();
        let began = std::time::Instant::now();
        let report = runtime.block_on(c.shutdown());
        let took = began.elapsed();
        assert!(took < Duration::from_millis(250), "{took:?}\n{report}");
        let left: Vec<u32> = pids.iter().copied().filter(|&p| exists(p)).collect();
        assert!(left.is_empty(), "not reaped by the report: {left:?}");
        for (i, pid) in pids.into_iter().enumerate() {
            let how = report.task(&format!("child-{i}")).unwrap().interruption();
            assert!(
                matches!(how, Some(compactor::report::Interruption::Killed { pid: Some(p), .. }) if p == pid),
                "child-{i}: {how:?}\n{report}"
            );
        }
        runtime.shutdown_background();
    }

    #[tokio::test]
    async fn a_child_that_ctrl_c_already_stopped_is_a_clean_stop() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // A terminal's Ctrl-C reaches the whole process group.
        let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let _ = child.wait().await;
        let c = Compactor::new();
        c.task("sleeper")
            .register(child_process(child, Duration::from_secs(5)))
            .unwrap();
        let report = c.shutdown().await;
        assert!(report.is_clean(), "{report}");
    }
}
