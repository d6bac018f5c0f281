//! Several servers (`--server a,b`): the agent uses the first that answers,
//! moves on when its server goes down or answers 5xx, comes back to the
//! first once it recovers, and deregisters from the server it last
//! registered with. In-test servers for the control loop; real
//! `llama-server` processes killed with SIGKILL for the binary.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use llama_testkit::{
    ChildGuard, Signal, WAIT, free_port, http_get_ok, until, wait_until, workspace_binary,
};
use serde_json::Value;

use crate::support::{
    control_agent::{Agent, config},
    control_server::{Mode, TestServer},
};

const CONFIG: &str = "\
summarization: {interval: 1, handlers: 1}
api: {bind: 127.0.0.1:0}
ports: {p: {ip: 127.0.0.1, port: 0, tos: 0, timeout: 500}}
port_groups: {g: [{port: p, count: 1}]}
rate_limits: {r: {cps: 2}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 127.0.0.1, port: 8100, tags: {name: self}}]}
";

/// Registrations a server has seen so far.
fn registered(server: &TestServer) -> usize {
    server.registrations().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_to_the_next_server_and_comes_back_to_the_first() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    for s in [&a, &b] {
        s.set_config("lab", CONFIG);
    }
    let mut cfg = config(a.url(), None);
    cfg.servers.push(b.url());
    let agent = Agent::start(cfg);

    until("registrations with the first server", WAIT, || {
        registered(&a) >= 3 && a.config_requests().len() >= 2
    })
    .await;
    assert_eq!(
        registered(&b),
        0,
        "a healthy first server is the only one used"
    );
    assert!(b.config_requests().is_empty());
    assert_eq!(agent.metrics.active_server.get(), 0);

    a.stop().await;
    until(
        "registrations and polls move to the second server",
        WAIT,
        || registered(&b) >= 2 && b.config_requests().len() >= 2,
    )
    .await;
    assert_eq!(agent.metrics.active_server.get(), 1);
    assert!(agent.metrics.server_switches.get() >= 1);
    assert_eq!(
        agent.sink.applied(),
        [CONFIG],
        "the same config, applied once"
    );

    // The first server comes back with an empty registry: the next
    // registration round starts with it, and the polls follow.
    a.restart().await;
    let b_polls = b.config_requests().len();
    until("back on the first server", WAIT, || {
        registered(&a) >= 2 && a.config_requests().len() >= 2
    })
    .await;
    assert_eq!(agent.metrics.active_server.get(), 0);
    // Polls stopped going to the second server (at most one in flight).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let b_polls_later = b.config_requests().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.config_requests().len(), b_polls_later);
    assert!(b_polls_later >= b_polls);
    agent.stop().await;
    assert_eq!(a.deletes().len(), 1, "deregistered from the server in use");
    assert!(b.deletes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_5xx_is_left_and_deregistration_follows() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    b.set_config("lab", CONFIG);
    a.set_mode(Mode::Fail);
    let mut cfg = config(a.url(), None);
    cfg.servers.push(b.url());
    let agent = Agent::start(cfg);
    until("registered with the second server", WAIT, || {
        registered(&b) >= 2 && !agent.sink.applied().is_empty()
    })
    .await;
    assert!(
        a.register_attempts() >= 2,
        "the first server is tried first"
    );
    assert_eq!(agent.metrics.active_server.get(), 1);
    assert_eq!(agent.metrics.server_reachable.get(), 1);
    agent.stop().await;
    assert_eq!(b.deletes().len(), 1);
    assert!(a.deletes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_does_not_move_the_agent() {
    // 404 on the config (the server does not know us) is an answer: the
    // agent re-registers with the same server rather than leaving it.
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    a.set_config("lab", CONFIG);
    a.require_registration(true);
    let mut cfg = config(a.url(), None);
    cfg.servers.push(b.url());
    let agent = Agent::start(cfg);
    until("config applied from the first server", WAIT, || {
        !agent.sink.applied().is_empty()
    })
    .await;
    a.restart().await; // forgets the registration: polls get 404 once
    until("re-registered with the first server", WAIT, || {
        registered(&a) >= 1
    })
    .await;
    let switches = agent.metrics.server_switches.get();
    agent.stop().await;
    assert_eq!(registered(&b), 0);
    assert!(b.config_requests().is_empty());
    assert_eq!(switches, 0);
}

/// A `llama-server` on a loopback port, killed (SIGKILL) on drop.
struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
}

impl Server {
    fn start() -> Self {
        let mut s = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.restart();
        s
    }

    fn restart(&mut self) {
        let file = self.dir.path().join("server.yaml");
        std::fs::write(&file, "reap_interval: 0.5\n").unwrap();
        let child = Command::new(workspace_binary("llama-server"))
            .arg("--config")
            .arg(&file)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        self.child = Some(ChildGuard::new(child));
        wait_until("the server answers", WAIT, || {
            http_get_ok(self.addr, "/api/v1/interval").is_some()
        });
    }

    fn kill(&mut self) {
        self.child = None;
    }

    /// Short names registered in `group`, or `None` when the server is down.
    fn members(&self, group: &str) -> Option<Vec<String>> {
        let body = http_get_ok(self.addr, &format!("/api/v1/list/{group}"))?;
        let list: Value = serde_json::from_str(&body).ok()?;
        let mut names = vec![];
        collect_shortnames(&list, &mut names);
        Some(names)
    }
}

/// Every `probe_shortname` in a list answer, whatever its nesting.
fn collect_shortnames(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("probe_shortname", Value::String(s)) => out.push(s.clone()),
                    _ => collect_shortnames(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_shortnames(v, out)),
        _ => {}
    }
}

fn has_agent(server: &Server) -> bool {
    server
        .members("fo")
        .is_some_and(|m| m.iter().any(|n| n == "fo1"))
}

#[test]
fn the_agent_binary_survives_a_killed_server() {
    let mut a = Server::start();
    let b = Server::start();
    let port = free_port().to_string();
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("agent.log");
    let servers = format!("http://{},http://{}", a.addr, b.addr);
    let mut agent = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_llama-agent"))
            .args(["run", "--server", &servers, "--group", "fo"])
            .args(["--port", &port, "--ip", "127.0.0.1", "--mode", "userspace"])
            .args(["--probe-shortname", "fo1", "--probe-name", "failover"])
            .args(["--register-interval", "300ms", "--poll-interval", "300ms"])
            .args(["--keepalive", "30", "--api-bind", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(state.path())
            .env_clear()
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("registered with the first server", WAIT, || has_agent(&a));
    assert!(
        !has_agent(&b),
        "only the first server is used while it answers"
    );

    a.kill();
    wait_until("registered with the second server", WAIT, || has_agent(&b));

    a.restart(); // an empty in-memory registry
    wait_until("back with the first server", WAIT, || has_agent(&a));

    agent.signal(Signal::SIGTERM).unwrap();
    let status = agent
        .wait_timeout(Duration::from_secs(10))
        .expect("the agent exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // It deregistered from the server it last registered with; the
    // second server still lists it until its keepalive runs out.
    assert!(!has_agent(&a), "deregistered from the first server");
    assert!(has_agent(&b));
    // One line per move, not one per failed attempt.
    let log = std::fs::read_to_string(&log).unwrap();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("server failing; switched to the next one"),
        1,
        "{log}"
    );
    assert_eq!(count("back on the preferred server"), 1, "{log}");
}
