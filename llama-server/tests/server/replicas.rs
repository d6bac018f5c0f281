//! Real processes: two `llama-server` replicas on one `redis-server`, and
//! `llama-agent`s (userspace reflector, loopback) given both replicas.
//! Agents register through replica A and are listed and configured by
//! replica B; A killed with SIGKILL → the agents move to B and keep
//! registering; Redis restarted empty → the agents are back in the
//! registry without restarting anything; exactly one replica scrapes, and
//! when it dies the other takes over.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use llama_testkit::{ChildGuard, free_port, http_get_ok, wait_until, workspace_binary};
use serde_json::Value;

use crate::support::redis::Redis;

/// Long enough for a loaded machine; every wait below ends as soon as its
/// condition holds.
const WAIT: Duration = Duration::from_secs(40);

struct Replica {
    addr: SocketAddr,
    child: Option<ChildGuard>,
    log: tempfile::NamedTempFile,
}

impl Replica {
    /// A replica given the store by flags (`from_file`: by its config file).
    fn start(redis: &Redis) -> Self {
        Self::start_with(redis, false)
    }

    fn start_with(redis: &Redis, from_file: bool) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            format!(
                "store: {}\nstore_prefix: replicas\nstore_timeout: 0.5\nstore_stale_for: 300\n",
                redis.url()
            ),
        )
        .unwrap();
        let store_args: Vec<String> = if from_file {
            vec!["--config".into(), file.path().display().to_string()]
        } else {
            [
                "--store",
                &redis.url(),
                "--store-prefix",
                "replicas",
                "--store-timeout",
                "0.5",
            ]
            .map(str::to_owned)
            .into()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_llama-server"))
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(&store_args)
            .args(["--interval", "1", "--reap-interval", "1"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let replica = Self {
            addr,
            child: Some(ChildGuard::new(child)),
            log,
        };
        wait_until("the replica answers", WAIT, || {
            http_get_ok(addr, "/api/v1/interval").is_some()
        });
        replica
    }

    /// Lines of its log containing `needle`.
    fn logged(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn kill(&mut self) {
        self.child = None; // SIGKILL on drop
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The short names listed in group `g` (none when unknown or down).
    fn members(&self) -> Vec<String> {
        let Some(body) = http_get_ok(self.addr, "/api/v1/list/g") else {
            return vec![];
        };
        let list: Value = serde_json::from_str(&body).unwrap_or_default();
        let mut names: Vec<String> = list
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|e| e["tags"]["probe_shortname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `llama_scraper_leader` from `/metrics`, when the replica answers.
    fn leads(&self) -> Option<bool> {
        let text = http_get_ok(self.addr, "/metrics")?;
        text.lines()
            .find(|l| l.starts_with("llama_scraper_leader "))
            .map(|l| l.ends_with(" 1"))
    }

    /// The registration time of agent `name` as this replica lists it.
    fn registered_at(&self, name: &str) -> Option<String> {
        let body = http_get_ok(self.addr, "/api/v1/list/g")?;
        let list: Value = serde_json::from_str(&body).ok()?;
        list.as_object()?
            .values()
            .find(|e| e["tags"]["probe_shortname"] == name)
            .and_then(|e| e["create_date"].as_str().map(str::to_owned))
    }
}

fn agent(n: u8, servers: &str) -> ChildGuard {
    let port = free_port().to_string();
    let state = std::env::temp_dir().join(format!("llama-replicas-{}-{n}", std::process::id()));
    let child = Command::new(workspace_binary("llama-agent"))
        .args(["run", "--server", servers, "--group", "g"])
        .args(["--port", &port, "--ip", "127.0.0.1", "--mode", "userspace"])
        .args([
            "--probe-shortname",
            &format!("a{n}"),
            "--probe-name",
            "replica test",
        ])
        .args(["--register-interval", "500ms", "--poll-interval", "500ms"])
        .args(["--keepalive", "3", "--api-bind", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llama-agent");
    ChildGuard::new(child)
}

#[test]
fn replicas_share_the_registry_and_survive_a_replica_and_redis() {
    let Some(mut redis) = Redis::start("replicas::replicas_share_the_registry") else {
        return;
    };
    // A starts alone and takes the scraper lease at its first round.
    let mut a = Replica::start(&redis);
    wait_until("A scrapes", WAIT, || a.leads() == Some(true));
    // B reads its store from the config file.
    let b = Replica::start_with(&redis, true);
    let servers = format!("{},{}", a.url(), b.url());
    let _agents = [agent(1, &servers), agent(2, &servers)];
    let both = ["a1".to_owned(), "a2".to_owned()];

    // Registered through A (the first server), listed by B.
    wait_until("B lists both agents", WAIT, || b.members() == both);
    assert_eq!(a.members(), both);
    // One replica scrapes: B waits while A renews its lease.
    wait_until("B waits", WAIT, || b.leads() == Some(false));
    assert_eq!(a.leads(), Some(true));

    // A dies: the agents re-register through B (keepalive 3 s, so listed
    // entries must be refreshed), and B takes the scraper lease over.
    a.kill();
    let before = b.registered_at("a1");
    wait_until("a1 refreshed through B", WAIT, || {
        let now = b.registered_at("a1");
        now.is_some() && now != before
    });
    wait_until("B scrapes", WAIT, || b.leads() == Some(true));
    std::thread::sleep(Duration::from_secs(4)); // longer than the keepalive
    assert_eq!(b.members(), both, "the agents keep registering through B");

    // Redis restarts empty (B serves its cached list meanwhile): the
    // agents are back in Redis without anything restarted.
    redis.restart();
    wait_until(
        "the agents are back in Redis after its restart",
        WAIT,
        || redis.cli(&["ZCARD", "replicas:{g}:seen"]) == "2",
    );
    assert_eq!(b.members(), both);
    // One line when Redis went away (if B noticed), one when it came back.
    let failing = b.logged("Redis store failing");
    assert!(failing <= 1, "logged once per change, got {failing}");
    assert_eq!(b.logged("Redis store reachable again"), failing);
}
