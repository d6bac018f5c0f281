//! The collected summaries of every path (scraped agent → destination) over
//! a sliding window (an hour), in memory: what the live matrix and the path
//! view read. No database is needed.
//!
//! Memory is bounded by a byte budget (`history_max_bytes`), counted as the
//! capacity of every buffer plus a fixed cost per path and agent. When a
//! recorded round pushes the total over the budget, the oldest half of every
//! path's samples is downsampled (consecutive pairs merged into one sample
//! covering both) until the total is back under 90 % of the budget; samples
//! already covering `max_span` are dropped instead, oldest first. Samples
//! older than the window are dropped as well. Both are counted in
//! `/metrics`. New paths beyond `history_max_paths` are refused (counted,
//! logged once) until old ones age out.
//!
//! Each agent also keeps when it was last scraped and whether that worked,
//! so that a dead or slow agent's row shows as stale.

pub mod sample;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, family::Family};
pub use sample::{FlowReport, FlowSample, PathReport, Sample};

use crate::metrics::ReasonLabel;

/// Default byte budget: a full-resolution hour of 10 s samples for about
/// 140 members (19,600 paths); larger groups get their older samples
/// downsampled.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The window and bounds of a [`History`].
#[derive(Debug, Clone)]
pub struct HistoryLimits {
    /// How far back samples are kept.
    pub window: Duration,
    /// Scrape interval: the span of one fresh sample.
    pub interval: Duration,
    /// Byte budget of everything the history holds.
    pub max_bytes: usize,
    /// Most paths held at once.
    pub max_paths: usize,
}

/// Counters the history updates (registered in [`crate::metrics::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct HistoryCounters {
    /// Samples merged away by downsampling.
    pub downsampled: Counter,
    /// Samples dropped, by reason: `window` (too old) or `budget`.
    pub dropped: Family<ReasonLabel, Counter>,
    /// Reports of new paths refused because `max_paths` paths are held.
    pub refused_paths: Counter,
}

/// One path's samples, oldest first.
#[derive(Debug, Default)]
pub struct Series {
    samples: VecDeque<Sample>,
    /// The flows of samples with `flows > 0`, in sample order.
    flows: VecDeque<FlowSample>,
    /// The last source port of each flow index seen on this path (0: none).
    ports: Box<[u16]>,
}

