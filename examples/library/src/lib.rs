//! `spool`: a buffered line writer, written as a library that takes part in
//! its application's shutdown without owning the process (see compactor's
//! "For library authors").
//!
//! - It takes a [`TaskBuilder`] from the application, never
//!   `Compactor::global()`: the application names the task and sets its
//!   priority, dependencies and timeout, and chooses the instance (the
//!   global one, a scope, a test's); the library decides what runs.
//! - Its cleanups live in a scope of their own, one task in the
//!   application's graph: inside it, the buffer is flushed, then the file
//!   synced to disk.
//! - [`Spool::close`] runs them early (the spool is done before the
//!   process is); the scope then leaves the application's instance.
//! - A line written after the flush is refused ([`Error::Closed`]), never
//!   silently dropped. Lines still in the buffer when the shutdown skips or
//!   cuts off the spool's task (its deadline ran out first) are lost; the
//!   report then shows the task as not clean.
//!
//! ```no_run
//! # async fn demo() -> Result<(), spool::Error> {
//! use compactor::{Compactor, Priority};
//!
//! let c = Compactor::global();
//! let log = spool::Spool::create("events.log", c.task("event-log").priority(Priority::Low))?;
//! log.write("started")?;
//! // On SIGTERM the application's shutdown flushes and syncs the file.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use compactor::{Compactor, ShutdownReport, TaskBuilder};

/// What can go wrong with a spool.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be created.
    Io(std::io::Error),
    /// The application's instance refused the registration (it is shutting
    /// down, or the task's settings are invalid).
    Register(compactor::Error),
    /// The spool was flushed for the shutdown: the line was not taken.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "the spool's file: {e}"),
            Error::Register(e) => write!(f, "the spool's cleanup: {e}"),
            Error::Closed => f.write_str("the spool is closed: the shutdown has flushed it"),
        }
    }
}

impl std::error::Error for Error {}

/// The lines not yet written, and the file they go to.
#[derive(Debug)]
struct Buffer {
    file: File,
    pending: Vec<u8>,
    closed: bool,
}

/// A file of lines, written in one go at the shutdown (or at
/// [`close`](Spool::close)).
#[derive(Debug)]
pub struct Spool {
    buffer: Arc<Mutex<Buffer>>,
    scope: Compactor,
}

