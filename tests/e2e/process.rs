//! Where services run: as PID 1 in a PID namespace, under tini and
//! dumb-init, under supervisord; an instance that listened and went; a
//! runtime that went; every runtime worker blocked; the report reaching
//! `main`. Real processes, real signals, the real wrappers from Debian's
//! packages (`.ci/run` installs `tini`, `dumb-init`, `supervisor`); a test
//! whose wrapper is missing skips, naming the package (fails under CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use compactor_e2e::{
    RUN, Running, STARTUP, cleanups, find_tool, not_installed, printed_report, scratch_dir,
    send_signal, skip, stress, tool,
};

fn app_path() -> &'static str {
    env!("CARGO_BIN_EXE_lifecycle-app")
}

fn app(args: &[&str]) -> Running {
    Running::ready(app_path(), args)
}

/// The app started by `wrapper` (its arguments first).
fn wrapped(wrapper: &Path, wrapper_args: &[&str], args: &[&str]) -> Running {
    let mut all: Vec<&str> = wrapper_args.to_vec();
    all.push(app_path());
    all.extend_from_slice(args);
    let mut app = Running::start_path(wrapper, &all);
    app.wait_for("ready", STARTUP);
    app
}

const PID_NAMESPACE: [&str; 3] = ["--pid", "--fork", "--mount-proc"];

/// The app as PID 1 of a PID namespace of its own, under `unshare`: `None`
/// (the test skips, or fails under CI) where `unshare` is missing or cannot
/// make the namespace (it takes root, or user namespaces).
fn as_pid_1(args: &[&str]) -> Option<Running> {
    static USABLE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let usable = USABLE.get_or_init(|| {
        let unshare = find_tool("unshare").ok_or_else(|| not_installed("unshare", "util-linux"))?;
        // This test binary, listing its tests: a program that is surely there.
        let this = std::env::current_exe().expect("the test binary's path");
        let tried = Command::new(&unshare)
            .args(PID_NAMESPACE)
            .arg(this)
            .arg("--list")
            .output()
            .map_err(|e| format!("`unshare` does not start: {e}"))?;
        match tried.status.success() {
            true => Ok(unshare),
            false => Err(format!(
                "`unshare {}` cannot make a PID namespace here (it takes root, or user \
                 namespaces): {}",
                PID_NAMESPACE.join(" "),
                String::from_utf8_lossy(&tried.stderr).trim()
            )),
        }
    });
    match usable {
        Ok(unshare) => Some(wrapped(unshare, &PID_NAMESPACE, args)),
        Err(why) => skip(why),
    }
}

/// The app with `variables` added to its environment.
fn with_env(variables: &[(&str, &str)], args: &[&str]) -> Running {
    let mut command = Command::new(app_path());
    command.args(args).envs(variables.iter().copied());
    let mut app = Running::start(command);
    app.wait_for("ready", STARTUP);
    app
}

#[test]
fn as_pid_1_sigterm_runs_the_cleanup_and_exits_143() {
    let Some(app) = as_pid_1(&[]) else { return };
    let inside = app.children(RUN);
    assert_eq!(inside.len(), 1, "the app under unshare");
    send_signal(inside[0], "TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn as_pid_1_a_signal_after_the_run_exits_with_its_code_not_a_fault() {
    // A re-raised signal is ignored by PID 1; the process must still end.
    let args = [
        "--mode",
        "run",
        "--service-ms",
        "50",
        "--linger-ms",
        "20000",
    ];
    let Some(mut app) = as_pid_1(&args) else {
        return;
    };
    app.wait_for("reason service ended", RUN);
    let inside = app.children(RUN);
    send_signal(inside[0], "INT");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(130), "{out:#?}");
}

#[test]
fn as_pid_1_a_signal_no_instance_listens_for_ends_the_process() {
    let Some(app) = as_pid_1(&["--mode", "dropped"]) else {
        return;
    };
    let inside = app.children(RUN);
    send_signal(inside[0], "TERM");
    let (code, _) = app.finish(RUN);
    assert_eq!(code, Some(143));
}

