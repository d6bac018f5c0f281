//! The scraper (docs/scraper.md): every interval, fetch `/influxdata` from
//! every agent at once (each with its own timeout and size limit), record
//! the path reports in the in-memory [`History`] (always: it feeds the live
//! matrix), and, when an InfluxDB is configured, write the points there in
//! batches as they arrive. A batch is written when full or when its first
//! point has waited `linger`, so a dead or slow agent delays nobody else's
//! points. Failed writes are retried until the interval ends, then counted
//! as dropped. The server's own statistics go to measurement `llama_server`.
//!
//! Rounds start a little after each wall-clock multiple of the interval,
//! when the agents (whose summaries are aligned to the same boundaries) have
//! just published.

pub mod agent;
pub mod lease;
pub mod targets;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt;
pub use lease::ScrapeLease;
pub use targets::TargetSource;
use tokio::sync::{mpsc, watch};

use crate::{
    clock,
    error::Error,
    history::History,
    influx::{FieldValue, InfluxClient, Point, WriteOutcome, encode},
    metrics::{Metrics, ResultLabel},
    registry::Store,
    settings::{InfluxSettings, ScrapeSettings},
};

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub agents: usize,
    pub answered: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub points: usize,
    pub written: usize,
    pub dropped: usize,
}

/// The scraper and its outputs.
pub struct Scraper {
    client: reqwest::Client,
    source: TargetSource,
    influx: Option<InfluxClient>,
    cfg: ScrapeSettings,
    interval: Duration,
    metrics: Arc<Metrics>,
    history: Arc<History>,
    /// Present inside the server: its statistics become `llama_server` points.
    server_store: Option<Arc<dyn Store>>,
    /// Inside the server: scrape only while holding the store's lease.
    lease: Option<ScrapeLease>,
    too_large_logged: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Scraper {
    pub fn new(
        source: TargetSource,
        influx: Option<&InfluxSettings>,
        cfg: ScrapeSettings,
        interval: Duration,
        metrics: Arc<Metrics>,
        history: Arc<History>,
    ) -> Result<Self, Error> {
        // A round must end within its interval, however slow an agent is.
        let mut cfg = cfg;
        cfg.agent_timeout = cfg.agent_timeout.min(interval);
        // Agents answer plain HTTP; the TLS setup only gives reqwest its
        // crypto provider.
        let builder = reqwest::Client::builder().pool_idle_timeout(interval * 2);
        let client = crate::tls::client_tls(builder, None, "agents")?
            .build()
            .map_err(|e| Error::http("HTTP client", e))?;
        Ok(Scraper {
            client,
            source,
            influx: influx.map(InfluxClient::new).transpose()?,
            cfg,
            interval,
            metrics,
            history,
            server_store: None,
            lease: None,
            too_large_logged: Default::default(),
        })
    }

    /// Also write the server's statistics (measurement `llama_server`).
    pub fn with_server_stats(mut self, store: Arc<dyn Store>) -> Self {
        self.server_store = Some(store);
        self
    }

    /// Scrape only the rounds this server holds `store`'s scraper lease
    /// for (see [`lease`]).
    pub fn with_lease(mut self, store: Arc<dyn Store>) -> Self {
        self.lease = Some(ScrapeLease::new(store, self.interval, self.metrics.clone()));
        self
    }

    /// The InfluxDB writer, when one is configured.
    pub fn influx(&self) -> Option<&InfluxClient> {
        self.influx.as_ref()
    }

    /// Scrapes every `interval` until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // The original created the database at start; retry until InfluxDB
        // is up (it often starts after us in a compose file), while the
        // collection for the live matrix goes on.
        let create = async {
            let Some(influx) = &self.influx else { return };
            loop {
                match influx.create_database().await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(%e, "cannot create the InfluxDB database yet"),
                }
                tokio::time::sleep(self.interval).await;
            }
        };
        let rounds = async {
            loop {
                tokio::time::sleep(until_next_round(self.interval, SystemTime::now())).await;
                if let Some(lease) = &self.lease
                    && !lease.hold().await
                {
                    continue;
                }
                let deadline = Instant::now() + self.interval;
                let report = self.round(deadline).await;
                tracing::debug!(?report, "scrape round");
            }
        };
        tokio::select! {
            _ = async { tokio::join!(create, rounds) } => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    /// One round: fetch every agent, write the points, record history.
    /// Writes give up at `deadline`.
    pub async fn round(&self, deadline: Instant) -> RoundReport {
        let started = Instant::now();
        let now = SystemTime::now();
        let time = clock::unix_secs(now);
        let agents = self.source.targets().await;
        let mut report = match &self.influx {
            Some(influx) => {
                let (tx, rx) = mpsc::channel::<Vec<Point>>(64);
                let fetch_all = self.fetch_all(agents.clone(), time, Some(tx));
                let write_all = self.write_batches(influx, rx, deadline);
                let (mut report, (written, dropped)) = tokio::join!(fetch_all, write_all);
                report.written = written;
                report.dropped = dropped;
                if let Some(store) = &self.server_store
                    && let Ok(counts) = store.counts().await
                {
                    let point = self.server_point(counts, time);
                    self.write(influx, vec![point], deadline).await;
                }
                report
            }
            None => self.fetch_all(agents.clone(), time, None).await,
        };
        report.agents = agents.len();
        self.history.prune(u32::try_from(time).unwrap_or(u32::MAX));
        self.metrics
            .agents_stale
            .set((report.failed + report.timed_out) as i64);
        self.metrics
            .scrape_round_seconds
            .observe(started.elapsed().as_secs_f64());
        report
    }

    async fn fetch_all(
        &self,
        agents: Vec<IpAddr>,
        time: u64,
        tx: Option<mpsc::Sender<Vec<Point>>>,
    ) -> RoundReport {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let (answered, failed, timed_out, points_seen) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let at = u32::try_from(time).unwrap_or(u32::MAX);
        let tx = &tx;
        futures::stream::iter(agents)
            .for_each_concurrent(self.cfg.concurrency.max(1), |ip| {
                let (answered, failed, timed_out, points_seen) =
                    (&answered, &failed, &timed_out, &points_seen);
                async move {
                    let result = agent::fetch(
                        &self.client,
                        ip,
                        self.cfg.agent_port,
                        self.cfg.agent_timeout,
                        self.cfg.max_body_bytes,
                    )
                    .await
                    .and_then(|body| {
                        let (reports, n) =
                            agent::reports(ip, &body).map_err(agent::FetchError::Failed)?;
                        Ok((body, reports, n))
                    });
                    let label = match result {
                        Ok((body, reports, n)) => {
                            self.history.record(ip, at, reports);
                            self.metrics.points_scraped.inc_by(n as u64);
                            answered.fetch_add(1, Relaxed);
                            points_seen.fetch_add(n, Relaxed);
                            if let Some(tx) = tx
                                && let Ok(points) = agent::points(&body)
                            {
                                let points = agent::convert(points, time);
                                if !points.is_empty() {
                                    // The writer stops only after every sender is gone.
                                    let _ = tx.send(points).await;
                                }
                            }
                            "ok"
                        }
                        Err(agent::FetchError::Timeout) => {
                            tracing::debug!(%ip, "agent timed out");
                            self.history.record_failure(ip, at, "timeout");
                            timed_out.fetch_add(1, Relaxed);
                            "timeout"
                        }
                        Err(agent::FetchError::TooLarge) => {
                            self.warn_too_large(ip);
                            self.history.record_failure(ip, at, "too large");
                            failed.fetch_add(1, Relaxed);
                            "too_large"
                        }
                        Err(agent::FetchError::Failed(why)) => {
                            tracing::debug!(%ip, %why, "agent fetch failed");
                            self.history.record_failure(ip, at, "error");
                            failed.fetch_add(1, Relaxed);
                            "error"
                        }
                    };
                    self.metrics
                        .scrapes
                        .get_or_create(&ResultLabel { result: label })
                        .inc();
                }
            })
            .await;
        RoundReport {
            answered: answered.into_inner(),
            failed: failed.into_inner(),
            timed_out: timed_out.into_inner(),
            points: points_seen.into_inner(),
            ..RoundReport::default()
        }
    }

    /// Says once that an answer was over the limit (then only counts it).
    fn warn_too_large(&self, ip: IpAddr) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.too_large_logged.swap(true, Relaxed) {
            tracing::warn!(
                %ip,
                limit = self.cfg.max_body_bytes,
                "an agent's /influxdata is larger than scrape_max_body_bytes: refused (counted as llama_scrapes_total{{result=\"too_large\"}})"
            );
        }
    }

