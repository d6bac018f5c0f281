//! Exponential backoff with jitter for retries against the server.
//!
//! When a server restarts, every agent of the fleet has been failing at the
//! same time; without jitter they would all retry in the same instant (and
//! again at each doubling). Each delay is drawn uniformly between `base` and
//! the current ceiling ("full jitter" with a floor, so a retry is never a
//! busy loop), which spreads 1,000 agents across the whole window.

use std::time::Duration;

use rand::Rng;

/// Retry delays for one kind of request. Not shared between loops: the
/// registration and the config poll back off independently.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// `base` is the first ceiling, doubled per consecutive failure up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        // A cap below the base would make the range empty; treat it as "no growth".
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The upper bound of the next delay: `min(cap, base * 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        // 2^31 * base overflows long before; saturate instead.
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Record a failure and draw the delay before the retry.
    pub fn fail(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let lo = self.base.as_secs_f64();
        let hi = ceiling.as_secs_f64();
        if hi <= lo {
            return ceiling;
        }
        Duration::from_secs_f64(rng.random_range(lo..=hi))
    }

    /// Record a success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The largest delay this backoff can ever produce.
    pub fn cap(&self) -> Duration {
        self.cap
    }
}

/// The regular period with ±10% jitter, so agents started together (a fleet
/// roll-out, a rack power-up) drift apart instead of registering in lockstep.
pub fn jittered(period: Duration, rng: &mut impl Rng) -> Duration {
    period.mul_f64(rng.random_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = vec![];
        for _ in 0..7 {
            ceilings.push(b.ceiling());
            b.fail(&mut rng);
        }
        let want: Vec<_> = [100, 200, 400, 800, 1000, 1000, 1000]
            .map(|n| n * MS)
            .into();
        assert_eq!(ceilings, want);
        assert_eq!(b.failures(), 7);
    }

    #[test]
    fn delays_stay_within_base_and_ceiling_and_vary() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(100 * MS, 10_000 * MS);
            for _ in 0..4 {
                b.fail(&mut rng);
            }
            let ceiling = b.ceiling();
            let d = b.fail(&mut rng);
            assert!(
                d >= 100 * MS && d <= ceiling,
                "{d:?} outside [100ms, {ceiling:?}]"
            );
            seen.insert(d.as_millis());
        }
        // 200 draws over a 1.5 s window: jitter must spread them, not repeat one value.
        assert!(seen.len() > 100, "only {} distinct delays", seen.len());
    }

    #[test]
    fn reset_starts_over_and_huge_failure_counts_saturate() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(MS, 60_000 * MS);
        for _ in 0..200 {
            assert!(b.fail(&mut rng) <= 60_000 * MS);
        }
        assert_eq!(b.ceiling(), 60_000 * MS);
        b.reset();
        assert_eq!(b.ceiling(), MS);
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn cap_below_base_is_the_base() {
        let mut b = Backoff::new(500 * MS, 100 * MS);
        assert_eq!(b.fail(&mut StdRng::seed_from_u64(0)), 500 * MS);
        assert_eq!(b.cap(), 500 * MS);
    }

    #[test]
    fn jittered_period_is_within_ten_percent() {
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60), &mut rng);
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
    }
}
