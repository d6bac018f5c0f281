//! Probes in flight: their records, the signature index that matches
//! replies to them, and the timing wheel that expires them.
//!
//! Records live in a slab (a `Vec` with a free list) and are found by the
//! first 8 bytes of their random signature through a hash map with an
//! identity hasher (the keys are random already). Both are sized up front and
//! keep their capacity, so the hot path does not allocate in steady state.
//!
//! Each record gets exactly two wheel events: at its timeout (a probe still
//! pending then is lost) and after a linger period, during which a record
//! that is already resolved still recognises duplicate and late replies.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::SocketAddr,
};

use llama_common::probe::SIGNATURE_LEN;

use super::{paths::Paths, summary::Flow, wheel::Wheel};

/// Wheel resolution and size: 1 ms ticks, a 4 s revolution (longer
/// deadlines wait for their round).
const TICK_NS: u64 = 1_000_000;
const BUCKETS: usize = 4096;
/// How long a resolved record is kept to recognise duplicates and late
/// replies: its timeout, but at least this.
const MIN_LINGER_NS: u64 = 1_000_000_000;

/// Hashes a u64 key to itself: signatures are random, so their bits are a
/// perfect hash already.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Index = HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Answered,
    /// Timed out (lost); `late_seen` once a late reply came.
    Expired {
        late_seen: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct Record {
    sig: [u8; SIGNATURE_LEN],
    generation: u32,
    live: bool,
    phase: Phase,
    /// Set once the record's second (final) wheel event is scheduled.
    lingering: bool,
    socket: u32,
    flow: Flow,
    path: u32,
    dst: SocketAddr,
    sent_real_ns: u64,
    timeout_ns: u64,
    /// `sent_real_ns` is the kernel's send timestamp, not the clock read
    /// before `sendto`.
    kernel_tx: bool,
}

/// What a reply turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Answered in time; the RTT in nanoseconds.
    Answered(u64),
    /// Arrived after its timeout: the probe is lost and the reply late.
    Late,
    Duplicate,
    /// Matching signature, wrong source address.
    Unexpected,
    /// No probe in flight has this signature.
    Unknown,
}

/// A record as a send timestamp finds it again: its slot and generation
/// (a reused slot has a new generation, so a stale handle matches nothing).
pub type Handle = (u32, u32);

/// What a kernel send timestamp did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// The probe's RTT now starts at the kernel timestamp.
    Applied,
    /// The probe is already resolved (its reply came first) or its record
    /// is gone: it keeps the clock read before `sendto`.
    Resolved,
    /// Before the user-space send time or past the timeout after it: not
    /// this probe's datagram (a key count out of step); ignored.
    Implausible,
}

pub fn sig_key(sig: &[u8]) -> Option<u64> {
    let head: [u8; 8] = sig.get(..8)?.try_into().ok()?;
    Some(u64::from_ne_bytes(head))
}

/// The probe table.
#[derive(Debug)]
pub struct InFlight {
    records: Vec<Record>,
    free: Vec<u32>,
    index: Index,
    wheel: Wheel<(u32, u32)>,
    fired: Vec<(u32, u32)>,
}

impl InFlight {
    /// A table pre-sized for `capacity` records.
    pub fn new(capacity: usize, now_mono_ns: u64) -> Self {
        let mut t = Self {
            records: Vec::new(),
            free: Vec::new(),
            index: Index::default(),
            wheel: Wheel::new(TICK_NS, BUCKETS, now_mono_ns),
            fired: Vec::new(),
        };
        t.reserve(capacity);
        t
    }

    /// Makes room for `capacity` records without further allocation.
    pub fn reserve(&mut self, capacity: usize) {
        self.records
            .reserve(capacity.saturating_sub(self.records.len()));
        self.free.reserve(capacity.saturating_sub(self.free.len()));
        self.index
            .reserve(capacity.saturating_sub(self.index.len()));
        self.fired.reserve(1024);
    }

    /// Records the table has room for without allocating.
    pub fn capacity(&self) -> usize {
        self.records.capacity()
    }

