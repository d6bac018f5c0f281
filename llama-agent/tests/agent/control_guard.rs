//! The real agent binary against a hostile server (docs/agent.md, "Limits"):
//! configs that ask for absurd rates, timeouts, sockets or target counts, or
//! for group-wide addresses, are refused with one log line each; the agent
//! stays up, keeps probing with its last good config at that config's rate,
//! and does so again after a restart. A large allowed config replaced by a
//! small one gives its memory back.

use std::{
    fmt::Write as _,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use llama_testkit::{ChildGuard, WAIT, free_port, http_get_ok, until};
use nix::sys::signal::Signal;

use crate::support::control_server::TestServer;

const GROUP: &str = "guard";
/// The good config's probe rate (1 target × 1 socket × 2 cps).
const GOOD_RATE: f64 = 2.0;

/// A full-format config: one test over `targets` (YAML flow list items).
fn config(cps: &str, count: &str, timeout: &str, bind: &str, targets: &str) -> String {
    format!(
        "summarization: {{interval: 1, handlers: 1}}\n\
         ports: {{p: {{ip: {bind}, port: 0, tos: 0, timeout: {timeout}}}}}\n\
         port_groups: {{g: [{{port: p, count: {count}}}]}}\n\
         rate_limits: {{r: {{cps: {cps}}}}}\n\
         tests: [{{targets: t, port_group: g, rate_limit: r}}]\n\
         targets: {{t: [{targets}]}}\n"
    )
}

fn target(ip: &str, port: u16) -> String {
    format!("{{ip: \"{ip}\", port: {port}}}")
}

/// `n` distinct loopback targets (127.1.0.0/16 onwards).
fn loopback_targets(n: usize, port: u16) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{{ip: 127.{}.{}.{}, port: {port}}}",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256
        );
    }
    out
}

struct Agent {
    child: ChildGuard,
    log: PathBuf,
    api: SocketAddr,
}

