//! What the library logs, captured: a binary of its own, its tests one at a
//! time, since tracing caches per callsite whether anyone listens, across
//! all threads, and tests that each set their own subscriber in parallel
//! would race on that cache.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use compactor::{Backoff, Compactor};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// Held by each test: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Log lines written during a test, one string each.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, containing: &str) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains(containing))
            .map(str::to_owned)
            .collect()
    }
}

/// A subscriber of this thread that captures what is logged at `level`
/// and above, for as long as the guard lives.
fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(level)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Runs `c`'s shutdown on a paused clock, and checks it is clean.
fn shut_down_clean(c: &Compactor) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async { assert!(c.shutdown().await.is_clean()) });
}

/// Runs a 12 s shutdown (paused clock) under a capturing subscriber.
fn logged_run(builder: compactor::Builder) -> Captured {
    let (captured, _default) = capture(tracing::Level::INFO);
    let c = builder.deadline(S(60)).build();
    c.task("slow")
        .timeout(S(30))
        .register(|| tokio::time::sleep(S(12)))
        .unwrap();
    shut_down_clean(&c);
    captured
}

#[test]
fn a_long_shutdown_logs_its_progress_every_few_seconds() {
    let _one = serial();
    let captured = logged_run(Compactor::builder().progress_every(S(5)));
    let lines = captured.lines("compactor::progress");
    assert_eq!(lines.len(), 2, "at 5 s and 10 s: {lines:?}");
    assert!(
        lines[0].contains("shutdown: 0/1 finished, 55.0s of 60.0s left; running: slow (5000ms)"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("50.0s of 60.0s left; running: slow (10.0s)"),
        "{lines:?}"
    );
}

#[test]
fn progress_lines_can_be_turned_off_and_a_zero_interval_is_refused() {
    let _one = serial();
    let captured = logged_run(Compactor::builder().progress_every(Duration::MAX));
    assert!(captured.lines("compactor::progress").is_empty());
    let error = Compactor::builder()
        .progress_every(Duration::ZERO)
        .build()
        .register("probe", || async {})
        .unwrap_err();
    assert!(error.to_string().contains("progress_every"), "{error}");
}

#[test]
fn a_retried_cleanup_records_its_attempts_once_and_each_attempt_in_a_span() {
    let _one = serial();
    let (captured, _default) = capture(tracing::Level::DEBUG);
    let c = Compactor::builder().deadline(S(60)).build();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    c.task("flaky")
        .retries(2)
        .backoff(Backoff::fixed(MS(10)))
        .register(move || {
            let call = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tracing::info!("cleanup called");
                if call < 3 { Err("not yet") } else { Ok(()) }
            }
        })
        .unwrap();
    shut_down_clean(&c);
    let finished = captured.lines("cleanup finished");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert!(finished[0].contains("attempts=3"), "{finished:?}");
    assert!(
        !finished[0].contains("attempt=1"),
        "no field twice: {finished:?}"
    );
    let tries = captured.lines("cleanup called");
    assert_eq!(tries.len(), 3);
    for (n, line) in tries.iter().enumerate() {
        assert!(
            line.contains(&format!("attempt{{number={}}}", n + 1)),
            "{line}"
        );
    }
}

#[test]
fn what_a_service_logs_names_its_task() {
    let _one = serial();
    let (captured, _guard) = capture(tracing::Level::INFO);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = Compactor::new();
        c.task("http")
            .service(|stop| async move {
                tracing::info!("serving");
                stop.cancelled().await;
                tracing::info!("drained");
            })
            .unwrap();
        tokio::task::yield_now().await;
        assert!(c.shutdown().await.is_clean());
    });
    for what in ["serving", "drained"] {
        let lines = captured.lines(what);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("service{task=http}"), "{lines:?}");
    }
}