    /// Rebuilds the table around its live records with room for
    /// `capacity`, releasing what a larger configuration made it grow to.
    /// Live records keep their state and their wheel events (renumbered);
    /// stale events are dropped.
    pub fn compact(&mut self, capacity: usize) {
        let live = self.index.len();
        let mut renumber = vec![u32::MAX; self.records.len()];
        let mut records = Vec::with_capacity(capacity.max(live));
        let mut index = Index::default();
        index.reserve(capacity.max(live));
        for (old, rec) in self.records.iter().enumerate() {
            if !rec.live {
                continue;
            }
            let new = records.len() as u32;
            renumber[old] = new;
            if let Some(key) = sig_key(&rec.sig) {
                index.insert(key, new);
            }
            records.push(*rec);
        }
        self.wheel.remap(|(old, generation)| {
            let new = *renumber.get(old as usize)?;
            let rec = records.get(new as usize)?;
            (rec.generation == generation).then_some((new, generation))
        });
        self.records = records;
        self.index = index;
        self.free = Vec::with_capacity(capacity);
        self.fired = Vec::with_capacity(1024);
    }

    /// Records in the table (pending, or resolved and lingering).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `sig` may be used for a new probe (no record shares its key).
    pub fn is_free(&self, sig: &[u8; SIGNATURE_LEN]) -> bool {
        sig_key(sig).is_some_and(|k| !self.index.contains_key(&k))
    }

