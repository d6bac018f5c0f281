//! The live matrix's budgets, measured in one process (built in release by
//! `cargo xtask bench server`, which adds its Markdown to
//! docs/benchmarks/server.md):
//!
//! 1. History memory: a 300-member group (90,000 paths) recorded for an hour
//!    of 10 s intervals in simulated time, against the default byte budget;
//!    accounted bytes, process RSS, bytes per path-sample.
//! 2. One collection round: 300 synthetic agents on 127.0.x.y, each serving
//!    the real agent's `/influxdata` rendering of 300 paths after 1 ms;
//!    baseline: the same 300 fetches without parsing or recording.
//! 3. `GET /api/v1/matrix` of that group over HTTP on loopback; baselines
//!    `GET /api/v1/interval` (the HTTP floor) and `GET /api/v1/list/<group>`.
//!
//! Usage: `matrix_bench [--quick]`; prints Markdown on stdout.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use axum::{Router, routing::get};
use llama_agent::{
    api::influx,
    collector::summary::{PathSummary, PortLoss, Published},
};
use llama_server::{
    AppState, Settings,
    history::PathReport,
    registration::Registration,
    scraper::{Scraper, TargetSource},
    settings::ScrapeSettings,
};

const MEMBERS: usize = 300;
const INTERVAL: u32 = 10;
const LOSSY: usize = 7;

fn member_ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8])
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What agent `src` reports to `dst`: 80 probes, 30 % lost on the lossy
/// member's row and column, RTTs varying per path.
fn report(src: usize, dst: usize, round: u32) -> PathReport {
    let lost = if src != dst && (src == LOSSY || dst == LOSSY) {
        24.0
    } else {
        0.0
    };
    let rtt = 0.05 + ((src * 7 + dst * 13 + round as usize) % 100) as f64 / 400.0;
    PathReport::synthetic(lost, rtt)
}

