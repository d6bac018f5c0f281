//! Per-path accounting and the summaries published every interval.
//!
//! A path is a (source IP, destination IP) pair, as in the original. A probe
//! is booked when its fate is known (its reply arrived, or its timeout
//! passed), into the interval that is open at that moment: the summary
//! published at a boundary therefore covers the probes sent in the interval
//! that resolved before it closed, and a probe still in flight at the
//! boundary is booked in the next one. No probe is dropped from the books.
//!
//! Hop counts: both reflectors answer with a fresh TTL / hop limit of
//! [`REPLY_TTL`], so a reply that arrives with TTL `t` crossed
//! `64 - t` routers on its way back (0: same L2 segment). An interval's
//! `hops` is the hop count most of its replies came back with (the smaller
//! one on a tie), so that flows spread over ECMP paths of different lengths
//! give a steady value. `hop_changes` counts, per flow (source port), the
//! replies whose hop count differs from the previous reply of the same flow,
//! across interval boundaries too: a route flap shows as changes, while
//! flows that take different (but stable) ECMP paths do not.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use hdrhistogram::Histogram;
use llama_common::REPLY_TTL;

use super::metrics::histogram::RttCounts;

/// Highest RTT the histogram tracks (larger values are clamped to it).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// The routers a reply crossed, from the TTL / hop limit it arrived with;
/// `None` for a TTL above [`REPLY_TTL`] (a reflector that starts from
/// another value: no hop count rather than a wrong one).
pub fn hop_count(ttl: u8) -> Option<u8> {
    REPLY_TTL.checked_sub(ttl)
}

/// Tags attached to a path's summaries.
pub type Tags = Arc<BTreeMap<String, String>>;

/// A measured path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// One flow of a path: the probing socket's index in its port group (stable
/// across restarts, unlike its ephemeral source port) and that source port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub index: u16,
    pub src_port: u16,
}

#[derive(Clone, Copy, Debug, Default)]
struct PortAcc {
    flow: Flow,
    sent: u64,
    lost: u64,
    /// The hop count of the flow's last reply that had one, kept across
    /// intervals; forgotten when the flow's source port changes.
    last_hops: Option<u8>,
}

/// The running books of one path for the open interval.
#[derive(Debug)]
pub struct PathAcc {
    pub key: PathKey,
    pub tags: Tags,
    sent: u64,
    lost: u64,
    late: u64,
    duplicates: u64,
    unexpected: u64,
    send_errors: u64,
    rtt_sum_ns: u128,
    rtt_min_ns: u64,
    rtt_max_ns: u64,
    hist: Histogram<u32>,
    /// The same RTTs in the Prometheus histogram's buckets.
    rtt_buckets: RttCounts,
    /// The last RTT seen, kept across intervals so jitter pairs never break.
    last_rtt_ns: Option<u64>,
    jitter_sum_ns: u128,
    jitter_pairs: u64,
    ports: Vec<PortAcc>,
    /// Replies of the interval per hop count: (hops, replies), in order of
    /// first appearance (one entry per distinct path length, so few).
    hop_replies: Vec<(u8, u32)>,
    hop_changes: u64,
    tx_kernel: u64,
    tx_fallback: u64,
}

