//! The last flush with real telemetry: a tracing-appender non-blocking
//! writer whose last lines reach their file, and an OpenTelemetry SDK
//! provider whose last spans reach its exporter, both registered as
//! `Priority::Final` tasks, while a hanging cleanup holds the deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use compactor::{Compactor, Outcome, Priority};
use opentelemetry::trace::{Tracer, TracerProvider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_lines_of_a_non_blocking_writer_reach_the_file_after_a_cut_off_run() {
    let dir = std::env::temp_dir().join(format!("compactor-final-flush-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let appender = tracing_appender::rolling::never(&dir, "app.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);

    let c = Compactor::builder()
        .deadline(Duration::from_millis(500))
        .build();
    let guard = Mutex::new(Some(guard));
    c.task("flush-log")
        .priority(Priority::Final)
        .timeout(Duration::from_millis(200))
        .register_blocking(move || {
            // The writer's guard: dropping it writes out what is buffered.
            drop(guard.lock().unwrap().take());
        })
        .unwrap();
    let lines = dispatch.clone();
    c.task("hangs")
        .register(move || {
            let lines = lines.clone();
            async move {
                tracing::dispatcher::with_default(&lines, || {
                    for i in 0..2000 {
                        tracing::info!(line = i, "last words");
                    }
                });
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(report.task("hangs").unwrap().outcome(), &Outcome::Cancelled);
    assert_eq!(
        report.task("flush-log").unwrap().outcome(),
        &Outcome::Succeeded,
        "{report}"
    );
    let text = std::fs::read_to_string(dir.join("app.log")).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains("last words")).count(),
        2000
    );
    assert!(text.contains("line=1999"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_spans_of_an_opentelemetry_provider_reach_its_exporter_after_a_cut_off_run() {
    let exporter = Kept::default();
    // A batch processor: spans wait in its queue until it exports them
    // (every 5 s by default), or until the provider shuts down.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("app");
    for i in 0..50 {
        tracer.in_span(format!("request-{i}"), |_| {});
    }
    let c = Compactor::builder()
        .deadline(Duration::from_millis(500))
        .build();
    let shut_down = Arc::new(Mutex::new(None));
    let result = shut_down.clone();
    c.task("otel")
        .priority(Priority::Final)
        .timeout(Duration::from_millis(200))
        .register_blocking(move || {
            *result.lock().unwrap() = Some(provider.shutdown().is_ok());
        })
        .unwrap();
    c.task("hangs")
        .register(std::future::pending::<()>)
        .unwrap();
    let report = c.shutdown().await;
    assert_eq!(
        report.task("otel").unwrap().outcome(),
        &Outcome::Succeeded,
        "{report}"
    );
    assert_eq!(*shut_down.lock().unwrap(), Some(true));
    let spans = exporter.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 50);
    assert!(spans.iter().any(|name| name == "request-49"));
}

/// An exporter that keeps what it was given, through the provider's
/// shutdown (the SDK's in-memory one clears itself then).
#[derive(Debug, Clone, Default)]
struct Kept(Arc<Mutex<Vec<String>>>);

impl opentelemetry_sdk::trace::SpanExporter for Kept {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let names = batch.into_iter().map(|span| span.name.into_owned());
        self.0.lock().unwrap().extend(names);
        Ok(())
    }
}
