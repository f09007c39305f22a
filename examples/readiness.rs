//! The readiness flip, with a real HTTP endpoint: on SIGTERM the service
//! first fails its readiness check (`GET /healthz` answers 503) while it
//! keeps serving, waits for the load balancer to notice (the library's
//! drain delay), and only then stops accepting and drains its connections.
//! `docs/operations.md` explains why; the end-to-end suite runs three of
//! these behind HAProxy through rolling restarts.
//!
//! ```text
//! cargo run --example readiness                      # then: curl -i 127.0.0.1:PORT/healthz
//! cargo run --example readiness -- --drain-delay 2   # seconds between the flip and closing
//! ```
//!
//! Options: `--port N` (default: any free port), `--drain-delay SECS` (5),
//! `--report-json FILE` (the report as JSON, besides the table).
//! Stop it with Ctrl-C or `kill -TERM`; it exits with 130 or 143.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use compactor::service::Readiness;
use compactor::{Category, Compactor, Priority};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/mod.rs"]
mod support;

fn options() -> Result<(u16, Duration, Option<std::path::PathBuf>), String> {
    let (mut port, mut delay, mut report_json) = (0u16, Duration::from_secs(5), None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("--port: `{value}` is not a port"))?;
            }
            "--drain-delay" => {
                let secs: f64 = value
                    .parse()
                    .map_err(|_| format!("--drain-delay: `{value}` is not seconds"))?;
                delay = Duration::from_secs_f64(secs);
            }
            "--report-json" => report_json = Some(std::path::PathBuf::from(value)),
            other => {
                return Err(format!(
                    "unknown option `{other}`; try --port N, --drain-delay SECS or --report-json FILE"
                ));
            }
        }
    }
    Ok((port, delay, report_json))
}

/// Answers one request on `stream`, then closes it.
async fn serve(stream: TcpStream, readiness: Readiness) {
    let mut stream = BufReader::new(stream);
    let mut request = String::new();
    if stream.read_line(&mut request).await.is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while stream.read_line(&mut line).await.is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/healthz" if readiness.is_ready() => ("200 OK", "ready\n"),
        "/healthz" => ("503 Service Unavailable", "shutting down\n"),
        "/slow" => {
            // A request that takes a while: in flight when the drain begins.
            tokio::time::sleep(Duration::from_millis(150)).await;
            ("200 OK", "slow\n")
        }
        _ => ("200 OK", "hello\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.get_mut().write_all(response.as_bytes()).await;
}

#[tokio::main]
async fn main() -> ExitCode {
    support::init_tracing();
    let (port, drain_delay, report_json) = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("readiness: {message}");
            return ExitCode::from(2);
        }
    };
    let compactor = match Compactor::init_global(Compactor::builder().drain_delay(drain_delay)) {
        Ok(compactor) => compactor,
        Err(e) => {
            eprintln!("readiness: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("readiness: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("a bound address");
    let readiness = compactor.readiness();
    tokio::spawn({
        let shutdown = compactor.shutdown_token();
        async move {
            shutdown.cancelled().await;
            println!("readiness: failing /healthz for {drain_delay:?}");
        }
    });
    // Separate from the shutdown token: the server keeps accepting while its
    // readiness check fails (the drain delay), and stops when its task runs.
    let stop_accepting = CancellationToken::new();
    let connections = TaskTracker::new();

    let acceptor = tokio::spawn({
        let (readiness, stop, connections) = (
            readiness.clone(),
            stop_accepting.clone(),
            connections.clone(),
        );
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            connections.spawn(serve(stream, readiness.clone()));
                        }
                    }
                }
            }
        }
    });
    let acceptor = Arc::new(tokio::sync::Mutex::new(Some(acceptor)));

    let registered = compactor
        .task("http-listener")
        .priority(Priority::High)
        .category(Category::Network)
        .timeout(Duration::from_secs(10))
        .register(move || {
            let (acceptor, connections, stop) = (
                acceptor.clone(),
                connections.clone(),
                stop_accepting.clone(),
            );
            async move {
                stop.cancel();
                if let Some(handle) = acceptor.lock().await.take() {
                    let _ = handle.await;
                }
                connections.close();
                connections.wait().await;
                println!("http: listener closed, connections drained");
            }
        });
    if let Err(e) = registered {
        eprintln!("readiness: {e}");
        return ExitCode::FAILURE;
    }

    println!("http listening on {addr}");
    let report = compactor
        .run_until_shutdown(|stop| stop.cancelled_owned())
        .await;
    support::print_report(&report, report_json.as_deref());
    ExitCode::from(report.exit_code())
}
