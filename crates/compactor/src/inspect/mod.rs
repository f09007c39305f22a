//! Seeing a shutdown before and while it happens: the [`ShutdownPlan`] of
//! what it would do, the [`Progress`] of one under way, and the
//! [`Inventory`] of what an instance holds.

mod inventory;
mod plan;
mod progress;
mod render;
pub(crate) mod stderr;
mod ticker;

pub use inventory::{Coverage, Inventory};
pub use plan::{PlanPhase, PlanTask, ShutdownPlan};
pub use progress::{Progress, RunningTask, WaitingTask};

pub(crate) use ticker::{on_terminal, ticker};