/// One published per-path summary (one `/influxdata` point).
#[derive(Clone, Debug, PartialEq)]
pub struct PathSummary {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub tags: Tags,
    pub sent: u64,
    pub lost: u64,
    /// Percent, 0–100 (0 when nothing was sent).
    pub loss_pct: f64,
    /// Mean RTT of the replies, milliseconds (0 when all were lost).
    pub rtt_mean_ms: f64,
    pub rtt_min_ms: f64,
    pub rtt_max_ms: f64,
    pub rtt_p50_ms: f64,
    pub rtt_p90_ms: f64,
    pub rtt_p99_ms: f64,
    /// Mean absolute difference of consecutive RTTs, milliseconds.
    pub jitter_ms: f64,
    /// Replies that arrived after their probe's timeout (those probes are lost).
    pub late: u64,
    pub duplicates: u64,
    /// Replies with a matching signature from an address the probe was not sent to.
    pub unexpected: u64,
    /// Probes whose `sendto` failed locally (not counted as sent).
    pub send_errors: u64,
    /// Loss per flow (source port), so that one bad ECMP path stands out.
    pub ports: Vec<PortLoss>,
    /// The RTTs of the replies in the Prometheus histogram's buckets
    /// (`sent - lost` of them).
    pub rtt_buckets: RttCounts,
    /// Routers the replies crossed (`64 - TTL`), the value most replies of
    /// the interval had (the smaller on a tie); `None` when no reply had one.
    pub hops: Option<u8>,
    /// Replies whose hop count differed from the previous reply of the same
    /// flow (source port), in this interval or the one before.
    pub hop_changes: u64,
    /// Replies whose RTT started at the kernel's send timestamp.
    pub tx_kernel: u64,
    /// Replies whose RTT started at the clock read before `sendto`
    /// (`--tx-timestamps off`, refused by the kernel, or the reply was read
    /// before the timestamp). `tx_kernel + tx_fallback = sent - lost`.
    pub tx_fallback: u64,
}

/// Sent and lost probes of one flow (source port) on a path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PortLoss {
    /// The socket's index in its port group: `0..count`.
    pub flow: u16,
    pub src_port: u16,
    pub sent: u64,
    pub lost: u64,
    pub loss_pct: f64,
}

/// What the API serves: the summaries of the last completed interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// End of the interval, seconds since the Unix epoch (0 before the first).
    pub interval_end: u64,
    pub paths: Vec<PathSummary>,
}

