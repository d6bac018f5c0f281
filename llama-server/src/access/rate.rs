//! The per-source rate of registrations: a token bucket per source address
//! (IPv6 per /64, the block one host usually holds) in a table of bounded
//! size. A full bucket is the same as no bucket, so when the table is full
//! the buckets that have refilled are dropped; if it is still full, new
//! sources are refused until some refill.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How often a full table is swept for refilled buckets, at most: a sweep
/// is linear in the table, so it must not run on every refused request.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    /// How long until the source may try again.
    pub retry_after: Duration,
    /// The table of sources was full (rather than this source too fast).
    pub table_full: bool,
}

/// Token buckets per source address.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    table: Mutex<Table>,
}

/// The key of a source: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64)))
        }
        v4 => v4,
    }
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once, at most
    /// `max_sources` sources tracked.
    pub fn new(rate: f64, burst: f64, max_sources: usize) -> Self {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            max_sources: max_sources.max(1),
            table: Mutex::default(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Takes one token of `ip`'s bucket, or says how long to wait.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let key = key(ip);
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !t.buckets.contains_key(&key) && t.buckets.len() >= self.max_sources {
            let due = t
                .last_sweep
                .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
            if due {
                t.last_sweep = Some(now);
                let burst = self.burst;
                t.buckets.retain(|_, b| self.refilled(*b, now) < burst);
            }
            if t.buckets.len() >= self.max_sources {
                return Err(Refusal {
                    retry_after: SWEEP_EVERY,
                    table_full: true,
                });
            }
        }
        let b = t.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(*b, now);
        if tokens >= 1.0 {
            *b = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        *b = Bucket { tokens, at: now };
        Err(Refusal {
            retry_after: Duration::from_secs_f64((1.0 - tokens) / self.rate),
            table_full: false,
        })
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let r = RateLimiter::new(2.0, 3.0, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            r.take(ip("10.0.0.1"), t0).unwrap();
        }
        let refused = r.take(ip("10.0.0.1"), t0).unwrap_err();
        assert!(!refused.table_full);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // Another source has its own bucket.
        r.take(ip("10.0.0.2"), t0).unwrap();
        // Half a second later, one more.
        let t1 = t0 + Duration::from_millis(500);
        r.take(ip("10.0.0.1"), t1).unwrap();
        assert!(r.take(ip("10.0.0.1"), t1).is_err());
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let r = RateLimiter::new(1.0, 1.0, 10);
        let t0 = Instant::now();
        r.take(ip("2001:db8:0:1::1"), t0).unwrap();
        assert!(r.take(ip("2001:db8:0:1::2"), t0).is_err());
        r.take(ip("2001:db8:0:2::1"), t0).unwrap();
        // IPv4-mapped IPv6 is the IPv4 address.
        r.take(ip("192.0.2.1"), t0).unwrap();
        assert!(r.take(ip("::ffff:192.0.2.1"), t0).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let r = RateLimiter::new(1.0, 2.0, 2);
        let t0 = Instant::now();
        r.take(ip("10.0.0.1"), t0).unwrap();
        r.take(ip("10.0.0.2"), t0).unwrap();
        let refused = r.take(ip("10.0.0.3"), t0).unwrap_err();
        assert!(refused.table_full);
        assert_eq!(r.sources(), 2);
        // Once the others' buckets refill, they make room.
        let later = t0 + Duration::from_secs(5);
        r.take(ip("10.0.0.3"), later).unwrap();
        assert_eq!(r.sources(), 1);
    }
}
