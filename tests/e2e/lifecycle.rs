//! The process lifecycle with real processes and real signals: exit codes,
//! cleanup order, a forced exit past a hanging cleanup, signals racing
//! registration, the panic hook, a service that ends by itself.

use std::time::{Duration, Instant};

use compactor_e2e::{RUN, Running, cleanups, printed_report, report_json, stress, task_json};

fn app(args: &[&str]) -> Running {
    Running::ready(env!("CARGO_BIN_EXE_lifecycle-app"), args)
}

#[test]
fn sigterm_runs_the_cleanup_in_order_and_exits_143() {
    let app = app(&[]);
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn sigint_exits_130() {
    let app = app(&[]);
    app.signal("INT");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(130), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn sighup_exits_129_when_configured() {
    let app = app(&["--also-hup"]);
    app.signal("HUP");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(129), "{out:#?}");
    assert_eq!(cleanups(&out).len(), 3);
}

#[test]
fn a_clean_run_can_exit_zero_for_supervisors() {
    let app = app(&["--exit", "zero"]);
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(0), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn a_second_signal_exits_at_once_past_a_hanging_cleanup() {
    for _ in 0..stress(1) {
        let mut app = app(&["--hang"]);
        app.signal("TERM");
        app.wait_for("cleanup stuck", RUN);
        let sent = Instant::now();
        app.signal("TERM");
        let (code, out, err) = app.finish_all(RUN);
        let took = sent.elapsed();
        assert_eq!(code, Some(143), "{out:#?} {err:#?}");
        // The run's deadline is 20 s: an exit this far before it is the second
        // signal's, which the stderr line below names as such.
        assert!(took < Duration::from_secs(10), "took {took:?}");
        let line = err
            .iter()
            .find(|l| l.contains("again during shutdown"))
            .unwrap_or_else(|| panic!("no forced-exit line in {err:#?}"));
        assert!(line.contains("still running: stuck"), "{line}");
        // The stuck cleanup is Critical: nothing else had started.
        assert_eq!(cleanups(&out), ["stuck"]);
    }
}

#[test]
fn a_second_signal_runs_the_final_flush_before_it_exits() {
    let dir = compactor_e2e::scratch_dir("final-flush");
    let log = dir.join("app.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let mut app = app(&["--final-flush", "--log-file", &log_arg]);
    app.signal("TERM");
    // 20,000 lines logged through the non-blocking writer just before.
    app.wait_for("cleanup chatty", RUN);
    app.signal("TERM");
    let (code, out, err) = app.finish_all(RUN);
    assert_eq!(code, Some(143), "{out:#?} {err:#?}");
    assert!(
        err.iter().any(|l| l.contains("again during shutdown")),
        "{err:#?}"
    );
    assert!(out.iter().any(|l| l == "final flush ran"), "{out:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("last words")).count();
    assert_eq!(lines, 20_000, "the writer's last lines reached the file");
}

#[test]
fn the_deadline_watchdog_runs_the_final_flush_when_every_worker_is_stuck() {
    let mut app = app(&["--hang-workers", "--final-flush", "--deadline-ms", "300"]);
    app.signal("TERM");
    app.wait_for("cleanup stuck-", RUN);
    let (code, out, err) = app.finish_all(RUN);
    assert_eq!(code, Some(143), "{out:#?} {err:#?}");
    assert!(
        err.iter().any(|l| l.contains("passed its deadline")),
        "{err:#?}"
    );
    assert!(out.iter().any(|l| l == "final flush ran"), "{out:#?}");
}

#[test]
fn a_signal_while_tasks_are_being_registered_loses_none_and_runs_none_twice() {
    for _ in 0..stress(1) {
        // The slow `cache` cleanup keeps the run going while the service still
        // tries to register.
        let mut app = app(&[
            "--mode",
            "run",
            "--register-slowly",
            "400",
            "--slow-cache-ms",
            "300",
        ]);
        app.wait_for("registered 20", RUN);
        app.signal("TERM");
        let (code, out) = app.finish(RUN);
        assert_eq!(code, Some(143), "{out:#?}");
        let accepted: usize = out
            .iter()
            .find_map(|l| l.strip_prefix("accepted "))
            .expect("the app reports what was accepted")
            .parse()
            .unwrap();
        assert!((21..400).contains(&accepted), "accepted {accepted}");
        assert!(
            out.iter().any(|l| l.starts_with("refused ")),
            "registration after the signal is refused"
        );
        let mut ran: Vec<&str> = cleanups(&out)
            .into_iter()
            .filter(|c| c.starts_with("slow-"))
            .collect();
        assert_eq!(ran.len(), accepted, "every accepted cleanup ran");
        ran.sort_unstable();
        ran.dedup();
        assert_eq!(ran.len(), accepted, "none ran twice");
        assert!(printed_report(&out, "SIGTERM"), "{out:#?}");
    }
}

#[test]
fn two_signals_at_once_before_the_run_end_the_process_once() {
    for _ in 0..stress(1) {
        let app = app(&[]);
        app.signal("TERM");
        app.signal("TERM");
        let (code, out, err) = app.finish_all(RUN);
        assert_eq!(code, Some(143), "{out:#?} {err:#?}");
        let ran = cleanups(&out);
        let mut unique = ran.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(ran.len(), unique.len(), "no cleanup twice: {ran:?}");
        // Either the second signal forced the exit during the run, and the
        // stderr line says so, or it came before the listener read the first
        // and counted as one with it (signal-hook coalesces a pending signal):
        // then the whole run ran before the library's exit.
        let forced = err.iter().any(|l| l.contains("again during shutdown"));
        if !forced {
            assert_eq!(ran, ["http", "db", "cache"], "{out:#?} {err:#?}");
        }
    }
}

#[test]
fn a_panic_on_another_thread_starts_the_shutdown() {
    let app = app(&["--mode", "run", "--panic-after-ms", "100"]);
    let (code, out, err) = app.finish_all(RUN);
    assert_eq!(code, Some(101), "{out:#?} {err:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
    let report = report_json(&out);
    let reason = report["reason"]["panic"].as_str().unwrap_or_default();
    assert!(reason.ends_with("worker thread failed"), "{report}");
    assert!(
        err.iter().any(|l| l.contains("worker thread failed")),
        "the previous hook still prints"
    );
}

#[test]
fn a_service_that_ends_by_itself_runs_the_cleanup_and_exits_zero() {
    let app = app(&["--mode", "run", "--service-ms", "100"]);
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(0), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
    let report = report_json(&out);
    assert_eq!(report["reason"], "service_ended", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    // The app's three cleanups and the service's own drain.
    assert_eq!(
        report["tasks"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    assert_eq!(
        task_json(&report, "compactor::service")["outcome"]["kind"],
        "succeeded"
    );
}

#[test]
fn a_service_that_keeps_panicking_is_restarted_then_ends_the_process() {
    let app = app(&["--mode", "restarts"]);
    let (code, out) = app.finish(RUN);
    // A panic started the shutdown: the exit code a panicking `main` has.
    assert_eq!(code, Some(101), "{out:#?}");
    let runs: Vec<&String> = out.iter().filter(|l| l.starts_with("worker run")).collect();
    assert_eq!(
        runs,
        ["worker run 1", "worker run 2", "worker run 3"],
        "{out:#?}"
    );
    let report = report_json(&out);
    let reason = report["reason"]["panic"].as_str().unwrap_or_default();
    assert!(
        reason.contains(
            "service `jobs/worker` panicked: after 2 restarts: worker jobs/worker lost its queue"
        ),
        "{report}"
    );
    assert_eq!(report["failures"][0]["path"], "jobs/worker", "{report}");
    assert_eq!(
        report["failures"][0]["outcome"]["kind"], "panicked",
        "{report}"
    );
    assert_eq!(report["exit_code"], 101, "{report}");
}

#[test]
fn run_until_shutdown_returns_143_after_sigterm_and_main_prints_the_report() {
    let app = app(&["--mode", "run"]);
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    assert!(printed_report(&out, "SIGTERM"), "{out:#?}");
}

#[test]
fn an_abandoned_blocking_cleanup_does_not_keep_the_process_alive_after_main_returns() {
    // The blocking cleanup never returns; the deadline abandons it, main
    // returns, and the runtime's drop must not wait for its thread.
    let args = [
        "--mode",
        "run",
        "--service-ms",
        "50",
        "--stuck-blocking",
        "--deadline-ms",
        "300",
    ];
    let mut app = app(&args);
    app.wait_for("cleanup stuck-fsync", RUN);
    let (code, out) = app.finish(RUN);
    assert_eq!(
        code,
        Some(1),
        "not clean: the cleanup was abandoned; {out:#?}"
    );
    let report = report_json(&out);
    let stuck = task_json(&report, "stuck-fsync");
    assert_eq!(stuck["interruption"], "abandoned", "{stuck}");
}

#[test]
fn a_sync_main_shuts_down_with_shutdown_blocking() {
    let app = app(&["--mode", "blocking"]);
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(0), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn instances_listening_in_one_process_each_run_their_cleanup() {
    // The global instance's slow cache keeps the process alive while the
    // library's instance runs its own cleanup from the same signal.
    let app = app(&["--library", "--slow-cache-ms", "300"]);
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    let ran = cleanups(&out);
    for name in ["library", "http", "db", "cache"] {
        assert_eq!(
            ran.iter().filter(|c| **c == name).count(),
            1,
            "{name} in {ran:?}"
        );
    }
}

#[test]
fn an_instance_that_listens_after_another_went_gets_the_signal() {
    // Without a runtime the process's listener thread starts the run: the
    // first instance's signals were registered and released before the
    // global instance registered them again.
    let app = app(&["--mode", "relisten"]);
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[cfg(unix)]
#[test]
fn after_the_run_a_signal_gets_the_default_handling() {
    // The app keeps running after its shutdown (run mode returns control and
    // lingers): a SIGINT now ends it with 130, as the default action would,
    // by an exit code (a re-raise would fail as PID 1).
    let mut app = app(&[
        "--mode",
        "run",
        "--service-ms",
        "50",
        "--linger-ms",
        "20000",
    ]);
    app.wait_for("reason service ended", RUN);
    app.signal("INT");
    let (status, out, _) = app.finish_with_status(RUN);
    assert_eq!(status.code(), Some(130), "{status:?} {out:#?}");
}

#[cfg(unix)]
#[test]
fn with_auto_listen_off_the_app_keeps_its_signals() {
    use std::os::unix::process::ExitStatusExt;

    let app = app(&["--no-auto-listen"]);
    app.signal("TERM");
    let (status, out, _) = app.finish_with_status(RUN);
    // Nobody handled it: the default action ended the process, no cleanup ran.
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(cleanups(&out).is_empty(), "{out:#?}");
}

#[test]
fn sigusr1_prints_the_plan_then_the_progress_without_starting_a_shutdown() {
    let mut app = app(&["--progress-signal", "--slow-cache-ms", "3000"]);
    app.signal("USR1");
    let plan = app.wait_for_stderr("SIGUSR1: shutdown plan:", RUN);
    assert!(plan[0].contains("3 tasks in 3 phases"), "{plan:#?}");
    assert!(
        plan.iter()
            .any(|l| l.contains("critical path: http -> db -> cache")),
        "{plan:#?}"
    );
    // Still serving: the signal started nothing; a second one prints again.
    app.signal("USR1");
    app.wait_for_stderr("SIGUSR1: shutdown plan:", RUN);
    app.signal("TERM");
    app.wait_for("cleanup cache", RUN);
    app.signal("USR1");
    let progress = app.wait_for_stderr("SIGUSR1: shutdown: 2/3 finished", RUN);
    assert!(
        progress
            .iter()
            .any(|l| l.contains("running  cache  attempt 1")),
        "{progress:#?}"
    );
    let (code, out) = app.finish(RUN);
    assert_eq!(
        code,
        Some(143),
        "the progress signal is not a second signal: {out:#?}"
    );
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}
