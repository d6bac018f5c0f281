//! Server statistics: Prometheus text at `GET /metrics` and the original's
//! JSON at `GET /metrics.json` (the same numbers under the original's keys;
//! the `*_removed` and `clean_runtime` values describe the last reap, as the
//! original's did).

use std::{
    sync::{Mutex, PoisonError, atomic::AtomicU64},
    time::{Instant, SystemTime},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use serde::Serialize;

use crate::{
    clock,
    history::{HistoryCounters, HistoryStats},
    registry::{Counts, ReapReport},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// The last reap, for `/metrics.json` and the `llama_server` measurement.
#[derive(Debug, Clone, Default)]
pub struct LastReap {
    pub report: ReapReport,
    pub at: Option<SystemTime>,
}

/// All counters of the server.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    start_time: SystemTime,
    probes: Gauge,
    groups: Gauge,
    uptime: Gauge<f64, AtomicU64>,
    pub registrations: Counter,
    pub rejected: Family<StatusLabel, Counter>,
    pub removals: Family<ReasonLabel, Counter>,
    pub groups_removed: Counter,
    pub reap_duration: Histogram,
    pub reap_longest_lock: Gauge<f64, AtomicU64>,
    pub scrapes: Family<ResultLabel, Counter>,
    pub points_scraped: Counter,
    pub influx_writes: Family<ResultLabel, Counter>,
    pub points_written: Counter,
    pub points_dropped: Counter,
    /// Wall time of whole scrape rounds (every agent fetched and recorded).
    pub scrape_round_seconds: Histogram,
    /// Agents whose last scrape failed or is older than two intervals.
    pub agents_stale: Gauge,
    /// 1 while this server holds the scraper lease (always, with a store of
    /// its own), else 0.
    pub scraper_leader: Gauge,
    pub history: HistoryCounters,
    history_bytes: Gauge,
    history_budget_bytes: Gauge,
    history_paths: Gauge,
    history_samples: Gauge,
    last_reap: Mutex<LastReap>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("llama"),
            started: Instant::now(),
            start_time: SystemTime::now(),
            probes: Gauge::default(),
            groups: Gauge::default(),
            uptime: Gauge::default(),
            registrations: Counter::default(),
            rejected: Family::default(),
            removals: Family::default(),
            groups_removed: Counter::default(),
            reap_duration: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            reap_longest_lock: Gauge::default(),
            scrapes: Family::default(),
            points_scraped: Counter::default(),
            influx_writes: Family::default(),
            points_written: Counter::default(),
            points_dropped: Counter::default(),
            scrape_round_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            agents_stale: Gauge::default(),
            scraper_leader: Gauge::default(),
            history: HistoryCounters::default(),
            history_bytes: Gauge::default(),
            history_budget_bytes: Gauge::default(),
            history_paths: Gauge::default(),
            history_samples: Gauge::default(),
            last_reap: Mutex::default(),
        };
        let r = &mut m.registry;
        r.register("probes_active", "Registered probes", m.probes.clone());
        r.register(
            "groups_active",
            "Groups with at least one probe",
            m.groups.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the server started",
            m.uptime.clone(),
        );
        r.register(
            "registrations",
            "Accepted registrations",
            m.registrations.clone(),
        );
        r.register(
            "registrations_rejected",
            "Refused registrations by status",
            m.rejected.clone(),
        );
        r.register(
            "removals",
            "Entries removed by the reaper, by reason",
            m.removals.clone(),
        );
        r.register(
            "groups_removed",
            "Groups removed because empty",
            m.groups_removed.clone(),
        );
        r.register(
            "reap_duration_seconds",
            "Duration of reaps",
            m.reap_duration.clone(),
        );
        r.register(
            "reap_longest_lock_seconds",
            "Longest lock hold of the last reap",
            m.reap_longest_lock.clone(),
        );
        r.register(
            "scrapes",
            "Agent /influxdata fetches by result",
            m.scrapes.clone(),
        );
        r.register(
            "points_scraped",
            "Points fetched from agents",
            m.points_scraped.clone(),
        );
        r.register(
            "influx_writes",
            "InfluxDB write attempts by result",
            m.influx_writes.clone(),
        );
        r.register(
            "points_written",
            "Points written to InfluxDB",
            m.points_written.clone(),
        );
        r.register(
            "points_dropped",
            "Points given up after failed writes",
            m.points_dropped.clone(),
        );
        r.register(
            "scrape_round_seconds",
            "Wall time of scrape rounds (every agent fetched and recorded)",
            m.scrape_round_seconds.clone(),
        );
        r.register(
            "agents_stale",
            "Agents whose last scrape failed or is older than two intervals",
            m.agents_stale.clone(),
        );
        r.register(
            "scraper_leader",
            "1 while this server holds the scraper lease (servers sharing a store scrape one at a time), else 0",
            m.scraper_leader.clone(),
        );
        r.register(
            "history_bytes",
            "Memory held by the in-memory history, as counted against its budget",
            m.history_bytes.clone(),
        );
        r.register(
            "history_budget_bytes",
            "The history's byte budget (history_max_bytes)",
            m.history_budget_bytes.clone(),
        );
        r.register(
            "history_paths",
            "Paths held in the history",
            m.history_paths.clone(),
        );
        r.register(
            "history_samples",
            "Samples held in the history",
            m.history_samples.clone(),
        );
        r.register(
            "history_samples_downsampled",
            "Samples merged into older ones to stay within the byte budget",
            m.history.downsampled.clone(),
        );
        r.register(
            "history_samples_dropped",
            "Samples dropped, by reason: window (older than the window) or budget",
            m.history.dropped.clone(),
        );
        r.register(
            "history_paths_refused",
            "Path reports refused because history_max_paths paths are held",
            m.history.refused_paths.clone(),
        );
        m
    }

    /// Updates the history gauges (before an exposition).
    pub fn set_history(&self, stats: &HistoryStats) {
        let g = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.history_bytes.set(g(stats.bytes));
        self.history_budget_bytes.set(g(stats.max_bytes));
        self.history_paths.set(g(stats.paths));
        self.history_samples.set(g(stats.samples));
    }

    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records a finished reap.
    pub fn record_reap(&self, report: &ReapReport) {
        self.removals
            .get_or_create(&ReasonLabel { reason: "expired" })
            .inc_by(report.expired as u64);
        self.removals
            .get_or_create(&ReasonLabel {
                reason: "duplicate",
            })
            .inc_by(report.duplicates as u64);
        self.groups_removed.inc_by(report.groups_removed as u64);
        self.reap_duration.observe(report.duration.as_secs_f64());
        self.reap_longest_lock
            .set(report.longest_lock.as_secs_f64());
        *self
            .last_reap
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = LastReap {
            report: report.clone(),
            at: Some(SystemTime::now()),
        };
    }

    pub fn last_reap(&self) -> LastReap {
        self.last_reap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn prometheus(&self, counts: Counts) -> String {
        self.probes.set(counts.probes as i64);
        self.groups.set(counts.groups as i64);
        self.uptime.set(self.uptime_secs());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The original's `/metrics` JSON.
    pub fn original_json(&self, counts: Counts) -> OriginalMetrics {
        let last = self.last_reap();
        OriginalMetrics {
            probe_count_removed: (last.report.expired + last.report.duplicates) as u64,
            probe_count_active: counts.probes as u64,
            group_count_active: counts.groups as u64,
            group_count_removed: last.report.groups_removed as u64,
            database_size_bytes: last.report.approx_bytes,
            clean_runtime: last.report.duration.as_secs_f64(),
            uptime: self.uptime_secs(),
            metrics_timestamp: clock::http_date(last.at.unwrap_or_else(SystemTime::now)),
            start_time: clock::http_date(self.start_time),
        }
    }
}

/// The original server's metrics, key for key.
#[derive(Debug, Clone, Serialize)]
pub struct OriginalMetrics {
    pub probe_count_removed: u64,
    pub probe_count_active: u64,
    pub group_count_active: u64,
    pub group_count_removed: u64,
    pub database_size_bytes: u64,
    pub clean_runtime: f64,
    pub uptime: f64,
    pub metrics_timestamp: String,
    pub start_time: String,
}
