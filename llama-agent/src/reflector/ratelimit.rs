//! The userspace reflector's rate limit: the same GCRA as the XDP program
//! (`llama_common::ratelimit`), one bucket shared by all reflector threads
//! through a compare-and-swap on its single `u64`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use llama_common::ratelimit::{admit, default_burst};

/// A token bucket of `max_pps` probes per second; 0 means unlimited. The
/// rate can be changed while threads use it.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    tat_ns: AtomicU64,
    /// `max_pps` in the high 32 bits, `burst` in the low ones, so both change
    /// together.
    setting: AtomicU64,
}

impl RateLimiter {
    pub fn new(max_pps: u32) -> Self {
        let limiter = Self {
            epoch: Instant::now(),
            tat_ns: AtomicU64::new(0),
            setting: AtomicU64::new(0),
        };
        limiter.set_max_pps(max_pps);
        limiter
    }

    /// Changes the rate (0 = unlimited), with the default burst.
    pub fn set_max_pps(&self, max_pps: u32) {
        let packed = (u64::from(max_pps) << 32) | u64::from(default_burst(max_pps));
        self.setting.store(packed, Ordering::Relaxed);
    }

    /// The rate in effect (0 = unlimited).
    pub fn max_pps(&self) -> u32 {
        (self.setting.load(Ordering::Relaxed) >> 32) as u32
    }

    /// Takes a token if one is available.
    pub fn try_acquire(&self) -> bool {
        let setting = self.setting.load(Ordering::Relaxed);
        let (max_pps, burst) = ((setting >> 32) as u32, setting as u32);
        if max_pps == 0 {
            return true;
        }
        // Saturates after 584 years of uptime.
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let Some(next) = admit(tat, now, max_pps, burst) else {
                return false;
            };
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_by_default_and_limited_when_set() {
        let limiter = RateLimiter::new(0);
        assert!((0..10_000).all(|_| limiter.try_acquire()));
        limiter.set_max_pps(10);
        let admitted = (0..1000).filter(|_| limiter.try_acquire()).count();
        // Burst of 1 at 10 pps; the loop is far shorter than 100 ms... on a
        // loaded machine it may not be, so allow a few refills.
        assert!((1..=5).contains(&admitted), "{admitted}");
        assert_eq!(limiter.max_pps(), 10);
    }
}
