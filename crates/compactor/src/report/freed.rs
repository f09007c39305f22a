//! What a cleanup freed: counts a cleanup may return, which the report sums.

use std::fmt;
use std::ops::{Add, AddAssign};

/// What a cleanup freed: return it from the cleanup (or `Ok(freed)`) where
/// `()` would do. The report keeps it per task
/// ([`TaskReport::freed`](super::TaskReport::freed)), sums it per category
/// ([`CategorySummary::freed`](super::CategorySummary::freed)) and in all
/// ([`ShutdownReport::freed`](super::ShutdownReport::freed)); sums saturate.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), compactor::Error> {
/// use compactor::{Category, Compactor, report::Freed};
///
/// let c = Compactor::new();
/// c.task("buffers")
///     .category(Category::Memory)
///     .register(compactor::cleanup::once(|| async { Freed { resources: 3, bytes: 48 << 20 } }))?;
/// let report = c.shutdown().await;
/// assert_eq!(report.freed(), Freed { resources: 3, bytes: 48 << 20 });
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Freed {
    /// Resources let go of: connections, mappings, files, buffers.
    pub resources: u64,
    /// Bytes given back.
    pub bytes: u64,
}

impl Freed {
    /// `n` resources, no byte count.
    pub fn resources(n: u64) -> Freed {
        Freed {
            resources: n,
            bytes: 0,
        }
    }

    /// `n` bytes, as one resource.
    pub fn bytes(n: u64) -> Freed {
        Freed {
            resources: 1,
            bytes: n,
        }
    }

    /// Whether nothing was freed.
    pub fn is_nothing(&self) -> bool {
        *self == Freed::default()
    }
}

impl Add for Freed {
    type Output = Freed;

    fn add(self, other: Freed) -> Freed {
        Freed {
            resources: self.resources.saturating_add(other.resources),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

impl AddAssign for Freed {
    fn add_assign(&mut self, other: Freed) {
        *self = *self + other;
    }
}

impl std::iter::Sum for Freed {
    fn sum<I: Iterator<Item = Freed>>(all: I) -> Freed {
        all.fold(Freed::default(), Add::add)
    }
}

/// `12 freed` or `3 freed, 48.0 MiB`.
impl fmt::Display for Freed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} freed", self.resources)?;
        if self.bytes > 0 {
            const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
            let mut value = self.bytes as f64;
            let mut unit = 0;
            while value >= 1024.0 && unit < UNITS.len() - 1 {
                value /= 1024.0;
                unit += 1;
            }
            match unit {
                0 => write!(f, ", {} B", self.bytes)?,
                _ => write!(f, ", {value:.1} {}", UNITS[unit])?,
            }
        }
        Ok(())
    }
}
