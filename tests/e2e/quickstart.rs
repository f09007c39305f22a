//! The quickstart example as a real process: a real echo socket on
//! 127.0.0.1, a real file, a real SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use compactor_e2e::{Running, scratch_dir};

const STARTUP: Duration = Duration::from_secs(60);

/// The report the example wrote as JSON: its task names in order, after
/// checking that every task succeeded.
fn report_tasks(path: &Path) -> (serde_json::Value, Vec<String>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the report at {}: {e}", path.display()));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tasks = report["tasks"].as_array().expect("tasks").clone();
    for task in &tasks {
        assert_eq!(task["outcome"]["kind"], "succeeded", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
    }
    let names = tasks
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    (report, names)
}

fn echo(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

#[test]
fn runs_by_itself_and_cleans_up_in_order() {
    let dir = scratch_dir("timed");
    let mut app = Running::start_path(
        Path::new(env!("CARGO_BIN_EXE_quickstart")),
        &[
            "--shutdown-after",
            "5",
            "--data-dir",
            dir.to_str().unwrap(),
            "--report-json",
            dir.join("report.json").to_str().unwrap(),
        ],
    );
    let addr = app.wait_for("echo listening on ", STARTUP);
    let mut stream = TcpStream::connect(addr.trim()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    echo(&mut stream, b"hello over loopback");

    let (code, lines) = app.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{lines:#?}");
    let (report, names) = report_tasks(&dir.join("report.json"));
    assert_eq!(
        names,
        [
            "compactor::service",
            "echo-listener",
            "worker",
            "flush-event-log"
        ]
    );
    assert_eq!(report["clean"], true);
    assert_eq!(report["reason"], "service_ended", "{report}");
    assert_eq!(report["exit_code"], 0);

    // The open connection was closed by the shutdown, not left hanging.
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);

    let log = std::fs::read_to_string(dir.join("events.log")).unwrap();
    let log: Vec<&str> = log.lines().collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("connection from 127.0.0.1:")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("tick ")), "{log:?}");
    // The worker stopped before the buffer was flushed, and the flush is on disk.
    let stopped = log
        .iter()
        .position(|l| l.starts_with("worker stopped after"))
        .expect("worker line");
    assert_eq!(log.last(), Some(&"flushed at shutdown"));
    assert_eq!(stopped, log.len() - 2);
}

#[cfg(unix)]
#[test]
fn sigterm_runs_the_cleanup_and_exits_143() {
    let dir = scratch_dir("sigterm");
    let mut app = Running::start_path(
        Path::new(env!("CARGO_BIN_EXE_quickstart")),
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--report-json",
            dir.join("report.json").to_str().unwrap(),
        ],
    );
    let addr = app.wait_for("echo listening on ", STARTUP);
    app.wait_for("running; press Ctrl-C", STARTUP);
    let mut stream = TcpStream::connect(addr.trim()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    echo(&mut stream, b"ping");

    app.signal("TERM");
    let (code, lines) = app.finish(Duration::from_secs(30));
    assert_eq!(code, Some(143), "{lines:#?}");
    let (report, names) = report_tasks(&dir.join("report.json"));
    assert_eq!(
        names,
        [
            "compactor::service",
            "echo-listener",
            "worker",
            "flush-event-log"
        ]
    );
    assert_eq!(report["exit_code"], 143);
    assert_eq!(report["reason"]["signal"], "SIGTERM", "{report}");
    let log = std::fs::read_to_string(dir.join("events.log")).unwrap();
    assert!(log.ends_with("flushed at shutdown\n"), "{log}");
}

#[test]
fn a_bad_option_is_named() {
    let app = Running::start_path(
        Path::new(env!("CARGO_BIN_EXE_quickstart")),
        &["--shutdown-afterr", "1"],
    );
    let (code, _, err) = app.finish_all(STARTUP);
    assert_eq!(code, Some(2));
    assert!(
        err.iter().any(|l| l.contains("`--shutdown-afterr`")),
        "the message names the option: {err:#?}"
    );
}
