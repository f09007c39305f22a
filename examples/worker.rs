//! A worker thread that owns its state outright (no shared `Arc`, no lock),
//! and a shutdown that talks to it over its channel: first "compact now",
//! answered with what it freed, then "stop", answered as it ends. Each is a
//! task of the graph, bounded by its timeout; the report shows what the
//! compaction freed.
//!
//! ```text
//! cargo run --example worker                        # runs 1 s, then shuts down
//! cargo run --example worker -- --run-for 5         # or stop it with Ctrl-C
//! ```

use compactor::cleanup::{request_with, thread};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use compactor::{Category, Compactor, report::Freed};
use tokio::sync::oneshot;

/// What the worker is asked.
enum Request {
    /// Store a value (the work of a running service).
    Put(String, Vec<u8>),
    /// Drop everything cached; answer with what was freed.
    Compact(oneshot::Sender<Result<Freed, String>>),
    /// Finish and answer as the thread ends.
    Stop(oneshot::Sender<()>),
}

/// The worker: its cache is a local of its thread.
fn worker(requests: std::sync::mpsc::Receiver<Request>) {
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    for request in requests {
        match request {
            Request::Put(key, value) => {
                cache.insert(key, value);
            }
            Request::Compact(reply) => {
                let freed = Freed {
                    resources: cache.len() as u64,
                    bytes: cache.values().map(|v| v.len() as u64).sum(),
                };
                cache.clear();
                cache.shrink_to_fit();
                let _ = reply.send(Ok(freed));
            }
            Request::Stop(reply) => {
                let _ = reply.send(());
                return;
            }
        }
    }
}

fn run_for() -> Result<Duration, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(Duration::from_secs(1)),
        (Some("--run-for"), Some(secs)) => secs
            .parse::<f64>()
            .map(Duration::from_secs_f64)
            .map_err(|_| format!("--run-for: `{secs}` is not a number of seconds")),
        (Some(other), _) => Err(format!("unknown option `{other}`; try --run-for SECS")),
    }
}

#[tokio::main]
async fn main() -> Result<ExitCode, compactor::Error> {
    let run_for = match run_for() {
        Ok(d) => d,
        Err(message) => {
            eprintln!("worker: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let c = Compactor::global();
    let (requests, inbox) = std::sync::mpsc::channel();
    let worker_thread = std::thread::spawn(move || worker(inbox));

    // Compacted, then stopped, then joined: each the step before the next.
    let joined = c.task("join-worker").register(thread(worker_thread))?;
    let to_stop = requests.clone();
    let stop = c
        .task("stop-worker")
        .category(Category::Task)
        .depends_on(&joined)
        .timeout(Duration::from_secs(2))
        .register(request_with(move |reply| {
            to_stop.send(Request::Stop(reply))
        }))?;
    let to_compact = requests.clone();
    c.task("compact-cache")
        .category(Category::Memory)
        .depends_on(&stop)
        .timeout(Duration::from_millis(500))
        .register(request_with(move |reply| {
            to_compact.send(Request::Compact(reply))
        }))?;

    // The service: fills the worker's cache until the shutdown begins.
    let report = c
        .run_until_shutdown(|stop_token| async move {
            let mut n = 0u32;
            let until = tokio::time::sleep(run_for);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    () = &mut until => break,
                    () = stop_token.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {
                        n += 1;
                        let _ = requests.send(Request::Put(format!("key-{n}"), vec![0; 4096]));
                    }
                }
            }
        })
        .await;
    println!("{report}");
    Ok(ExitCode::from(report.exit_code()))
}
