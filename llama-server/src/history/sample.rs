//! The stored form of one path's summary over one interval (or several
//! merged by downsampling), kept small because the history holds millions:
//! 36 bytes per sample, plus 12 bytes per flow for samples that lost probes.

/// What an agent reported for one path over one interval (`raw_stats`, and
/// its `raw_stats_flow` points).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathReport {
    pub sent: f64,
    pub lost: f64,
    /// Mean RTT of the replies, ms.
    pub rtt: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub jitter: f64,
    pub flows: Vec<FlowReport>,
}

/// One flow of a path (`raw_stats_flow`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowReport {
    /// The socket's index in its port group.
    pub flow: u8,
    pub src_port: u16,
    pub sent: f64,
    pub lost: f64,
}

impl PathReport {
    /// A made-up report for tests and benchmarks: 80 probes with `lost` of
    /// them lost, spread evenly over four flows from source ports 40000 to
    /// 40003; mean and median RTT `rtt` ms, p90 1.5 times that, p99 twice
    /// that and jitter a tenth of it.
    #[doc(hidden)]
    pub fn synthetic(lost: f64, rtt: f64) -> Self {
        const FLOWS: u8 = 4;
        const SENT: f64 = 80.0;
        let share = |total: f64| total / f64::from(FLOWS);
        PathReport {
            sent: SENT,
            lost,
            rtt,
            p50: rtt,
            p90: rtt * 1.5,
            p99: rtt * 2.0,
            jitter: rtt / 10.0,
            flows: (0..FLOWS)
                .map(|flow| FlowReport {
                    flow,
                    src_port: 40_000 + u16::from(flow),
                    sent: share(SENT),
                    lost: share(lost),
                })
                .collect(),
        }
    }

    /// Adds another report of the same path and interval (an agent probing
    /// one destination from several source addresses): counts add up, RTT
    /// statistics are averaged weighted by replies.
    pub fn absorb(&mut self, other: PathReport) {
        let (a, b) = (self.sent - self.lost, other.sent - other.lost);
        let w = |x: f64, y: f64| weighted(x, a, y, b);
        self.rtt = w(self.rtt, other.rtt);
        self.p50 = w(self.p50, other.p50);
        self.p90 = w(self.p90, other.p90);
        self.p99 = w(self.p99, other.p99);
        self.jitter = w(self.jitter, other.jitter);
        self.sent += other.sent;
        self.lost += other.lost;
        for f in other.flows {
            match self.flows.iter_mut().find(|g| g.flow == f.flow) {
                Some(g) => {
                    g.sent += f.sent;
                    g.lost += f.lost;
                }
                None => self.flows.push(f),
            }
        }
    }
}

/// `(x·wx + y·wy) / (wx + wy)`, or `x` when both weights are zero.
fn weighted(x: f64, wx: f64, y: f64, wy: f64) -> f64 {
    let (wx, wy) = (wx.max(0.0), wy.max(0.0));
    if wx + wy > 0.0 {
        (x * wx + y * wy) / (wx + wy)
    } else {
        x
    }
}

/// Clamps a reported count into the stored range (negative, NaN → 0).
fn count(v: f64) -> u32 {
    if v.is_finite() && v > 0.0 {
        v.min(f64::from(u32::MAX)).round() as u32
    } else {
        0
    }
}

/// A reported statistic as stored (non-finite or negative → 0).
fn stat(v: f64) -> f32 {
    if v.is_finite() && v > 0.0 {
        v as f32
    } else {
        0.0
    }
}

/// One stored sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix seconds of the (last) scrape it covers.
    pub at: u32,
    /// Seconds it covers: one interval, or more once downsampled.
    pub span: u16,
    /// How many [`FlowSample`]s belong to it (only samples with loss keep
    /// their flows; a sample without loss had none on every flow).
    pub flows: u8,
    pub sent: u32,
    pub lost: u32,
    pub rtt: f32,
    pub p50: f32,
    pub p90: f32,
    pub p99: f32,
    pub jitter: f32,
}

/// One flow of a sample with loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSample {
    pub flow: u8,
    pub sent: u32,
    pub lost: u32,
}

impl Sample {
    /// The stored form of `r`, scraped at `at` for an interval of `span` s,
    /// and the flows to keep with it (none when nothing was lost).
    pub fn from_report(r: &PathReport, at: u32, span: u16) -> (Sample, Vec<FlowSample>) {
        let lost = count(r.lost);
        let mut flows: Vec<FlowSample> = if lost == 0 {
            Vec::new()
        } else {
            r.flows
                .iter()
                .map(|f| FlowSample {
                    flow: f.flow,
                    sent: count(f.sent),
                    lost: count(f.lost),
                })
                .collect()
        };
        flows.sort_by_key(|f| f.flow);
        flows.dedup_by_key(|f| f.flow);
        flows.truncate(usize::from(u8::MAX));
        let sample = Sample {
            at,
            span,
            flows: flows.len() as u8,
            sent: count(r.sent),
            lost: lost.min(count(r.sent)),
            rtt: stat(r.rtt),
            p50: stat(r.p50),
            p90: stat(r.p90),
            p99: stat(r.p99),
            jitter: stat(r.jitter),
        };
        (sample, flows)
    }

    /// Loss in percent (0 when nothing was sent).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            f64::from(self.lost) * 100.0 / f64::from(self.sent)
        }
    }

    pub fn replies(&self) -> u32 {
        self.sent.saturating_sub(self.lost)
    }
}

