//! What a registration is, as plain data: a task's options, its
//! dependencies and its cleanup. The stages below read it; the handle's
//! registration methods build it.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::priority::{Category, Priority};

pub(crate) mod cleanup;

/// Names of the library's own tasks start with this; users' may not.
pub(crate) const RESERVED_PREFIX: &str = "compactor::";

/// A dependency as declared: by handle (name and id must still match at
/// shutdown) or by name (whatever task has that name at shutdown).
#[derive(Debug, Clone)]
pub(crate) struct Dep {
    pub(crate) name: Arc<str>,
    pub(crate) id: Option<NonZeroU64>,
}

/// The options of one task, as the runner needs them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    pub(crate) priority: Priority,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) category: Category,
    pub(crate) backoff: Option<Box<Backoff>>,
    /// Read from the cleanup at registration, for a plan that reads no
    /// cleanup (it fits in the padding).
    pub(crate) kind: CleanupKind,
}

/// What kind of cleanup a task has, as a plan shows it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CleanupKind {
    pub(crate) blocking: bool,
    pub(crate) observes_token: bool,
}

impl CleanupKind {
    pub(crate) fn of(cleanup: &dyn cleanup::Cleanup) -> CleanupKind {
        CleanupKind {
            blocking: cleanup.is_blocking(),
            observes_token: cleanup.observes_token(),
        }
    }
}
