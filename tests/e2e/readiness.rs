//! The readiness example as a real process: real HTTP over loopback, a real
//! SIGTERM, the readiness check failing while the server still serves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use compactor_e2e::{Running, scratch_dir};

/// One GET over a fresh connection: the status code, or `None` if the
/// connection was refused.
fn get(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn sigterm_fails_readiness_first_keeps_serving_then_closes() {
    let dir = scratch_dir("readiness");
    let report_path = dir.join("report.json");
    let mut app = Running::start_path(
        Path::new(env!("CARGO_BIN_EXE_readiness")),
        &[
            "--drain-delay",
            "3",
            "--report-json",
            report_path.to_str().unwrap(),
        ],
    );
    let addr = app.wait_for("http listening on ", Duration::from_secs(60));
    let addr = addr.trim().to_owned();
    assert_eq!(get(&addr, "/healthz"), Some(200));
    assert_eq!(get(&addr, "/"), Some(200));

    app.signal("TERM");
    app.wait_for("readiness: failing /healthz", Duration::from_secs(10));
    // During the drain delay: not ready (503), but still serving (200).
    assert_eq!(get(&addr, "/healthz"), Some(503));
    assert_eq!(get(&addr, "/"), Some(200));

    app.wait_for("http: listener closed", Duration::from_secs(10));
    let (code, out) = app.finish(Duration::from_secs(30));
    assert_eq!(code, Some(143), "{out:#?}");
    assert_eq!(get(&addr, "/healthz"), None, "nothing listens any more");

    // The library's own clock: the flip took the whole drain delay, and the
    // listener closed only after it.
    let text = std::fs::read_to_string(&report_path).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["clean"], true, "{report}");
    let task = |name: &str| {
        report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no task {name} in {report}"))
            .clone()
    };
    let flip = task("compactor::drain-delay");
    let close = task("http-listener");
    assert!(flip["duration_ms"].as_f64().unwrap() >= 3000.0, "{flip}");
    assert!(
        close["started_at_ms"].as_f64().unwrap() >= 3000.0,
        "the listener closed before the drain delay ended: {close}"
    );
}