impl Agent {
    /// `llama-agent run` with a userspace reflector on `port` (its own
    /// target), fast loops, logging to `log`.
    fn spawn(server: &TestServer, port: u16, state: &Path, log: &Path) -> Self {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let out = File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_llama-agent"))
            .args(["run", "--server", server.url().as_str(), "--group", GROUP])
            .args(["--port", &port.to_string(), "--mode", "userspace"])
            .args(["--api-bind", &api.to_string()])
            .args(["--register-interval", "200ms", "--poll-interval", "200ms"])
            .args(["--keepalive", "5", "--probe-shortname", "guard1"])
            .arg("--state-dir")
            .arg(state)
            .env_clear()
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self {
            child: ChildGuard::new(child),
            log: log.to_owned(),
            api,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.child().try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    fn lines_with(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The collector's probes-sent counter.
    fn sent(&self) -> Option<u64> {
        let metrics = http_get_ok(self.api, "/metrics")?;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("llama_collector_probes_sent_total "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// VmRSS in KiB.
    fn rss_kib(&mut self) -> u64 {
        let pid = self.child.child().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    async fn stop(mut self) {
        self.child.signal(Signal::SIGTERM).unwrap();
        let mut child = self.child;
        let status =
            tokio::task::spawn_blocking(move || child.wait_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .expect("still running 5 s after SIGTERM");
        assert!(status.success(), "{status:?}");
    }
}

/// Probes sent over about two seconds, and how long that was.
async fn probing_rate(agent: &Agent) -> (u64, f64) {
    let before = agent.sent().expect("metrics");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = agent.sent().expect("metrics");
    (after - before, started.elapsed().as_secs_f64())
}

/// Still probing with the good config: some probes, and never more than
/// its rate allows (generously: a full extra second of it, doubled).
async fn assert_probing_at_the_good_rate(agent: &Agent, when: &str) {
    let (sent, secs) = probing_rate(agent).await;
    assert!(sent > 0, "{when}: no probes sent in {secs:.1} s");
    let most = (secs + 1.0) * GOOD_RATE * 2.0;
    assert!(
        (sent as f64) <= most,
        "{when}: {sent} probes in {secs:.1} s, over the good config's rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_configs_are_refused_once_and_the_last_good_one_keeps_probing() {
    let server = TestServer::start().await;
    let port = free_port();
    let me = target("127.0.0.1", port);
    let good = config("2", "1", "500", "127.0.0.1", &me);
    server.set_config(GROUP, &good);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(&server, port, dir.path(), &dir.path().join("agent.log"));
    until("probes sent", WAIT, || agent.sent().is_some_and(|n| n >= 3)).await;

    // (what, config, a text only its refusal contains)
    let hostile = [
        (
            "cps 1e9",
            config("1000000000.0", "1", "500", "127.0.0.1", &me),
            "asks for 1000000000 probes/s",
        ),
        (
            "timeout 9e15",
            config("2", "1", "9000000000000000", "127.0.0.1", &me),
            "timeout 9000000000000000 ms exceeds",
        ),
        (
            "count 1e12",
            config("2", "1000000000000", "500", "127.0.0.1", &me),
            "1000000000000 sockets exceed",
        ),
        (
            "100k targets",
            config(
                "0.001",
                "1",
                "500",
                "127.0.0.1",
                &loopback_targets(100_000, port),
            ),
            "100000 targets exceed",
        ),
        (
            "cps 1e5 on one target",
            config("100000.0", "1", "500", "127.0.0.1", &me),
            "asks for 100000 probes/s",
        ),
        (
            "one address flooded",
            config("500", "4", "500", "127.0.0.1", &me),
            "would get 2000 probes/s",
        ),
        (
            "multicast",
            config("2", "1", "500", "0.0.0.0", &target("224.0.0.1", port)),
            "224.0.0.1 is a multicast address",
        ),
        (
            "IPv6 multicast",
            config("2", "1", "500", "0.0.0.0", &target("ff02::1", port)),
            "ff02::1 is a multicast address",
        ),
        (
            "broadcast",
            config("2", "1", "500", "0.0.0.0", &target("255.255.255.255", port)),
            "255.255.255.255 is the broadcast address",
        ),
        (
            "unspecified",
            config("2", "1", "500", "0.0.0.0", &target("0.0.0.0", port)),
            "0.0.0.0 is the unspecified address",
        ),
    ];
    for (i, (what, yaml, needle)) in hostile.iter().enumerate() {
        server.set_config(GROUP, yaml);
        until(&format!("{what} refused"), Duration::from_secs(90), || {
            agent.lines_with(needle) >= 1
        })
        .await;
        let polls = server.config_requests().len();
        until("three more polls", WAIT, || {
            server.config_requests().len() >= polls + 3
        })
        .await;
        assert!(agent.alive(), "{what}: the agent died:\n{}", agent.log());
        assert_eq!(
            agent.lines_with(needle),
            1,
            "{what}: refusal not logged exactly once"
        );
        assert_eq!(
            agent.lines_with("refused the server's config"),
            i + 1,
            "{what}: one refusal line per hostile config"
        );
        if i % 3 == 0 {
            assert_probing_at_the_good_rate(&agent, what).await;
        }
    }
    assert_probing_at_the_good_rate(&agent, "after every hostile config").await;
    let persisted = dir.path().join(format!("config-{GROUP}.yaml"));
    assert_eq!(std::fs::read_to_string(&persisted).unwrap(), good);

    // A restart (the server still serving the last hostile config) starts
    // from the persisted good config and refuses the hostile one again, once.
    agent.stop().await;
    let mut agent = Agent::spawn(&server, port, dir.path(), &dir.path().join("again.log"));
    until("probes sent after restart", WAIT, || {
        agent.sent().is_some_and(|n| n >= 3)
    })
    .await;
    let needle = hostile.last().unwrap().2;
    until("refused after restart", WAIT, || {
        agent.lines_with(needle) >= 1
    })
    .await;
    let polls = server.config_requests().len();
    until("three more polls", WAIT, || {
        server.config_requests().len() >= polls + 3
    })
    .await;
    assert!(agent.alive());
    assert_eq!(agent.lines_with(needle), 1);
    assert_probing_at_the_good_rate(&agent, "after the restart").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_when_a_large_config_is_replaced_by_a_small_one() {
    let server = TestServer::start().await;
    let port = free_port();
    let small = config("2", "1", "500", "127.0.0.1", &target("127.0.0.1", port));
    server.set_config(GROUP, &small);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(&server, port, dir.path(), &dir.path().join("agent.log"));
    until("probes sent", WAIT, || agent.sent().is_some_and(|n| n >= 3)).await;
    // Let start-up allocations settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = agent.rss_kib();

    // 4,800 targets (under the default 5,000) at 1 probe/s each: a path,
    // with its RTT histogram, per target.
    let large = config("1", "1", "500", "127.0.0.1", &loopback_targets(4_800, port));
    server.set_config(GROUP, &large);
    let mut peak = baseline;
    until("the large config in use", Duration::from_secs(90), || {
        peak = peak.max(agent.rss_kib());
        agent.lines_with("applied a changed collector config") >= 2 && peak >= baseline + 30 * 1024
    })
    .await;
    // A few publications with every path in them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    peak = peak.max(agent.rss_kib());

    server.set_config(GROUP, &small);
    let grown = peak - baseline;
    let mut now = peak;
    until("memory given back", Duration::from_secs(60), || {
        now = agent.rss_kib();
        now <= baseline + grown / 2
    })
    .await;
    eprintln!("VmRSS: baseline {baseline} KiB, large config {peak} KiB, small again {now} KiB");
    assert!(agent.alive());
    assert_probing_at_the_good_rate(&agent, "back on the small config").await;
    agent.stop().await;
}

#[test]
fn a_file_over_the_limits_stops_a_standalone_agent_and_collector_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.yaml");
    let port = free_port();
    std::fs::write(
        &file,
        config(
            "1000000000.0",
            "1",
            "500",
            "127.0.0.1",
            &target("127.0.0.1", port),
        ),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let runs: [&[&str]; 2] = [
        &[
            "run",
            "--mode",
            "userspace",
            "--port",
            &port.to_string(),
            "--api-bind",
            &api,
        ],
        &["collect", "--api-bind", &api],
    ];
    for args in runs {
        let child = Command::new(env!("CARGO_BIN_EXE_llama-agent"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = ChildGuard::new(child);
        let status = child
            .wait_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{args:?}: still running with a refused config"));
        let out = child.into_inner().wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains("asks for 1000000000 probes/s") && text.contains("--max-probe-rate"),
            "{args:?}: {text}"
        );
    }
}
