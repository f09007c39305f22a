//! The readiness example as a real process: real HTTP over loopback, a real
//! SIGTERM, the readiness check failing while the server still serves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use compactor_e2e::Running;

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
    let mut app = Running::start_path(
        Path::new(env!("CARGO_BIN_EXE_readiness")),
        &["--drain-delay", "3"],
    );
    let addr = app.wait_for("http listening on ", Duration::from_secs(60));
    let addr = addr.trim().to_owned();
    assert_eq!(get(&addr, "/healthz"), Some(200));
    assert_eq!(get(&addr, "/"), Some(200));

    app.signal("TERM");
    app.wait_for("readiness: failing /healthz", Duration::from_secs(10));
    let flipped = Instant::now();
    // During the drain delay: not ready, but still serving.
    assert_eq!(get(&addr, "/healthz"), Some(503));
    assert_eq!(get(&addr, "/"), Some(200));
    assert!(
        flipped.elapsed() < Duration::from_millis(1500),
        "checked within the delay"
    );

    app.wait_for("http: listener closed", Duration::from_secs(10));
    assert!(
        flipped.elapsed() >= Duration::from_millis(1400),
        "closed only after the delay"
    );
    let (code, out) = app.finish(Duration::from_secs(30));
    assert_eq!(code, Some(143), "{out:#?}");
    assert!(out.iter().any(|l| l.contains("2 tasks, clean")), "{out:#?}");
    assert_eq!(get(&addr, "/healthz"), None, "nothing listens any more");
}
