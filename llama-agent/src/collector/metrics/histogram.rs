//! The per-path RTT histogram: classic Prometheus buckets from 10 µs to 1 s.
//!
//! The engine counts each interval's RTTs into [`RttCounts`] (integer
//! nanosecond bounds, so a reply lands in exactly one bucket) and adds them
//! to the cumulative [`RttHistogram`] when the interval is published. The
//! Prometheus client's own histogram only takes one observation at a time;
//! this one takes a whole interval at once and keeps the sum in integer
//! nanoseconds, so nothing drifts however long the agent runs.
//!
//! prometheus-client 0.24 encodes classic histograms only (no native
//! histograms).

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds (`le`) of the buckets, nanoseconds: 1–2.5–5 steps from
/// 10 µs (a veth pair) to 1 s (a satellite hop); slower replies fall in
/// `+Inf` only.
pub const RTT_BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Buckets including `+Inf`.
const BUCKETS: usize = RTT_BOUNDS_NS.len() + 1;

/// RTTs of one interval, per bucket (not cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttCounts {
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u128,
}

impl RttCounts {
    /// Counts one RTT into the first bucket whose bound is at least `ns`.
    pub fn record(&mut self, ns: u64) {
        let i = RTT_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i] += 1;
        self.sum_ns += u128::from(ns);
    }

    /// Number of RTTs counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// A cumulative RTT histogram (one series set of the Family).
#[derive(Clone, Debug, Default)]
pub struct RttHistogram {
    inner: Arc<Mutex<RttCounts>>,
}

impl RttHistogram {
    /// Adds one interval's RTTs.
    pub fn add(&self, c: &RttCounts) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (total, n) in inner.buckets.iter_mut().zip(c.buckets) {
            *total += n;
        }
        inner.sum_ns += c.sum_ns;
    }

    /// Everything added so far.
    pub fn get(&self) -> RttCounts {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TypedMetric for RttHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for RttHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let c = self.get();
        // The encoder accumulates the counts; f64::MAX is its `+Inf`.
        let buckets: Vec<(f64, u64)> = RTT_BOUNDS_NS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::MAX))
            .zip(c.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(c.sum_ns as f64 / 1e9, c.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn bounds_are_inclusive_and_slow_replies_go_to_inf() {
        let mut c = RttCounts::default();
        for ns in [1, 10_000, 10_001, 1_000_000_000, 5_000_000_000] {
            c.record(ns);
        }
        assert_eq!(c.buckets[0], 2, "le is inclusive: {c:?}");
        assert_eq!(c.buckets[1], 1);
        assert_eq!(c.buckets[RTT_BOUNDS_NS.len() - 1], 1);
        assert_eq!(c.buckets[RTT_BOUNDS_NS.len()], 1, "+Inf");
        assert_eq!(c.count(), 5);
    }

    #[test]
    fn intervals_accumulate_and_encode_cumulatively() {
        let h = RttHistogram::default();
        let mut c = RttCounts::default();
        c.record(20_000);
        c.record(300_000);
        h.add(&c);
        h.add(&c);
        let mut r = Registry::default();
        r.register("rtt_seconds", "RTT", h);
        let mut text = String::new();
        encode(&mut text, &r).expect("encodes");
        for line in [
            "rtt_seconds_count 4",
            "rtt_seconds_sum 0.00064",
            "rtt_seconds_bucket{le=\"0.00001\"} 0",
            "rtt_seconds_bucket{le=\"0.000025\"} 2",
            "rtt_seconds_bucket{le=\"0.00025\"} 2",
            "rtt_seconds_bucket{le=\"0.0005\"} 4",
            "rtt_seconds_bucket{le=\"+Inf\"} 4",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
