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
        "LLAMA_REGISTRATION_TOKEN",
        "LLAMA_REGISTER_ALLOW",
        "LLAMA_REGISTER_RATE",
        "LLAMA_REGISTER_BURST",
        "LLAMA_MAX_RATE_SOURCES",
        "LLAMA_MAX_GROUP_MEMBERS",
        "LLAMA_MAX_GROUPS",
        "LLAMA_MAX_KEEPALIVE",
        "LLAMA_MAX_RENDER_BYTES",
        "LLAMA_HEADER_READ_TIMEOUT",
        "LLAMA_MAX_CONNECTIONS",
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
        || async { crate::support::get(&url).await.ok() },
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

/// `POST /api/v1/register` with an optional bearer token: the status and
/// the `error` of a refusal.
async fn post_register(base: &str, token: Option<&str>, body: String) -> (u16, String) {
    let mut req = crate::support::http()
        .post(format!("{base}/api/v1/register"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    (status, v["error"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_settings_come_from_flags_environment_and_file() {
    // The file sets a token and limits; the environment's token wins.
    let (_dir, cfg) = config_file(
        "registration_token: from-file\nlimits:\n  max_group_members: 1\n  max_keepalive: 100000\n",
    );
    let port = free_port();
    let mut server = spawn(
        command(&["-c", cfg.to_str().unwrap(), "-p", &port.to_string()])
            .env("LLAMA_REGISTRATION_TOKEN", "from-env"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&base).await;
    let body = |port: u16, name: &str| app::reg(port, name, json!({}));
    assert_eq!(post_register(&base, None, body(8100, "a")).await.0, 401);
    assert_eq!(
        post_register(&base, Some("from-file"), body(8100, "a"))
            .await
            .0,
        401
    );
    assert_eq!(
        post_register(&base, Some("from-env"), body(8100, "a"))
            .await
            .0,
        200
    );
    let (status, error) = post_register(&base, Some("from-env"), body(8101, "b")).await;
    assert_eq!(status, 503);
    assert!(error.contains("max_group_members"), "{error}");
    let (status, error) = post_register(
        &base,
        Some("from-env"),
        app::reg(8100, "a", json!({"keepalive": 100001})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error.contains("max_keepalive"), "{error}");
    // Deleting with the token.
    let r = crate::support::http()
        .delete(format!("{base}/api/v1/register/127.0.0.1:8100"))
        .bearer_auth("from-env")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(terminate(&mut server).success());

    // Flags: the allowed networks and the rate.
    let port = free_port();
    let mut server = spawn(&mut command(&[
        "-p",
        &port.to_string(),
        "--register-allow",
        "10.0.0.0/8,192.0.2.0/24",
    ]));
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&base).await;
    let (status, error) = post_register(&base, None, body(8100, "a")).await;
    assert_eq!(status, 403);
    assert!(error.contains("register_allow"), "{error}");
    assert!(terminate(&mut server).success());

    // The rate, and its one log line however often it is hit.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut server = ChildGuard::new(
        command(&["-p", &port.to_string(), "--register-burst", "2"])
            .env("LLAMA_REGISTER_RATE", "0.01")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&base).await;
    assert_eq!(post_register(&base, None, body(8100, "a")).await.0, 200);
    assert_eq!(post_register(&base, None, body(8100, "a")).await.0, 200);
    for _ in 0..20 {
        let (status, error) = post_register(&base, None, body(8100, "a")).await;
        assert_eq!(status, 429);
        assert!(error.contains("register_rate"), "{error}");
    }
    assert!(terminate(&mut server).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("registration rate limit hit").count(),
        1,
        "{text}"
    );
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
    for (args, says) in [
        (&["--register-allow", "10.0.0/8"][..], "register-allow"),
        (&["--max-keepalive", "60"][..], "max_keepalive"),
        (&["--max-connections", "0"][..], "max_connections"),
        (&["--header-read-timeout", "0"][..], "header read timeout"),
    ] {
        let out = command(args)
            .args(["-p", &free_port().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
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