#[test]
fn under_tini_sigterm_runs_the_cleanup_and_exits_143() {
    let Some(tini) = tool("tini", "tini") else {
        return;
    };
    let app = wrapped(&tini, &["--"], &[]);
    let out = app.stopped_by("TERM", 143);
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn under_dumb_init_sigterm_runs_the_cleanup_and_exits_143() {
    let Some(dumb_init) = tool("dumb-init", "dumb-init") else {
        return;
    };
    let app = wrapped(&dumb_init, &[], &[]);
    let out = app.stopped_by("TERM", 143);
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn supervisorctl_stop_is_graceful_and_never_needs_sigkill() {
    let Some(supervisord) = tool("supervisord", "supervisor") else {
        return;
    };
    let Some(supervisorctl) = tool("supervisorctl", "supervisor") else {
        return;
    };
    let dir = scratch_dir("supervisord");
    let conf = dir.join("supervisord.conf");
    let log = dir.join("app.log");
    let socket = dir.join("supervisor.sock");
    std::fs::write(
        &conf,
        format!(
            "[unix_http_server]\nfile={socket}\n\n\
             [supervisord]\nnodaemon=true\nlogfile={dir}/supervisord.log\npidfile={dir}/supervisord.pid\n\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{socket}\n\n\
             [program:app]\ncommand={app}\nautostart=true\nautorestart=false\nstartsecs=1\n\
             stopsignal=TERM\nstopwaitsecs=20\nexitcodes=0,143\nstdout_logfile={log}\nredirect_stderr=true\n",
            socket = socket.display(),
            dir = dir.display(),
            app = app_path(),
            log = log.display(),
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let mut supervisord = Running::start_path(&supervisord, &["-c", conf]);
    let ctl = |args: &[&str]| {
        let out = Command::new(&supervisorctl)
            .args(["-c", conf])
            .args(args)
            .output()
            .expect("supervisorctl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let until = std::time::Instant::now() + STARTUP;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(std::time::Instant::now() < until, "the app never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = ctl(&["stop", "app"]);
    assert!(stopped.contains("stopped"), "{stopped}");
    let output = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<String> = output.lines().map(str::to_owned).collect();
    assert_eq!(cleanups(&lines), ["http", "db", "cache"], "{output}");
    let daemon_log = std::fs::read_to_string(dir.join("supervisord.log")).unwrap();
    assert!(
        daemon_log.contains("stopped: app (exit status 143)"),
        "{daemon_log}"
    );
    assert!(!daemon_log.contains("SIGKILL"), "{daemon_log}");
    ctl(&["shutdown"]);
    let _ = supervisord.child.wait();
}

#[test]
fn once_the_only_listening_instance_is_gone_sigterm_ends_the_process() {
    let app = app(&["--mode", "dropped"]);
    app.stopped_by("TERM", 143);
}

#[test]
fn a_run_whose_set_up_runtime_is_gone_still_runs_the_cleanup() {
    let app = app(&["--mode", "dead-runtime"]);
    let out = app.stopped_by("TERM", 143);
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn registering_from_a_plain_thread_listens_for_signals() {
    let app = app(&["--mode", "thread"]);
    let out = app.stopped_by("TERM", 143);
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn registering_on_a_runtime_without_io_listens_for_signals() {
    let app = app(&["--mode", "no-io"]);
    let out = app.stopped_by("TERM", 143);
    assert!(printed_report(&out, "SIGTERM"), "{out:#?}");
}

#[test]
fn the_watchdog_ends_a_signal_started_run_with_every_worker_blocked() {
    for _ in 0..stress(1) {
        // One signal only: the deadline (300 ms) + the exit grace (1 s) end it.
        let args = ["--hang-workers", "--deadline-ms", "300", "--before-exit"];
        let mut app = app(&args);
        app.signal("TERM");
        app.wait_for("cleanup stuck-", RUN);
        let (code, out, err) = app.finish_all(RUN);
        assert_eq!(code, Some(143), "{out:#?} {err:#?}");
        let line = err
            .iter()
            .find(|l| l.contains("passed its deadline"))
            .expect("one line on stderr");
        assert!(
            line.contains("stuck-0") && line.contains("stuck-1"),
            "{line}"
        );
        assert!(out.iter().any(|l| l == "before exit 143"), "{out:#?}");
    }
}

#[test]
fn the_report_reaches_main_in_every_run() {
    for round in 0..stress(50) {
        let out = app(&["--mode", "wait"]).stopped_by("TERM", 143);
        assert!(
            printed_report(&out, "SIGTERM"),
            "round {round}: the report was lost: {out:#?}"
        );
    }
}

#[test]
fn main_waiting_for_the_report_and_then_lingering_is_ended_within_the_exit_grace() {
    let app = app(&["--mode", "wait", "--linger-ms", "20000"]);
    app.signal("TERM");
    let (code, out, err) = app.finish_all(RUN);
    assert_eq!(code, Some(143), "{out:#?} {err:#?}");
    assert!(printed_report(&out, "SIGTERM"), "main had the report first");
    assert!(
        err.iter()
            .any(|l| l.contains("did not end the process within")),
        "{err:#?}"
    );
}

#[test]
fn one_instance_done_does_not_cut_another_instances_run_short() {
    // The global instance finishes at once; the library's takes 300 ms.
    let out = app(&["--library", "--library-slow-ms", "300"]).stopped_by("TERM", 143);
    assert!(out.iter().any(|l| l == "library done"), "{out:#?}");
    assert_eq!(cleanups(&out).len(), 4, "{out:#?}");
}

#[test]
fn a_kept_current_thread_runtime_nobody_drives_does_not_get_the_run() {
    let out = app(&["--mode", "idle-current-thread"]).stopped_by("TERM", 143);
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn a_before_exit_hook_that_never_returns_does_not_keep_the_process() {
    let out = app(&["--before-exit-hangs"]).stopped_by("TERM", 143);
    assert!(out.iter().any(|l| l == "before exit 143"), "{out:#?}");
    // The forced exit too: the second signal, past a hanging cleanup.
    let mut stuck = app(&["--before-exit-hangs", "--hang"]);
    stuck.signal("TERM");
    stuck.wait_for("cleanup stuck", RUN);
    let out = stuck.stopped_by("TERM", 143);
    assert!(out.iter().any(|l| l == "before exit 143"), "{out:#?}");
}

#[test]
fn instances_that_come_and_go_each_get_their_signal_and_the_process_lives_on() {
    // A delivery whose run ended, and whose instance went, before the
    // listener thread read it is not a signal nobody hears.
    for _ in 0..stress(1) {
        let mut app = app(&["--mode", "rounds"]);
        app.wait_for("done", RUN);
        let (code, out) = app.finish(RUN);
        assert_eq!(code, Some(0), "{out:#?}");
        assert!(out.iter().any(|l| l == "round 19"), "{out:#?}");
    }
}

#[test]
fn the_library_ends_the_process_when_the_instance_goes_with_its_report() {
    let out = app(&["--mode", "handoff"]).stopped_by("TERM", 143);
    assert_eq!(cleanups(&out), ["handoff"]);
}

/// Binds a datagram socket where systemd's would be: a path in `dir`, or a
/// name in the abstract namespace. Returns it with the `NOTIFY_SOCKET` value.
fn notify_socket(dir: &Path, abstract_name: bool) -> (std::os::unix::net::UnixDatagram, String) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    if abstract_name {
        let name = format!("compactor-e2e-notify-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        (
            UnixDatagram::bind_addr(&address).unwrap(),
            format!("@{name}"),
        )
    } else {
        let path = dir.join("notify.sock");
        (
            UnixDatagram::bind(&path).unwrap(),
            path.display().to_string(),
        )
    }
}

#[test]
fn under_systemd_the_shutdown_is_announced_with_its_progress_and_extensions() {
    for abstract_name in [false, true] {
        let dir = scratch_dir("notify");
        let (socket, address) = notify_socket(&dir, abstract_name);
        socket.set_read_timeout(Some(RUN)).unwrap();
        let app = with_env(
            &[("NOTIFY_SOCKET", &address)],
            &["--slow-cache-ms", "2500", "--deadline-ms", "10000"],
        );
        app.signal("TERM");
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        while !messages
            .last()
            .is_some_and(|m: &String| m.starts_with("STATUS=shutdown finished"))
        {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no notification ({e}); got {messages:#?}"));
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let (code, out) = app.finish(RUN);
        assert_eq!(code, Some(143), "{out:#?}");
        // As it begins: stopping, and 5 s more.
        assert_eq!(
            messages[0], "STOPPING=1\nSTATUS=shutting down: 3 task(s)\nEXTEND_TIMEOUT_USEC=5000000",
            "{messages:#?}"
        );
        // A second into the run: http and db done, the cache still going;
        // tasks finished since the first message, so another 5 s, in a
        // message of its own.
        let at = messages
            .iter()
            .position(|m| m.starts_with("STATUS=shutdown: 2/3 finished"))
            .unwrap_or_else(|| panic!("no progress status in {messages:#?}"));
        assert!(messages[at].contains("running: cache"), "{}", messages[at]);
        assert_eq!(
            messages[at + 1],
            "EXTEND_TIMEOUT_USEC=5000000",
            "{messages:#?}"
        );
        // Nothing else finishes while the cache runs: no more extensions.
        let extensions = messages
            .iter()
            .filter(|m| m.contains("EXTEND_TIMEOUT_USEC"))
            .count();
        assert_eq!(extensions, 2, "{messages:#?}");
        assert!(
            messages.iter().all(|m| m.len() < 4096),
            "systemd drops larger ones"
        );
        assert_eq!(
            messages.last().unwrap(),
            "STATUS=shutdown finished: 3/3 tasks"
        );
    }
}

/// Fails with `why` if anything was sent to `socket` (the process has
/// ended: whatever it sent is in the socket's queue).
fn assert_silent(socket: &std::os::unix::net::UnixDatagram, why: &str) {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let got = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(got.is_err(), "{why}: {got:?}");
}

#[test]
fn under_systemd_the_first_extension_covers_the_drain_delay() {
    // Nothing finishes while the delay runs: the extension sent as the
    // shutdown begins must outlast it.
    let dir = scratch_dir("notify-drain");
    let (socket, address) = notify_socket(&dir, false);
    socket.set_read_timeout(Some(RUN)).unwrap();
    let app = with_env(
        &[("NOTIFY_SOCKET", &address)],
        &["--drain-delay-ms", "1500", "--deadline-ms", "10000"],
    );
    app.signal("TERM");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    // The delay's task is a task too: 4 of them; 5 s past the delay.
    assert_eq!(
        first,
        "STOPPING=1\nSTATUS=shutting down: 4 task(s)\nEXTEND_TIMEOUT_USEC=6500000"
    );
}

#[test]
fn a_notify_socket_that_leads_nowhere_changes_nothing() {
    let app = with_env(
        &[("NOTIFY_SOCKET", "/nonexistent/compactor-notify.sock")],
        &["--slow-cache-ms", "1200"],
    );
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    assert_eq!(cleanups(&out), ["http", "db", "cache"]);
}

#[test]
fn a_child_of_the_service_does_not_speak_for_it() {
    let dir = scratch_dir("notify-child");
    let (socket, address) = notify_socket(&dir, false);
    // systemd names the process it started: not this one.
    let app = with_env(
        &[("NOTIFY_SOCKET", &address), ("SYSTEMD_EXEC_PID", "1")],
        &["--slow-cache-ms", "1200"],
    );
    app.signal("TERM");
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
    assert_silent(&socket, "a child notified");
}
