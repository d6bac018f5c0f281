//! The reflector's rate limit as a GCRA (generic cell rate algorithm), the
//! single-number form of a token bucket, shared by the XDP program and the
//! userspace reflector so both limit exactly alike.
//!
//! The whole bucket is one `u64`, the theoretical arrival time (TAT) of the
//! next conforming probe. That is what lets the XDP program keep **one global
//! bucket** updated with a single compare-and-swap instead of a lock or a
//! per-CPU split: a per-CPU bucket would have to get `rate / ncpus`, and then
//! a single collector whose flows the NIC steers to one queue would be held
//! to a fraction of the configured rate.

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;

/// Default bucket depth for `max_pps`: a tenth of a second's worth (at least
/// one), so a collector's per-cycle burst of probes is not cut while the
/// long-run rate stays at `max_pps`.
pub const fn default_burst(max_pps: u32) -> u32 {
    let b = max_pps / 10;
    if b == 0 { 1 } else { b }
}

/// One GCRA decision: with the stored `tat` and the clock `now` (ns), returns
/// the new TAT to store if a probe arriving now conforms (is admitted), or
/// `None` if it must be dropped. `max_pps` must be non-zero (0 means "no
/// limit" and is handled by the callers); `burst` below 1 counts as 1.
#[inline(always)]
pub const fn admit(tat: u64, now: u64, max_pps: u32, burst: u32) -> Option<u64> {
    // Rates above 1e9 pps give a zero interval: everything conforms.
    let interval = NS_PER_S / max_pps as u64;
    let burst = if burst == 0 { 1 } else { burst as u64 };
    let tolerance = interval * burst;
    let base = if tat > now { tat } else { now };
    let next = base + interval;
    if next - now > tolerance {
        None
    } else {
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_burst_then_the_rate() {
        let (rate, burst) = (100, 5);
        let mut tat = 0;
        let now = 1_000_000_000;
        let mut admitted = 0;
        for _ in 0..50 {
            if let Some(t) = admit(tat, now, rate, burst) {
                tat = t;
                admitted += 1;
            }
        }
        assert_eq!(
            admitted, burst,
            "a burst at one instant gets exactly the bucket depth"
        );
        // One interval later exactly one more conforms.
        let later = now + NS_PER_S / u64::from(rate);
        assert!(admit(tat, later, rate, burst).is_some());
        // Over a long run the admitted rate converges to max_pps.
        let mut tat = 0;
        let mut count = 0u64;
        for i in 0..1_000_000u64 {
            // 10,000 attempts per second of simulated time for 100 s.
            if let Some(t) = admit(tat, 1 + i * 100_000, rate, burst) {
                tat = t;
                count += 1;
            }
        }
        assert!((9_995..=10_010).contains(&count), "{count}");
    }

    #[test]
    fn zero_burst_counts_as_one() {
        assert!(admit(0, 10, 1, 0).is_some());
        let tat = admit(0, 10, 1, 0).unwrap_or(0);
        assert!(admit(tat, 10, 1, 0).is_none());
    }

    #[test]
    fn default_burst_is_a_tenth_of_a_second() {
        assert_eq!(default_burst(0), 1);
        assert_eq!(default_burst(5), 1);
        assert_eq!(default_burst(5000), 500);
    }
}
