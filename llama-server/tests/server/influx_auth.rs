//! The scraper against a real `influxd` with authentication on: refused
//! credentials are logged with what to check and retried, and once they
//! are right the next interval's points arrive; the password never shows in
//! the log (debug level included).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use llama_testkit::{ChildGuard, Signal, WAIT, eventually, free_port, until};
use serde_json::json;

use crate::support::{agents, app, influxd::Influxd};

const BIN: &str = env!("CARGO_BIN_EXE_llama-server");
const PASSWORD: &str = "n3w-llama-pass";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraper_logs_refused_credentials_retries_and_writes_once_they_are_right() {
    let test = "scraper_logs_refused_credentials_retries_and_writes_once_they_are_right";
    let Some(influx) = Influxd::start_with_auth(test, ("admin", "admin-pass")).await else {
        return;
    };
    influx.query("", "CREATE DATABASE \"auth_db\"").await;
    influx
        .query("", "CREATE USER \"llama\" WITH PASSWORD 'old-llama-pass'")
        .await;
    influx
        .query("", "GRANT ALL ON \"auth_db\" TO \"llama\"")
        .await;

    let agents = agents::start(110, 1, false).await;
    let port = free_port();
    let _server = ChildGuard::new(
        Command::new(BIN)
            .env_clear()
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--collect",
                "false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("the server to come up", WAIT, || async {
        crate::support::get(format!("{base}/api/v1/interval"))
            .await
            .ok()
    })
    .await;
    app::register_http(
        &base,
        app::reg(8100, "a0", json!({"ip": agents.ips[0].to_string()})),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("scraper.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut scraper = ChildGuard::new(
        Command::new(BIN)
            .env_clear()
            .arg("scrape")
            .env("LLAMA_SERVER", &base)
            .env("INFLUXDB_HOST", "127.0.0.1")
            .env("INFLUXDB_PORT", influx.http.port().to_string())
            .env("INFLUXDB_NAME", "auth_db")
            .env("INFLUXDB_USER", "llama")
            .env("INFLUXDB_PASS", PASSWORD)
            .env("LLAMA_INTERVAL", "1")
            .env("LLAMA_AGENT_PORT", agents.port.to_string())
            .env("APP_VERBOSE", "true")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    until("the refused credentials in the log", WAIT, || {
        read_log().contains("InfluxDB refused the credentials")
    })
    .await;
    let text = read_log();
    assert!(text.contains("401"), "{text}");
    let count = || async {
        let rows = influx
            .rows(
                "auth_db",
                r#"SELECT count("rtt") FROM raw_stats WHERE "src_name"='agent0'"#,
            )
            .await;
        rows.first().and_then(|r| r[1].as_i64()).unwrap_or(0)
    };
    assert_eq!(count().await, 0, "nothing written with a wrong password");

    // The operator fixes the password on InfluxDB's side: the running
    // scraper's next intervals are written.
    influx
        .query("", &format!("SET PASSWORD FOR \"llama\" = '{PASSWORD}'"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count().await == 0 {
        assert!(
            Instant::now() < deadline,
            "no points once the password is right"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    scraper.signal(Signal::SIGTERM).unwrap();
    scraper.wait_timeout(WAIT).expect("exit on SIGTERM");
    let text = read_log();
    assert!(
        !text.contains(PASSWORD),
        "the password leaked into the log:\n{text}"
    );
}

/// What the stand-in InfluxDB received: (path, Authorization header, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// An HTTPS stand-in for an InfluxDB 2.x/3.x v1-compatible endpoint, served
/// by the server's own TLS listener with a certificate of `ca`: records
/// every request to `/write` and `/query` and accepts it.
async fn https_influx(
    ca: &crate::support::pki::Ca,
    dir: &std::path::Path,
) -> (u16, Received, tokio::sync::watch::Sender<bool>) {
    use axum::{extract::State, http::HeaderMap, routing::post};
    use llama_server::{
        listener::{self, ConnectionLimit},
        settings::ListenerSettings,
        tls::{ServerTls, TlsFiles},
    };
    async fn record(
        State(received): State<Received>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: String,
    ) -> axum::http::StatusCode {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        received
            .lock()
            .unwrap()
            .push((uri.path().to_owned(), auth, body));
        axum::http::StatusCode::NO_CONTENT
    }
    let received = Received::default();
    let app = axum::Router::new()
        .route("/write", post(record))
        .route("/query", post(record))
        .with_state(received.clone());
    let (cert, key) = ca.leaf(7, "influx stand-in").write(dir);
    let tls = ServerTls::load(&TlsFiles { cert, key }).unwrap();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(listener::serve(
        socket,
        app,
        std::sync::Arc::new(ConnectionLimit::new(16)),
        ListenerSettings::default(),
        Some(tls),
        stopped,
    ));
    (port, received, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_goes_to_an_https_influxdb_trusted_by_ca_and_stays_out_of_logs_and_metrics() {
    const TOKEN: &str = "s3cret-influx-token";
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::support::pki::Ca::new("influx CA");
    let ca_file = ca.write(dir.path(), "influx-ca.pem");
    let (influx_port, received, _stop) = https_influx(&ca, dir.path()).await;
    let agents = agents::start(120, 1, false).await;

    let port = free_port();
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let _server = ChildGuard::new(
        Command::new(BIN)
            .env_clear()
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-v"])
            .args(["--influxdb-host", "localhost", "--influxdb-tls"])
            .args(["--influxdb-port", &influx_port.to_string()])
            .arg("--influxdb-ca-cert")
            .arg(&ca_file)
            .env("INFLUXDB_TOKEN", TOKEN)
            .env("LLAMA_INTERVAL", "1")
            .env("LLAMA_AGENT_PORT", agents.port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("the server to come up", WAIT, || async {
        crate::support::get(format!("{base}/api/v1/interval"))
            .await
            .ok()
    })
    .await;
    app::register_http(
        &base,
        app::reg(8100, "a0", json!({"ip": agents.ips[0].to_string()})),
    )
    .await;
    until("a write over HTTPS", WAIT, || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(path, _, body)| path == "/write" && body.contains("agent0"))
    })
    .await;
    for (path, auth, _) in received.lock().unwrap().iter() {
        assert_eq!(auth, &format!("Token {TOKEN}"), "{path}");
    }
    let metrics = crate::support::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains(TOKEN), "the token is in /metrics");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("https://localhost"), "{text}");
    assert!(
        !text.contains(TOKEN),
        "the token leaked into the log:\n{text}"
    );
}
