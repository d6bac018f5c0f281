//! Prometheus metrics (prometheus-client): the collector's own counters,
//! updated live, per-path gauges of the last published interval, and
//! per-path counters and an RTT histogram that only grow, so that loss and
//! quantiles can be computed over any window (`rate`, `histogram_quantile`).
//!
//! The growing series (`llama_collector_target_*`) are labelled `src`, `dst`
//! and the target's `dst_name` and `group` tags. They are advanced once per
//! interval from the interval's summary, so they count exactly what the
//! summaries count; a path's series exist (at zero) from the first interval
//! it is configured in, and are removed in the interval in which the path
//! stops being measured, or when its tags change. Beside them, with the same
//! labels: the gauge `llama_collector_target_hops` (the last interval's hop
//! count; absent while the path has none, never a made-up 0) and the counter
//! `llama_collector_target_hop_changes_total`.

pub mod histogram;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::{Mutex, PoisonError, atomic::AtomicU64},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use self::histogram::RttHistogram;
use super::summary::PathSummary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub src_ip: String,
    pub dst_ip: String,
}

/// Labels of the growing per-path series. `dst_name` and `group` are the
/// target's tags of those names (empty, i.e. absent, when it has none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub src: String,
    pub dst: String,
    pub dst_name: String,
    pub group: String,
}

