//! Scopes: a child instance per owner (a connection, a child process, a
//! test) whose whole shutdown is one task in its parent's graph.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::task::cleanup::{Cleanup, Start};
use crate::{Compactor, Error, TaskBuilder};

impl TaskBuilder<'_> {
    /// Registers a scope: a child instance for the resources of one owner (a
    /// connection, a child process, a test), whose whole shutdown is this
    /// task. It shares this instance's settings, but never listens for
    /// signals.
    ///
    /// When this instance shuts down, the scope's cleanups run there, in
    /// their own order. The scope can also be shut down on its own (the owner went
    /// away), after which it leaves this instance. Scopes nest. A scope that
    /// every holder dropped without shutting it down is still shut down by
    /// its parent.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), compactor::Error> {
    /// let app = compactor::Compactor::new();
    /// let conn = app.task("conn-42").scope()?;
    /// conn.register("flush-session", || async {})?;
    /// conn.register("close-socket", || async {})?;
    /// // The connection ends: its cleanups run now, and it leaves `app`.
    /// assert!(conn.shutdown().await.is_clean());
    /// assert_eq!(app.plan().tasks().len(), 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Without a [`timeout`](Self::timeout), the task
    /// gets the scope's whole [deadline](crate::Builder::deadline).
    ///
    /// The task succeeds if the scope's report is clean and fails, naming how
    /// many of its tasks did not succeed, otherwise; the failure carries
    /// the scope's report ([`TaskReport::scope`](crate::TaskReport::scope)),
    /// so the parent's [`failures`](crate::ShutdownReport::failures) name
    /// each one inside by its path. A [`supervise`](Self::supervise) given
    /// here is the default of the services registered in the scope.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn scope(self) -> Result<Compactor, Error> {
        if let Some(error) = self.restarts_refusal(true) {
            return Err(error);
        }
        let child = self.compactor().new_scope();
        let deadline = child.config().deadline;
        let builder = match self.has_timeout() {
            true => self,
            false => self.timeout(deadline),
        };
        let name: Arc<str> = Arc::from(builder.name());
        let parent = builder.compactor();
        let place = (builder.spec_priority(), builder.spec_category());
        let supervision = builder.supervision;
        let handle = builder.finish(Box::new(ScopeCleanup {
            child: child.clone(),
            name: name.clone(),
        }))?;
        child.place_under(parent, &name, place, supervision);
        child.scoped_as(handle);
        Ok(child)
    }
}

/// The task of a scope in its parent: shuts the scope down.
struct ScopeCleanup {
    child: Compactor,
    name: Arc<str>,
}

impl Cleanup for ScopeCleanup {
    fn start(&mut self, _token: Option<&CancellationToken>) -> Start {
        let (child, name) = (self.child.clone(), self.name.clone());
        Start::Async(Box::pin(async move {
            let report = child.shutdown().await;
            match report.is_clean() {
                // What its tasks freed, as the scope's.
                true => Ok(Some(report.freed()).filter(|f| !f.is_nothing())),
                false => Err(crate::compactor::scope_failure(&name, &report)),
            }
        }))
    }

    fn scope(&self) -> Option<Box<dyn std::any::Any>> {
        Some(Box::new(self.child.clone()))
    }
}