    /// Collects points into batches; writes a batch when it is full, when
    /// its oldest point has waited `linger`, or when the fetches are done.
    async fn write_batches(
        &self,
        influx: &InfluxClient,
        mut rx: mpsc::Receiver<Vec<Point>>,
        deadline: Instant,
    ) -> (usize, usize) {
        let (mut written, mut dropped) = (0, 0);
        let mut batch: Vec<Point> = Vec::new();
        let mut oldest: Option<tokio::time::Instant> = None;
        loop {
            let flush_at = oldest.map(|t| t + self.cfg.linger);
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = async { tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)).await }, if flush_at.is_some() => {
                    let (w, d) = self.write(influx, std::mem::take(&mut batch), deadline).await;
                    written += w;
                    dropped += d;
                    oldest = None;
                    continue;
                }
            };
            let Some(points) = msg else { break };
            oldest.get_or_insert_with(tokio::time::Instant::now);
            batch.extend(points);
            while batch.len() >= self.cfg.batch_points.max(1) {
                let rest = batch.split_off(self.cfg.batch_points.max(1));
                let (w, d) = self
                    .write(influx, std::mem::replace(&mut batch, rest), deadline)
                    .await;
                written += w;
                dropped += d;
                if batch.is_empty() {
                    oldest = None;
                }
            }
        }
        if !batch.is_empty() {
            let (w, d) = self.write(influx, batch, deadline).await;
            written += w;
            dropped += d;
        }
        (written, dropped)
    }

    /// Writes points; returns (written, dropped).
    async fn write(
        &self,
        influx: &InfluxClient,
        points: Vec<Point>,
        deadline: Instant,
    ) -> (usize, usize) {
        let (body, n) = encode(&points);
        if n == 0 {
            return (0, 0);
        }
        let outcome = influx.write(&body, deadline).await;
        let m = &self.metrics;
        let count = |result| m.influx_writes.get_or_create(&ResultLabel { result });
        match outcome {
            WriteOutcome::Written { retries } => {
                count("ok").inc();
                count("retry").inc_by(u64::from(retries));
                m.points_written.inc_by(n as u64);
                (n, 0)
            }
            WriteOutcome::Refused => {
                count("refused").inc();
                m.points_dropped.inc_by(n as u64);
                (0, n)
            }
            WriteOutcome::GaveUp { attempts } => {
                count("failed").inc();
                count("retry").inc_by(u64::from(attempts.saturating_sub(1)));
                m.points_dropped.inc_by(n as u64);
                (0, n)
            }
        }
    }

    /// The original's `llama_server` point (same tags, fields and types).
    fn server_point(&self, counts: crate::registry::Counts, time: u64) -> Point {
        let last = self.metrics.last_reap();
        let (hostname, ip) = host_identity();
        let int = |v: u64| FieldValue::Int(v as i64);
        Point {
            measurement: "llama_server".into(),
            tags: vec![("hostname".into(), hostname), ("ipaddress".into(), ip)],
            fields: vec![
                (
                    "probe_count_removed".into(),
                    int((last.report.expired + last.report.duplicates) as u64),
                ),
                ("probe_count_active".into(), int(counts.probes as u64)),
                ("group_count_active".into(), int(counts.groups as u64)),
                (
                    "group_count_removed".into(),
                    int(last.report.groups_removed as u64),
                ),
                ("database_size_bytes".into(), int(last.report.approx_bytes)),
                (
                    "clean_runtime".into(),
                    FieldValue::Float(last.report.duration.as_secs_f64()),
                ),
                ("uptime".into(), int(self.metrics.uptime_secs() as u64)),
            ],
            time,
        }
    }
}

