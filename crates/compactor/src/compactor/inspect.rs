//! What a shutdown would do, and how far one has got.

use super::Compactor;
use crate::inspect::{Progress, ShutdownPlan};

impl Compactor {
    /// What a shutdown would do if it began now, running nothing: its
    /// phases, each task's effective priority and limits, the graph, and
    /// the longest the run can take (see [`ShutdownPlan`]). Reads the
    /// registry without holding registrations up for long (one shard at a
    /// time). Once shutdown has begun the registry is empty: see
    /// [`progress`](Self::progress).
    ///
    /// ```
    /// use std::time::Duration;
    /// use compactor::{Compactor, Priority};
    ///
    /// # fn main() -> Result<(), compactor::Error> {
    /// let c = Compactor::new();
    /// let pool = c.register("db-pool", || async {})?;
    /// c.task("http")
    ///     .priority(Priority::High)
    ///     .depends_on(&pool)
    ///     .timeout(Duration::from_secs(5))
    ///     .register(|| async {})?;
    ///
    /// let plan = c.plan();
    /// let http = plan.task("http").unwrap();
    /// assert_eq!(http.depends_on().map(|d| d.name()).collect::<Vec<_>>(), ["db-pool"]);
    /// // 5 s for the server, then the default 10 s for the pool.
    /// assert_eq!(plan.worst_case(), Duration::from_secs(15));
    /// # Ok(())
    /// # }
    /// ```
    pub fn plan(&self) -> ShutdownPlan {
        let plan = ShutdownPlan::new(self.plan_of(self.inner.registry.snapshot()), self.config());
        plan.with_inventory(self.inventory())
    }

    /// How far the shutdown has got: `None` before it begins, live while it
    /// runs, final after it. Reads shared counters without asking the run,
    /// so it answers even while every runtime worker is blocked; cheap
    /// enough to call every 100 ms.
    pub fn progress(&self) -> Option<Progress> {
        let ctx = self.current_run()?;
        Some(Progress::of(ctx, self.config().deadline))
    }
}