/// The real agent's `/influxdata` for `src` probing every member.
fn agent_body(src: usize) -> String {
    let paths = (0..MEMBERS)
        .map(|dst| {
            let r = report(src, dst, 0);
            let tags: BTreeMap<String, String> = [
                ("dst_name", format!("probe-{dst}.example.com")),
                ("dst_shortname", format!("probe-{dst}")),
                ("src_name", format!("probe-{src}.example.com")),
                ("src_shortname", format!("probe-{src}")),
                ("group", "big".to_owned()),
                ("location", format!("rack-{}", dst % 12)),
                ("probe_name", format!("probe-{dst}.example.com")),
                ("probe_shortname", format!("probe-{dst}")),
                ("version", "0.1.0".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            PathSummary {
                src_ip: "0.0.0.0".parse().unwrap(),
                dst_ip: if dst == src {
                    "127.0.0.1".parse().unwrap()
                } else {
                    member_ip(dst)
                },
                tags: Arc::new(tags),
                sent: 80,
                lost: r.lost as u64,
                loss_pct: r.lost * 100.0 / 80.0,
                rtt_mean_ms: r.rtt,
                rtt_min_ms: r.rtt / 2.0,
                rtt_max_ms: r.p99 * 1.5,
                rtt_p50_ms: r.p50,
                rtt_p90_ms: r.p90,
                rtt_p99_ms: r.p99,
                jitter_ms: r.jitter,
                late: 0,
                duplicates: 0,
                unexpected: 0,
                send_errors: 0,
                ports: r
                    .flows
                    .iter()
                    .map(|f| PortLoss {
                        flow: u16::from(f.flow),
                        src_port: f.src_port,
                        sent: 20,
                        lost: f.lost as u64,
                        loss_pct: f.lost * 5.0,
                    })
                    .collect(),
                rtt_buckets: Default::default(),
                hops: Some(2),
                hop_changes: 0,
                tx_kernel: 80 - r.lost as u64,
                tx_fallback: 0,
            }
        })
        .collect();
    influx::render(&Published {
        interval_end: 1,
        paths,
    })
}

async fn register_members(state: &AppState) {
    let now = SystemTime::now();
    for i in 0..MEMBERS {
        let body = serde_json::json!({
            "port": 8100,
            "ip": member_ip(i).to_string(),
            "group": "big",
            "tags": {
                "version": "0.1.0",
                "probe_shortname": format!("probe-{i}"),
                "probe_name": format!("probe-{i}.example.com"),
                "location": format!("rack-{}", i % 12),
            }
        })
        .to_string();
        let probe = Registration::parse(body.as_bytes(), &Default::default())
            .expect("valid registration")
            .into_probe(member_ip(i), "big", 86_400.0);
        state.store.register(probe, now).await.expect("registered");
    }
}

/// Phase 1: an hour of rounds in simulated time.
fn fill_history(state: &AppState, rounds: u32, md: &mut String) {
    let rss_before = rss_kib();
    let end = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let start = end - (rounds - 1) * INTERVAL;
    let started = Instant::now();
    let mut max_bytes_seen = 0;
    let mut record_times = Vec::new();
    for round in 0..rounds {
        let at = start + round * INTERVAL;
        let t = Instant::now();
        for src in 0..MEMBERS {
            let reports = (0..MEMBERS)
                .map(|dst| (member_ip(dst), report(src, dst, round)))
                .collect();
            state.history.record(member_ip(src), at, reports);
        }
        state.history.prune(at);
        record_times.push(t.elapsed());
        max_bytes_seen = max_bytes_seen.max(state.history.stats().bytes);
    }
    let elapsed = started.elapsed();
    let s = state.history.stats();
    let rss_after = rss_kib();
    let metrics = state.metrics.prometheus(Default::default());
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let downsampled = counter("llama_history_samples_downsampled_total");
    let dropped_budget = counter("llama_history_samples_dropped_total{reason=\"budget\"}");
    let dropped_window = counter("llama_history_samples_dropped_total{reason=\"window\"}");
    let per_sample = s.bytes as f64 / s.samples.max(1) as f64;
    let budget_mib = s.max_bytes as f64 / 1048576.0;
    md.push_str(&format!(
        "| history of {MEMBERS} members ({} paths) after {rounds} rounds of {INTERVAL} s (simulated {:.0} min) | budget {budget_mib:.0} MiB | {:.1} MiB accounted (max {:.1} MiB seen after a round); RSS grew {:.1} MiB | {:.0}–{:.0} % of budget | {} |\n",
        s.paths,
        f64::from(rounds * INTERVAL) / 60.0,
        s.bytes as f64 / 1048576.0,
        max_bytes_seen as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        100.0 * s.bytes as f64 / s.max_bytes as f64,
        100.0 * max_bytes_seen as f64 / s.max_bytes as f64,
        if max_bytes_seen <= s.max_bytes { "met (≤ budget)" } else { "NOT met" },
    ));
    md.push_str(&format!(
        "| bytes per path-sample | – | {per_sample:.1} ({} samples, {} with per-flow loss entries; {:.1} samples per path) | | |\n",
        s.samples,
        s.flow_samples,
        s.samples as f64 / s.paths.max(1) as f64
    ));
    md.push_str(&format!(
        "| recording one round (90,000 path reports) | – | p50 {:.0} ms, max {:.0} ms ({:.1} s for all {rounds}) | | |\n",
        ms(percentile(&mut record_times.clone(), 0.5)),
        ms(percentile(&mut record_times, 1.0)),
        elapsed.as_secs_f64()
    ));
    md.push_str(&format!(
        "| samples downsampled / dropped (budget) / dropped (window) | – | {downsampled} / {dropped_budget} / {dropped_window} | | |\n"
    ));
}

/// Starts the synthetic agents: every member's address, one port, the same
/// rendered body per agent, answered after 1 ms.
async fn start_agents() -> (u16, Vec<tokio::task::JoinHandle<()>>, usize) {
    let first = tokio::net::TcpListener::bind(SocketAddr::new(member_ip(0), 0))
        .await
        .expect("bind");
    let port = first.local_addr().unwrap().port();
    let mut listeners = vec![first];
    for i in 1..MEMBERS {
        listeners.push(
            tokio::net::TcpListener::bind(SocketAddr::new(member_ip(i), port))
                .await
                .expect("bind an agent address"),
        );
    }
    let mut tasks = Vec::new();
    let mut bytes = 0;
    for (i, l) in listeners.into_iter().enumerate() {
        let body = bytes::Bytes::from(agent_body(i));
        bytes += body.len();
        let app = Router::new().route(
            "/influxdata",
            get(move || {
                let body = body.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    body
                }
            }),
        );
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        }));
    }
    (port, tasks, bytes)
}