impl TargetLabels {
    pub fn new(src: IpAddr, dst: IpAddr, tags: &BTreeMap<String, String>) -> Self {
        let tag = |k: &str| tags.get(k).cloned().unwrap_or_default();
        Self {
            src: src.to_string(),
            dst: dst.to_string(),
            dst_name: tag("dst_name"),
            group: tag("group"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatLabels {
    pub src_ip: String,
    pub dst_ip: String,
    /// p50, p90, p99, min, max or mean.
    pub stat: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClockLabels {
    pub rx: String,
    pub tx: String,
}

/// Which clock started a reply's RTT: `kernel` (the send timestamp) or
/// `fallback` (the clock read before `sendto`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendClockLabels {
    pub clock: &'static str,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every metric the collector exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub probes_sent: Counter,
    pub replies: Counter,
    pub lost: Counter,
    pub late: Counter,
    pub duplicates: Counter,
    pub unexpected: Counter,
    pub unmatched: Counter,
    pub send_errors: Counter,
    pub tos_mismatch: Counter,
    pub dropped_on_reload: Counter,
    pub schedule_skipped: Counter,
    pub reloads: Counter,
    pub in_flight: Gauge,
    pub path_sent: Family<PathLabels, Gauge>,
    pub path_lost: Family<PathLabels, Gauge>,
    pub path_loss_ratio: Family<PathLabels, FGauge>,
    pub path_rtt_seconds: Family<StatLabels, FGauge>,
    pub path_jitter_seconds: Family<PathLabels, FGauge>,
    pub path_port_loss_ratio: Family<PortLabels, FGauge>,
    pub target_sent: Family<TargetLabels, Counter>,
    pub target_lost: Family<TargetLabels, Counter>,
    pub target_rtt: Family<TargetLabels, RttHistogram>,
    pub target_hops: Family<TargetLabels, Gauge>,
    pub target_hop_changes: Family<TargetLabels, Counter>,
    pub send_clock: Family<SendClockLabels, Counter>,
    pub tx_unmatched: Counter,
    pub tx_resyncs: Counter,
    /// The label sets of the growing series now exported.
    target_series: Mutex<HashSet<TargetLabels>>,
}

impl Metrics {
    /// Builds the registry; `rx_clock`/`tx_clock` name the timestamp sources.
    pub fn new(rx_clock: &str, tx_clock: &str) -> Self {
        let mut r = Registry::with_prefix("llama_collector");
        let m = Metrics {
            registry: Registry::default(),
            probes_sent: Counter::default(),
            replies: Counter::default(),
            lost: Counter::default(),
            late: Counter::default(),
            duplicates: Counter::default(),
            unexpected: Counter::default(),
            unmatched: Counter::default(),
            send_errors: Counter::default(),
            tos_mismatch: Counter::default(),
            dropped_on_reload: Counter::default(),
            schedule_skipped: Counter::default(),
            reloads: Counter::default(),
            in_flight: Gauge::default(),
            path_sent: Family::default(),
            path_lost: Family::default(),
            path_loss_ratio: Family::default(),
            path_rtt_seconds: Family::default(),
            path_jitter_seconds: Family::default(),
            path_port_loss_ratio: Family::default(),
            target_sent: Family::default(),
            target_lost: Family::default(),
            target_rtt: Family::default(),
            target_hops: Family::default(),
            target_hop_changes: Family::default(),
            send_clock: Family::default(),
            tx_unmatched: Counter::default(),
            tx_resyncs: Counter::default(),
            target_series: Mutex::default(),
        };
        for clock in ["kernel", "fallback"] {
            drop(m.send_clock.get_or_create(&SendClockLabels { clock }));
        }
        r.register(
            "replies_send_clock",
            "Replies by the clock their RTT started at: kernel (send timestamp) or fallback (clock read before sendto); advanced once per interval",
            m.send_clock.clone(),
        );
        r.register(
            "tx_timestamps_unmatched",
            "Kernel send timestamps that matched no pending probe (unknown key, implausible time)",
            m.tx_unmatched.clone(),
        );
        r.register(
            "tx_key_resyncs",
            "Restarts of a socket's send timestamp key count after a failed sendto",
            m.tx_resyncs.clone(),
        );
        r.register("probes_sent", "Probes sent", m.probes_sent.clone());
        r.register("replies", "Replies received in time", m.replies.clone());
        r.register(
            "probes_lost",
            "Probes lost (no reply within the timeout)",
            m.lost.clone(),
        );
        r.register(
            "replies_late",
            "Replies received after their timeout",
            m.late.clone(),
        );
        r.register(
            "replies_duplicate",
            "Duplicate replies",
            m.duplicates.clone(),
        );
        r.register(
            "replies_unexpected",
            "Replies with a known signature from an address the probe was not sent to",
            m.unexpected.clone(),
        );
        r.register(
            "replies_unmatched",
            "Datagrams that are not a reply to a probe in flight",
            m.unmatched.clone(),
        );
        r.register(
            "send_errors",
            "Probes whose sendto failed",
            m.send_errors.clone(),
        );
        r.register(
            "replies_tos_mismatch",
            "Replies whose TOS / traffic class differs from the probe's",
            m.tos_mismatch.clone(),
        );
        r.register(
            "probes_dropped_on_reload",
            "In-flight probes forgotten because a reconfiguration removed their target or socket",
            m.dropped_on_reload.clone(),
        );
        r.register(
            "schedule_skipped",
            "Send slots skipped because the sender fell more than 20 ms behind",
            m.schedule_skipped.clone(),
        );
        r.register("reloads", "Configurations applied", m.reloads.clone());
        r.register(
            "probes_in_flight",
            "Probe records held (pending or lingering)",
            m.in_flight.clone(),
        );
        r.register(
            "timestamp_source",
            "Where receive and send times come from",
            Info::new(ClockLabels {
                rx: rx_clock.to_owned(),
                tx: tx_clock.to_owned(),
            }),
        );
        r.register(
            "path_probes_sent",
            "Probes booked on the path in the last interval",
            m.path_sent.clone(),
        );
        r.register(
            "path_probes_lost",
            "Probes lost on the path in the last interval",
            m.path_lost.clone(),
        );
        r.register(
            "path_loss_ratio",
            "Loss ratio (0-1) of the path in the last interval",
            m.path_loss_ratio.clone(),
        );
        r.register(
            "path_rtt_seconds",
            "RTT of the path in the last interval by `stat`: p50, p90, p99, min, max, mean",
            m.path_rtt_seconds.clone(),
        );
        r.register(
            "path_jitter_seconds",
            "Mean absolute difference of consecutive RTTs in the last interval",
            m.path_jitter_seconds.clone(),
        );
        r.register(
            "path_port_loss_ratio",
            "Loss ratio per source port (one ECMP path each) in the last interval",
            m.path_port_loss_ratio.clone(),
        );
        // Not `path_probes_sent`: that name holds the per-interval gauge.
        r.register(
            "target_probes_sent",
            "Probes to the path's target whose fate is known: answered in time or lost",
            m.target_sent.clone(),
        );
        r.register(
            "target_probes_lost",
            "Probes to the path's target with no reply within their timeout (late replies included)",
            m.target_lost.clone(),
        );
        r.register(
            "target_rtt_seconds",
            "RTT of the replies that came back in time",
            m.target_rtt.clone(),
        );
        r.register(
            "target_hops",
            "Routers the replies from the path's target crossed (64 - TTL) in the last interval, \
             the value most replies had; absent when no reply had one",
            m.target_hops.clone(),
        );
        r.register(
            "target_hop_changes",
            "Replies whose hop count differed from the previous reply of the same flow (source port)",
            m.target_hop_changes.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Replaces the per-path gauges with the summaries just published and
    /// advances the growing series by them; then keeps only the growing
    /// series of `live` (every path still measured; `None`: the paths
    /// published), creating missing ones at zero.
    pub fn publish(&self, paths: &[PathSummary], live: Option<HashSet<TargetLabels>>) {
        let mut series = self
            .target_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut published = HashSet::with_capacity(paths.len());
        for s in paths {
            let l = TargetLabels::new(s.src_ip, s.dst_ip, &s.tags);
            self.target_sent.get_or_create(&l).inc_by(s.sent);
            self.target_lost.get_or_create(&l).inc_by(s.lost);
            self.target_rtt.get_or_create(&l).add(&s.rtt_buckets);
            self.target_hop_changes
                .get_or_create(&l)
                .inc_by(s.hop_changes);
            match s.hops {
                Some(h) => {
                    self.target_hops.get_or_create(&l).set(i64::from(h));
                }
                // No reply told: an old value would be a wrong one.
                None => {
                    self.target_hops.remove(&l);
                }
            }
            published.insert(l);
            for (clock, n) in [("kernel", s.tx_kernel), ("fallback", s.tx_fallback)] {
                self.send_clock
                    .get_or_create(&SendClockLabels { clock })
                    .inc_by(n);
            }
        }
        let live = live.unwrap_or_else(|| published.clone());
        // A path published for the last time (its target was removed) is
        // counted above and removed here with the others that went.
        series.extend(published);
        for gone in series.difference(&live) {
            self.target_sent.remove(gone);
            self.target_lost.remove(gone);
            self.target_rtt.remove(gone);
            self.target_hops.remove(gone);
            self.target_hop_changes.remove(gone);
        }
        for l in live.difference(&series) {
            // Created at zero, so that `rate` sees the first increase.
            drop(self.target_sent.get_or_create(l));
            drop(self.target_lost.get_or_create(l));
            drop(self.target_rtt.get_or_create(l));
            drop(self.target_hop_changes.get_or_create(l));
        }
        *series = live;
        drop(series);
        self.publish_gauges(paths);
    }

    fn publish_gauges(&self, paths: &[PathSummary]) {
        self.path_sent.clear();
        self.path_lost.clear();
        self.path_loss_ratio.clear();
        self.path_rtt_seconds.clear();
        self.path_jitter_seconds.clear();
        self.path_port_loss_ratio.clear();
        for s in paths {
            let l = PathLabels {
                src_ip: s.src_ip.to_string(),
                dst_ip: s.dst_ip.to_string(),
            };
            self.path_sent.get_or_create(&l).set(s.sent as i64);
            self.path_lost.get_or_create(&l).set(s.lost as i64);
            self.path_loss_ratio
                .get_or_create(&l)
                .set(s.loss_pct / 100.0);
            self.path_jitter_seconds
                .get_or_create(&l)
                .set(s.jitter_ms / 1e3);
            for (q, v) in [
                ("p50", s.rtt_p50_ms),
                ("p90", s.rtt_p90_ms),
                ("p99", s.rtt_p99_ms),
                ("min", s.rtt_min_ms),
                ("max", s.rtt_max_ms),
                ("mean", s.rtt_mean_ms),
            ] {
                let ql = StatLabels {
                    src_ip: l.src_ip.clone(),
                    dst_ip: l.dst_ip.clone(),
                    stat: q.to_owned(),
                };
                self.path_rtt_seconds.get_or_create(&ql).set(v / 1e3);
            }
            for p in &s.ports {
                let pl = PortLabels {
                    src_ip: l.src_ip.clone(),
                    dst_ip: l.dst_ip.clone(),
                    src_port: p.src_port.to_string(),
                };
                self.path_port_loss_ratio
                    .get_or_create(&pl)
                    .set(p.loss_pct / 100.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn labels(name: &str) -> TargetLabels {
        let tags = BTreeMap::from([
            ("dst_name".to_owned(), name.to_owned()),
            ("group".to_owned(), "g".to_owned()),
        ]);
        TargetLabels::new([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), &tags)
    }

    fn text(m: &Metrics) -> String {
        let mut t = String::new();
        encode(&mut t, &m.registry).expect("encodes");
        t
    }

    #[test]
    fn configured_paths_start_at_zero_and_go_when_unconfigured_or_renamed() {
        let m = Metrics::new("test", "test");
        m.publish(&[], Some(HashSet::from([labels("a")])));
        let t = text(&m);
        for line in [
            "llama_collector_target_probes_sent_total{src=\"10.0.0.1\",dst=\"10.0.0.2\",dst_name=\"a\",group=\"g\"} 0",
            "llama_collector_target_probes_lost_total{src=\"10.0.0.1\",dst=\"10.0.0.2\",dst_name=\"a\",group=\"g\"} 0",
            "llama_collector_target_rtt_seconds_count{src=\"10.0.0.1\",dst=\"10.0.0.2\",dst_name=\"a\",group=\"g\"} 0",
        ] {
            assert!(t.contains(line), "missing {line:?} in:\n{t}");
        }
        // The target's name changed: the old label set goes.
        m.publish(&[], Some(HashSet::from([labels("b")])));
        let t = text(&m);
        assert!(!t.contains("dst_name=\"a\""), "{t}");
        assert!(t.contains("dst_name=\"b\""), "{t}");
        m.publish(&[], Some(HashSet::new()));
        assert!(!text(&m).contains("dst_name="), "unconfigured: gone");
    }

    #[test]
    fn hop_series_follow_the_summaries_and_go_with_the_target() {
        use std::sync::Arc;

        use crate::collector::summary::{Flow, PathAcc, PathKey};

        let tags = BTreeMap::from([
            ("dst_name".to_owned(), "a".to_owned()),
            ("group".to_owned(), "g".to_owned()),
        ]);
        let key = PathKey {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
        };
        let mut acc = PathAcc::new(key, Arc::new(tags));
        let summary = |acc: &mut PathAcc, ttls: &[u8]| {
            for &ttl in ttls {
                acc.reply(Flow::default(), 1_000);
                acc.reply_ttl(Flow::default(), Some(ttl));
            }
            acc.lost(Flow::default());
            acc.take().expect("a summary")
        };
        let m = Metrics::new("test", "test");
        let series = "{src=\"10.0.0.1\",dst=\"10.0.0.2\",dst_name=\"a\",group=\"g\"}";
        let (hops, changes) = (
            format!("llama_collector_target_hops{series}"),
            format!("llama_collector_target_hop_changes_total{series}"),
        );
        m.publish(&[], Some(HashSet::from([labels("a")])));
        let t = text(&m);
        assert!(t.contains(&format!("{changes} 0")), "{t}");
        assert!(!t.contains(&hops), "no hop count before a reply: {t}");
        m.publish(&[summary(&mut acc, &[64, 64])], None);
        let t = text(&m);
        assert!(t.contains(&format!("{hops} 0")), "{t}");
        assert!(t.contains(&format!("{changes} 0")), "{t}");
        m.publish(&[summary(&mut acc, &[63, 62, 62])], None);
        let t = text(&m);
        assert!(t.contains(&format!("{hops} 2")), "{t}");
        assert!(t.contains(&format!("{changes} 2")), "{t}");
        // 23 growing series per path (docs/agent-api.md): 3 counters, 19
        // for the histogram and the hops gauge.
        let series = t
            .lines()
            .filter(|l| l.starts_with("llama_collector_target_"))
            .count();
        assert_eq!(series, 23, "{t}");
        // An interval without a usable TTL: the gauge goes, the counter stays.
        m.publish(&[summary(&mut acc, &[])], None);
        let t = text(&m);
        assert!(!t.contains(&hops), "{t}");
        assert!(t.contains(&format!("{changes} 2")), "{t}");
        m.publish(&[summary(&mut acc, &[62])], None);
        assert!(text(&m).contains(&format!("{hops} 2")));
        // The target leaves: both go.
        m.publish(&[], Some(HashSet::new()));
        let t = text(&m);
        assert!(!t.contains("llama_collector_target_hop"), "{t}");
    }
}
