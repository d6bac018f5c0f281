//! The real `llama-agent run` binary against an in-test server: it registers
//! with the flags it was given (its registration token included), polls,
//! persists, and on SIGTERM deregisters and exits 0 soon after.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use llama_testkit::{ChildGuard, WAIT, until};
use nix::sys::signal::Signal;

use crate::support::control_server::TestServer;

const CONFIG: &str = "\
summarization: {interval: 1, handlers: 1}
api: {bind: 127.0.0.1:0}
ports: {p: {ip: 127.0.0.1, port: 0, tos: 0, timeout: 500}}
port_groups: {g: [{port: p, count: 1}]}
rate_limits: {r: {cps: 2}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 127.0.0.1, port: 8123, tags: {name: self}}]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_polls_persists_and_stops_on_sigterm() {
    let server = TestServer::start().await;
    // A real collector config: the agent probes its own userspace reflector
    // over loopback (nothing here touches a real interface).
    server.set_config("bin", CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "bin-secret\n").unwrap();
    // Killed if the test fails half-way, so no process outlives it.
    let mut agent = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_llama-agent"))
            .args([
                "run",
                "--server",
                server.url().as_str(),
                "--group",
                "bin",
                "--port",
                "8123",
                "--mode",
                "userspace",
                "--api-bind",
                "127.0.0.1:0",
            ])
            .args([
                "--register-interval",
                "200ms",
                "--poll-interval",
                "200ms",
                "--keepalive",
                "5",
            ])
            .args([
                "--tags",
                "[location: Las Vegas, src_name: Office]",
                "--probe-shortname",
                "bin1",
            ])
            .arg("--state-dir")
            .arg(dir.path())
            .arg("--registration-token-file")
            .arg(&token)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until("two registrations", WAIT, || {
        server.registrations().len() >= 2
    })
    .await;
    let persisted = dir.path().join("config-bin.yaml");
    until("persisted config", WAIT, || persisted.is_file()).await;
    let body = server.registrations()[0].1.clone();
    assert_eq!(body["port"], 8123);
    assert_eq!(body["group"], "bin");
    assert_eq!(body["keepalive"], 5);
    assert_eq!(body["tags"]["location"], "Las Vegas");
    assert_eq!(body["tags"]["src_name"], "Office");
    assert_eq!(body["tags"]["probe_shortname"], "bin1");
    assert!(
        server
            .register_auth()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer bin-secret"))
    );
    assert!(server.deletes().is_empty());
    let (_, query) = &server.config_requests()[0];
    assert_eq!(query.get("llamaport").map(String::as_str), Some("8123"));

    agent.signal(Signal::SIGTERM).unwrap();
    // docs/agent.md: exit within 5 s of SIGTERM.
    let status = tokio::task::spawn_blocking(move || agent.wait_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("still running 5 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(persisted).unwrap(), CONFIG);
    // The entry the server answered with is deleted, with the token.
    assert_eq!(
        server.deletes(),
        [(
            "127.0.0.1:8123".to_owned(),
            Some("Bearer bin-secret".to_owned())
        )]
    );
}
