//! The agent daemon against the real server, in network namespaces: a hub
//! namespace with a bridge and `llama-server`, one namespace per agent.
//! Registration shape and cadence, membership changes reaching every
//! collector without a restart (source ports kept), a server outage (agents
//! keep probing), a server restart (agents re-register within the backoff
//! bound) and an agent restarted while the server is down (it probes from its
//! persisted config).

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use llama_testkit::{
    ChildGuard, Lan, NetNs, Signal, http_get_ok, privileged, wait_until, workspace_binary,
};
use serde_json::Value;

const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 1);
const GROUP: &str = "e2e";
const INTERVAL_S: u64 = 2;

fn host_ip(i: u8) -> Ipv4Addr {
    Lan::host_ip(HUB_IP, i)
}

/// Reaps quickly; issued configs probe 2 ports at 5 cycles/s.
const SERVER_CONFIG: &str =
    "reap_interval: 0.5\ncollector:\n  port_count: 2\n  cps: 5.0\n  timeout_ms: 1000\n";

struct Cluster {
    lan: Lan,
    server_config: String,
    /// `--keepalive` of the agents, seconds.
    keepalive: &'static str,
    server: Option<ChildGuard>,
    agents: Vec<Option<ChildGuard>>,
    state: tempfile::TempDir,
}

impl Cluster {
    fn new(n: u8) -> Self {
        Self::with_server_config(n, SERVER_CONFIG)
    }

    fn with_server_config(n: u8, server_config: &str) -> Self {
        let mut c = Self {
            lan: Lan::new(HUB_IP, n).expect("hub and host namespaces"),
            server_config: server_config.to_owned(),
            keepalive: "3",
            server: None,
            agents: (0..n).map(|_| None).collect(),
            state: tempfile::tempdir().expect("state dir"),
        };
        c.start_server();
        c
    }

    fn start_server(&mut self) {
        let cmd = self
            .lan
            .server_command(
                &workspace_binary("llama-server"),
                self.state.path(),
                &self.server_config,
                INTERVAL_S,
            )
            .expect("server config");
        self.server = Some(self.lan.hub.spawn(cmd).expect("start llama-server"));
        self.wait("the server answers", Duration::from_secs(20), |c| {
            c.get(c.lan.server_addr(), "/api/v1/interval").is_some()
        });
    }

    fn stop_server(&mut self) {
        self.server = None; // killed and reaped on drop
    }

    /// Starts (or restarts, with the same state directory) agent `i` (1-based).
    fn start_agent(&mut self, i: u8) {
        self.start_agent_with(i, &[]);
    }

    fn start_agent_with(&mut self, i: u8, extra: &[&str]) {
        let host = self.lan.host(i);
        let state = self.state.path().join(format!("h{i}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-agent"));
        cmd.args([
            "run",
            "--server",
            &format!("http://{}", self.lan.server_addr()),
            "--group",
            GROUP,
        ])
        .args([
            "--ip",
            &host_ip(i).to_string(),
            "--probe-shortname",
            &format!("h{i}"),
        ])
        .args([
            "--probe-name",
            &format!("e2e host {i}"),
            "--tags",
            "[site: lab one, rack: 7]",
        ])
        .args(["--mode", "auto", "--interface", &host.veth.a])
        .args([
            "--register-interval",
            "1s",
            "--poll-interval",
            "1s",
            "--keepalive",
            self.keepalive,
        ])
        .args(["--api-bind", &format!("{}:8100", host_ip(i))])
        .arg("--state-dir")
        .arg(&state)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.agents[usize::from(i) - 1] = Some(host.ns.spawn(cmd).expect("start llama-agent"));
    }

    fn kill_agent(&mut self, i: u8) {
        self.agents[usize::from(i) - 1] = None; // SIGKILL on drop
    }

    fn agent_pid(&mut self, i: u8) -> u32 {
        self.agents[usize::from(i) - 1]
            .as_mut()
            .expect("agent running")
            .child()
            .id()
    }

    fn get(&self, addr: SocketAddr, path: &str) -> Option<String> {
        self.lan.hub.run(|| http_get_ok(addr, path))
    }

