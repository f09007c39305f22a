//! A service for the end-to-end suites to start, signal and watch.
//!
//! It registers three cleanups on the global instance (`http` depends on
//! `db`, `cache` is Low), prints `ready`, and prints `cleanup NAME` as each
//! cleanup starts. Flags pick the scenario:
//!
//! | flag | effect |
//! |---|---|
//! | `--mode listen` (default) | main waits forever; the signal handling exits the process |
//! | `--mode run` | `run_until_shutdown`; main prints the report and returns its exit code |
//! | `--mode blocking` | no runtime in main: `shutdown_blocking()` right away |
//! | `--hang` | adds a cleanup `stuck` that blocks its thread forever |
//! | `--stuck-blocking` | adds a blocking cleanup `stuck-fsync` that never returns |
//! | `--deadline-ms MS` | the shutdown deadline (default 20 s) |
//! | `--register-slowly N` | the service registers `slow-0`..`slow-N` one every 5 ms |
//! | `--panic-after-ms MS` | `Builder::shutdown_on_panic(true)`, then a thread panics after MS |
//! | `--service-ms MS` | the service ends by itself after MS |
//! | `--exit zero` | `SignalExit::ZeroIfClean` |
//! | `--also-hup` | `SIGHUP` starts a shutdown too |
//! | `--slow-cache-ms MS` | the `cache` cleanup takes MS |
//! | `--linger-ms MS` | in `run` mode, main waits MS after printing the report |
//! | `--no-auto-listen` | `Builder::auto_listen(false)`: the app owns its signals |
//! | `--library` | a second instance (a library's own) listens too; its cleanup prints `cleanup library` |
//! | `--library-slow-ms MS` | with `--library`: the library's instance keeps the default exit policy and its cleanup takes MS, then prints `library done` |
//!
//! | `--progress-signal` | `Builder::progress_signal(Signal::User1)` |
//! | `--hang-workers` | adds `stuck-0` and `stuck-1`, which block both runtime workers forever |
//! | `--before-exit` | `Builder::before_exit` prints `before exit CODE` |
//! | `--before-exit-hangs` | `Builder::before_exit` prints `before exit CODE`, then never returns |
//!
//! Modes without the usual runtime:
//!
//! | mode | what main does |
//! |---|---|
//! | `relisten` | an instance listens and is dropped, then the global instance listens |
//! | `dropped` | an instance listens and is dropped; nothing else listens |
//! | `dead-runtime` | registers inside a short-lived runtime, then serves on another |
//! | `thread` | registers from a plain thread, no runtime anywhere |
//! | `no-io` | registers inside a current-thread runtime without I/O |
//! | `idle-current-thread` | registers inside a current-thread runtime that it keeps but no longer drives |
//! | `wait` | awaits `wait()`, prints the report and returns its exit code |
//! | `handoff` | an instance's only handle lives in a task that drops it once shutdown begins; main waits forever |
//! | `rounds` | 20 times, 100 ms apart: an instance (`SignalExit::Return`) listens, the app sends itself `SIGTERM`, waits for the report, drops the instance; prints `done` |

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use compactor::{
    Compactor, Priority,
    signal::{Signal, SignalExit},
};

#[derive(Default)]
struct Flags {
    mode: String,
    hang: bool,
    stuck_blocking: bool,
    hang_workers: bool,
    final_flush: bool,
    /// Logs through a tracing-appender non-blocking writer into this file,
    /// flushed by the final task.
    log_file: Option<String>,
    before_exit: bool,
    before_exit_hangs: bool,
    deadline_ms: u64,
    register_slowly: Option<usize>,
    panic_after: Option<u64>,
    service_ms: Option<u64>,
    exit_zero: bool,
    also_hup: bool,
    slow_cache_ms: u64,
    linger_ms: u64,
    no_auto_listen: bool,
    library: bool,
    library_slow_ms: Option<u64>,
    progress_signal: bool,
    drain_delay_ms: u64,
}