    /// Records a probe just sent. `sig` must satisfy [`is_free`](Self::is_free).
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        sig: [u8; SIGNATURE_LEN],
        socket: u32,
        flow: Flow,
        path: u32,
        dst: SocketAddr,
        sent_real_ns: u64,
        sent_mono_ns: u64,
        timeout_ns: u64,
    ) -> Option<Handle> {
        let key = sig_key(&sig)?;
        let rec = Record {
            sig,
            generation: 0,
            live: true,
            phase: Phase::Pending,
            lingering: false,
            socket,
            flow,
            path,
            dst,
            sent_real_ns,
            timeout_ns,
            kernel_tx: false,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                let generation = self.records[i as usize].generation.wrapping_add(1);
                self.records[i as usize] = Record { generation, ..rec };
                i
            }
            None => {
                self.records.push(rec);
                (self.records.len() - 1) as u32
            }
        };
        self.index.insert(key, idx);
        let generation = self.records[idx as usize].generation;
        self.wheel
            .insert(sent_mono_ns.saturating_add(timeout_ns), (idx, generation));
        Some((idx, generation))
    }

    /// Starts the RTT of the probe `h` at its kernel send timestamp
    /// `tx_real_ns` (CLOCK_REALTIME, like the receive timestamps), if it is
    /// still pending and the timestamp is plausible for it: not before the
    /// clock read that preceded its `sendto`, and within its timeout.
    pub fn on_tx_timestamp(&mut self, h: Handle, tx_real_ns: u64) -> TxOutcome {
        let Some(rec) = self.records.get_mut(h.0 as usize) else {
            return TxOutcome::Resolved;
        };
        if !rec.live || rec.generation != h.1 || rec.phase != Phase::Pending || rec.kernel_tx {
            return TxOutcome::Resolved;
        }
        if tx_real_ns < rec.sent_real_ns || tx_real_ns - rec.sent_real_ns > rec.timeout_ns {
            return TxOutcome::Implausible;
        }
        rec.sent_real_ns = tx_real_ns;
        rec.kernel_tx = true;
        TxOutcome::Applied
    }

    /// Matches a reply and books its outcome on its path; `ttl` is the TTL /
    /// hop limit it arrived with (a reply answered in time books its hop
    /// count).
    pub fn on_reply(
        &mut self,
        sig: &[u8],
        from: Option<SocketAddr>,
        rx_real_ns: u64,
        ttl: Option<u8>,
        paths: &mut Paths,
    ) -> ReplyOutcome {
        if sig.len() != SIGNATURE_LEN {
            return ReplyOutcome::Unknown;
        }
        let Some(&idx) = sig_key(sig).and_then(|k| self.index.get(&k)) else {
            return ReplyOutcome::Unknown;
        };
        let rec = &mut self.records[idx as usize];
        if rec.sig != sig {
            return ReplyOutcome::Unknown;
        }
        if from != Some(rec.dst) {
            paths.acc(rec.path).unexpected();
            return ReplyOutcome::Unexpected;
        }
        match rec.phase {
            Phase::Pending => {
                // A clock step can make this negative; such a reply is
                // still an answer, with an RTT of 0.
                let rtt = rx_real_ns.saturating_sub(rec.sent_real_ns);
                if rtt <= rec.timeout_ns {
                    rec.phase = Phase::Answered;
                    let acc = paths.acc(rec.path);
                    acc.reply(rec.flow, rtt);
                    acc.reply_ttl(rec.flow, ttl);
                    acc.send_clock(rec.kernel_tx);
                    ReplyOutcome::Answered(rtt)
                } else {
                    // Came after its timeout, before the wheel noticed.
                    rec.phase = Phase::Expired { late_seen: true };
                    let acc = paths.acc(rec.path);
                    acc.lost(rec.flow);
                    acc.late();
                    ReplyOutcome::Late
                }
            }
            Phase::Expired { late_seen: false } => {
                rec.phase = Phase::Expired { late_seen: true };
                paths.acc(rec.path).late();
                ReplyOutcome::Late
            }
            Phase::Answered | Phase::Expired { late_seen: true } => {
                paths.acc(rec.path).duplicate();
                ReplyOutcome::Duplicate
            }
        }
    }

    /// Fires every wheel event due at `now_mono_ns`: pending probes whose
    /// timeout passed are booked lost; records whose linger ended are freed.
    /// Returns how many probes were declared lost.
    pub fn expire(&mut self, now_mono_ns: u64, paths: &mut Paths) -> u64 {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.advance(now_mono_ns, &mut fired);
        let mut lost = 0;
        for &(idx, generation) in &fired {
            let rec = &mut self.records[idx as usize];
            if !rec.live || rec.generation != generation {
                continue;
            }
            if rec.lingering {
                self.remove(idx, paths);
                continue;
            }
            if rec.phase == Phase::Pending {
                rec.phase = Phase::Expired { late_seen: false };
                paths.acc(rec.path).lost(rec.flow);
                lost += 1;
            }
            rec.lingering = true;
            let linger = rec.timeout_ns.max(MIN_LINGER_NS);
            self.wheel
                .insert(now_mono_ns.saturating_add(linger), (idx, generation));
        }
        fired.clear();
        self.fired = fired;
        lost
    }

    fn remove(&mut self, idx: u32, paths: &mut Paths) {
        let rec = &mut self.records[idx as usize];
        rec.live = false;
        if let Some(key) = sig_key(&rec.sig) {
            self.index.remove(&key);
        }
        paths.release(rec.path);
        self.free.push(idx);
    }

    /// Forgets, without booking anything, every record for which `drop`
    /// returns true (given its socket id and destination): probes of targets
    /// or sockets a reconfiguration removed. Returns how many were pending.
    pub fn drop_where(
        &mut self,
        paths: &mut Paths,
        mut drop: impl FnMut(u32, SocketAddr) -> bool,
    ) -> u64 {
        let mut pending = 0;
        for idx in 0..self.records.len() as u32 {
            let rec = self.records[idx as usize];
            if rec.live && drop(rec.socket, rec.dst) {
                if rec.phase == Phase::Pending {
                    pending += 1;
                }
                // The stale wheel events are skipped by the live/generation check.
                self.remove(idx, paths);
            }
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use super::*;
    use crate::collector::summary::PathKey;

    const MS: u64 = 1_000_000;

    fn setup() -> (InFlight, Paths, u32, SocketAddr) {
        let mut paths = Paths::default();
        let key = PathKey {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
        };
        let path = paths.upsert(key, Arc::new(BTreeMap::new()));
        (
            InFlight::new(16, 0),
            paths,
            path,
            "10.0.0.2:8100".parse().unwrap(),
        )
    }

    fn send(
        t: &mut InFlight,
        p: &mut Paths,
        path: u32,
        dst: SocketAddr,
        n: u8,
        at_ms: u64,
    ) -> [u8; 10] {
        let sig = [n, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert!(t.is_free(&sig));
        t.insert(
            sig,
            0,
            Flow {
                index: 0,
                src_port: 4000,
            },
            path,
            dst,
            1_000 * MS + at_ms * MS,
            at_ms * MS,
            100 * MS,
        );
        p.acquire(path);
        sig
    }

    #[test]
    fn compaction_keeps_live_probes_matchable_and_expiring() {
        let (mut t, mut paths, path, dst) = setup();
        t.reserve(100_000);
        let sig_a = [1u8; SIGNATURE_LEN];
        let sig_b = [2u8; SIGNATURE_LEN];
        let sig_gone = [3u8; SIGNATURE_LEN];
        let other: SocketAddr = "10.0.0.9:8100".parse().unwrap();
        for (sig, to) in [(sig_gone, other), (sig_a, dst), (sig_b, dst)] {
            paths.acquire(path);
            t.insert(sig, 0, Flow::default(), path, to, 0, 0, 10 * MS);
        }
        t.drop_where(&mut paths, |_, d| d == other);
        t.compact(16);
        assert!(t.capacity() < 100_000, "capacity {}", t.capacity());
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.on_reply(&sig_a, Some(dst), MS, None, &mut paths),
            ReplyOutcome::Answered(MS)
        );
        assert_eq!(
            t.on_reply(&sig_gone, Some(other), MS, None, &mut paths),
            ReplyOutcome::Unknown
        );
        // b is still pending and times out on schedule.
        assert_eq!(t.expire(10 * MS, &mut paths), 1);
        // Both records are freed after their linger.
        t.expire(2_000 * MS, &mut paths);
        assert!(t.is_empty());
    }

    #[test]
    fn reply_in_time_then_duplicate_then_freed() {
        let (mut t, mut p, path, dst) = setup();
        let sig = send(&mut t, &mut p, path, dst, 1, 0);
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS + 3 * MS, None, &mut p),
            ReplyOutcome::Answered(3 * MS)
        );
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS + 4 * MS, None, &mut p),
            ReplyOutcome::Duplicate
        );
        assert_eq!(
            t.expire(100 * MS, &mut p),
            0,
            "answered probes are not lost"
        );
        assert_eq!(t.len(), 1, "lingers for duplicate detection");
        t.expire(1_200 * MS, &mut p);
        assert!(t.is_empty());
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS, None, &mut p),
            ReplyOutcome::Unknown
        );
        let s = p.acc(path).take().unwrap();
        assert_eq!((s.sent, s.lost, s.duplicates), (1, 0, 1));
    }

    #[test]
    fn timeout_then_late_reply_counts_lost_once_and_late() {
        let (mut t, mut p, path, dst) = setup();
        let sig = send(&mut t, &mut p, path, dst, 2, 0);
        assert_eq!(t.expire(100 * MS, &mut p), 1);
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS + 150 * MS, None, &mut p),
            ReplyOutcome::Late
        );
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS + 160 * MS, None, &mut p),
            ReplyOutcome::Duplicate
        );
        let s = p.acc(path).take().unwrap();
        assert_eq!((s.sent, s.lost, s.late, s.duplicates), (1, 1, 1, 1));
    }

    #[test]
    fn reply_stamped_after_timeout_is_late_even_before_the_wheel_fires() {
        let (mut t, mut p, path, dst) = setup();
        let sig = send(&mut t, &mut p, path, dst, 3, 0);
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS + 101 * MS, None, &mut p),
            ReplyOutcome::Late
        );
        assert_eq!(t.expire(100 * MS, &mut p), 0, "already booked lost");
        let s = p.acc(path).take().unwrap();
        assert_eq!((s.sent, s.lost, s.late), (1, 1, 1));
    }

    #[test]
    fn wrong_source_is_unexpected_and_does_not_answer() {
        let (mut t, mut p, path, dst) = setup();
        let sig = send(&mut t, &mut p, path, dst, 4, 0);
        let other: SocketAddr = "10.0.0.9:8100".parse().unwrap();
        assert_eq!(
            t.on_reply(&sig, Some(other), 1_000 * MS + MS, None, &mut p),
            ReplyOutcome::Unexpected
        );
        assert_eq!(
            t.expire(100 * MS, &mut p),
            1,
            "still lost: the real target never answered"
        );
        let s = p.acc(path).take().unwrap();
        assert_eq!((s.sent, s.lost, s.unexpected), (1, 1, 1));
        // Signatures that are not ours, or mangled, are unknown.
        assert_eq!(
            t.on_reply(&[0; 10], Some(dst), 0, None, &mut p),
            ReplyOutcome::Unknown
        );
        assert_eq!(
            t.on_reply(&sig[..9], Some(dst), 0, None, &mut p),
            ReplyOutcome::Unknown
        );
    }

    #[test]
    fn only_replies_in_time_book_their_hop_count() {
        let (mut t, mut p, path, dst) = setup();
        let answered = send(&mut t, &mut p, path, dst, 7, 0);
        let late = send(&mut t, &mut p, path, dst, 8, 0);
        let ttl = Some(63);
        assert_eq!(
            t.on_reply(&answered, Some(dst), 1_000 * MS + MS, ttl, &mut p),
            ReplyOutcome::Answered(MS)
        );
        // A duplicate, a late reply and one from the wrong address do not
        // count: each with another TTL would otherwise be a change.
        let other: SocketAddr = "10.0.0.9:8100".parse().unwrap();
        for (sig, from, at_ms, outcome) in [
            (answered, dst, 2, ReplyOutcome::Duplicate),
            (late, other, 3, ReplyOutcome::Unexpected),
            (late, dst, 150, ReplyOutcome::Late),
        ] {
            assert_eq!(
                t.on_reply(&sig, Some(from), 1_000 * MS + at_ms * MS, Some(60), &mut p),
                outcome
            );
        }
        let s = p.acc(path).take().unwrap();
        assert_eq!((s.hops, s.hop_changes), (Some(1), 0));
    }

    #[test]
    fn dropped_probes_are_not_booked() {
        let (mut t, mut p, path, dst) = setup();
        send(&mut t, &mut p, path, dst, 5, 0);
        assert_eq!(t.drop_where(&mut p, |_, d| d == dst), 1);
        assert_eq!(t.expire(10_000 * MS, &mut p), 0);
        assert!(
            p.acc(path).take().is_none(),
            "no loss booked for a removed target"
        );
        // The freed slot is reused with a new generation; the stale wheel
        // events of the old record do not touch the new one.
        let sig = send(&mut t, &mut p, path, dst, 6, 10_000);
        t.expire(10_050 * MS, &mut p);
        assert_eq!(
            t.on_reply(&sig, Some(dst), 1_000 * MS + 10_060 * MS, None, &mut p),
            ReplyOutcome::Answered(60 * MS)
        );
    }

    #[test]
    fn kernel_send_time_starts_the_rtt_only_when_plausible_and_pending() {
        let (mut t, mut p, path, dst) = setup();
        // `send` reads the user clock at 1_000 ms + at_ms, timeout 100 ms.
        let send_h = |t: &mut InFlight, p: &mut Paths, n: u8| {
            let sig = [n, 9, 9, 9, 9, 9, 9, 9, 9, 9];
            p.acquire(path);
            let h = t
                .insert(sig, 0, Flow::default(), path, dst, 1_000 * MS, 0, 100 * MS)
                .expect("valid signature");
            (sig, h)
        };
        // Applied: 20 µs after the clock read; the RTT starts there.
        let (a, ha) = send_h(&mut t, &mut p, 1);
        assert_eq!(
            t.on_tx_timestamp(ha, 1_000 * MS + 20_000),
            TxOutcome::Applied
        );
        assert_eq!(
            t.on_tx_timestamp(ha, 1_000 * MS + 30_000),
            TxOutcome::Resolved,
            "a duplicate timestamp changes nothing"
        );
        assert_eq!(
            t.on_reply(&a, Some(dst), 1_000 * MS + MS, None, &mut p),
            ReplyOutcome::Answered(MS - 20_000)
        );
        // Before the clock read, or past the timeout: not this probe's.
        let (b, hb) = send_h(&mut t, &mut p, 2);
        assert_eq!(
            t.on_tx_timestamp(hb, 1_000 * MS - 1),
            TxOutcome::Implausible
        );
        assert_eq!(t.on_tx_timestamp(hb, 1_101 * MS), TxOutcome::Implausible);
        assert_eq!(
            t.on_reply(&b, Some(dst), 1_000 * MS + MS, None, &mut p),
            ReplyOutcome::Answered(MS),
            "the fallback clock"
        );
        // A reply read first keeps the fallback; the late timestamp is ignored.
        let (c, hc) = send_h(&mut t, &mut p, 3);
        assert_eq!(
            t.on_reply(&c, Some(dst), 1_000 * MS + 2 * MS, None, &mut p),
            ReplyOutcome::Answered(2 * MS)
        );
        assert_eq!(t.on_tx_timestamp(hc, 1_000 * MS + 1), TxOutcome::Resolved);
        // A stale handle (the slot reused by another probe) matches nothing.
        t.expire(10_000 * MS, &mut p);
        t.expire(20_000 * MS, &mut p);
        assert!(t.is_empty());
        let (_, hd) = send_h(&mut t, &mut p, 4);
        assert_ne!(hd, ha);
        assert_eq!(t.on_tx_timestamp(ha, 1_000 * MS + 1), TxOutcome::Resolved);
        assert_eq!(
            t.on_tx_timestamp((9_999, 0), 1_000 * MS),
            TxOutcome::Resolved
        );
        let s = p.acc(path).take().unwrap();
        assert_eq!((s.tx_kernel, s.tx_fallback), (1, 2));
    }
}