impl Series {
    fn bytes(&self) -> usize {
        self.samples.capacity() * size_of::<Sample>()
            + self.flows.capacity() * size_of::<FlowSample>()
            + self.ports.len() * size_of::<u16>()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Source port of each flow index (0 where a flow was never seen).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Every sample with its flows, oldest first.
    pub fn points(&self) -> Vec<(Sample, Vec<FlowSample>)> {
        let mut at = 0;
        self.samples
            .iter()
            .map(|s| {
                let n = usize::from(s.flows);
                let flows = self.flows.range(at..at + n).copied().collect();
                at += n;
                (*s, flows)
            })
            .collect()
    }

    fn grow(&mut self) {
        if self.samples.len() == self.samples.capacity() {
            // Grow by a quarter, not double: capacity is what memory costs.
            self.samples.reserve_exact((self.samples.len() / 4).max(4));
        }
    }

    fn push(&mut self, sample: Sample, flows: Vec<FlowSample>, report: &PathReport) {
        for f in &report.flows {
            let i = usize::from(f.flow);
            if i >= self.ports.len() {
                let mut ports = self.ports.to_vec();
                ports.resize(i + 1, 0);
                self.ports = ports.into_boxed_slice();
            }
            self.ports[i] = f.src_port;
        }
        self.grow();
        self.samples.push_back(sample);
        if !flows.is_empty() {
            if self.flows.capacity() - self.flows.len() < flows.len() {
                self.flows
                    .reserve_exact(flows.len().max(self.flows.len() / 4));
            }
            self.flows.extend(flows);
        }
    }

    fn pop_front(&mut self) -> Option<Sample> {
        let s = self.samples.pop_front()?;
        self.flows
            .drain(..usize::from(s.flows).min(self.flows.len()));
        Some(s)
    }

    /// Drops samples scraped before `oldest`; returns how many.
    fn prune(&mut self, oldest: u32) -> u64 {
        let mut n = 0;
        while self.samples.front().is_some_and(|s| s.at < oldest) {
            self.pop_front();
            n += 1;
        }
        n
    }

    /// Merges consecutive pairs among the older half whose spans together
    /// fit `max_span`; rebuilds the buffers at their exact size. Returns how
    /// many samples were merged away.
    fn downsample(&mut self, max_span: u16) -> u64 {
        let n = self.samples.len();
        let half = n / 2;
        if half < 2 {
            return 0;
        }
        let flow_count = self.ports.len();
        let flows = self.flows.make_contiguous();
        let samples = self.samples.make_contiguous();
        let mut out = VecDeque::with_capacity(n);
        let mut out_flows = VecDeque::with_capacity(flows.len());
        let (mut i, mut at, mut merged) = (0, 0, 0);
        while i < n {
            let a = samples[i];
            let a_flows = &flows[at..at + usize::from(a.flows)];
            if i + 1 < half
                && u32::from(a.span) + u32::from(samples[i + 1].span) <= u32::from(max_span)
            {
                let b = samples[i + 1];
                let b_at = at + usize::from(a.flows);
                let b_flows = &flows[b_at..b_at + usize::from(b.flows)];
                let (m, m_flows) = sample::merge(&a, a_flows, &b, b_flows, flow_count);
                out.push_back(m);
                out_flows.extend(m_flows);
                at = b_at + usize::from(b.flows);
                i += 2;
                merged += 1;
            } else {
                out.push_back(a);
                out_flows.extend(a_flows.iter().copied());
                at += usize::from(a.flows);
                i += 1;
            }
        }
        if merged > 0 {
            out.shrink_to_fit();
            out_flows.shrink_to_fit();
            self.samples = out;
            self.flows = out_flows;
        }
        merged
    }
}

/// One scraped agent: its paths by destination, and how its scrapes went.
#[derive(Debug, Default)]
pub struct AgentHistory {
    paths: HashMap<IpAddr, Series>,
    /// The newest sample of every path of the last answer, side by side: a
    /// matrix row reads this one small table instead of looking up every
    /// path (which, across 90,000 paths, is mostly cache misses).
    latest: Vec<(IpAddr, Sample)>,
    /// Unix seconds of the last scrape that worked.
    pub last_ok: Option<u32>,
    /// Unix seconds of the last scrape tried.
    pub last_try: u32,
    /// Why the last scrape failed (`None` when it worked).
    pub failure: Option<&'static str>,
}

impl AgentHistory {
    /// The path to `dst`.
    pub fn path(&self, dst: &IpAddr) -> Option<&Series> {
        self.paths.get(dst)
    }

    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// The newest sample of each path the agent reported in its last
    /// answer, by destination.
    pub fn latest(&self) -> &[(IpAddr, Sample)] {
        &self.latest
    }

    fn latest_bytes(&self) -> usize {
        self.latest.capacity() * size_of::<(IpAddr, Sample)>()
    }
}

/// Approximate cost of one hash-map entry: the entry, its control byte and
/// the table's spare room at its maximum load (7/8).
const fn entry_bytes<T>() -> usize {
    size_of::<T>() * 8 / 7 + 1
}
const PATH_BYTES: usize = entry_bytes::<(IpAddr, Series)>();
const AGENT_BYTES: usize = entry_bytes::<(IpAddr, AgentHistory)>();

#[derive(Default)]
struct Inner {
    agents: HashMap<IpAddr, AgentHistory>,
    paths: usize,
    bytes: usize,
    refusal_logged: bool,
    budget_logged: bool,
}

/// Read access to the whole history (held briefly: recording waits).
pub struct Snapshot<'a>(RwLockReadGuard<'a, Inner>);

impl Snapshot<'_> {
    pub fn agent(&self, ip: &IpAddr) -> Option<&AgentHistory> {
        self.0.agents.get(ip)
    }
}

/// Sizes of the history, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub agents: usize,
    pub paths: usize,
    pub samples: usize,
    pub flow_samples: usize,
    /// Bytes held, as counted against the budget.
    pub bytes: usize,
    pub max_bytes: usize,
}

/// Every agent's paths over the window.
pub struct History {
    window: u32,
    interval: u16,
    max_span: u16,
    max_bytes: usize,
    max_paths: usize,
    counters: HistoryCounters,
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("window", &self.window)
            .field("max_bytes", &self.max_bytes)
            .field("max_paths", &self.max_paths)
            .finish_non_exhaustive()
    }
}

