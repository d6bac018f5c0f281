//! The real `llama-agent run` binary against an in-test server: it registers
//! with the flags it was given, polls, persists, and exits 0 soon after SIGTERM.

#[path = "support/control_server.rs"]
mod server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::TestServer;

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CONFIG: &str = "\
summarization: {interval: 1, handlers: 1}
api: {bind: 127.0.0.1:0}
ports: {p: {ip: 127.0.0.1, port: 0, tos: 0, timeout: 500}}
port_groups: {g: [{port: p, count: 1}]}
rate_limits: {r: {cps: 2}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 127.0.0.1, port: 8123, tags: {name: self}}]}
";

/// Kills the agent if the test fails half-way, so no process outlives it.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_polls_persists_and_stops_on_sigterm() {
    let server = TestServer::start().await;
    // A real collector config: the agent probes its own userspace reflector
    // over loopback (nothing here touches a real interface).
    server.set_config("bin", CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent(
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
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("two registrations", || server.registrations().len() >= 2).await;
    let persisted = dir.path().join("config-bin.yaml");
    wait_for("persisted config", || persisted.is_file()).await;
    let body = server.registrations()[0].1.clone();
    assert_eq!(body["port"], 8123);
    assert_eq!(body["group"], "bin");
    assert_eq!(body["keepalive"], 5);
    assert_eq!(body["tags"]["location"], "Las Vegas");
    assert_eq!(body["tags"]["src_name"], "Office");
    assert_eq!(body["tags"]["probe_shortname"], "bin1");
    let (_, query) = &server.config_requests()[0];
    assert_eq!(query.get("llamaport").map(String::as_str), Some("8123"));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            break status;
        }
        // docs/agent.md: exit within 5 s of SIGTERM.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(persisted).unwrap(), CONFIG);
}