impl Spool {
    /// Creates (or truncates) the file at `path`, and registers the spool's
    /// cleanup as the task `task` describes: a scope whose flush and sync
    /// run when the application's instance shuts down, in the place its
    /// priority and dependencies give it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be created (nothing is registered
    /// then); [`Error::Register`] if the instance refuses the task: nothing
    /// is left registered, and the file, created first, stays empty.
    pub fn create(path: impl AsRef<Path>, task: TaskBuilder<'_>) -> Result<Spool, Error> {
        let file = File::create(path).map_err(Error::Io)?;
        let buffer = Arc::new(Mutex::new(Buffer {
            file,
            pending: Vec::new(),
            closed: false,
        }));
        let scope = task.scope().map_err(Error::Register)?;
        // A dependency runs after its dependents: the sync after the flush.
        let synced = Arc::clone(&buffer);
        let sync = scope
            .task("sync")
            .register_blocking(move || lock(&synced).file.sync_all())
            .map_err(Error::Register)?;
        let flushed = Arc::clone(&buffer);
        scope
            .task("flush")
            .depends_on(&sync)
            .retries(1)
            .register_blocking(move || {
                let mut buffer = lock(&flushed);
                buffer.closed = true;
                let Buffer { file, pending, .. } = &mut *buffer;
                // What was written leaves the buffer at once: a retry after
                // a failed write goes on from there, writing nothing twice.
                while !pending.is_empty() {
                    match file.write(pending) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => drop(pending.drain(..n)),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .map_err(Error::Register)?;
        Ok(Spool { buffer, scope })
    }

    /// Adds `line` to the buffer.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the shutdown has flushed the spool.
    pub fn write(&self, line: &str) -> Result<(), Error> {
        let mut buffer = lock(&self.buffer);
        if buffer.closed {
            return Err(Error::Closed);
        }
        buffer.pending.extend_from_slice(line.as_bytes());
        buffer.pending.push(b'\n');
        Ok(())
    }

    /// Flushes and syncs now, ahead of the application's shutdown, and
    /// returns the report of the spool's own cleanups; the spool's task then
    /// leaves the application's instance.
    pub async fn close(self) -> ShutdownReport {
        self.scope.shutdown().await
    }
}

fn lock(buffer: &Mutex<Buffer>) -> std::sync::MutexGuard<'_, Buffer> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use compactor::Priority;
    use compactor::testing::{assert_plan_fits, instance};

    use super::*;

    /// A file path of this test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let name = format!("spool-{test}-{}.log", std::process::id());
            Scratch(std::env::temp_dir().join(name))
        }

        fn read(&self) -> String {
            std::fs::read_to_string(&self.0).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[tokio::test]
    async fn lines_reach_the_file_at_the_applications_shutdown() {
        let file = Scratch::new("shutdown");
        let app = instance();
        let spool = Spool::create(&file.0, app.task("spool")).unwrap();
        spool.write("one").unwrap();
        spool.write("two").unwrap();
        assert_eq!(file.read(), "", "nothing is written before the shutdown");
        // Fails the test, with the report, if a cleanup went wrong.
        let report = app.finish().await;
        assert_eq!(file.read(), "one\ntwo\n");
        assert!(report.task("spool").is_some(), "{report}");
        assert!(matches!(spool.write("three"), Err(Error::Closed)));
    }

    #[tokio::test]
    async fn closing_early_flushes_and_leaves_the_application() {
        let file = Scratch::new("close");
        let app = instance();
        let spool = Spool::create(&file.0, app.task("spool")).unwrap();
        spool.write("early").unwrap();
        let report = spool.close().await;
        assert!(report.is_clean(), "{report}");
        assert_eq!(
            report.tasks().iter().map(|t| t.name()).collect::<Vec<_>>(),
            ["flush", "sync"]
        );
        assert_eq!(file.read(), "early\n");
        assert_eq!(app.plan().inventory().tasks(), 0);
        let _ = app.finish().await;
    }

    #[tokio::test]
    async fn the_application_orders_the_spool_after_its_own_cleanups() {
        let file = Scratch::new("order");
        let app = instance();
        let spool =
            Arc::new(Spool::create(&file.0, app.task("spool").priority(Priority::Low)).unwrap());
        // The application's server logs its last line as it stops: before
        // the spool's flush, by the spool's lower priority.
        let log = Arc::clone(&spool);
        app.task("http")
            .priority(Priority::High)
            .register(compactor::cleanup::once(move || async move {
                log.write("http: drained")
            }))
            .unwrap();
        let _ = app.finish().await;
        assert_eq!(file.read(), "http: drained\n");
    }

    #[tokio::test]
    async fn the_spools_shutdown_fits_the_grace_its_timeout_allows() {
        let file = Scratch::new("plan");
        let app = instance();
        let spool = app.task("spool").timeout(Duration::from_secs(2));
        let _spool = Spool::create(&file.0, spool).unwrap();
        // Its worst case is its timeout, plus the 1 s exit grace.
        assert_plan_fits(&app, Duration::from_secs(3));
        let too_short = std::panic::catch_unwind(|| {
            assert_plan_fits(&app, Duration::from_millis(2_900));
        });
        assert!(too_short.is_err(), "2 s and the exit grace fit in 2.9 s");
        let _ = app.finish().await;
    }

    #[tokio::test]
    async fn a_write_that_fails_keeps_the_line_for_the_retry() {
        // A full disk, as Linux's /dev/full is: every write fails.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let app = Compactor::new();
        let spool = Spool::create("/dev/null", app.task("spool")).unwrap();
        lock(&spool.buffer).file = full;
        spool.write("kept").unwrap();
        let report = app.shutdown().await;
        assert!(!report.is_clean(), "{report}");
        assert_eq!(lock(&spool.buffer).pending, b"kept\n");
    }

    #[tokio::test]
    async fn an_instance_already_shutting_down_refuses_the_spool() {
        let file = Scratch::new("refused");
        let app = instance();
        app.trigger();
        let refused = Spool::create(&file.0, app.task("spool"));
        assert!(matches!(refused, Err(Error::Register(_))), "{refused:?}");
        let _ = app.finish().await;
    }
}
