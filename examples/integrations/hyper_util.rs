//! A hyper server (HTTP/1) as a compactor service: hyper-util's
//! `GracefulShutdown` watches each connection, and the service's drain
//! waits for the requests in flight (`docs/integrations.md`).
//!
//! ```sh
//! cargo run -p examples-integrations --example hyper_util                          # Ctrl-C stops it
//! cargo run -p examples-integrations --example hyper_util -- --shutdown-after 3
//! ```
//!
//! Its test serves a slow request on 127.0.0.1, starts the shutdown while
//! the request is in flight, and checks the answer arrived whole before the
//! report came: `cargo test -p examples-integrations`.

use std::convert::Infallible;
use std::time::Duration;

use compactor::{Compactor, TaskHandle};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Answers every request after `delay`, so a request can be in flight when
/// the shutdown begins.
async fn answer(
    delay: Duration,
    _request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(delay).await;
    Ok(Response::new(Full::new(Bytes::from("hello\n"))))
}

/// Serves `listener` as the service `http` of `c`: at its turn in the
/// shutdown it stops accepting, and its drain waits for the connections in
/// flight (within the task's timeout).
fn serve(
    c: &Compactor,
    listener: TcpListener,
    delay: Duration,
) -> Result<TaskHandle, compactor::Error> {
    let service = service_fn(move |request| answer(delay, request));
    c.task("http").service(move |stop| async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                () = stop.cancelled() => break,
            }
        }
        graceful.shutdown().await;
        Ok::<(), std::io::Error>(())
    })
}

#[path = "support.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<compactor::ShutdownReport, Box<dyn std::error::Error>> {
    let listener = support::listen("http").await?;
    serve(Compactor::global(), listener, Duration::from_millis(200))?;
    support::shutdown_after_from_args()?;
    Ok(support::run().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_in_flight_is_answered_before_the_report() {
        let c = Compactor::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve(&c, listener, Duration::from_millis(300)).unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let client = tokio::spawn(async move {
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        });
        // The request is in its handler's sleep when the shutdown begins.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = c.shutdown().await;
        assert!(report.is_clean(), "{report}");
        // The drain waited for the handler: the rest of its 300 ms.
        let drained = report.task("http").unwrap().duration();
        assert!(drained >= Duration::from_millis(150), "{report}");
        let answer = client.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("hello\n"), "{answer}");
        // Stopped accepting: a new connection is refused or closed at once.
        if let Ok(mut late) = tokio::net::TcpStream::connect(addr).await {
            let mut buf = Vec::new();
            let _ = late
                .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                .await;
            let read =
                tokio::time::timeout(Duration::from_secs(2), late.read_to_end(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "served after the drain: {buf:?}"
            );
        }
    }
}
