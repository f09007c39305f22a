//! Graceful shutdown for tokio services: register cleanup work as you acquire
//! resources, and when the process is told to stop, `compactor` runs all of it,
//! once, in the right order and on time.
//!
//! ```
//! use std::time::Duration;
//! use compactor::{Category, Compactor, Priority};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), compactor::Error> {
//! let c = Compactor::new(); // or Compactor::global() in an application
//!
//! let db = c.task("db-pool")
//!     .category(Category::Database)
//!     .register(|| async { /* pool.close().await */ })?;
//! c.task("http")
//!     .priority(Priority::High)
//!     .depends_on(&db) // the server is drained before the pool closes
//!     .timeout(Duration::from_secs(5))
//!     .retries(1)
//!     .register(|| async { Ok::<(), std::io::Error>(()) })?;
//! c.task("flush-log").register_blocking(|| { /* file.sync_all() */ })?;
//!
//! let report = c.shutdown().await; // or on Ctrl-C / SIGTERM
//! assert!(report.is_clean());
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! # How a shutdown runs
//!
//! - **Dependencies**: if `b` [depends on](TaskBuilder::depends_on) `a`, `a`
//!   starts only after `b` has finished, whatever `b`'s outcome.
//! - **Phases**: [`Priority`] is a phase. No task starts while a task of
//!   strictly higher *effective* priority is unfinished; a task that must run
//!   before a higher-priority one is raised to its priority.
//! - **Concurrency**: ready tasks of the current phase run concurrently (up to
//!   an optional [limit](Builder::concurrency_limit)); where an order must be
//!   chosen, the latest registered goes first, like `Drop`.
//! - **Time**: each attempt has a [timeout](TaskBuilder::timeout), failed
//!   attempts are [retried](TaskBuilder::retries) with [`Backoff`], the whole
//!   run has a [deadline](Builder::deadline) and each phase an optional
//!   [budget](Builder::phase_budget). Panics are caught and reported.
//! - **Once**: [`shutdown`](Compactor::shutdown) is idempotent; every caller
//!   gets the same [`ShutdownReport`], which accounts for every registered
//!   task exactly once.
//!
//! # Cleanups
//!
//! A cleanup is an async closure (called again for each retry), or any
//! kind of [`cleanup`]: [`once`](cleanup::once) for a `FnOnce` that owns what
//! it cleans up, [`cancellable`](cleanup::cancellable) for one handed a
//! token cancelled when its time is up, [`blocking`](cleanup::blocking) for
//! synchronous code, and ready-made ones for tokio tasks, join sets,
//! threads, files, temporary directories, child processes, secrets and
//! requests to workers. Every registration takes every kind, with every
//! option.
//!
//! # `main`
//!
//! One way to write it: register the cleanups, then hand what runs beside
//! them to [`run_until_shutdown`](Compactor::run_until_shutdown), which gives
//! it the token it must stop on and returns the [`ShutdownReport`]; `main`
//! returns the report, so the exit code follows it (an unclean run never
//! exits 0 by accident):
//!
//! ```no_run
//! use compactor::{Compactor, ShutdownReport};
//!
//! #[tokio::main]
//! async fn main() -> Result<ShutdownReport, compactor::Error> {
//!     let c = Compactor::global();
//!     c.register("db-pool", || async { /* pool.close().await */ })?;
//!     Ok(c.run_until_shutdown(|stop| async move {
//!         stop.cancelled().await; // serve until then
//!     })
//!     .await)
//! }
//! ```
//!
//! [`Compactor::global`] listens for `SIGINT` and `SIGTERM` from its first
//! registration: the first signal runs the shutdown and `main` gets the
//! report (exit code 128 + the signal number: 130, 143), by an exit code
//! that works as PID 1; a second signal, or a run past its deadline + [exit
//! grace](Builder::exit_grace), exits at once. A process that does not wait
//! for the report exits by itself after a signal-started run; see
//! [`signal::SignalExit`] for the policies,
//! [`Builder::shutdown_on_panic`] and [`Compactor::shutdown_blocking`] for
//! code without a runtime.
//!
//! # A server that drains inside the shutdown
//!
//! A long-running future (an HTTP server, a queue consumer) runs as a
//! [service](TaskBuilder::service): it gets the shutdown token, and its
//! drain is a task of the graph, with a priority, dependencies, a timeout and
//! a line in the report. Cut off by its timeout it is dropped, not detached;
//! one that fails before any shutdown starts it. [`run_until_shutdown`](Compactor::run_until_shutdown)
//! does the same for `main`'s own future:
//!
//! ```no_run
//! use compactor::cleanup::once;
//! use compactor::{Compactor, ShutdownReport};
//!
//! #[tokio::main]
//! async fn main() -> Result<ShutdownReport, compactor::Error> {
//!     let c = Compactor::global();
//!     let pool = c.register("db-pool", once(|| async { /* pool.close().await */ }))?;
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//!     c.task("http")
//!         .depends_on(&pool) // the pool closes after the server has drained
//!         .service(move |stop| async move {
//!             loop {
//!                 tokio::select! {
//!                     () = stop.cancelled() => return Ok::<(), std::io::Error>(()),
//!                     accepted = listener.accept() => drop(accepted?), // serve it
//!                 }
//!             }
//!         })?;
//!     Ok(c.run_until_shutdown(|stop| stop.cancelled_owned()).await)
//! }
//! ```
//!
//! With axum, `axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned())`
//! inside the service, or as `main`'s own, is all it takes;
//! `docs/integrations.md` has axum, hyper-util and tonic. Behind a load
//! balancer, a [drain delay](Builder::drain_delay) turns
//! [`Compactor::readiness`] to 503 at once and holds every drain back (and
//! the tokens the services and `main` stop on) until the balancer has
//! noticed.
//!
//! # The token
//!
//! [`Compactor::shutdown_token`] is a `CancellationToken` cancelled the moment
//! shutdown begins: select on it to stop taking new work. Cancelling it
//! yourself starts nothing; [`trigger`](Compactor::trigger) does. Services
//! and `main`'s future are handed their own token, cancelled when they are
//! to drain.
//!
//! # Scopes, early runs and batches
//!
//! A [scope](TaskBuilder::scope) is a child instance for one owner (a
//! connection, a job): it shuts down on its own when the owner ends, or with
//! its parent, as one task of the parent's graph. [`Compactor::run_early`] runs
//! the cleanups of chosen tasks now ([`Selection`]: one task, a list, a
//! category), with the shutdown's rules and a report of their own.
//! [`Compactor::register_batch`] registers many [`TaskDef`]s at once, all or
//! none.
//!
//! # Seeing the shutdown
//!
//! [`Compactor::plan`] shows what a shutdown would do, running nothing: the
//! phases, the graph, and the [worst case](inspect::ShutdownPlan::worst_case) against
//! a supervisor's grace period (table, Mermaid, DOT).
//! [`Compactor::progress`] shows a run as it stands; a long run logs it at
//! INFO every few seconds, and on a terminal as one updating line.
//! [`Compactor::subscribe`] broadcasts an [`Event`] for every step; tracing
//! spans cover the run and each cleanup; the [`ShutdownReport`] is a table
//! and, with `serde`, JSON. A [progress signal](Builder::progress_signal)
//! (`SIGUSR1`) prints the plan or the progress to stderr, and under systemd
//! the shutdown is reported over `NOTIFY_SOCKET`. [`ShutdownPlan::inventory`](inspect::ShutdownPlan::inventory)
//! counts what is registered, by category and scope, and checks that every
//! expected kind of resource has a cleanup.
//!
//! # Tests
//!
//! [`testing::instance`] is an instance that fails the test with the report
//! if a cleanup failed, timed out, panicked or leaked;
//! [`testing::assert_plan_fits`] fails it when the shutdown could outlast a
//! grace period.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let c = compactor::testing::instance();
//! c.register("temp-dir", || async { /* remove it */ }).unwrap();
//! compactor::testing::assert_plan_fits(&c, std::time::Duration::from_secs(30));
//! c.finish().await; // panics with the report if a cleanup went wrong
//! # }
//! ```
//!
//! # For library authors
//!
//! A library takes part in its application's shutdown without owning the
//! process: it registers into the instance the application hands it.
//!
//! - **Take a [`TaskBuilder`]** for a resource (`c.task("db-pool")`, with
//!   the priority, dependencies and timeout the application chose) and
//!   register its cleanup there; for several cleanups, call
//!   [`scope`](TaskBuilder::scope) on it and register them in the scope,
//!   which is one task of the application's graph. Take a `&Compactor`
//!   where the library registers many unrelated things. Either way the
//!   application decides which instance: [`Compactor::global`], a scope, a
//!   test's.
//! - **Never call [`Compactor::global`] from a library**: the global
//!   instance listens for `SIGINT` and `SIGTERM` from its first
//!   registration, so a library would take the process's signals from the
//!   application.
//! - **When the application's instance never listens for signals** (no
//!   [`listen_for_signals`](Compactor::listen_for_signals), no
//!   [`run_until_shutdown`](Compactor::run_until_shutdown), which listens,
//!   and not the global instance, or the global one with
//!   [`auto_listen(false)`](Builder::auto_listen)), a signal runs nothing:
//!   the cleanups run when the application calls
//!   [`shutdown`](Compactor::shutdown), or when the library shuts its own
//!   scope down. Nothing runs at process exit by itself, so give your type a
//!   `close().await` that shuts its scope down, for applications that end
//!   their resources themselves.
//! - **Test the cleanups** with [`testing::instance`] in place of the
//!   application's instance: [`finish`](testing::TestCompactor::finish)
//!   runs the shutdown and fails the test, with the report, if a cleanup
//!   failed, timed out, panicked or leaked.
//!
//! ```
//! use compactor::{Compactor, TaskBuilder};
//!
//! /// A library's resource: its cleanup goes where the application says.
//! pub struct Cache { scope: Compactor }
//!
//! impl Cache {
//!     pub fn open(task: TaskBuilder<'_>) -> Result<Cache, compactor::Error> {
//!         let scope = task.scope()?;
//!         scope.task("persist").register_blocking(|| { /* write to disk */ })?;
//!         scope.task("evict").register(compactor::cleanup::once(|| async { /* free memory */ }))?;
//!         Ok(Cache { scope })
//!     }
//!
//!     /// Runs the cleanups now, ahead of the application's shutdown.
//!     pub async fn close(self) -> compactor::ShutdownReport {
//!         self.scope.shutdown().await
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The application: `Cache::open(Compactor::global().task("cache"))`.
//! // The library's test:
//! let app = compactor::testing::instance();
//! let _cache = Cache::open(app.task("cache")).unwrap();
//! app.finish().await; // fails the test if `persist` or `evict` went wrong
//! # }
//! ```
//!
//! `examples/library` in the repository is such a library, a buffered line
//! writer, with its tests.
//!
//! `docs/design.md` in the repository walks through the architecture and a
//! worked ordering example; `docs/operations.md` covers containers,
//! supervisord, systemd, Kubernetes and the exit codes.
//!
//! # Feature flags
//!
//! | feature | default | what it enables |
//! |---|---|---|
//! | `serde` | no | `Serialize` for `ShutdownReport`, `ShutdownPlan`, `Progress` and what they hold (JSON logs, dashboards) |
//! | `process` | no | `cleanup::child_process`: `SIGTERM`, grace, `SIGKILL`, reap (adds `rustix` on Unix) |
//! | `zeroize` | no | `cleanup::secret`: wipe a secret at shutdown (adds `zeroize`) |
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
pub mod cleanup;
mod compactor;
mod config;
mod error;
mod event;
pub mod inspect;
mod plan;
mod priority;
mod process;
mod registry;
pub mod report;
mod run;
mod scope;
pub mod service;
pub mod signal;
mod task;
mod telemetry;
pub mod testing;

pub use crate::backoff::Backoff;
pub use crate::compactor::{Compactor, Selection, TaskBuilder, TaskDef};
pub use crate::config::Builder;
pub use crate::error::Error;
pub use crate::event::Event;
pub use crate::priority::{Category, Priority};
pub use crate::registry::TaskHandle;
pub use crate::report::{Outcome, ShutdownReport, TaskReport};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
