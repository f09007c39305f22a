//! The run's time limits: the deadline, the current phase's budget, and each
//! attempt's timeout, grace and backoff, all kept by the runner, which runs
//! no user code, so no cleanup can hold them up.
//!
//! Every limit is an `Option<Instant>`: a `Duration` too long to add to the
//! clock (`Duration::MAX`) means no limit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

/// `now + span`, or `None` (never) where that does not fit the clock.
pub(crate) fn after(now: Instant, span: Duration) -> Option<Instant> {
    now.checked_add(span)
}

/// Whether `span` means no limit: too long to add to the clock
/// (`Duration::MAX`, or any span that far off).
pub(crate) fn is_no_limit(span: Duration) -> bool {
    after(Instant::now(), span).is_none()
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// The attempt ran out of its timeout.
    Timeout,
    /// A timed-out attempt that observes its token ran out of its grace.
    Grace,
    /// The backoff before the next attempt is over.
    Retry,
}

/// A timer of one task's attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) at: Instant,
    pub(crate) index: u32,
    pub(crate) attempt: u32,
    pub(crate) due: Due,
}

/// The attempts' timers, earliest first. A timer whose attempt has moved on
/// is not removed: the runner ignores it when it comes due.
#[derive(Default)]
pub(crate) struct Timers(BinaryHeap<Reverse<Timer>>);

impl Timers {
    pub(crate) fn add(&mut self, at: Option<Instant>, index: u32, attempt: u32, due: Due) {
        if let Some(at) = at {
            self.0.push(Reverse(Timer {
                at,
                index,
                attempt,
                due,
            }));
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.peek().map(|t| t.0.at)
    }

    /// The next timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.0.peek() {
            Some(t) if t.0.at <= now => self.0.pop().map(|t| t.0),
            _ => None,
        }
    }
}

/// The earliest of the limits that are set.
pub(crate) fn earliest(limits: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    limits.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_past_the_clock_is_no_limit() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), None);
        assert_eq!(after(now, Duration::ZERO), Some(now));
    }

    #[test]
    fn timers_come_due_earliest_first() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.add(Some(now + Duration::from_secs(2)), 1, 1, Due::Timeout);
        timers.add(Some(now + Duration::from_secs(1)), 2, 1, Due::Retry);
        timers.add(None, 3, 1, Due::Timeout);
        assert_eq!(timers.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(now), None);
        let due = timers.pop_due(now + Duration::from_secs(5)).unwrap();
        assert_eq!((due.index, due.due), (2, Due::Retry));
        assert_eq!(
            timers.pop_due(now + Duration::from_secs(5)).unwrap().index,
            1
        );
        assert_eq!(timers.pop_due(now + Duration::from_secs(5)), None);
    }
}
