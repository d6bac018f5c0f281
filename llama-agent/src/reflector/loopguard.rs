//! The userspace reflector's loop guards, the same two rules as the XDP
//! program's (docs/probe.md):
//!
//! - a probe *from* the reflector's own probe port is never answered: every
//!   reflector answers from its probe port, so such a datagram is a
//!   reflector's reply dressed up as a probe (ends the same-port loop at the
//!   first hop);
//! - each probe — by source address and port, signature and `sent` — is
//!   answered at most `answers_per_probe` times, remembered in
//!   [`RecentProbes`], a bounded table of the latest answers (ends loops
//!   between reflectors on different ports, or with any UDP echo service).
//!
//! Why this is enough: a reflection loop is one datagram bouncing back and
//! forth unchanged, while a collector sends every probe once with fresh
//! random signature bytes. The table only has to remember an answer until
//! the datagram could come back, milliseconds; its capacity is a count of
//! answers, so memory stays bounded whatever arrives.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hash, Hasher, RandomState},
    net::SocketAddr,
};

/// The answers recently given, by probe identity, bounded to `capacity`
/// probes: when full, the oldest first answer is forgotten (first in, first
/// out — a looping probe is dropped, and so stops coming back, long before
/// `capacity` newer probes could push it out).
#[derive(Debug)]
pub struct RecentProbes {
    capacity: usize,
    counts: HashMap<u64, u32>,
    order: VecDeque<u64>,
    /// Keyed (SipHash with random keys): a sender cannot craft two probes
    /// with the same identity.
    hasher: RandomState,
}

impl RecentProbes {
    /// A table of at most `capacity` probes (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            counts: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
            hasher: RandomState::new(),
        }
    }

    /// The identity of a probe: who sent it, its signature and `sent`.
    pub fn key(&self, src: SocketAddr, signature: &[u8], sent: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        // An IPv4 probe seen on a dual-stack socket is the same probe.
        SocketAddr::new(src.ip().to_canonical(), src.port()).hash(&mut h);
        signature.hash(&mut h);
        sent.hash(&mut h);
        h.finish()
    }

    /// How many times the probe `key` was answered, as far as the table
    /// remembers.
    pub fn answers(&self, key: u64) -> u32 {
        self.counts.get(&key).copied().unwrap_or(0)
    }

    /// Notes one more answer to `key`, forgetting the oldest probe if the
    /// table is full.
    pub fn record(&mut self, key: u64) {
        if let Some(n) = self.counts.get_mut(&key) {
            *n = n.saturating_add(1);
            return;
        }
        if self.counts.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.counts.remove(&oldest);
        }
        self.counts.insert(key, 1);
        self.order.push_back(key);
    }

    /// Probes remembered.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Why the loop guards refuse a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopDrop {
    /// Sent from the probe port: another reflector's reply.
    FromProbePort,
    /// Already answered `answers_per_probe` times.
    Repeated,
}

/// The guards' verdict for a probe from `src` to our `port`, whose identity
/// is `key`: `Ok(())` to answer (then [`RecentProbes::record`] it once the
/// answer is certain), or why not. `answers_per_probe` below 1 counts as 1.
pub fn check(
    recent: &RecentProbes,
    port: u16,
    answers_per_probe: u32,
    src: SocketAddr,
    key: u64,
) -> Result<(), LoopDrop> {
    if src.port() == port {
        return Err(LoopDrop::FromProbePort);
    }
    if recent.answers(key) >= answers_per_probe.max(1) {
        return Err(LoopDrop::Repeated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn same_probe_is_answered_at_most_the_limit() {
        let mut recent = RecentProbes::new(16);
        let a = src("10.0.0.1:40000");
        let key = recent.key(a, b"0123456789", 42);
        for limit in [1, 3] {
            let mut recent_n = RecentProbes::new(16);
            let key = recent_n.key(a, b"0123456789", 42);
            let mut answered = 0;
            for _ in 0..10 {
                if check(&recent_n, 8100, limit, a, key).is_ok() {
                    recent_n.record(key);
                    answered += 1;
                }
            }
            assert_eq!(answered, limit, "limit {limit}");
            assert_eq!(
                check(&recent_n, 8100, limit, a, key),
                Err(LoopDrop::Repeated)
            );
        }
        // A limit of 0 counts as 1.
        recent.record(key);
        assert_eq!(check(&recent, 8100, 0, a, key), Err(LoopDrop::Repeated));
    }

    #[test]
    fn identity_is_source_signature_and_sent() {
        let recent = RecentProbes::new(16);
        let a = src("10.0.0.1:40000");
        let k = recent.key(a, b"0123456789", 42);
        assert_eq!(k, recent.key(a, b"0123456789", 42));
        assert_ne!(k, recent.key(src("10.0.0.2:40000"), b"0123456789", 42));
        assert_ne!(k, recent.key(src("10.0.0.1:40001"), b"0123456789", 42));
        assert_ne!(k, recent.key(a, b"0123456788", 42));
        assert_ne!(k, recent.key(a, b"0123456789", 43));
        // The same IPv4 source seen through a dual-stack socket.
        assert_eq!(
            k,
            recent.key(src("[::ffff:10.0.0.1]:40000"), b"0123456789", 42)
        );
    }

    #[test]
    fn probes_from_the_probe_port_are_refused() {
        let recent = RecentProbes::new(16);
        let from_8100 = src("10.0.0.1:8100");
        let key = recent.key(from_8100, b"x", 0);
        assert_eq!(
            check(&recent, 8100, 1, from_8100, key),
            Err(LoopDrop::FromProbePort)
        );
        // From the probe port of a reflector on another port: a probe for us.
        assert_eq!(check(&recent, 8200, 1, from_8100, key), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_first() {
        let mut recent = RecentProbes::new(3);
        let a = src("10.0.0.1:40000");
        let keys: Vec<u64> = (0..5u64).map(|i| recent.key(a, b"sig", i)).collect();
        for &k in &keys {
            recent.record(k);
            assert!(recent.len() <= 3);
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.answers(keys[0]), 0, "oldest forgotten");
        assert_eq!(recent.answers(keys[1]), 0);
        assert_eq!(recent.answers(keys[4]), 1);
        // A repeat does not take a new slot nor evict anything.
        recent.record(keys[4]);
        assert_eq!((recent.len(), recent.answers(keys[4])), (3, 2));
        assert_eq!(recent.answers(keys[2]), 1);
        // Capacity 0 still remembers one probe.
        let mut tiny = RecentProbes::new(0);
        tiny.record(keys[0]);
        tiny.record(keys[1]);
        assert_eq!((tiny.len(), tiny.answers(keys[1])), (1, 1));
        assert!(!tiny.is_empty());
    }
}
