//! A tonic gRPC server as a compactor service: `serve_with_incoming_shutdown`
//! stops on the service's token, and the drain waits for the calls in
//! flight (`docs/integrations.md`). The service is gRPC's standard health
//! service from `tonic-health`, whose generated code ships in the crate, so
//! nothing here needs `protoc`; a service of your own plugs in the same way
//! with `add_service`.
//!
//! ```sh
//! cargo run -p examples-integrations --example tonic                          # Ctrl-C stops it
//! cargo run -p examples-integrations --example tonic -- --shutdown-after 3
//! ```
//!
//! Its test calls the server on 127.0.0.1 through a real gRPC client, then
//! shuts down and checks the server drained and stopped accepting calls:
//! `cargo test -p examples-integrations`.

use std::time::Duration;

use compactor::{Compactor, TaskHandle};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::util::MapFutureLayer;

/// Serves gRPC's health service on `listener` as the service `grpc` of `c`,
/// each call answered after `delay` (so one can be in flight when the
/// shutdown begins): at its turn in the shutdown the server stops accepting
/// and finishes the calls in flight (within the task's timeout).
async fn serve(
    c: &Compactor,
    listener: TcpListener,
    delay: Duration,
) -> Result<TaskHandle, compactor::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let slow = MapFutureLayer::new(move |call| async move {
        tokio::time::sleep(delay).await;
        call.await
    });
    c.task("grpc")
        .timeout(Duration::from_secs(10))
        .service(move |stop| async move {
            Server::builder()
                .layer(slow)
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.cancelled_owned())
                .await
        })
}

#[path = "support.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<compactor::ShutdownReport, Box<dyn std::error::Error>> {
    let listener = support::listen("grpc").await?;
    serve(Compactor::global(), listener, Duration::ZERO).await?;
    support::shutdown_after_from_args()?;
    Ok(support::run().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grpc_call_in_flight_is_answered_before_the_report() {
        let c = Compactor::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        serve(&c, listener, Duration::from_millis(300))
            .await
            .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let call = tokio::spawn(async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            client.check(request).await
        });
        // The call is in its 300 ms when the shutdown begins.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = c.shutdown().await;
        assert!(report.is_clean(), "{report}");
        let drained = report.task("grpc").unwrap().duration();
        assert!(drained >= Duration::from_millis(150), "{report}");
        let answer = call.await.unwrap().expect("the call in flight is answered");
        assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
        // The listener is closed: a new connection finds no server.
        let late = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await;
        assert!(late.is_err(), "a connection after the drain");
    }
}