impl History {
    pub fn new(limits: &HistoryLimits, counters: HistoryCounters) -> Self {
        let window = limits.window.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let interval = limits.interval.as_secs().clamp(1, u64::from(u16::MAX)) as u16;
        // Downsampled samples cover at most a sixteenth of the window, so an
        // hour always keeps at least 16 points per path.
        let max_span = (window / 16).clamp(u32::from(interval), u32::from(u16::MAX)) as u16;
        History {
            window,
            interval,
            max_span,
            max_bytes: limits.max_bytes,
            max_paths: limits.max_paths,
            counters,
            generation: AtomicU64::new(0),
            inner: RwLock::default(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Read access; keep it short.
    pub fn read(&self) -> Snapshot<'_> {
        Snapshot(
            self.inner
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Changes whenever anything recorded changes (for `ETag`s).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The window, seconds.
    pub fn window_secs(&self) -> u32 {
        self.window
    }

    /// The interval, seconds.
    pub fn interval_secs(&self) -> u32 {
        u32::from(self.interval)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Records one successful scrape of `agent` at `at` (Unix seconds): one
    /// report per destination. Returns how many new paths were refused.
    pub fn record(&self, agent: IpAddr, at: u32, reports: Vec<(IpAddr, PathReport)>) -> usize {
        let oldest = at.saturating_sub(self.window);
        let mut guard = self.write();
        let inner = &mut *guard;
        let (mut refused, mut pruned, mut added_bytes, mut removed_bytes) = (0, 0, 0, 0);
        if !inner.agents.contains_key(&agent) {
            added_bytes += AGENT_BYTES;
        }
        let entry = inner.agents.entry(agent).or_default();
        entry.last_ok = Some(at);
        entry.last_try = at;
        entry.failure = None;
        removed_bytes += entry.latest_bytes();
        let mut latest = std::mem::take(&mut entry.latest);
        latest.clear();
        latest.reserve_exact(reports.len());
        for (dst, report) in reports {
            let series = match entry.paths.get_mut(&dst) {
                Some(s) => s,
                None if inner.paths >= self.max_paths => {
                    refused += 1;
                    continue;
                }
                None => {
                    inner.paths += 1;
                    added_bytes += PATH_BYTES;
                    entry.paths.entry(dst).or_default()
                }
            };
            removed_bytes += series.bytes();
            pruned += series.prune(oldest);
            let (sample, flows) = Sample::from_report(&report, at, self.interval);
            series.push(sample, flows, &report);
            added_bytes += series.bytes();
            latest.push((dst, sample));
        }
        latest.shrink_to_fit();
        entry.latest = latest;
        added_bytes += entry.latest_bytes();
        inner.bytes = (inner.bytes + added_bytes).saturating_sub(removed_bytes);
        if refused > 0 {
            self.counters.refused_paths.inc_by(refused as u64);
            if !std::mem::replace(&mut inner.refusal_logged, true) {
                tracing::warn!(
                    max_paths = self.max_paths,
                    "history holds history_max_paths paths: new paths are refused until old ones age out"
                );
            }
        }
        self.count_dropped("window", pruned);
        if inner.bytes > self.max_bytes {
            self.fit_budget(inner);
        }
        drop(guard);
        self.bump();
        refused
    }

    /// Records a failed scrape of `agent` (`why`: `timeout`, `error`, …).
    pub fn record_failure(&self, agent: IpAddr, at: u32, why: &'static str) {
        let mut inner = self.write();
        if !inner.agents.contains_key(&agent) {
            inner.bytes += AGENT_BYTES;
        }
        let entry = inner.agents.entry(agent).or_default();
        entry.last_try = at;
        entry.failure = Some(why);
        drop(inner);
        self.bump();
    }

    /// Drops everything older than the window before `now`, and agents not
    /// tried within it (every round calls this once).
    pub fn prune(&self, now: u32) {
        let oldest = now.saturating_sub(self.window);
        let mut guard = self.write();
        let inner = &mut *guard;
        let (mut pruned, mut removed_paths, mut bytes) = (0, 0, 0);
        inner.agents.retain(|_, agent| {
            agent.paths.retain(|_, series| {
                pruned += series.prune(oldest);
                let keep = !series.is_empty();
                if keep {
                    bytes += PATH_BYTES + series.bytes();
                } else {
                    removed_paths += 1;
                }
                keep
            });
            agent.latest.retain(|(_, s)| s.at >= oldest);
            let keep = agent.last_try >= oldest || !agent.paths.is_empty();
            if keep {
                bytes += AGENT_BYTES + agent.latest_bytes();
            }
            keep
        });
        // Recounted from scratch: no drift between the books and the buffers.
        inner.bytes = bytes;
        inner.paths -= removed_paths;
        if removed_paths > 0 {
            inner.refusal_logged = false;
        }
        self.count_dropped("window", pruned);
        drop(guard);
        self.bump();
    }

    fn count_dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.counters
                .dropped
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
    }

    /// Downsamples (then drops), oldest first, until the history takes at
    /// most 90 % of the budget.
    fn fit_budget(&self, inner: &mut Inner) {
        let target = self.max_bytes / 10 * 9;
        if !std::mem::replace(&mut inner.budget_logged, true) {
            tracing::info!(
                max_bytes = self.max_bytes,
                "history reached history_max_bytes: downsampling its oldest samples"
            );
        }
        while inner.bytes > target {
            let mut merged = 0;
            let mut bytes = 0;
            for agent in inner.agents.values_mut() {
                for series in agent.paths.values_mut() {
                    merged += series.downsample(self.max_span);
                    bytes += series.bytes();
                }
            }
            let fixed = inner.paths * PATH_BYTES
                + inner
                    .agents
                    .values()
                    .map(|a| AGENT_BYTES + a.latest_bytes())
                    .sum::<usize>();
            inner.bytes = fixed + bytes;
            self.counters.downsampled.inc_by(merged);
            if merged > 0 || inner.bytes <= target {
                continue;
            }
            // Nothing left to merge: drop the oldest sample of every path.
            let (mut dropped, mut bytes) = (0, 0);
            for agent in inner.agents.values_mut() {
                for series in agent.paths.values_mut() {
                    if series.len() > 1 && series.pop_front().is_some() {
                        dropped += 1;
                        series.samples.shrink_to_fit();
                        series.flows.shrink_to_fit();
                    }
                    bytes += series.bytes();
                }
            }
            inner.bytes = fixed + bytes;
            self.count_dropped("budget", dropped);
            if dropped == 0 {
                // One sample per path and still over: the paths themselves
                // are the cost; max_paths bounds them.
                break;
            }
        }
    }

    /// Current sizes.
    pub fn stats(&self) -> HistoryStats {
        let inner = self.read();
        let mut s = HistoryStats {
            agents: inner.0.agents.len(),
            paths: inner.0.paths,
            bytes: inner.0.bytes,
            max_bytes: self.max_bytes,
            ..HistoryStats::default()
        };
        for agent in inner.0.agents.values() {
            for series in agent.paths.values() {
                s.samples += series.samples.len();
                s.flow_samples += series.flows.len();
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn history(window: u64, max_bytes: usize, max_paths: usize) -> (History, HistoryCounters) {
        let counters = HistoryCounters::default();
        let h = History::new(
            &HistoryLimits {
                window: Duration::from_secs(window),
                interval: Duration::from_secs(10),
                max_bytes,
                max_paths,
            },
            counters.clone(),
        );
        (h, counters)
    }

    fn report(lost: f64) -> PathReport {
        PathReport::synthetic(lost, 0.5)
    }

    fn dropped(c: &HistoryCounters, reason: &'static str) -> u64 {
        c.dropped.get_or_create(&ReasonLabel { reason }).get()
    }

    #[test]
    fn keeps_one_window_per_path_and_records_scrape_outcomes() {
        let (h, c) = history(100, usize::MAX, 10);
        let a = ip("10.0.0.1");
        for i in 0..50 {
            h.record(a, i * 10, vec![(ip("10.0.0.2"), report(0.0))]);
        }
        let snap = h.read();
        let agent = snap.agent(&a).unwrap();
        let series = agent.path(&ip("10.0.0.2")).unwrap();
        assert_eq!(series.len(), 11, "samples within the window: 390..=490");
        assert_eq!(series.latest().unwrap().at, 490);
        assert_eq!(series.ports(), [40_000, 40_001, 40_002, 40_003]);
        assert_eq!((agent.last_ok, agent.failure), (Some(490), None));
        drop(snap);
        assert_eq!(dropped(&c, "window"), 39);
        let g = h.generation();
        h.record_failure(a, 500, "timeout");
        assert!(h.generation() > g);
        let snap = h.read();
        let agent = snap.agent(&a).unwrap();
        assert_eq!(
            (agent.last_ok, agent.last_try, agent.failure),
            (Some(490), 500, Some("timeout"))
        );
        drop(snap);
        h.prune(10_000);
        assert_eq!(h.stats().paths, 0);
        assert!(h.read().agent(&a).is_none());
        assert_eq!(h.stats().bytes, 0, "everything given back");
    }

    #[test]
    fn refuses_paths_beyond_the_limit() {
        let (h, c) = history(100, usize::MAX, 2);
        let a = ip("10.0.0.1");
        let refused = h.record(
            a,
            1,
            vec![
                (ip("10.0.0.2"), report(0.0)),
                (ip("10.0.0.3"), report(0.0)),
                (ip("10.0.0.4"), report(0.0)),
            ],
        );
        assert_eq!((refused, h.stats().paths, c.refused_paths.get()), (1, 2, 1));
        assert_eq!(h.record(a, 2, vec![(ip("10.0.0.2"), report(0.0))]), 0);
    }

    #[test]
    fn flows_are_kept_for_lossy_samples_only() {
        let (h, _) = history(3600, usize::MAX, 10);
        let (a, d) = (ip("10.0.0.1"), ip("10.0.0.2"));
        h.record(a, 10, vec![(d, report(0.0))]);
        h.record(a, 20, vec![(d, report(20.0))]);
        let snap = h.read();
        let points = snap.agent(&a).unwrap().path(&d).unwrap().points();
        assert_eq!(points[0].1.len(), 0);
        assert_eq!(points[1].1.len(), 4);
        assert!(points[1].1.iter().all(|f| f.lost == 5), "{points:?}");
        assert_eq!(h.stats().flow_samples, 4);
    }

    #[test]
    fn stays_within_the_byte_budget_by_downsampling_oldest_first() {
        let budget = 400_000;
        let (h, c) = history(3600, budget, 10_000);
        let a = ip("10.0.0.1");
        let dsts: Vec<IpAddr> = (0..50).map(|i| ip(&format!("10.0.1.{i}"))).collect();
        for round in 0..360u32 {
            let lost = if round % 7 == 0 { 4.0 } else { 0.0 };
            h.record(
                a,
                round * 10,
                dsts.iter().map(|d| (*d, report(lost))).collect(),
            );
            assert!(h.stats().bytes <= budget, "round {round}: {:?}", h.stats());
        }
        let stats = h.stats();
        assert!(c.downsampled.get() > 0, "{stats:?}");
        let snap = h.read();
        let series = snap.agent(&a).unwrap().path(&dsts[0]).unwrap();
        let points = series.points();
        // The newest samples keep their resolution; the oldest are coarser.
        assert_eq!(points.last().unwrap().0.span, 10);
        assert!(points[0].0.span > 10, "{:?}", points[0].0);
        assert!(points.iter().all(|(s, _)| s.span <= 225));
        // No probe is lost from the books by merging.
        let sent: u32 = points.iter().map(|(s, _)| s.sent).sum();
        let covered: u32 = points.iter().map(|(s, _)| u32::from(s.span)).sum();
        assert_eq!(sent, covered / 10 * 80);
        // Spans tile time without gaps or overlaps.
        for w in points.windows(2) {
            assert_eq!(w[1].0.at - w[0].0.at, u32::from(w[1].0.span), "{w:?}");
        }
    }

    #[test]
    fn drops_oldest_when_downsampling_is_exhausted() {
        // Room for only a few samples per path.
        let (h, c) = history(3600, 40_000, 10_000);
        let a = ip("10.0.0.1");
        let dsts: Vec<IpAddr> = (0..40).map(|i| ip(&format!("10.0.1.{i}"))).collect();
        for round in 0..360u32 {
            h.record(
                a,
                round * 10,
                dsts.iter().map(|d| (*d, report(0.0))).collect(),
            );
            assert!(h.stats().bytes <= 40_000, "{:?}", h.stats());
        }
        assert!(dropped(&c, "budget") > 0);
        let snap = h.read();
        let series = snap.agent(&a).unwrap().path(&dsts[0]).unwrap();
        assert_eq!(series.latest().unwrap().at, 3590, "the newest sample stays");
    }
}
