//! The shutdown's metrics on a Prometheus endpoint (feature `metrics`):
//! metrics-exporter-prometheus serves them on 127.0.0.1 from a thread of
//! its own, so a scrape still answers while the cleanups run and after the
//! report, until the process ends.
//!
//! ```text
//! cargo run --example metrics -- --port 9464
//! curl -s 127.0.0.1:9464/metrics | grep compactor_   # then Ctrl-C, and again
//! ```

use std::time::Duration;

use compactor::{Category, Compactor, ShutdownReport};

fn main() -> ShutdownReport {
    let mut port = 9464;
    let mut linger = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match flag.as_str() {
            "--port" => port = value().parse().expect("a port number"),
            "--linger-ms" => linger = Duration::from_millis(value().parse().expect("milliseconds")),
            other => panic!("unknown flag {other}; use --port N and --linger-ms N"),
        }
    }
    // Outside a runtime: the exporter serves from a thread of its own.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .install()
        .expect("the Prometheus endpoint");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let report = runtime.block_on(async {
        let c = Compactor::global();
        c.task("flush-log")
            .category(Category::File)
            .register(|| async { tokio::time::sleep(Duration::from_millis(50)).await })
            .expect("registered");
        c.task("db-pool")
            .category(Category::Database)
            .register(|| async {
                println!("closing db-pool");
                tokio::time::sleep(Duration::from_secs(1)).await;
            })
            .expect("registered");
        c.task("cache")
            .retries(1)
            .backoff(compactor::Backoff::fixed(Duration::from_millis(10)))
            .register({
                let mut tries = 0;
                move || {
                    tries += 1;
                    let first = tries == 1;
                    async move { if first { Err("busy") } else { Ok(()) } }
                }
            })
            .expect("registered");
        c.run_until_shutdown(|stop| {
            println!("ready on 127.0.0.1:{port}");
            stop.cancelled_owned()
        })
        .await
    });
    println!("{report}");
    println!("report printed");
    // The endpoint still answers: a last scrape gets the run's numbers.
    std::thread::sleep(linger);
    report
}
