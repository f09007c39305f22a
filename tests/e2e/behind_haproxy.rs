//! A rolling restart behind a real HAProxy loses no request: three
//! instances of the readiness example behind HAProxy (Debian's package) on
//! 127.0.0.1, with HTTP health checks on `/healthz`; a load client sends a
//! steady stream over keep-alive and fresh connections while each instance
//! in turn gets SIGTERM, fails its readiness, is taken out by HAProxy,
//! drains, exits 143 and is replaced on the same port. Bounded: about 15 s,
//! a few hundred requests a second, loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compactor_e2e::{RUN, Running, STARTUP, scratch_dir, tool};

/// The health check: every 200 ms, down after 2 failures, up after 2 passes.
const CHECK: &str = "inter 200ms fall 2 rise 2";
/// What HAProxy needs to notice a failing check (`inter × fall`), and more.
/// HAProxy is given no retries: no request is rescued by being sent again,
/// so none may reach an instance that no longer accepts.
const DRAIN_DELAY_SECS: &str = "1";
const ROUNDS: usize = 3;
/// The load's hard stop, whatever happens.
const LOAD_AT_MOST: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// A process killed when the test ends, however it ends.
struct Killed(Option<Running>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(running) = self.0.as_mut() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

fn instance(port: u16) -> Killed {
    let port = port.to_string();
    // The port, freed by the instance before, can be taken for a moment by
    // a connection's local end (HAProxy's, the load client's): a start
    // that cannot listen is tried again, a few times.
    let mut tries = 0;
    loop {
        let mut app = Running::start_path(
            env!("CARGO_BIN_EXE_readiness").as_ref(),
            &["--port", &port, "--drain-delay", DRAIN_DELAY_SECS],
        );
        let Err(why) = app.try_wait_for("http listening on", STARTUP) else {
            return Killed(Some(app));
        };
        // Its stderr, whole once it has exited.
        let _ = app.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let said = app.stderr().join("\n");
        let busy = why.contains("cannot listen") || said.contains("cannot listen");
        assert!(busy && tries < 20, "{why}\n{said}");
        tries += 1;
    }
}

/// One request, `GET path`, on `stream` (kept alive) or a new connection
/// to `port`; the status and whether the connection may be used again.
fn request(
    stream: &mut Option<BufReader<TcpStream>>,
    port: u16,
    path: &str,
) -> Result<u16, String> {
    if stream.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        *stream = Some(BufReader::new(s));
    }
    let reader = stream.as_mut().expect("connected");
    // One write: a request in pieces waits on Nagle and delayed ACKs.
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n\r\n");
    let sent = reader.get_mut().write_all(request.as_bytes());
    if let Err(e) = sent {
        *stream = None;
        return Err(format!("send: {e}"));
    }
    let mut status_line = String::new();
    match reader.read_line(&mut status_line) {
        Ok(0) => {
            *stream = None;
            return Err("closed before a response".to_owned());
        }
        Err(e) => {
            *stream = None;
            return Err(format!("read: {e}"));
        }
        Ok(_) => {}
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("headers: {e}"))?
            == 0
        {
            return Err("closed in the headers".to_owned());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    if close {
        *stream = None;
    }
    Ok(status)
}

/// What one request of the load saw.
struct Sample {
    at: Instant,
    latency: Duration,
    outcome: Result<u16, String>,
    /// A request that takes 150 ms by design: not in the latency figures.
    slow: bool,
}

/// Sends requests for `path` through the front door until `stop`:
/// `keep_alive` on one connection, or a new one each time; about 100 a
/// second.
fn load(port: u16, path: &str, keep_alive: bool, stop: &AtomicBool, out: &Mutex<Vec<Sample>>) {
    let started = Instant::now();
    let mut stream = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < LOAD_AT_MOST {
        let at = Instant::now();
        let outcome = request(&mut stream, port, path);
        out.lock().unwrap().push(Sample {
            at,
            latency: at.elapsed(),
            outcome,
            slow: path == "/slow",
        });
        if !keep_alive {
            stream = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn percentile(mut latencies: Vec<Duration>, p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    let at = ((latencies.len() - 1) as f64 * p).round() as usize;
    latencies[at]
}

/// The status HAProxy gives server `name` ("UP", "DOWN", "UP 1/2", ...),
/// asked over its stats socket (`show stat`, CSV: the status is field 18).
fn server_status(socket: &Path, name: &str) -> String {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return "no socket".to_owned();
    };
    let _ = stream.write_all(b"show stat\n");
    let mut csv = String::new();
    let _ = stream.read_to_string(&mut csv);
    csv.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 17 && f[0] == "app" && f[1] == name)
        .map_or_else(|| "unknown".to_owned(), |f| f[17].to_owned())
}

/// Waits until HAProxy says server `name` is `status` (exactly); how long.
fn until_server(socket: &Path, name: &str, status: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = server_status(socket, name);
        if now == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "HAProxy never said {name} is {status} (last: {now})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a request to `port` answers `status`.
fn until_status(port: u16, path: &str, status: u16) {
    let until = Instant::now() + STARTUP;
    loop {
        if request(&mut None, port, path) == Ok(status) {
            return;
        }
        assert!(
            Instant::now() < until,
            "127.0.0.1:{port}{path} never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_rolling_restarts_behind_haproxy_lose_no_request() {
    let Some(haproxy) = tool("haproxy", "haproxy") else {
        return;
    };
    let dir = scratch_dir("rolling");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let front = free_port();
    let mut instances: Vec<Killed> = ports.iter().map(|&p| instance(p)).collect();
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server app{i} 127.0.0.1:{p} check\n"))
        .collect();
    let socket = dir.join("haproxy.sock");
    let socket_path = socket.display();
    let config = format!(
        "global\n  maxconn 512\n  stats socket {socket_path}\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  retries 0\n\
         frontend web\n  bind 127.0.0.1:{front}\n  default_backend app\n\
         backend app\n  balance roundrobin\n  option httpchk GET /healthz\n  default-server {CHECK}\n{servers}"
    );
    let config_path = dir.join("haproxy.cfg");
    std::fs::write(&config_path, config).unwrap();
    let _balancer = Killed(Some(Running::start_path(
        &haproxy,
        &["-db", "-f", config_path.to_str().unwrap()],
    )));
    until_status(front, "/", 200);
    for i in 0..ports.len() {
        until_server(&socket, &format!("app{i}"), "UP", STARTUP);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    // Keep-alive and fresh connections, and one stream of requests that take
    // 150 ms, so some are always in flight when an instance begins to drain.
    let clients: Vec<_> = [
        ("/", true),
        ("/", true),
        ("/", false),
        ("/", false),
        ("/slow", true),
    ]
    .into_iter()
    .map(|(path, keep_alive)| {
        let (stop, samples) = (stop.clone(), samples.clone());
        std::thread::spawn(move || load(front, path, keep_alive, &stop, &samples))
    })
    .collect();

    std::thread::sleep(Duration::from_secs(1));
    let restarts_began = Instant::now();
    let mut stop_times = Vec::new();
    for _ in 0..ROUNDS {
        for (i, &port) in ports.iter().enumerate() {
            let server = format!("app{i}");
            let mut app = instances[i].0.take().expect("running");
            let signalled = Instant::now();
            app.signal("TERM");
            // Taken out by HAProxy while it still serves (the drain delay).
            until_server(&socket, &server, "DOWN", Duration::from_secs(5));
            assert!(
                app.child.try_wait().unwrap().is_none(),
                "instance {i} exited before HAProxy took it out"
            );
            assert_eq!(
                request(&mut None, port, "/"),
                Ok(200),
                "instance {i} still serves when taken out"
            );
            let (code, out) = app.finish(RUN);
            stop_times.push(signalled.elapsed());
            assert_eq!(code, Some(143), "instance {i}: {out:#?}");
            assert!(
                out.iter()
                    .any(|l| l.contains("readiness: failing /healthz")),
                "instance {i} failed its readiness first: {out:#?}"
            );
            instances[i] = instance(port);
            until_status(port, "/healthz", 200);
            // Back in: HAProxy marks it up after `rise` passing checks.
            until_server(&socket, &server, "UP", STARTUP);
        }
    }
    let restarts_ended = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let failed: Vec<String> = samples
        .iter()
        .filter(|s| s.outcome != Ok(200))
        .map(|s| format!("+{:?}: {:?}", s.at - restarts_began, s.outcome))
        .collect();
    let during = |s: &&Sample| s.at >= restarts_began && s.at < restarts_ended;
    let steady: Vec<Duration> = samples
        .iter()
        .filter(|s| !s.slow && !during(s))
        .map(|s| s.latency)
        .collect();
    let restarting: Vec<Duration> = samples
        .iter()
        .filter(|s| !s.slow && during(s))
        .map(|s| s.latency)
        .collect();
    println!(
        "rolling: {} requests ({} during {} restarts over {:?}), {} failed; latency steady p50 {:?} p99 {:?}, during restarts p50 {:?} p99 {:?}; SIGTERM to exit {:?} to {:?}",
        samples.len(),
        restarting.len(),
        ROUNDS * ports.len(),
        restarts_ended - restarts_began,
        failed.len(),
        percentile(steady.clone(), 0.5),
        percentile(steady, 0.99),
        percentile(restarting.clone(), 0.5),
        percentile(restarting.clone(), 0.99),
        stop_times.iter().min().unwrap(),
        stop_times.iter().max().unwrap(),
    );
    assert!(
        restarting.len() > 2_000,
        "the load ran through the restarts: {}",
        restarting.len()
    );
    let slow = samples
        .iter()
        .filter(|s| s.slow && s.outcome == Ok(200))
        .count();
    assert!(
        slow > 50,
        "requests were in flight through the restarts: {slow}"
    );
    assert!(
        failed.is_empty(),
        "{} failed requests: {:#?}",
        failed.len(),
        &failed[..failed.len().min(20)]
    );
}
