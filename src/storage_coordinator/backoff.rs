//! The one backoff policy of the charm: how long to sleep between attempts, both while
//! waiting for the install lock ([`super::lock`]) and between download retries
//! (`crate::installer`).
//!
//! Owns: [`Backoff`] (exponential, capped) and the pure "sleep how long, or give up"
//! decision of a deadline-bounded wait ([`Backoff::sleep_before`]).
//! Invariants: pure arithmetic, no clock and no sleeping here; delays never overflow
//! and never exceed `max`; a wait never sleeps past its budget.

use std::time::Duration;

/// Delays between attempts: `first`, then multiplied by `factor` after each attempt,
/// never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub factor: u32,
    pub max: Duration,
}

impl Backoff {
    /// 5 s, 10 s, 20 s, 30 s, 30 s …: what a hook uses while another unit downloads.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_secs(5),
        factor: 2,
        max: Duration::from_secs(30),
    };

    /// 2 s, 4 s, 8 s, 16 s, 30 s …: between retries of a failed download.
    pub const DOWNLOAD_RETRY: Backoff = Backoff {
        first: Duration::from_secs(2),
        factor: 2,
        max: Duration::from_secs(30),
    };

    /// The delay after the `attempt`-th failed attempt (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.first;
        for _ in 0..attempt {
            d = d.saturating_mul(self.factor.max(1));
            if d >= self.max {
                return self.max;
            }
        }
        d.min(self.max)
    }

    /// For a wait bounded by `budget`: how long to sleep after the `attempt`-th failed
    /// attempt (0-based) when `elapsed` has passed, or `None` when the budget is spent
    /// (give up). The sleep never runs past the budget.
    pub fn sleep_before(
        &self,
        attempt: u32,
        elapsed: Duration,
        budget: Duration,
    ) -> Option<Duration> {
        let left = budget.checked_sub(elapsed).filter(|l| !l.is_zero())?;
        Some(self.delay(attempt).min(left))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_and_caps() {
        let b = Backoff::DEFAULT;
        let secs: Vec<u64> = (0..6).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 30, 30, 30]);
        let r = Backoff::DOWNLOAD_RETRY;
        let secs: Vec<u64> = (0..6).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 30, 30]);
        let ms = Backoff {
            first: Duration::from_millis(1),
            factor: 3,
            max: Duration::from_millis(20),
        };
        let v: Vec<u128> = (0..5).map(|a| ms.delay(a).as_millis()).collect();
        assert_eq!(v, vec![1, 3, 9, 20, 20]);
        // No overflow for huge attempt numbers or factor 0.
        assert_eq!(ms.delay(u32::MAX), Duration::from_millis(20));
        let zero = Backoff { factor: 0, ..ms };
        assert_eq!(zero.delay(10), Duration::from_millis(1));
    }

    #[test]
    fn a_bounded_wait_never_sleeps_past_its_budget() {
        let b = Backoff::DEFAULT;
        let s = Duration::from_secs;
        assert_eq!(b.sleep_before(0, s(0), s(600)), Some(s(5)));
        assert_eq!(b.sleep_before(3, s(40), s(600)), Some(s(30)));
        assert_eq!(b.sleep_before(3, s(590), s(600)), Some(s(10)), "clipped");
        assert_eq!(b.sleep_before(3, s(600), s(600)), None, "spent");
        assert_eq!(b.sleep_before(0, s(601), s(600)), None);
        assert_eq!(
            b.sleep_before(0, s(0), Duration::ZERO),
            None,
            "no wait at all"
        );
        assert_eq!(
            b.sleep_before(0, s(0), Duration::MAX),
            Some(s(5)),
            "unbounded"
        );
    }
}
