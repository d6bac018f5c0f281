//! The scraper against a real InfluxDB 1.x (see support/influxd.rs) and
//! stand-in agents serving `/influxdata`; write retries against a fake
//! InfluxDB that fails on purpose.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, http::StatusCode, routing::post};
use llama_server::{
    Settings,
    history::{History, HistoryLimits},
    metrics::Metrics,
    registry::{MemoryStore, Store},
    scraper::{Scraper, TargetSource},
    server::Server,
    settings::{InfluxSettings, ScrapeSettings},
    state::AppState,
};
use llama_testkit::{eventually, free_port};
use serde_json::json;

use crate::support::{
    agents,
    app::{self, get_text},
    assert_contains, influxd,
};

fn influx_settings(url_port: u16, name: &str) -> InfluxSettings {
    InfluxSettings {
        host: "127.0.0.1".into(),
        port: url_port,
        name: name.into(),
        ..InfluxSettings::default()
    }
}

fn history() -> Arc<History> {
    Arc::new(History::new(
        &HistoryLimits {
            window: Duration::from_secs(3600),
            interval: Duration::from_secs(10),
            max_bytes: 1 << 20,
            max_paths: 100,
        },
        Default::default(),
    ))
}

fn scrape_settings(port: u16, timeout: Duration) -> ScrapeSettings {
    ScrapeSettings {
        agent_port: port,
        agent_timeout: timeout,
        linger: Duration::from_millis(100),
        ..ScrapeSettings::default()
    }
}

/// A scraper of `source`'s agents into database `db` of the InfluxDB on
/// `influx_port`, every `interval`; the agents' API is on `agent_port` and
/// each gets `timeout`.
fn scraper(
    source: TargetSource,
    (influx_port, db): (u16, &str),
    (agent_port, timeout): (u16, Duration),
    interval: Duration,
    metrics: Arc<Metrics>,
) -> Scraper {
    Scraper::new(
        source,
        Some(&influx_settings(influx_port, db)),
        scrape_settings(agent_port, timeout),
        interval,
        metrics,
        history(),
    )
    .unwrap()
}

/// Asserts that the server's `/metrics` text holds every one of `lines`.
fn assert_metrics(metrics: &Metrics, lines: &[&str]) {
    assert_contains(&metrics.prometheus(Default::default()), lines);
}

async fn register_all(base: &str, ips: &[IpAddr]) {
    for (i, ip) in ips.iter().enumerate() {
        let body = app::reg(8100, &format!("agent{i}"), json!({"ip": ip.to_string()}));
        app::register_http(base, body).await;
    }
}

/// A server on a loopback port collecting every second from agents on
/// `agent_port`, each bounded by `timeout`.
fn collecting(agent_port: u16, timeout: Duration) -> Settings {
    Settings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        interval: 1,
        scrape: scrape_settings(agent_port, timeout),
        ..Settings::default()
    }
}