fn ms(ns: f64) -> f64 {
    ns / 1_000_000.0
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl PathAcc {
    pub fn new(key: PathKey, tags: Tags) -> Self {
        Self {
            key,
            tags,
            sent: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            unexpected: 0,
            send_errors: 0,
            rtt_sum_ns: 0,
            rtt_min_ns: u64::MAX,
            rtt_max_ns: 0,
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 2)
                .expect("static histogram bounds are valid"),
            rtt_buckets: RttCounts::default(),
            last_rtt_ns: None,
            jitter_sum_ns: 0,
            jitter_pairs: 0,
            ports: Vec::new(),
            hop_replies: Vec::new(),
            hop_changes: 0,
            tx_kernel: 0,
            tx_fallback: 0,
        }
    }

    fn port(&mut self, flow: Flow) -> &mut PortAcc {
        // Linear: a path has as many flows as its port group (4 by default).
        let i = match self.ports.iter().position(|p| p.flow.index == flow.index) {
            Some(i) => i,
            None => {
                self.ports.push(PortAcc {
                    flow,
                    sent: 0,
                    lost: 0,
                    last_hops: None,
                });
                self.ports.len() - 1
            }
        };
        let acc = &mut self.ports[i];
        if acc.flow.src_port != flow.src_port {
            // A new source port may hash onto another ECMP path.
            acc.last_hops = None;
        }
        // A socket replaced by a reconfiguration keeps its index.
        acc.flow.src_port = flow.src_port;
        acc
    }

    /// A probe answered in time after `rtt_ns`.
    pub fn reply(&mut self, flow: Flow, rtt_ns: u64) {
        self.sent += 1;
        self.port(flow).sent += 1;
        self.rtt_sum_ns += u128::from(rtt_ns);
        self.rtt_min_ns = self.rtt_min_ns.min(rtt_ns);
        self.rtt_max_ns = self.rtt_max_ns.max(rtt_ns);
        // Clamped into range, so recording cannot fail.
        let _ = self.hist.record(rtt_ns.clamp(1, HIST_MAX_NS));
        self.rtt_buckets.record(rtt_ns);
        if let Some(last) = self.last_rtt_ns {
            self.jitter_sum_ns += u128::from(last.abs_diff(rtt_ns));
            self.jitter_pairs += 1;
        }
        self.last_rtt_ns = Some(rtt_ns);
    }

    /// The TTL / hop limit that the reply [`reply`](Self::reply) just
    /// booked for `flow` arrived with (`None`: unknown). A TTL above
    /// [`REPLY_TTL`] is ignored.
    pub fn reply_ttl(&mut self, flow: Flow, ttl: Option<u8>) {
        let Some(hops) = ttl.and_then(hop_count) else {
            return;
        };
        match self.hop_replies.iter_mut().find(|(h, _)| *h == hops) {
            Some((_, n)) => *n += 1,
            None => self.hop_replies.push((hops, 1)),
        }
        let port = self.port(flow);
        let changed = port.last_hops.is_some_and(|last| last != hops);
        port.last_hops = Some(hops);
        if changed {
            self.hop_changes += 1;
        }
    }

    /// The interval's hop count: the one most replies had, the smaller on
    /// a tie.
    fn hops(&self) -> Option<u8> {
        self.hop_replies
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|&(h, _)| h)
    }

    /// Which clock started the RTT of the reply just booked.
    pub fn send_clock(&mut self, kernel: bool) {
        if kernel {
            self.tx_kernel += 1;
        } else {
            self.tx_fallback += 1;
        }
    }

    /// A probe lost (no reply within its timeout).
    pub fn lost(&mut self, flow: Flow) {
        self.sent += 1;
        self.lost += 1;
        let p = self.port(flow);
        p.sent += 1;
        p.lost += 1;
    }

    pub fn late(&mut self) {
        self.late += 1;
    }

    pub fn duplicate(&mut self) {
        self.duplicates += 1;
    }

    pub fn unexpected(&mut self) {
        self.unexpected += 1;
    }

    pub fn send_error(&mut self) {
        self.send_errors += 1;
    }

    /// Whether anything was booked in the open interval.
    pub fn is_idle(&self) -> bool {
        self.sent == 0
            && self.late == 0
            && self.duplicates == 0
            && self.unexpected == 0
            && self.send_errors == 0
    }

    /// Closes the interval: returns its summary (`None` if idle) and resets
    /// the books, keeping every buffer's capacity.
    pub fn take(&mut self) -> Option<PathSummary> {
        if self.is_idle() {
            return None;
        }
        let replies = self.sent - self.lost;
        let (mean, min, max, p50, p90, p99) = if replies == 0 {
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        } else {
            let q = |q: f64| ms(self.hist.value_at_quantile(q) as f64);
            (
                ms(self.rtt_sum_ns as f64 / replies as f64),
                ms(self.rtt_min_ns as f64),
                ms(self.rtt_max_ns as f64),
                q(0.5),
                q(0.9),
                q(0.99),
            )
        };
        let jitter = if self.jitter_pairs == 0 {
            0.0
        } else {
            ms(self.jitter_sum_ns as f64 / self.jitter_pairs as f64)
        };
        let mut ports: Vec<PortLoss> = self
            .ports
            .iter()
            .filter(|p| p.sent > 0)
            .map(|p| PortLoss {
                flow: p.flow.index,
                src_port: p.flow.src_port,
                sent: p.sent,
                lost: p.lost,
                loss_pct: pct(p.lost, p.sent),
            })
            .collect();
        ports.sort_by_key(|p| p.flow);
        let summary = PathSummary {
            src_ip: self.key.src,
            dst_ip: self.key.dst,
            tags: self.tags.clone(),
            sent: self.sent,
            lost: self.lost,
            loss_pct: pct(self.lost, self.sent),
            rtt_mean_ms: mean,
            rtt_min_ms: min,
            rtt_max_ms: max,
            rtt_p50_ms: p50,
            rtt_p90_ms: p90,
            rtt_p99_ms: p99,
            jitter_ms: jitter,
            late: self.late,
            duplicates: self.duplicates,
            unexpected: self.unexpected,
            send_errors: self.send_errors,
            ports,
            rtt_buckets: self.rtt_buckets,
            hops: self.hops(),
            hop_changes: self.hop_changes,
            tx_kernel: self.tx_kernel,
            tx_fallback: self.tx_fallback,
        };
        self.hop_replies.clear();
        self.hop_changes = 0;
        self.tx_kernel = 0;
        self.tx_fallback = 0;
        self.rtt_buckets = RttCounts::default();
        self.sent = 0;
        self.lost = 0;
        self.late = 0;
        self.duplicates = 0;
        self.unexpected = 0;
        self.send_errors = 0;
        self.rtt_sum_ns = 0;
        self.rtt_min_ns = u64::MAX;
        self.rtt_max_ns = 0;
        self.hist.reset();
        self.jitter_sum_ns = 0;
        self.jitter_pairs = 0;
        self.ports.retain(|p| p.sent > 0);
        for p in &mut self.ports {
            p.sent = 0;
            p.lost = 0;
        }
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc() -> PathAcc {
        let key = PathKey {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
        };
        PathAcc::new(key, Arc::new(BTreeMap::new()))
    }

    #[test]
    fn statistics_of_a_known_interval() {
        let mut a = acc();
        let flow = |index: u16| Flow {
            index,
            src_port: 1000 + index,
        };
        for (i, rtt_us) in [100u64, 300, 200, 400].into_iter().enumerate() {
            a.reply(flow((i % 2) as u16), rtt_us * 1000);
        }
        a.lost(flow(1));
        a.late();
        a.duplicate();
        let s = a.take().expect("not idle");
        assert_eq!((s.sent, s.lost, s.late, s.duplicates), (5, 1, 1, 1));
        assert_eq!(s.loss_pct, 20.0);
        assert!((s.rtt_mean_ms - 0.25).abs() < 1e-9);
        assert_eq!((s.rtt_min_ms, s.rtt_max_ms), (0.1, 0.4));
        // |300-100| + |200-300| + |400-200| = 500 over 3 pairs
        assert!((s.jitter_ms - 500.0 / 3.0 / 1000.0).abs() < 1e-9);
        // two significant digits of precision: within 1 %
        assert!((s.rtt_p50_ms - 0.2).abs() / 0.2 < 0.01, "{}", s.rtt_p50_ms);
        assert!((s.rtt_p99_ms - 0.4).abs() / 0.4 < 0.01, "{}", s.rtt_p99_ms);
        // 100 µs, then 200, 300 and 400 µs: the Prometheus buckets hold
        // exactly the replies, the lost probe is in none.
        assert_eq!(s.rtt_buckets.count(), s.sent - s.lost);
        assert_eq!(s.rtt_buckets.sum_ns, 1_000_000);
        assert_eq!(
            s.rtt_buckets.buckets[3..6],
            [1, 1, 2],
            "le 100, 250, 500 µs"
        );
        assert_eq!(
            s.ports,
            [
                PortLoss {
                    flow: 0,
                    src_port: 1000,
                    sent: 2,
                    lost: 0,
                    loss_pct: 0.0
                },
                PortLoss {
                    flow: 1,
                    src_port: 1001,
                    sent: 3,
                    lost: 1,
                    loss_pct: 100.0 / 3.0
                },
            ]
        );
        assert!(a.is_idle());
        assert!(a.take().is_none(), "a reset path has nothing to publish");
    }

    #[test]
    fn all_lost_has_zero_rtt_and_full_loss() {
        let mut a = acc();
        for _ in 0..7 {
            a.lost(Flow::default());
        }
        let s = a.take().unwrap();
        assert_eq!(
            (s.sent, s.lost, s.loss_pct, s.rtt_mean_ms, s.rtt_p99_ms),
            (7, 7, 100.0, 0.0, 0.0)
        );
    }

    fn flow(index: u16) -> Flow {
        Flow {
            index,
            src_port: 4000 + index,
        }
    }

    /// Books a reply on `flow` that arrived with `ttl`.
    fn reply_with(a: &mut PathAcc, flow: Flow, ttl: Option<u8>) {
        a.reply(flow, 1_000_000);
        a.reply_ttl(flow, ttl);
    }

    #[test]
    fn hop_count_is_64_minus_ttl_and_absent_above_64() {
        assert_eq!(REPLY_TTL, 64);
        assert_eq!(hop_count(64), Some(0), "same L2 segment");
        assert_eq!(hop_count(63), Some(1));
        assert_eq!(hop_count(0), Some(64));
        assert_eq!(hop_count(65), None);
        assert_eq!(hop_count(255), None, "a reflector starting from 255");
    }

    #[test]
    fn hops_is_the_most_common_hop_count_of_the_interval() {
        let mut a = acc();
        for ttl in [63, 62, 63, 61] {
            reply_with(&mut a, flow(0), Some(ttl));
        }
        let s = a.take().unwrap();
        assert_eq!(s.hops, Some(1), "two of four replies crossed one router");
        // A tie goes to the shorter path; TTLs above 64 and replies without
        // a TTL count for nothing.
        for ttl in [Some(61), Some(62), Some(62), Some(61), Some(128), None] {
            reply_with(&mut a, flow(0), ttl);
        }
        assert_eq!(a.take().unwrap().hops, Some(2));
        // No usable TTL in the interval: no hop count, not 0.
        reply_with(&mut a, flow(0), Some(255));
        reply_with(&mut a, flow(0), None);
        a.lost(flow(0));
        let s = a.take().unwrap();
        assert_eq!((s.hops, s.hop_changes), (None, 0));
        a.lost(flow(0));
        assert_eq!(a.take().unwrap().hops, None, "everything lost");
    }

    #[test]
    fn hop_changes_are_counted_per_flow_and_across_intervals() {
        let mut a = acc();
        // Two flows on ECMP paths of different lengths, interleaved: no change.
        for _ in 0..3 {
            reply_with(&mut a, flow(0), Some(63));
            reply_with(&mut a, flow(1), Some(61));
        }
        let s = a.take().unwrap();
        assert_eq!(s.hop_changes, 0, "ECMP spread is not a flap");
        assert_eq!(s.hops, Some(1), "3 replies each: the smaller");
        // Flow 0's route changes to 2 hops in this interval...
        reply_with(&mut a, flow(0), Some(62));
        reply_with(&mut a, flow(0), Some(62));
        reply_with(&mut a, flow(1), Some(61));
        assert_eq!(a.take().unwrap().hop_changes, 1);
        // ... and back at the first reply of the next: compared with the
        // previous interval's last value.
        reply_with(&mut a, flow(0), Some(63));
        // Replies without a usable TTL neither count nor break the chain.
        reply_with(&mut a, flow(0), None);
        reply_with(&mut a, flow(0), Some(200));
        reply_with(&mut a, flow(0), Some(62));
        let s = a.take().unwrap();
        assert_eq!(s.hop_changes, 2, "2 -> 1 at the boundary, then 1 -> 2");
        assert_eq!(s.hops, Some(1), "a tie of 1 and 2: the smaller");
        // A new source port for flow 0 (its socket was replaced) may take
        // another ECMP path: its first reply is not a change.
        let moved = Flow {
            index: 0,
            src_port: 5000,
        };
        reply_with(&mut a, moved, Some(60));
        reply_with(&mut a, moved, Some(60));
        let s = a.take().unwrap();
        assert_eq!((s.hops, s.hop_changes), (Some(4), 0));
    }

    #[test]
    fn jitter_pairs_span_intervals() {
        let mut a = acc();
        a.reply(Flow::default(), 1_000_000);
        a.take();
        a.reply(Flow::default(), 3_000_000);
        let s = a.take().unwrap();
        assert_eq!(s.jitter_ms, 2.0);
    }
}