fn flags() -> Flags {
    let mut flags = Flags {
        mode: "listen".to_owned(),
        deadline_ms: 20_000,
        ..Flags::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--mode" => flags.mode = value(),
            "--hang" => flags.hang = true,
            "--stuck-blocking" => flags.stuck_blocking = true,
            "--hang-workers" => flags.hang_workers = true,
            "--final-flush" => flags.final_flush = true,
            "--log-file" => flags.log_file = Some(value()),
            "--before-exit" => flags.before_exit = true,
            "--before-exit-hangs" => flags.before_exit_hangs = true,
            "--deadline-ms" => flags.deadline_ms = value().parse().unwrap(),
            "--register-slowly" => flags.register_slowly = Some(value().parse().unwrap()),
            "--panic-after-ms" => flags.panic_after = Some(value().parse().unwrap()),
            "--service-ms" => flags.service_ms = Some(value().parse().unwrap()),
            "--exit" => flags.exit_zero = value() == "zero",
            "--also-hup" => flags.also_hup = true,
            "--slow-cache-ms" => flags.slow_cache_ms = value().parse().unwrap(),
            "--linger-ms" => flags.linger_ms = value().parse().unwrap(),
            "--no-auto-listen" => flags.no_auto_listen = true,
            "--progress-signal" => flags.progress_signal = true,
            "--drain-delay-ms" => flags.drain_delay_ms = value().parse().unwrap(),
            "--library" => flags.library = true,
            "--library-slow-ms" => flags.library_slow_ms = Some(value().parse().unwrap()),
            other => panic!("unknown flag {other}"),
        }
    }
    flags
}

