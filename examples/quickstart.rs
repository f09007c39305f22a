//! A small real service that shuts down well: a TCP echo listener on
//! 127.0.0.1, a background worker, and a write buffer flushed to a file. Each
//! registers its cleanup as it starts; on Ctrl-C (or SIGTERM) the cleanups run
//! in order (listener, then worker, then the flush), the report is printed,
//! and the process exits with 130 (143 for SIGTERM), as a killed one would.
//!
//! ```text
//! cargo run --example quickstart                          # stop with Ctrl-C
//! cargo run --example quickstart -- --shutdown-after 3    # stops by itself
//! ```
//!
//! Options: `--shutdown-after SECS`, `--data-dir DIR` (where `events.log`
//! goes; default: a fresh directory under the system's temp dir, removed at
//! shutdown),
//! `--report-json FILE` (the report as JSON, besides the table). Set
//! `RUST_LOG=debug` for more detail. With `--shutdown-after`, the service
//! ends by itself and the process exits 0 when every cleanup succeeded.

use compactor::cleanup::temp_dir;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compactor::{Category, Compactor, Priority};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

#[path = "support/mod.rs"]
mod support;

type EventLog = Arc<Mutex<BufWriter<std::fs::File>>>;

struct Options {
    shutdown_after: Option<Duration>,
    data_dir: PathBuf,
    /// Whether `data_dir` is ours (not given): removed at shutdown.
    own_dir: bool,
    report_json: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut shutdown_after = None;
    let mut data_dir = None;
    let mut report_json = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--shutdown-after" => {
                let secs = args
                    .next()
                    .ok_or("--shutdown-after needs a number of seconds")?;
                let secs: f64 = secs.parse().map_err(|_| {
                    format!("--shutdown-after: `{secs}` is not a number of seconds")
                })?;
                shutdown_after = Some(Duration::from_secs_f64(secs));
            }
            "--data-dir" => {
                data_dir = Some(PathBuf::from(args.next().ok_or("--data-dir needs a path")?));
            }
            "--report-json" => {
                let path = args.next().ok_or("--report-json needs a file path")?;
                report_json = Some(PathBuf::from(path));
            }
            other => {
                return Err(format!(
                    "unknown option `{other}`; try --shutdown-after SECS, --data-dir DIR \
                     or --report-json FILE"
                ));
            }
        }
    }
    let own_dir = data_dir.is_none();
    let data_dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("compactor-quickstart-{}", std::process::id()))
    });
    Ok(Options {
        shutdown_after,
        data_dir,
        own_dir,
        report_json,
    })
}

fn log_line(log: &EventLog, line: &str) {
    let mut out = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(out, "{line}");
}

#[tokio::main]
async fn main() -> ExitCode {
    support::init_tracing();
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("quickstart: {message}");
            return ExitCode::from(2);
        }
    };
    let compactor = Compactor::global();
    if let Err(e) = start(compactor, &options).await {
        eprintln!("quickstart: {e}");
        return ExitCode::FAILURE;
    }
    let report_json = options.report_json.clone();
    let report = compactor
        .run_until_shutdown(|stop| async move {
            match options.shutdown_after {
                Some(after) => {
                    println!("running for {after:?}");
                    tokio::time::sleep(after).await;
                }
                None => {
                    println!("running; press Ctrl-C to stop");
                    stop.cancelled().await;
                }
            }
        })
        .await;
    support::print_report(&report, report_json.as_deref());
    ExitCode::from(report.exit_code())
}

/// Starts the three parts of the service, each registering its cleanup.
async fn start(compactor: &Compactor, options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let stop = compactor.shutdown_token();

    // 1. A write buffer, flushed and synced to disk last of all (before
    //    its directory is removed, if it is the example's own).
    std::fs::create_dir_all(&options.data_dir)?;
    let dir = match options.own_dir {
        true => Some(
            compactor
                .task("data-dir")
                .priority(Priority::Low)
                .register(temp_dir(options.data_dir.clone()))?,
        ),
        false => None,
    };
    let path = options.data_dir.join("events.log");
    let file = std::fs::File::create(&path)?;
    let sync_handle = file.try_clone()?;
    let log: EventLog = Arc::new(Mutex::new(BufWriter::with_capacity(64 * 1024, file)));
    let mut flush = compactor
        .task("flush-event-log")
        .priority(Priority::Low)
        .category(Category::File);
    if let Some(dir) = &dir {
        flush = flush.depends_on(dir); // flushed before the directory goes
    }
    let flush = flush.register_blocking({
        let log = log.clone();
        move || -> std::io::Result<()> {
            log_line(&log, "flushed at shutdown");
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .flush()?;
            sync_handle.sync_all()
        }
    })?;

    // 2. A background worker that writes to the buffer until shutdown begins.
    let worker = tokio::spawn({
        let (log, stop) = (log.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        n += 1;
                        log_line(&log, &format!("tick {n}"));
                    }
                }
            }
            log_line(&log, &format!("worker stopped after {n} ticks"));
        }
    });
    let worker = Arc::new(tokio::sync::Mutex::new(Some(worker)));
    let worker_task = compactor
        .task("worker")
        .category(Category::Task)
        .depends_on(&flush) // it writes to the buffer: stop it before the flush
        .timeout(Duration::from_secs(2))
        .register(move || {
            let worker = worker.clone();
            async move {
                match worker.lock().await.take() {
                    Some(handle) => handle.await.map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
        })?;

    // 3. An echo listener; connections are tracked so shutdown can wait for them.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("echo listening on {addr}");
    println!("events go to {}", path.display());
    let connections = TaskTracker::new();
    let acceptor = tokio::spawn({
        let (log, stop, connections) = (log.clone(), stop.clone(), connections.clone());
        async move {
            loop {
                let (mut socket, peer) = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                log_line(&log, &format!("connection from {peer}"));
                let stop = stop.clone();
                connections.spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = tokio::select! {
                            () = stop.cancelled() => break,
                            read = socket.read(&mut buf) => match read {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            },
                        };
                        if socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
            // The listener is dropped here: new connections are refused.
        }
    });
    let acceptor = Arc::new(tokio::sync::Mutex::new(Some(acceptor)));
    compactor
        .task("echo-listener")
        .priority(Priority::High)
        .category(Category::Network)
        .depends_on(&worker_task)
        .timeout(Duration::from_secs(5))
        .register(move || {
            let (acceptor, connections) = (acceptor.clone(), connections.clone());
            async move {
                if let Some(handle) = acceptor.lock().await.take() {
                    handle.await.map_err(|e| e.to_string())?;
                }
                connections.close();
                connections.wait().await;
                Ok::<(), String>(())
            }
        })?;

    Ok(())
}