/// How long to wait, from `now`, for the next round: a fifth of the
/// interval (at most 2 s) after the next wall-clock multiple of it.
pub fn until_next_round(interval: Duration, now: SystemTime) -> Duration {
    let period = interval.as_nanos().max(1);
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let offset = (interval / 5).min(Duration::from_secs(2)).as_nanos();
    let into = (since_epoch + period - offset % period) % period;
    Duration::from_nanos((period - into) as u64)
}

/// The host name and the address it resolves to, as the original reported
/// them (`localhost`/`127.0.0.1` when unknown).
fn host_identity() -> (String, String) {
    static IDENTITY: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(resolve_host_identity).clone()
}

fn resolve_host_identity() -> (String, String) {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if name.is_empty() {
        return ("localhost".into(), "127.0.0.1".into());
    }
    let ip = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| {
            addrs
                .find(|a| a.is_ipv4())
                .or_else(|| (name.as_str(), 0).to_socket_addrs().ok()?.next())
        })
        .map_or_else(|| "127.0.0.1".to_owned(), |a| a.ip().to_string());
    (name, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_start_just_after_the_agents_publish() {
        let at = |secs: u64, ms: u64| {
            std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
        };
        let ten = Duration::from_secs(10);
        // Boundaries at multiples of 10 s; rounds 2 s after them.
        assert_eq!(until_next_round(ten, at(1000, 0)), Duration::from_secs(2));
        assert_eq!(until_next_round(ten, at(1002, 0)), ten);
        assert_eq!(
            until_next_round(ten, at(1009, 500)),
            Duration::from_millis(2500)
        );
        // Short intervals: a fifth of the interval.
        let one = Duration::from_secs(1);
        assert_eq!(
            until_next_round(one, at(7, 100)),
            Duration::from_millis(100)
        );
    }
}