/// Starts a server with `settings` and registers the agents at `ips` with
/// it: the server and its base URL.
async fn start_with_agents(settings: Settings, ips: &[IpAddr]) -> (Server, String) {
    let server = Server::start(AppState::new(settings)).await.unwrap();
    let base = format!("http://{}", server.addrs[0]);
    register_all(&base, ips).await;
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_scrapes_registered_agents_into_influxdb() {
    let Some(influx) =
        influxd::Influxd::start("server_scrapes_registered_agents_into_influxdb").await
    else {
        return;
    };
    let agents = agents::start(20, 3, true).await;
    let settings = Settings {
        influx: Some(influx_settings(influx.http.port(), "llama_it")),
        ..collecting(agents.port, Duration::from_secs(2))
    };
    let (server, base) = start_with_agents(settings, &agents.ips).await;

    let q = r#"SELECT count("rtt") FROM "raw_stats" GROUP BY "src_name""#;
    eventually(
        "points of the 3 live agents",
        Duration::from_secs(60),
        || async {
            let v = influx.query("llama_it", q).await;
            let series = v["results"][0]["series"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (series.len() == 3).then_some(())
        },
    )
    .await;
    // Fields are floats, tags as given, measurement raw_stats.
    let fields = influx
        .rows("llama_it", "SHOW FIELD KEYS FROM raw_stats")
        .await;
    for f in ["loss", "lost", "rtt", "sent"] {
        assert!(
            fields.contains(&vec![json!(f), json!("float")]),
            "{f} float: {fields:?}"
        );
    }
    let tags = influx
        .rows("llama_it", "SHOW TAG KEYS FROM raw_stats")
        .await;
    for t in ["dst_ip", "dst_name", "src_ip", "src_name"] {
        assert!(tags.contains(&vec![json!(t)]), "{t}: {tags:?}");
    }
    let rows = influx
        .rows(
            "llama_it",
            r#"SELECT "rtt","sent" FROM raw_stats WHERE "src_name"='agent0' LIMIT 1"#,
        )
        .await;
    assert_eq!(
        (rows[0][1].as_f64(), rows[0][2].as_f64()),
        (Some(0.25), Some(40.0))
    );
    // The server's own statistics, as the original wrote them.
    let stats = eventually("llama_server point", Duration::from_secs(30), || async {
        let rows = influx
            .rows(
                "llama_it",
                r#"SELECT "probe_count_active","group_count_active" FROM llama_server"#,
            )
            .await;
        // Rounds that started before the registrations report fewer.
        rows.last().filter(|r| r[1].as_i64() == Some(4)).cloned()
    })
    .await;
    assert_eq!((stats[1].as_i64(), stats[2].as_i64()), (Some(4), Some(1)));
    // Both measurements are written.
    let flows = eventually("raw_stats_flow points", Duration::from_secs(30), || async {
        let rows = influx
            .rows(
                "llama_it",
                r#"SELECT "src_port","sent" FROM raw_stats_flow WHERE "flow"='1' LIMIT 1"#,
            )
            .await;
        rows.first().cloned()
    })
    .await;
    assert_eq!(
        (flows[1].as_f64(), flows[2].as_f64()),
        (Some(40001.0), Some(20.0))
    );
    // History of a path, keyed by the agent's address.
    let state = &server.state;
    let snapshot = state.history.read();
    let series = snapshot
        .agent(&agents.ips[0])
        .and_then(|a| a.path(&"10.9.0.1".parse().unwrap()))
        .expect("a recorded path");
    assert_eq!(series.latest().map(|s| s.sent), Some(40));
    assert_eq!(series.ports(), [40000, 40001]);
    drop(snapshot);
    // The dead agent is counted as timed out once its 2 s are up.
    eventually(
        "a timed-out scrape in /metrics",
        Duration::from_secs(30),
        || async {
            let m = crate::support::get(format!("{base}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (m.contains("llama_scrapes_total{result=\"timeout\"}")
                && m.contains("llama_scrapes_total{result=\"ok\"}"))
            .then_some(())
        },
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_does_not_delay_the_others() {
    let Some(influx) = influxd::Influxd::start("a_dead_agent_does_not_delay_the_others").await
    else {
        return;
    };
    let agents = agents::start(30, 3, true).await;
    let store = store_with(&agents.ips).await;
    // The dead agent may hold the round for 60 s; the others' points must
    // not wait for it.
    let scraper = scraper(
        TargetSource::Store(store.clone()),
        (influx.http.port(), "dead_test"),
        (agents.port, Duration::from_secs(60)),
        Duration::from_secs(60),
        Arc::new(Metrics::new()),
    );
    scraper.influx().unwrap().create_database().await.unwrap();
    let scraper = Arc::new(scraper);
    let round = {
        let s = scraper.clone();
        tokio::spawn(async move { s.round(Instant::now() + Duration::from_secs(60)).await })
    };
    let rows = eventually(
        "the live agents' points",
        Duration::from_secs(50),
        || async {
            let rows = influx.rows("dead_test", "SELECT * FROM raw_stats").await;
            (rows.len() >= 6).then_some(rows)
        },
    )
    .await;
    assert_eq!(rows.len(), 6, "3 live agents x 2 paths");
    let flows = eventually(
        "the live agents' flow points",
        Duration::from_secs(50),
        || async {
            let rows = influx
                .rows("dead_test", "SELECT * FROM raw_stats_flow")
                .await;
            (rows.len() >= 12).then_some(rows)
        },
    )
    .await;
    assert_eq!(flows.len(), 12, "3 live agents x 2 paths x 2 flows");
    assert!(
        !round.is_finished(),
        "the round still waits for the dead agent"
    );
    round.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_mode_follows_the_server_list() {
    let Some(influx) = influxd::Influxd::start("scrape_mode_follows_the_server_list").await else {
        return;
    };
    let agents = agents::start(40, 3, false).await;
    let settings = Settings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Settings::default()
    };
    let (server, base) = start_with_agents(settings, &agents.ips[..2]).await;
    let scraper = scraper(
        TargetSource::server(&base, None).unwrap(),
        (influx.http.port(), "list_test"),
        (agents.port, Duration::from_secs(10)),
        Duration::from_secs(10),
        Arc::new(Metrics::new()),
    );
    scraper.influx().unwrap().create_database().await.unwrap();
    let r = scraper
        .round(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(
        (r.agents, r.answered, r.points, r.written, r.dropped),
        (2, 2, 12, 12, 0),
        "{r:?} (2 agents x 2 paths x (1 path + 2 flow points))"
    );
    // A new agent registers: the next round scrapes it, no restart. (The
    // next second: points with equal tags and time would overwrite.)
    register_all(&base, &agents.ips).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = scraper
        .round(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!((r.agents, r.answered, r.written), (3, 3, 18), "{r:?}");
    let rows = influx
        .rows("list_test", r#"SELECT count("loss") FROM raw_stats"#)
        .await;
    assert_eq!(rows[0][1].as_i64(), Some(10));
    // The server goes away: the last list is kept.
    server.shutdown().await;
    let r = scraper
        .round(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(r.agents, 3, "{r:?}");
}

/// A fake InfluxDB whose first `fail` writes answer 503.
async fn flaky_influx(fail: usize) -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, b) = (calls.clone(), bodies.clone());
    let app = Router::new().route(
        "/write",
        post(move |body: String| {
            let (c, b) = (c.clone(), b.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < fail {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                b.lock().unwrap().push(body);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, calls, bodies)
}

async fn store_with(ips: &[IpAddr]) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new(100));
    for (i, ip) in ips.iter().enumerate() {
        let body = app::reg(8100, &format!("a{i}"), json!({"ip": ip.to_string()}));
        let p =
            llama_server::registration::Registration::parse(body.as_bytes(), &Default::default())
                .unwrap()
                .into_probe(*ip, "default", 600.0);
        store
            .register(p, std::time::SystemTime::now())
            .await
            .unwrap();
    }
    store
}

/// A scraper of `agents` (registered in a store) into database `x` on
/// `influx_port`, every `interval`.
async fn scraper_of(
    agents: &agents::Agents,
    influx_port: u16,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> Scraper {
    scraper(
        TargetSource::Store(store_with(&agents.ips).await),
        (influx_port, "x"),
        (agents.port, Duration::from_secs(10)),
        interval,
        metrics,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_retried_within_the_interval_and_counted() {
    let agents = agents::start(50, 2, false).await;
    let (port, calls, bodies) = flaky_influx(2).await;
    let metrics = Arc::new(Metrics::new());
    let scraper = scraper_of(&agents, port, Duration::from_secs(10), metrics.clone()).await;
    let r = scraper
        .round(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!((r.points, r.written, r.dropped), (12, 12, 0), "{r:?}");
    assert!(calls.load(Ordering::SeqCst) >= 3);
    let lines: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(lines.len(), 12, "{lines:?}");
    let paths: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("raw_stats,"))
        .collect();
    assert_eq!(paths.len(), 4, "{lines:?}");
    assert!(paths.iter().all(|l| l.contains("rtt=0.25")), "{lines:?}");
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("raw_stats_flow,"))
            .all(|l| l.contains(",flow=") && l.contains("src_port=4000")),
        "{lines:?}"
    );
    assert_metrics(
        &metrics,
        &[
            "llama_influx_writes_total{result=\"retry\"} 2",
            "llama_points_written_total 12",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_dead_influxdb_are_dropped_at_the_deadline() {
    let agents = agents::start(60, 1, false).await;
    // A port with nothing listening.
    let port = free_port();
    let metrics = Arc::new(Metrics::new());
    let scraper = scraper_of(&agents, port, Duration::from_secs(1), metrics.clone()).await;
    let started = Instant::now();
    let r = scraper.round(Instant::now() + Duration::from_secs(1)).await;
    assert_eq!((r.points, r.written, r.dropped), (6, 0, 6), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up near the deadline"
    );
    assert_metrics(
        &metrics,
        &[
            "llama_influx_writes_total{result=\"failed\"} 1",
            "llama_points_dropped_total 6",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_collects_without_influxdb_and_marks_dead_agents() {
    let agents = agents::start(80, 2, true).await;
    // No InfluxDB configured.
    let settings = collecting(agents.port, Duration::from_secs(1));
    let (server, base) = start_with_agents(settings, &agents.ips).await;
    let history = server.state.history.clone();
    let (live, dead) = (agents.ips[0], agents.ips[2]);
    eventually(
        "both live agents' paths, and the dead one failed",
        Duration::from_secs(60),
        || async {
            let snap = history.read();
            let recorded = agents.ips[..2].iter().all(|ip| {
                snap.agent(ip)
                    .and_then(|a| a.path(&"10.9.0.2".parse().unwrap()))
                    .is_some()
            });
            let dead_failed = snap
                .agent(&dead)
                .is_some_and(|a| a.failure == Some("timeout"));
            (recorded && dead_failed).then_some(())
        },
    )
    .await;
    let snap = history.read();
    let agent = snap.agent(&live).unwrap();
    assert_eq!((agent.path_count(), agent.failure), (2, None));
    assert!(snap.agent(&dead).unwrap().last_ok.is_none());
    drop(snap);
    let m = get_text(format!("{base}/metrics")).await;
    assert_contains(
        &m,
        &[
            "llama_history_paths 4",
            "llama_history_budget_bytes ",
            "llama_scrapes_total{result=\"timeout\"}",
            "llama_scrape_round_seconds_count ",
        ],
    );
    assert!(
        !m.contains("llama_influx_writes_total{"),
        "no InfluxDB: {m}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_refused_and_counted() {
    let agents = agents::start(90, 1, false).await;
    let metrics = Arc::new(Metrics::new());
    let history = history();
    let mut cfg = scrape_settings(agents.port, Duration::from_secs(10));
    cfg.max_body_bytes = 100;
    let scraper = Scraper::new(
        TargetSource::Store(store_with(&agents.ips).await),
        None,
        cfg,
        Duration::from_secs(10),
        metrics.clone(),
        history.clone(),
    )
    .unwrap();
    let r = scraper
        .round(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!((r.agents, r.answered, r.failed), (1, 0, 1), "{r:?}");
    let text = metrics.prometheus(Default::default());
    assert!(
        text.contains("llama_scrapes_total{result=\"too_large\"} 1"),
        "{text}"
    );
    let snap = history.read();
    let agent = snap.agent(&agents.ips[0]).expect("the agent is known");
    assert_eq!((agent.failure, agent.path_count()), (Some("too large"), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_can_be_turned_off() {
    let agents = agents::start(100, 1, false).await;
    let settings = Settings {
        collect: false,
        ..collecting(agents.port, Duration::from_secs(1))
    };
    let (server, base) = start_with_agents(settings, &agents.ips).await;
    // Three intervals: a collecting server would have scraped by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.state.history.stats().agents, 0);
    let m = get_text(format!("{base}/metrics")).await;
    assert!(!m.contains("llama_scrapes_total{"), "{m}");
    server.shutdown().await;
}
