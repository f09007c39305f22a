//! A real service: an axum server on 127.0.0.1, a write-behind buffer
//! flushed to a SQLite file, and a child process beside it. Each part
//! registers its cleanup as it starts, and the shutdown runs them in the
//! order their dependencies give: the server drains its in-flight requests
//! (it is a service of the instance), then the buffer is flushed, then the
//! database is closed; the child is stopped alongside.
//!
//! ```text
//! cargo run --example axum -- --db /tmp/shop.db      # then: curl -X POST '127.0.0.1:PORT/write?id=1'
//! ```
//!
//! Routes: `GET /slow?ms=N` answers after N ms; `POST /write?id=N` buffers
//! a write and answers once it is buffered (acknowledged); the buffer is
//! flushed to the `writes` table every 20 ms and at shutdown.
//! Options: `--port N` (default: any free port), `--db FILE` (default: a
//! file in a fresh temporary directory, removed at exit), `--report-json
//! FILE`. Stop it with Ctrl-C or `kill -TERM`: it exits with 130 or 143.

use compactor::cleanup::{child_process, once, temp_dir};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use compactor::{Category, Compactor, Priority};

#[path = "support/mod.rs"]
mod support;

/// Writes acknowledged but not yet in the database.
type Buffer = Arc<Mutex<Vec<i64>>>;

struct Options {
    port: u16,
    db: Option<PathBuf>,
    report_json: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        db: None,
        report_json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--port" => {
                options.port = value
                    .parse()
                    .map_err(|_| format!("--port: `{value}` is not a port"))?;
            }
            "--db" => options.db = Some(PathBuf::from(value)),
            "--report-json" => options.report_json = Some(PathBuf::from(value)),
            other => {
                return Err(format!(
                    "unknown option `{other}`; try --port N, --db FILE or --report-json FILE"
                ));
            }
        }
    }
    Ok(options)
}

#[derive(serde::Deserialize)]
struct Slow {
    ms: u64,
}

#[derive(serde::Deserialize)]
struct Write {
    id: i64,
}

async fn slow(Query(slow): Query<Slow>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(slow.ms.min(5_000))).await;
    "done\n"
}

async fn write(State(buffer): State<Buffer>, Query(write): Query<Write>) -> &'static str {
    buffer.lock().expect("buffer lock").push(write.id);
    "buffered\n"
}

/// Moves what the buffer holds into the database, in one transaction.
fn flush(db: &Mutex<rusqlite::Connection>, buffer: &Mutex<Vec<i64>>) -> rusqlite::Result<usize> {
    let pending = std::mem::take(&mut *buffer.lock().expect("buffer lock"));
    let mut db = db.lock().expect("db lock");
    let tx = db.transaction()?;
    for id in &pending {
        tx.execute("INSERT INTO writes (id) VALUES (?1)", [id])?;
    }
    tx.commit()?;
    Ok(pending.len())
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    support::init_tracing();
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("axum: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let c = Compactor::global();

    // A scratch directory of our own, removed at the very end.
    let scratch = std::env::temp_dir().join(format!("compactor-axum-{}", std::process::id()));
    let path = match &options.db {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(&scratch)?;
            c.task("scratch-dir")
                .priority(Priority::Low)
                .register(temp_dir(scratch.clone()))?;
            scratch.join("shop.db")
        }
    };

    // 1. The database: closed last of what uses it.
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS writes (id INTEGER PRIMARY KEY);",
    )?;
    let db = Arc::new(Mutex::new(conn));
    // The cleanup closes the last handle; the others go with the flush.
    let closing = db.clone();
    let db_task = c
        .task("db")
        .category(Category::Database)
        .register_blocking(once(move || {
            // The last handle: the connection closes, WAL checkpointed.
            let conn = match Arc::try_unwrap(closing) {
                Ok(conn) => conn.into_inner().unwrap_or_else(|e| e.into_inner()),
                Err(_) => return Err("the database is still in use".to_owned()),
            };
            conn.close()
                .map_err(|(_, e)| format!("closing the database: {e}"))?;
            println!("db: closed");
            Ok(())
        }))?;

    // 2. The write-behind buffer: flushed every 20 ms, and once more at
    //    shutdown, after the server has drained (no write is acknowledged
    //    after that).
    let buffer: Buffer = Arc::default();
    let (flush_db, flush_buffer) = (db, buffer.clone());
    let stop_flusher = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn({
        let (db, buffer, stop) = (flush_db.clone(), flush_buffer.clone(), stop_flusher.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            while !stop.is_cancelled() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = every.tick() => {}
                }
                let (db, buffer) = (db.clone(), buffer.clone());
                let _ = tokio::task::spawn_blocking(move || flush(&db, &buffer)).await;
            }
        }
    });
    let flush_task = c
        .task("flush-writes")
        .category(Category::File)
        .depends_on(&db_task) // uses the database: flushed before it closes
        .register(once(move || async move {
            stop_flusher.cancel();
            let _ = flusher.await;
            let flushed =
                tokio::task::spawn_blocking(move || flush(&flush_db, &flush_buffer)).await??;
            // The flush's handle on the database went with its thread.
            println!("flush: {flushed} buffered write(s) flushed");
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }))?;

    // 3. A child process beside the service (a sidecar): SIGTERM, 2 s, SIGKILL.
    let sidecar = tokio::process::Command::new("sleep").arg("3600").spawn()?;
    c.task("sidecar")
        .priority(Priority::High)
        .register(child_process(sidecar, Duration::from_secs(2)))?;

    // 4. The server: a service of the instance. It drains at its turn (its
    //    dependencies: the buffer it writes to), before the flush.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/slow", get(slow))
        .route("/write", post(write))
        .with_state(buffer);
    c.task("http")
        .priority(Priority::High)
        .category(Category::Network)
        .depends_on(&flush_task)
        .timeout(Duration::from_secs(10))
        .service(move |stop| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await?;
            println!("http: drained");
            Ok::<(), std::io::Error>(())
        })?;

    println!("http listening on {addr}");
    // What runs beside the services: nothing but the wait for the signal.
    let report = c.run_until_shutdown(|stop| stop.cancelled_owned()).await;
    println!("{report}");
    if let Some(path) = &options.report_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(ExitCode::from(report.exit_code()))
}