    fn members(&self) -> Value {
        self.get(self.lan.server_addr(), &format!("/api/v1/list/{GROUP}"))
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// Agent `i`'s last published points of `measurement`.
    fn points(&self, i: u8, measurement: &str) -> Vec<Value> {
        self.get(SocketAddr::from((host_ip(i), 8100)), "/influxdata")
            .and_then(|b| serde_json::from_str::<Vec<Value>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["measurement"] == measurement)
            .collect()
    }

    /// Agent `i`'s last published path summaries (`raw_stats`).
    fn paths(&self, i: u8) -> Vec<Value> {
        self.points(i, "raw_stats")
    }

    fn path_to(&self, i: u8, dst: Ipv4Addr) -> Option<Value> {
        self.paths(i)
            .into_iter()
            .find(|p| p["tags"]["dst_ip"] == dst.to_string())
    }

    /// The flows of one path as (`flow` tag, source port), sorted by flow.
    fn flows_to(&self, i: u8, dst: Ipv4Addr) -> Vec<(String, u64)> {
        let mut flows: Vec<(String, u64)> = self
            .points(i, "raw_stats_flow")
            .into_iter()
            .filter(|p| p["tags"]["dst_ip"] == dst.to_string())
            .map(|p| {
                let flow = p["tags"]["flow"].as_str().unwrap_or("").to_owned();
                (flow, p["fields"]["src_port"].as_f64().unwrap_or(0.0) as u64)
            })
            .collect();
        flows.sort();
        flows
    }

    fn probes_sent(&self, i: u8) -> u64 {
        let text = self
            .get(SocketAddr::from((host_ip(i), 8100)), "/metrics")
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("llama_collector_probes_sent_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    fn metrics(&self, i: u8) -> String {
        self.get(SocketAddr::from((host_ip(i), 8100)), "/metrics")
            .unwrap_or_default()
    }

    fn wait(&self, what: &str, limit: Duration, mut ok: impl FnMut(&Self) -> bool) {
        wait_until(what, limit, || ok(self));
    }
}

/// No field name of any point carries a number such as a source port (the
/// percentile statistics aside).
fn assert_fixed_field_names(points: &[Value]) {
    for p in points {
        for key in p["fields"].as_object().expect("fields").keys() {
            // The percentile statistics are the only names with digits.
            let rest = key.replace("p50", "").replace("p90", "").replace("p99", "");
            assert!(
                !rest.contains(|c: char| c.is_ascii_digit()),
                "field name {key:?} contains a number"
            );
        }
    }
}

fn probing(path: &Option<Value>) -> bool {
    path.as_ref()
        .and_then(|p| p["fields"]["sent"].as_f64())
        .is_some_and(|s| s > 0.0)
}

#[test]
fn registration_and_membership_changes_reach_collectors_without_restart() {
    if !privileged("agent_e2e::registration_and_membership_changes") {
        return;
    }
    let mut c = Cluster::new(3);
    c.start_agent(1);
    c.start_agent(2);
    c.wait("both agents are registered", Duration::from_secs(30), |c| {
        c.members().as_object().is_some_and(|m| m.len() == 2)
    });

    // The registration payload, as the server stored it.
    let members = c.members();
    let h1 = &members[format!("{}:8100", host_ip(1))];
    assert_eq!(h1["port"], 8100, "{h1}");
    assert_eq!(h1["keepalive"], 3, "{h1}");
    assert_eq!(h1["group"], GROUP, "{h1}");
    assert_eq!(h1["ip"], host_ip(1).to_string(), "{h1}");
    let tags = &h1["tags"];
    assert_eq!(tags["version"], env!("CARGO_PKG_VERSION"), "{tags}");
    assert_eq!(tags["probe_shortname"], "h1", "{tags}");
    assert_eq!(tags["probe_name"], "e2e host 1", "{tags}");
    assert_eq!(tags["site"], "lab one", "{tags}");
    assert_eq!(tags["rack"], "7", "{tags}");

    // Cadence: every second, so the server's refresh time moves on.
    let first = h1["create_date"].clone();
    c.wait("h1 re-registers", Duration::from_secs(10), |c| {
        c.members()[format!("{}:8100", host_ip(1))]["create_date"] != first
    });

    c.wait("h1 probes h2", Duration::from_secs(30), |c| {
        probing(&c.path_to(1, host_ip(2)))
    });
    let ports_before = c.flows_to(1, host_ip(2));
    let flow_tags: Vec<&str> = ports_before.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        flow_tags,
        ["0", "1"],
        "two flows per target: {ports_before:?}"
    );
    assert!(ports_before.iter().all(|(_, port)| *port > 0));
    assert_fixed_field_names(&c.points(1, "raw_stats"));
    assert_fixed_field_names(&c.points(1, "raw_stats_flow"));
    let pid = c.agent_pid(1);

    // A new member joins: every collector picks it up within a poll (1 s)
    // plus a summarization interval, without a restart.
    c.start_agent(3);
    c.wait(
        "h1 and h2 probe the new member h3",
        Duration::from_secs(20),
        |c| probing(&c.path_to(1, host_ip(3))) && probing(&c.path_to(2, host_ip(3))),
    );
    assert_eq!(c.agent_pid(1), pid, "h1 was not restarted");
    let ports_after = c.flows_to(1, host_ip(2));
    assert_eq!(
        ports_before, ports_after,
        "the collector's sockets kept their source ports"
    );

    // A member leaves by keepalive (3 s): it drops out of every config.
    c.kill_agent(3);
    c.wait("the server reaps h3", Duration::from_secs(20), |c| {
        c.members().as_object().is_some_and(|m| m.len() == 2)
    });
    c.wait(
        "h1 stops probing h3 and still probes h2",
        Duration::from_secs(20),
        |c| c.path_to(1, host_ip(3)).is_none() && probing(&c.path_to(1, host_ip(2))),
    );
    assert_eq!(c.agent_pid(1), pid, "h1 was not restarted");

    // SIGTERM: exit 0 within 5 s, XDP detached.
    let h1 = c.lan.host(1);
    let attached = |ns: &NetNs| {
        ns.ip_output(&["link", "show", "dev", &h1.veth.a])
            .is_ok_and(|o| o.contains("prog/xdp"))
    };
    assert!(attached(&h1.ns), "h1 runs XDP (generic) on its veth");
    let mut guard = c.agents[0].take().expect("h1 running");
    guard.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = guard
        .wait_timeout(Duration::from_secs(5))
        .expect("h1 still running 5 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(!attached(&c.lan.host(1).ns), "XDP detached on SIGTERM");
}

#[test]
fn server_outage_restart_and_agent_restart_from_persisted_config() {
    if !privileged("agent_e2e::server_outage_and_restarts") {
        return;
    }
    let mut c = Cluster::new(2);
    c.start_agent(1);
    c.start_agent(2);
    c.wait("h1 and h2 probe each other", Duration::from_secs(40), |c| {
        probing(&c.path_to(1, host_ip(2))) && probing(&c.path_to(2, host_ip(1)))
    });

    // The server goes away for several poll periods: probing goes on.
    c.stop_server();
    let sent = c.probes_sent(1);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        c.probes_sent(1) > sent,
        "h1 kept sending while the server was down"
    );
    assert!(
        probing(&c.path_to(1, host_ip(2))),
        "h1 kept reporting h1->h2"
    );

    // An agent restarted while the server is down probes from its persisted config.
    c.kill_agent(1);
    c.start_agent(1);
    c.wait(
        "restarted h1 probes h2 from its saved config",
        Duration::from_secs(30),
        |c| probing(&c.path_to(1, host_ip(2))),
    );

    // The server comes back empty: the agents register again within the
    // backoff bound (base 1 s, capped at the 1 s registration interval, plus
    // jitter and request timeouts).
    c.start_server();
    c.wait("both agents re-registered", Duration::from_secs(15), |c| {
        c.members().as_object().is_some_and(|m| m.len() == 2)
    });
}

/// A server with a registration token: the agent holding it registers and
/// is probed, one with a wrong token is refused (401) and never appears, and
/// the holder's entry leaves the registry at its graceful shutdown (the
/// agent's DELETE) long before its keepalive would have expired it.
#[test]
fn token_protected_server_admits_the_holder_and_forgets_it_at_shutdown() {
    if !privileged("agent_e2e::token_protected_server") {
        return;
    }
    let config = format!("{SERVER_CONFIG}registration_token: e2e-secret\n");
    let mut c = Cluster::with_server_config(2, &config);
    c.keepalive = "600";
    c.start_agent_with(1, &["--registration-token", "e2e-secret"]);
    c.start_agent_with(2, &["--registration-token", "not-the-secret"]);
    let shortnames = |c: &Cluster| -> Vec<String> {
        let mut names: Vec<String> = c
            .members()
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|e| e["tags"]["probe_shortname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    c.wait(
        "h1 registered with its token",
        Duration::from_secs(30),
        |c| shortnames(c) == ["h1"],
    );
    c.wait("h1 runs the issued config", Duration::from_secs(30), |c| {
        c.paths(1).iter().any(|p| probing(&Some(p.clone())))
    });
    // h2 has retried with its wrong token for as long as h1 took (several
    // registration periods): still nobody but h1.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(shortnames(&c), ["h1"], "a wrong token registers nothing");
    assert!(
        c.path_to(1, host_ip(2)).is_none(),
        "h1 is not told to probe the refused h2"
    );

    let mut guard = c.agents[0].take().expect("h1 running");
    guard.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = guard
        .wait_timeout(Duration::from_secs(5))
        .expect("h1 still running 5 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // The keepalive is 600 s: only the agent's DELETE removes it this soon.
    c.wait("h1 deregistered at shutdown", Duration::from_secs(5), |c| {
        c.members().is_null() || shortnames(c).is_empty()
    });
}

/// Sends one canonical probe from the hub to `dst` and says whether a reply came.
fn probe_from_hub(c: &Cluster, dst: Ipv4Addr) -> bool {
    c.lan.hub.run(move || {
        let sock = std::net::UdpSocket::bind((HUB_IP, 0)).expect("bind in hub");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; llama_common::probe::CANONICAL_MAX_LEN];
        let mut reply = [0u8; 2048];
        (0..5).any(|n| {
            let len = llama_common::probe::encode_canonical(&mut buf, b"from-hub!!", 0, 1 + n)
                .expect("encode");
            sock.send_to(&buf[..len], (dst, 8100)).expect("send");
            sock.recv_from(&mut reply).is_ok()
        })
    })
}

#[test]
fn allow_peers_answers_group_members_only() {
    if !privileged("agent_e2e::allow_peers_answers_group_members_only") {
        return;
    }
    let mut c = Cluster::new(2);
    c.start_agent_with(1, &["--allow", "peers"]);
    c.start_agent(2);
    // h2 is a member: h1 answers it (in XDP and in userspace alike).
    c.wait("h2 probes h1 without loss", Duration::from_secs(40), |c| {
        c.path_to(2, host_ip(1))
            .is_some_and(|p| p["fields"]["sent"].as_f64() > Some(0.0) && p["fields"]["lost"] == 0.0)
    });
    // The hub (the server's address) is not a member: h1 stays silent, while
    // h2, without an allowlist, answers the very same probe.
    assert!(probe_from_hub(&c, host_ip(2)), "h2 answers anyone");
    assert!(
        !probe_from_hub(&c, host_ip(1)),
        "h1 must not answer a non-member"
    );
    let metrics = c.metrics(1);
    let dropped = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "llama_reflector_packets_total{path=\"xdp\",counter=\"drop_allowlist\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        dropped >= 1.0,
        "the XDP allowlist counted the drops:\n{metrics}"
    );
    // The loop guards' counters are exported like the others, both paths.
    for (path, counter) in [
        ("xdp", "drop_loop_port"),
        ("xdp", "drop_repeated"),
        ("userspace", "dropped_loop_port"),
        ("userspace", "dropped_repeated"),
    ] {
        let line =
            format!("llama_reflector_packets_total{{path=\"{path}\",counter=\"{counter}\"}} ");
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line}missing:\n{metrics}"
        );
    }
}
