//! Seeing a shutdown before and while it happens: the [`ShutdownPlan`] of
//! what it would do, and the [`Progress`] of one under way.

mod plan;
mod progress;
mod render;
pub(crate) mod stderr;
mod ticker;

pub use plan::{PlanPhase, PlanTask, ShutdownPlan};
pub use progress::{Progress, RunningTask, WaitingTask};

pub(crate) use ticker::{on_terminal, ticker};