/// Merges two consecutive samples (`a` older) and their flows into one
/// covering both. Counts add up; RTT mean, percentiles and jitter become the
/// replies-weighted means (for percentiles an approximation, which is why
/// only old samples are merged). A sample without stored flows lost nothing,
/// so its probes count as sent without loss on each of the path's
/// `flow_count` flows in equal shares (each cycle probes from every port).
pub fn merge(
    a: &Sample,
    a_flows: &[FlowSample],
    b: &Sample,
    b_flows: &[FlowSample],
    flow_count: usize,
) -> (Sample, Vec<FlowSample>) {
    let (wa, wb) = (f64::from(a.replies()), f64::from(b.replies()));
    let w = |x: f32, y: f32| weighted(f64::from(x), wa, f64::from(y), wb) as f32;
    let lost = a.lost.saturating_add(b.lost);
    let mut flows: Vec<FlowSample> = Vec::new();
    if lost > 0 {
        let mut add = |s: &Sample, fl: &[FlowSample]| {
            if fl.is_empty() {
                let n = flow_count.max(1) as u32;
                for flow in 0..flow_count.min(usize::from(u8::MAX)) as u8 {
                    add_flow(&mut flows, flow, s.sent / n, 0);
                }
            } else {
                for f in fl {
                    add_flow(&mut flows, f.flow, f.sent, f.lost);
                }
            }
        };
        add(a, a_flows);
        add(b, b_flows);
        flows.sort_by_key(|f| f.flow);
    }
    let sample = Sample {
        at: b.at.max(a.at),
        span: a.span.saturating_add(b.span),
        flows: flows.len() as u8,
        sent: a.sent.saturating_add(b.sent),
        lost,
        rtt: w(a.rtt, b.rtt),
        p50: w(a.p50, b.p50),
        p90: w(a.p90, b.p90),
        p99: w(a.p99, b.p99),
        jitter: w(a.jitter, b.jitter),
    };
    (sample, flows)
}

fn add_flow(flows: &mut Vec<FlowSample>, flow: u8, sent: u32, lost: u32) {
    match flows.iter_mut().find(|f| f.flow == flow) {
        Some(f) => {
            f.sent = f.sent.saturating_add(sent);
            f.lost = f.lost.saturating_add(lost);
        }
        None => flows.push(FlowSample { flow, sent, lost }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sent: f64, lost: f64, rtt: f64) -> PathReport {
        PathReport {
            sent,
            lost,
            rtt,
            p50: rtt,
            p90: rtt,
            p99: rtt,
            jitter: 0.1,
            flows: vec![
                FlowReport {
                    flow: 1,
                    src_port: 4001,
                    sent: sent / 2.0,
                    lost,
                },
                FlowReport {
                    flow: 0,
                    src_port: 4000,
                    sent: sent / 2.0,
                    lost: 0.0,
                },
            ],
        }
    }

    #[test]
    fn sizes_stay_small() {
        assert_eq!(std::mem::size_of::<Sample>(), 36);
        assert_eq!(std::mem::size_of::<FlowSample>(), 12);
    }

    #[test]
    fn flows_are_kept_only_with_loss_and_hostile_numbers_clamp() {
        let (s, f) = Sample::from_report(&report(80.0, 0.0, 0.5), 10, 10);
        assert_eq!((s.sent, s.lost, s.flows, f.len()), (80, 0, 0, 0));
        let (s, f) = Sample::from_report(&report(80.0, 8.0, 0.5), 10, 10);
        assert_eq!((s.lost, s.flows), (8, 2));
        assert_eq!((f[0].flow, f[1].flow, f[1].lost), (0, 1, 8));
        assert_eq!(s.loss(), 10.0);
        let hostile = PathReport {
            sent: f64::NAN,
            lost: 1e300,
            rtt: -3.0,
            p99: f64::INFINITY,
            ..PathReport::default()
        };
        let (s, _) = Sample::from_report(&hostile, 1, 10);
        assert_eq!((s.sent, s.lost, s.rtt, s.p99), (0, 0, 0.0, 0.0));
    }

    #[test]
    fn merging_adds_counts_and_weights_rtt_by_replies() {
        let (a, af) = Sample::from_report(&report(100.0, 50.0, 1.0), 10, 10);
        let (b, bf) = Sample::from_report(&report(100.0, 0.0, 4.0), 20, 10);
        let (m, mf) = merge(&a, &af, &b, &bf, 2);
        assert_eq!((m.at, m.span, m.sent, m.lost), (20, 20, 200, 50));
        // 50 replies at 1 ms, 100 at 4 ms.
        assert!((m.rtt - 3.0).abs() < 1e-6, "{}", m.rtt);
        // The lossless sample's 100 probes count 50 on each flow.
        assert_eq!(
            mf,
            [
                FlowSample {
                    flow: 0,
                    sent: 100,
                    lost: 0
                },
                FlowSample {
                    flow: 1,
                    sent: 100,
                    lost: 50
                }
            ]
        );
        let (m, mf) = merge(&b, &bf, &b, &bf, 2);
        assert_eq!((m.lost, m.flows, mf.len()), (0, 0, 0));
    }

    #[test]
    fn absorbing_a_second_source_address() {
        let mut a = report(100.0, 0.0, 1.0);
        a.absorb(report(100.0, 50.0, 4.0));
        assert_eq!((a.sent, a.lost), (200.0, 50.0));
        assert!((a.rtt - 2.0).abs() < 1e-9, "{}", a.rtt);
        assert_eq!(a.flows.len(), 2);
        assert_eq!(a.flows[0].lost, 50.0);
    }
}
