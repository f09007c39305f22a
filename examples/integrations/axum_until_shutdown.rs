//! An axum server as the future `run_until_shutdown` is given: its drain is
//! the task `compactor::service`, which every other cleanup waits for, and
//! it stops on `readiness().drained()`, after the drain delay where one is set
//! (`docs/integrations.md`). `examples/axum.rs` is the same server as a
//! service of its own, with SQLite and a child process.
//!
//! ```sh
//! cargo run -p examples-integrations --example axum_until_shutdown                          # Ctrl-C stops it
//! cargo run -p examples-integrations --example axum_until_shutdown -- --shutdown-after 3
//! ```

use compactor::cleanup::once;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use compactor::{Compactor, ShutdownReport};
use tokio::net::TcpListener;

fn app() -> Router {
    Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            "hello\n"
        }),
    )
}

/// Serves `app` on `listener` until the shutdown's drain, then runs the
/// cleanups of `c`, prints the report, and returns it.
async fn run(c: &Compactor, listener: TcpListener, app: Router) -> ShutdownReport {
    let report = c
        .run_until_shutdown(|stop| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
        .await;
    println!("{report}");
    report
}

#[path = "support.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<ShutdownReport, Box<dyn std::error::Error>> {
    let c = Compactor::global();
    let listener = support::listen("http").await?;
    support::shutdown_after_from_args()?;
    c.task("flush-log")
        .register(once(|| async { println!("log flushed") }))?;
    Ok(run(c, listener, app()).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends `GET /` to `addr` and returns the whole answer.
    async fn get(addr: std::net::SocketAddr) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_serves_through_the_drain_delay_then_drains_first() {
        let c = Compactor::builder()
            .drain_delay(Duration::from_millis(500))
            .build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        c.task("after-the-server")
            .register(once(|| async {}))
            .unwrap();
        let server = tokio::spawn({
            let c = c.clone();
            async move { run(&c, listener, app()).await }
        });
        let in_flight = tokio::spawn(get(addr));
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.trigger();
        // Inside the drain delay the load balancer may still send traffic:
        // a new connection is served.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let during_delay = get(addr).await.expect("served during the drain delay");
        assert!(during_delay.ends_with("hello\n"), "{during_delay}");
        let answer = in_flight.await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("hello\n"), "{answer}");
        let report = server.await.unwrap();
        assert_eq!(report.exit_code(), 0);
        assert!(report.is_clean(), "{report}");
        let drained = report.task("compactor::service").unwrap();
        let after = report.task("after-the-server").unwrap();
        assert!(
            after.started_at().unwrap() >= drained.started_at().unwrap() + drained.duration(),
            "{report}"
        );
    }
}