/// A multi-thread runtime of two workers, as a service would run.
fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn printing(name: &'static str) -> impl FnMut() -> std::future::Ready<()> + Send + 'static {
    move || {
        println!("cleanup {name}");
        std::future::ready(())
    }
}

fn register(c: &Compactor, flags: &Flags) {
    let db = c.register("db", printing("db")).unwrap();
    c.task("http")
        .priority(Priority::High)
        .depends_on(&db)
        .register(printing("http"))
        .unwrap();
    let slow = Duration::from_millis(flags.slow_cache_ms);
    c.task("cache")
        .priority(Priority::Low)
        .register(move || {
            println!("cleanup cache");
            // A blocking sleep would hold a worker; this one yields.
            tokio::time::sleep(slow)
        })
        .unwrap();
    if flags.final_flush {
        // The last flush: after everything, and sure to run. With a log
        // file, it drops the non-blocking writer's guard, which writes out
        // the lines still buffered.
        let guard = flags.log_file.as_ref().map(|path| {
            let path = std::path::Path::new(path);
            let dir = path.parent().expect("a directory");
            let file = path.file_name().expect("a file name");
            let (writer, guard) =
                tracing_appender::non_blocking(tracing_appender::rolling::never(dir, file));
            let subscriber = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
            c.task("chatty")
                .priority(Priority::Critical)
                .register(|| async {
                    for line in 0..20_000 {
                        tracing::info!(line, "last words");
                    }
                    println!("cleanup chatty");
                    std::future::pending::<()>().await;
                })
                .unwrap();
            guard
        });
        let guard = std::sync::Mutex::new(guard);
        c.task("final-flush")
            .priority(Priority::Final)
            .timeout(Duration::from_millis(1500))
            .register_blocking(move || {
                drop(guard.lock().map(|mut g| g.take()));
                println!("final flush ran");
            })
            .unwrap();
    }
    if flags.stuck_blocking {
        c.task("stuck-fsync")
            .register_blocking(|| {
                println!("cleanup stuck-fsync");
                std::thread::sleep(Duration::from_secs(3600));
            })
            .unwrap();
    }
    if flags.hang_workers {
        for name in ["stuck-0", "stuck-1"] {
            c.task(name)
                .priority(Priority::Critical)
                .register(move || async move {
                    println!("cleanup {name}");
                    std::thread::sleep(Duration::from_secs(3600));
                })
                .unwrap();
        }
    }
    if flags.hang {
        c.task("stuck")
            .priority(Priority::Critical)
            .timeout(Duration::from_secs(3600))
            .register(|| async {
                println!("cleanup stuck");
                // Blocks the thread it runs on: the worst a cleanup can do.
                for _ in 0.. {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            })
            .unwrap();
    }
}

fn main() -> ExitCode {
    let flags = flags();
    let mut builder = Compactor::builder().deadline(Duration::from_millis(flags.deadline_ms));
    if flags.exit_zero {
        builder = builder.signal_exit(SignalExit::ZeroIfClean);
    }
    if flags.no_auto_listen {
        builder = builder.auto_listen(false);
    }
    if flags.also_hup {
        builder = builder.signals([Signal::Interrupt, Signal::Terminate, Signal::Hangup]);
    }
    if flags.panic_after.is_some() {
        builder = builder.shutdown_on_panic(true);
    }
    if flags.drain_delay_ms > 0 {
        builder = builder.drain_delay(Duration::from_millis(flags.drain_delay_ms));
    }
    if flags.progress_signal {
        builder = builder.progress_signal(Signal::User1);
    }
    if flags.before_exit {
        builder = builder.before_exit(|code| println!("before exit {code}"));
    }
    if flags.before_exit_hangs {
        builder = builder.before_exit(|code| {
            println!("before exit {code}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        });
    }
    let c = Compactor::init_global(builder).unwrap();

    match flags.mode.as_str() {
        "dropped" => {
            let other = Compactor::new();
            other.listen_for_signals().unwrap();
            drop(other);
            println!("ready");
            std::thread::sleep(Duration::from_secs(3600));
            return ExitCode::SUCCESS;
        }
        "dead-runtime" => {
            // Set-up in a runtime of its own, gone before the service starts.
            let setup = multi_thread();
            setup.block_on(async { register(c, &flags) });
            drop(setup);
            let serving = multi_thread();
            println!("ready");
            serving.block_on(std::future::pending::<()>());
            return ExitCode::SUCCESS;
        }
        "thread" => {
            let flags_thread = Flags {
                mode: flags.mode.clone(),
                slow_cache_ms: flags.slow_cache_ms,
                ..Flags::default()
            };
            std::thread::spawn(move || register(c, &flags_thread))
                .join()
                .unwrap();
            println!("ready");
            std::thread::sleep(Duration::from_secs(3600));
            return ExitCode::SUCCESS;
        }
        "idle-current-thread" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async { register(c, &flags) });
            println!("ready");
            std::thread::sleep(Duration::from_secs(3600));
            drop(runtime);
            return ExitCode::SUCCESS;
        }
        "rounds" => {
            let runtime = multi_thread();
            println!("ready");
            for round in 0..20 {
                let instance = Compactor::builder().signal_exit(SignalExit::Return).build();
                instance.register("round", || async {}).unwrap();
                instance.listen_for_signals().unwrap();
                compactor_e2e::send_signal(std::process::id(), "TERM");
                let report = runtime.block_on(instance.wait());
                assert!(report.is_clean(), "{report}");
                drop(instance);
                println!("round {round}");
                // Past the exit grace in all: `SignalExit::Return` leaves
                // the process to the application, without a limit.
                std::thread::sleep(Duration::from_millis(100));
            }
            println!("done");
            return ExitCode::SUCCESS;
        }
        "handoff" => {
            let runtime = multi_thread();
            runtime.block_on(async {
                let instance = Compactor::new();
                instance.register("handoff", printing("handoff")).unwrap();
                instance.listen_for_signals().unwrap();
                let stop = instance.shutdown_token();
                tokio::spawn(async move {
                    stop.cancelled().await;
                    // The run holds the last reference from here on.
                    drop(instance);
                });
                println!("ready");
                std::future::pending::<()>().await;
            });
            return ExitCode::SUCCESS;
        }
        "no-io" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            return runtime.block_on(async {
                register(c, &flags);
                println!("ready");
                let report = c.wait().await;
                print_report(&report);
                ExitCode::from(report.exit_code())
            });
        }
        _ => {}
    }

    if flags.mode == "relisten" {
        let other = Compactor::new();
        other.listen_for_signals().unwrap();
        drop(other);
        register(c, &flags);
        c.listen_for_signals().unwrap();
        println!("ready");
        // The signal starts the run on a runtime of its own, which exits.
        std::thread::sleep(Duration::from_secs(3600));
        return ExitCode::SUCCESS;
    }

    if flags.mode == "blocking" {
        register(c, &flags);
        println!("ready");
        let report = c.shutdown_blocking();
        print_report(&report);
        return ExitCode::from(report.exit_code());
    }

    let runtime = multi_thread();
    runtime.block_on(async {
        register(c, &flags);
        // Kept for the life of the app, listening beside the global instance.
        let _library = flags.library.then(|| {
            let library = match flags.library_slow_ms {
                Some(ms) => {
                    let library = Compactor::new();
                    library
                        .register("library", move || async move {
                            println!("cleanup library");
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            println!("library done");
                        })
                        .unwrap();
                    library
                }
                None => {
                    let library = Compactor::builder().signal_exit(SignalExit::Return).build();
                    library.register("library", printing("library")).unwrap();
                    library
                }
            };
            library.listen_for_signals().unwrap();
            library
        });
        if let Some(ms) = flags.panic_after {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                panic!("worker thread failed");
            });
        }
        println!("ready");
        if flags.mode == "listen" {
            std::future::pending::<()>().await;
        }
        if flags.mode == "wait" {
            let report = c.wait().await;
            print_report(&report);
            std::thread::sleep(Duration::from_millis(flags.linger_ms));
            return ExitCode::from(report.exit_code());
        }
        if flags.mode == "restarts" {
            // A worker in a scope that panics on every run: restarted
            // twice, then its failure ends the process.
            let jobs = c.task("jobs").scope().unwrap();
            jobs.task("worker")
                .backoff(compactor::Backoff::fixed(Duration::from_millis(50)))
                .supervise(
                    compactor::service::Supervision::end_all().restarts(2, Duration::from_secs(60)),
                )
                .restartable(|ctx| async move {
                    println!("worker run {}", ctx.restarts() + 1);
                    if !ctx.is_cancelled() {
                        panic!("worker {} lost its queue", ctx.name());
                    }
                })
                .unwrap();
            let report = c.run_until_shutdown(|stop| stop.cancelled_owned()).await;
            print_report(&report);
            return ExitCode::from(report.exit_code());
        }
        let accepted = Arc::new(AtomicUsize::new(0));
        let service = {
            let accepted = accepted.clone();
            let slowly = flags.register_slowly;
            let service_ms = flags.service_ms;
            let stop = c.shutdown_token();
            async move {
                if let Some(n) = slowly {
                    for i in 0..n {
                        let name: &'static str = format!("slow-{i}").leak();
                        match c.register(name, printing(name)) {
                            Ok(_) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                println!("registered {i}");
                            }
                            Err(e) => println!("refused {i}: {e}"),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                match service_ms {
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => stop.cancelled().await,
                }
            }
        };
        let report = c.run_until_shutdown(|_| service).await;
        print_report(&report);
        println!("accepted {}", accepted.load(Ordering::SeqCst));
        println!("reason {}", report.reason());
        std::thread::sleep(Duration::from_millis(flags.linger_ms));
        ExitCode::from(report.exit_code())
    })
}

/// The report as a person reads it, then as one line of JSON for the tests.
fn print_report(report: &compactor::ShutdownReport) {
    println!("{report}");
    let json = serde_json::to_string(report).expect("a report serializes");
    println!("report-json {json}");
}
