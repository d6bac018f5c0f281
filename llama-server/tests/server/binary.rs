//! The `llama-server` binary: flags and environment (docs/server-api.md), the config file,
//! graceful exit on SIGTERM, and `llama-server scrape` driven only by the
//! original scraper's environment.

use std::{
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use llama_testkit::{ChildGuard, Signal, WAIT, eventually, free_port};
use serde_json::json;

use crate::support::{
    agents,
    app::{self, get_text},
    config_file, influxd,
};

const BIN: &str = env!("CARGO_BIN_EXE_llama-server");

/// Starts `cmd` with no input or output; SIGKILLed on drop if still running.
fn spawn(cmd: &mut Command) -> ChildGuard {
    ChildGuard::new(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// SIGTERM, then the exit status (within 20 s).
fn terminate(child: &mut ChildGuard) -> ExitStatus {
    child.signal(Signal::SIGTERM).unwrap();
    child
        .wait_timeout(WAIT)
        .expect("no exit within 20 s of SIGTERM")
}

/// A clean environment: none of the server's variables leak in from outside.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "APP_CONFIG",
        "APP_GROUP",
        "APP_HOST",
        "APP_KEEPALIVE",
        "APP_PORT",
        "APP_VERBOSE",
        "LLAMA_INTERVAL",
        "INFLUXDB_HOST",
        "INFLUXDB_PORT",
        "INFLUXDB_NAME",
        "LLAMA_SERVER",
        "LLAMA_AGENT_PORT",
        "LLAMA_HISTORY_MAX_BYTES",
        "LLAMA_SCRAPE_MAX_BODY_BYTES",
    ] {
        c.env_remove(var);
    }
    c.args(args);
    c
}

async fn wait_up(base: &str) {
    let url = format!("{base}/api/v1/interval");
    eventually(
        &format!("{base} to come up"),
        Duration::from_secs(30),
        || async { reqwest::get(&url).await.ok() },
    )
    .await;
}

/// The defaults a running server applies, as its API shows them.
#[derive(Debug, PartialEq)]
struct Defaults {
    interval: String,
    /// What a registration that names neither gets.
    group: String,
    keepalive: i64,
    /// The probe rate of the configs it issues.
    port_count: u64,
    cps: f64,
    history_budget: u64,
}

/// Waits for the server at `base` to come up and reads its [`Defaults`]
/// (registering a member from 127.0.0.1:8100 to read them).
async fn defaults(base: &str) -> Defaults {
    wait_up(base).await;
    let e = app::register_http(base, app::reg(8100, "a", json!({}))).await;
    let group = e["group"].as_str().expect("group").to_owned();
    let config = get_text(format!(
        "{base}/api/v1/config/{group}?llamaport=8100&srcip=127.0.0.1"
    ))
    .await;
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config).unwrap();
    let metrics = get_text(format!("{base}/metrics")).await;
    Defaults {
        interval: get_text(format!("{base}/api/v1/interval")).await,
        group,
        keepalive: e["keepalive"].as_i64().expect("keepalive"),
        port_count: config["port_groups"]["default"][0]["count"]
            .as_u64()
            .expect("port count"),
        cps: config["rate_limits"]["default"]["cps"]
            .as_f64()
            .expect("cps"),
        history_budget: metrics
            .lines()
            .find_map(|l| l.strip_prefix("llama_history_budget_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no budget in {metrics}")),
    }
}

#[tokio::test]
async fn environment_and_config_file_set_the_defaults() {
    let port = free_port();
    // The file says group `filegroup` and interval 30; the environment
    // overrides the interval. The file also sets the probe rate of issued
    // configs.
    let (_dir, cfg) = config_file(
        "group: filegroup\ninterval: 30\nkeepalive: 120\nhistory_max_bytes: 123456\ncollector:\n  port_count: 2\n  cps: 0.5\n",
    );
    let mut server = spawn(
        command(&[])
            .env("APP_CONFIG", &cfg)
            .env("APP_PORT", port.to_string())
            .env("APP_HOST", "127.0.0.1")
            .env("LLAMA_INTERVAL", "15"),
    );
    assert_eq!(
        defaults(&format!("http://127.0.0.1:{port}")).await,
        Defaults {
            interval: "15".into(),
            group: "filegroup".into(),
            keepalive: 120,
            port_count: 2,
            cps: 0.5,
            history_budget: 123_456,
        }
    );
    assert!(terminate(&mut server).success(), "clean exit on SIGTERM");

    // Flags win over everything; the built-in defaults apply otherwise
    // (the original template's rate: 4 source ports, 2 cycles/s).
    let port = free_port();
    let mut server = spawn(
        command(&["-p", &port.to_string(), "-g", "flaggroup", "-k", "60"])
            .env("APP_GROUP", "envgroup")
            .env("LLAMA_HISTORY_MAX_BYTES", "2000000"),
    );
    assert_eq!(
        defaults(&format!("http://127.0.0.1:{port}")).await,
        Defaults {
            interval: "10".into(),
            group: "flaggroup".into(),
            keepalive: 60,
            port_count: 4,
            cps: 2.0,
            history_budget: 2_000_000,
        }
    );
    assert!(terminate(&mut server).success());
}

#[test]
fn bad_settings_fail_with_a_message() {
    let out = command(&["-c", "/nonexistent/llama.yml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/llama.yml"));
    let out = command(&["--keepalive", "0", "-p", &free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keepalive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_subcommand_uses_the_original_scraper_environment() {
    let Some(influx) =
        influxd::Influxd::start("scrape_subcommand_uses_the_original_scraper_environment").await
    else {
        return;
    };
    let agents = agents::start(70, 2, false).await;
    let port = free_port();
    let _server = spawn(&mut command(&["-p", &port.to_string()]));
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&base).await;
    app::register_http(
        &base,
        app::reg(8100, "a0", json!({"ip": agents.ips[0].to_string()})),
    )
    .await;
    let mut scraper = spawn(
        command(&["scrape"])
            .env("LLAMA_SERVER", &base)
            .env("INFLUXDB_HOST", "127.0.0.1")
            .env("INFLUXDB_PORT", influx.http.port().to_string())
            .env("INFLUXDB_NAME", "scrape_bin")
            .env("LLAMA_INTERVAL", "1")
            .env("LLAMA_AGENT_PORT", agents.port.to_string()),
    );
    let count = |src: String| {
        let influx = &influx;
        async move {
            let q = format!(r#"SELECT count("rtt") FROM raw_stats WHERE "src_name"='{src}'"#);
            let rows = influx.rows("scrape_bin", &q).await;
            rows.first().and_then(|r| r[1].as_i64()).unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("agent0".into()).await == 0 {
        assert!(Instant::now() < deadline, "no points from the first agent");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A second agent registers: the running scraper picks it up.
    app::register_http(
        &base,
        app::reg(8100, "a1", json!({"ip": agents.ips[1].to_string()})),
    )
    .await;
    while count("agent1".into()).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the new agent was not scraped without a restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(terminate(&mut scraper).success(), "clean exit on SIGTERM");
}
