use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The delays between the attempts of a task that has
/// [`retries`](crate::TaskBuilder::retries).
///
/// Exponential: the delay before retry `n` (1-based) is `initial * 2^(n-1)`,
/// capped at `max`. With jitter (the default), each delay is drawn uniformly
/// from its upper half (in whole milliseconds), so many tasks that failed together (a database that
/// went away) do not retry in lock step.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use compactor::Backoff;
///
/// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
/// assert_eq!(b.delay(1), Duration::from_millis(100));
/// assert_eq!(b.delay(3), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: bool,
}

impl Default for Backoff {
    /// 100 ms doubling up to 2 s, with jitter.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
    }
}

impl Backoff {
    /// Doubling delays from `initial`, never more than `max`, with jitter.
    /// A `max` of `Duration::MAX` puts no cap on the delays; a delay too
    /// long for the clock waits until the deadline, which cuts the task off.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: true,
        }
    }

    /// The same delay before every retry (`Duration::MAX`: a retry waits
    /// until the deadline cuts the task off).
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            jitter: false,
        }
    }

    /// Uses the exact delays, with no random spread.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before retry `retry` (1-based), before jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay to wait before retry `retry`, jitter applied.
    pub(crate) fn next_delay(&self, retry: u32) -> Duration {
        let delay = self.delay(retry);
        if !self.jitter || delay.is_zero() {
            return delay;
        }
        // Uniform in [delay/2, delay]: RandomState is seeded per process and
        // per call, which is all the randomness a retry spread needs.
        let random = RandomState::new().hash_one(retry);
        let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
        let half = delay / 2;
        let spread = delay - half;
        let extra = Duration::try_from_secs_f64(spread.as_secs_f64() * fraction)
            .map_or(spread, |extra| extra.min(spread));
        // Whole milliseconds: tokio's timer would round the rest up anyway,
        // and the reported delay is then the one waited.
        let millis = u64::try_from((half + extra).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(millis).clamp(half, delay)
    }
}

/// As JSON: `{"initial_ms": 100.0, "max_ms": 2000.0, "jitter": true}`.
#[cfg(feature = "serde")]
impl serde::Serialize for Backoff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Backoff", 3)?;
        s.serialize_field("initial_ms", &(self.initial.as_secs_f64() * 1e3))?;
        s.serialize_field("max_ms", &(self.max.as_secs_f64() * 1e3))?;
        s.serialize_field("jitter", &self.jitter)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(50));
        let exact: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(exact, [10, 20, 40, 50, 50]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(50));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = b.next_delay(2);
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_millis(200),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 1, "jitter must spread the delays");
        assert_eq!(b.without_jitter().next_delay(2), Duration::from_millis(200));
    }
}
