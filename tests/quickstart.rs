//! The quickstart example as a real process: a real echo socket on
//! 127.0.0.1, a real file, a real SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use compactor_e2e::{Running, scratch_dir};

const STARTUP: Duration = Duration::from_secs(60);

/// The task names of the report table, in its order.
fn report_rows(lines: &[String]) -> Vec<String> {
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("#  task"))
        .unwrap_or_else(|| panic!("no report table in {lines:#?}"));
    lines[header + 1..]
        .iter()
        .take_while(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
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
    let mut app = Running::start(
        "quickstart",
        &[
            "--shutdown-after",
            "1.5",
            "--data-dir",
            dir.to_str().unwrap(),
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
    assert!(
        lines.iter().any(|l| l.contains("3 tasks, clean")),
        "{lines:#?}"
    );
    assert_eq!(
        report_rows(&lines),
        ["echo-listener", "worker", "flush-event-log"]
    );

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
    let mut app = Running::start("quickstart", &["--data-dir", dir.to_str().unwrap()]);
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
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("shutdown (SIGTERM) finished")),
        "{lines:#?}"
    );
    assert_eq!(
        report_rows(&lines),
        ["echo-listener", "worker", "flush-event-log"]
    );
    let log = std::fs::read_to_string(dir.join("events.log")).unwrap();
    assert!(log.ends_with("flushed at shutdown\n"), "{log}");
}

#[test]
fn a_bad_option_is_named() {
    let app = Running::start("quickstart", &["--shutdown-afterr", "1"]);
    let (code, _) = app.finish(STARTUP);
    assert_eq!(code, Some(2));
}
