//! Time as the charm sees it: wall-clock timestamps, a monotonic clock for deadlines,
//! and sleeping.
//!
//! Owns: every read of the clock and every sleep in the charm's own code (the installer's
//! lock and retry waits are its own). Invariants: deadlines use [`Clock::monotonic`],
//! never the wall clock; recorded times use [`Clock::unix_now`].

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock {
    /// The wall clock.
    fn now(&self) -> SystemTime;
    /// Time since an arbitrary fixed point; never goes back.
    fn monotonic(&self) -> Duration;
    fn sleep(&self, d: Duration);

    /// Seconds since the Unix epoch (0 if the clock is before it).
    fn unix_now(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The system's clocks and `std::thread::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