/// Phase 2: collection rounds against the synthetic agents.
async fn collection(state: &AppState, rounds: usize, md: &mut String) {
    let (port, agents, bytes) = start_agents().await;
    let cfg = ScrapeSettings {
        agent_port: port,
        agent_timeout: Duration::from_secs(10),
        ..ScrapeSettings::default()
    };
    let scraper = Scraper::new(
        TargetSource::Store(state.store.clone()),
        None,
        cfg,
        Duration::from_secs(u64::from(INTERVAL)),
        state.metrics.clone(),
        state.history.clone(),
    )
    .expect("scraper");
    let mut walls = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let r = scraper
            .round(Instant::now() + Duration::from_secs(30))
            .await;
        walls.push(t.elapsed());
        assert_eq!((r.agents, r.answered), (MEMBERS, MEMBERS), "{r:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Baseline: the same fetches, bodies read and thrown away.
    let client = llama_server::tls::client_tls(reqwest::Client::builder(), None, "bench")
        .unwrap()
        .build()
        .unwrap();
    let mut bases = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let fetches = (0..MEMBERS).map(|i| {
            let url = format!("http://{}/influxdata", SocketAddr::new(member_ip(i), port));
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .ok()?
                    .bytes()
                    .await
                    .ok()
                    .map(|b| b.len())
            }
        });
        let got: usize = futures::future::join_all(fetches)
            .await
            .into_iter()
            .flatten()
            .sum();
        assert_eq!(got, bytes);
        bases.push(t.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (p50, max) = (
        percentile(&mut walls.clone(), 0.5),
        percentile(&mut walls, 1.0),
    );
    let base = percentile(&mut bases, 0.5);
    md.push_str(&format!(
        "| one collection round: {MEMBERS} agents answering in 1 ms, {:.0} MiB of `/influxdata` ({:.0} KiB each: 300 paths + 1,200 flow points) | < 2 s wall | p50 {:.0} ms, max {:.0} ms ({rounds} rounds) | {:.1}× the fetch-only baseline ({:.0} ms) | {} |\n",
        bytes as f64 / 1048576.0,
        bytes as f64 / MEMBERS as f64 / 1024.0,
        ms(p50),
        ms(max),
        p50.as_secs_f64() / base.as_secs_f64().max(1e-9),
        ms(base),
        if max < Duration::from_secs(2) { "met" } else { "NOT met" },
    ));
    for a in agents {
        a.abort();
    }
}

/// Phase 3: the matrix over HTTP.
async fn matrix_api(state: &AppState, requests: usize, md: &mut String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        llama_server::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = llama_server::tls::client_tls(reqwest::Client::builder(), None, "bench")
        .unwrap()
        .build()
        .unwrap();
    let time = |path: &'static str, etag: Option<String>| {
        let client = client.clone();
        async move {
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..requests {
                let mut req = client.get(format!("http://{addr}{path}"));
                if let Some(tag) = &etag {
                    req = req.header("If-None-Match", tag);
                }
                let t = Instant::now();
                let resp = req.send().await.expect("request");
                let status = resp.status().as_u16();
                let body = resp.bytes().await.expect("body");
                times.push(t.elapsed());
                assert!(status == 200 || status == 304, "{path}: {status}");
                size = body.len();
            }
            let p50 = percentile(&mut times.clone(), 0.5);
            (p50, percentile(&mut times, 0.99), size)
        }
    };
    let floor = time("/api/v1/interval", None).await;
    let list = time("/api/v1/list/big", None).await;
    let matrix = time("/api/v1/matrix?group=big", None).await;
    let rtt = time("/api/v1/matrix?group=big&metric=p99", None).await;
    let by = time("/api/v1/matrix?group=big&by=location", None).await;
    let path = time("/api/v1/path?group=big&src=probe-7&dst=probe-8", None).await;
    let tag = client
        .get(format!("http://{addr}/api/v1/matrix?group=big"))
        .send()
        .await
        .unwrap()
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let revalidate = time("/api/v1/matrix?group=big", tag).await;
    let row = |what: &str, (p50, p99, size): (Duration, Duration, usize), goal: &str| {
        format!(
            "| {what} | {goal} | p50 {:.2} ms, p99 {:.2} ms ({} KiB) | {:.1}× the `/api/v1/interval` floor, {:.1}× `/api/v1/list/big` | {} |\n",
            ms(p50),
            ms(p99),
            size / 1024,
            p50.as_secs_f64() / floor.0.as_secs_f64().max(1e-9),
            p50.as_secs_f64() / list.0.as_secs_f64().max(1e-9),
            if goal.is_empty() {
                ""
            } else if p50 < Duration::from_millis(20) {
                "met"
            } else {
                "NOT met"
            },
        )
    };
    md.push_str(&row(
        "`GET /api/v1/matrix?group=big` (300 × 300 cells, loss)",
        matrix,
        "p50 < 20 ms",
    ));
    md.push_str(&row("same, `metric=p99`", rtt, "p50 < 20 ms"));
    md.push_str(&row("same, `by=location` (12 × 12)", by, ""));
    md.push_str(&row(
        "same, revalidated with `If-None-Match` (304)",
        revalidate,
        "",
    ));
    md.push_str(&row("`GET /api/v1/path` (one path, an hour)", path, ""));
    md.push_str(&format!(
        "| baselines: `/api/v1/interval`, `/api/v1/list/big` | – | p50 {:.2} ms; p50 {:.2} ms ({} KiB) | | |\n",
        ms(floor.0),
        ms(list.0),
        list.2 / 1024
    ));
    server.abort();
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = Settings {
        interval: u64::from(INTERVAL),
        ..Settings::default()
    };
    let state = AppState::new(settings);
    register_members(&state).await;
    let mut md = String::from("| figure | budget | ours | ratio | goal |\n|---|---|---|---|---|\n");
    let rounds = if quick { 60 } else { 360 };
    {
        let state = state.clone();
        md = tokio::task::spawn_blocking(move || {
            fill_history(&state, rounds, &mut md);
            md
        })
        .await
        .unwrap();
    }
    collection(&state, if quick { 3 } else { 5 }, &mut md).await;
    matrix_api(&state, if quick { 30 } else { 100 }, &mut md).await;
    print!("{md}");
}
