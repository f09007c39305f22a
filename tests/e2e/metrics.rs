//! The metrics example as a real process: its Prometheus endpoint on
//! 127.0.0.1 scraped before, during and after a SIGTERM-started shutdown.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use compactor_e2e::{RUN, Running, STARTUP};

/// The endpoint's text, by a plain HTTP/1.0 GET.
fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the endpoint answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of the sample whose line starts with `name` and holds every
/// one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_metrics_are_scraped_during_and_after_a_shutdown() {
    // A free port on loopback for the endpoint.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_arg = port.to_string();
    let mut app = Running::start_path(
        env!("CARGO_BIN_EXE_metrics").as_ref(),
        &["--port", &port_arg, "--linger-ms", "3000"],
    );
    app.wait_for("ready", STARTUP);
    let before = scrape(port);
    // The three cleanups and the drain of `main`'s service.
    assert_eq!(
        sample(&before, "compactor_tasks_pending", &[]),
        Some(4.0),
        "{before}"
    );

    app.signal("TERM");
    app.wait_for("closing db-pool", RUN);
    let during = scrape(port);
    assert!(
        sample(&during, "compactor_tasks_running", &[]).is_some_and(|n| n >= 1.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "compactor_tasks_pending", &[]),
        Some(0.0),
        "{during}"
    );

    app.wait_for("report printed", RUN);
    let after = scrape(port);
    let db = [
        "compactor_task_category=\"database\"",
        "compactor_task_outcome=\"succeeded\"",
    ];
    assert_eq!(
        sample(&after, "compactor_task_finished", &db),
        Some(1.0),
        "{after}"
    );
    let other = ["compactor_task_category=\"other\""];
    assert_eq!(
        sample(&after, "compactor_task_retries", &other),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "compactor_tasks_running", &[]),
        Some(0.0),
        "{after}"
    );
    let signal = [
        "compactor_shutdown_reason=\"signal\"",
        "compactor_shutdown_clean=\"true\"",
    ];
    assert_eq!(
        sample(&after, "compactor_shutdown_duration_count", &signal),
        Some(1.0),
        "{after}"
    );
    let (code, out) = app.finish(RUN);
    assert_eq!(code, Some(143), "{out:#?}");
}
