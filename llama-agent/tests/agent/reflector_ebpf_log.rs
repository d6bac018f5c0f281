//! `--ebpf-log`: the XDP program's decisions in the agent's output, with
//! addresses and ports; nothing at the default (off); a flood limited in
//! the kernel by `--ebpf-log-rate`, the suppressed lines counted and
//! mentioned once; bad values refused.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use llama_testkit::TwoHosts;
use nix::sys::signal::Signal;

use crate::{
    reflector_cli::Agent,
    support::{client::Client, packets, xdp_ready},
};

const PORT: u16 = 8100;
/// How the forwarded lines appear in the fmt output (their target).
const EBPF_TARGET: &str = " llama_ebpf: ";

/// Sends a canonical probe from `client` to `to` until it is answered (at
/// most three tries: the first may race the namespace's address setup).
fn answered(client: &Client, to: SocketAddr, sig: &[u8; 10]) -> bool {
    let probe = packets::canonical_probe(*sig, 0x20, 7);
    (0..3).any(|_| {
        client.send(&probe, to);
        client
            .recv(Duration::from_secs(2))
            .is_some_and(|r| r.payload == probe)
    })
}

/// The `log_suppressed=N` of the last "xdp counters:" line.
fn suppressed(agent: &Agent) -> u64 {
    let line = agent
        .seen
        .iter()
        .rev()
        .find(|l| l.contains("xdp counters:"))
        .expect("an xdp counters line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("log_suppressed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no log_suppressed in {line}"))
}

fn ebpf_lines(agent: &Agent) -> Vec<&String> {
    agent
        .seen
        .iter()
        .filter(|l| l.contains(EBPF_TARGET))
        .collect()
}

#[test]
fn debug_level_logs_decisions_with_addresses_and_ports() {
    if !xdp_ready("debug_level_logs_decisions_with_addresses_and_ports") {
        return;
    }
    let hosts = TwoHosts::new().expect("namespaces");
    let dev = hosts.veth.b.clone();
    let mut agent = Agent::start(
        &hosts.right,
        &[
            "--mode",
            "xdp-skb",
            "--interface",
            &dev,
            "--ebpf-log",
            "debug",
        ],
    );
    agent.expect_line(&format!("{dev}: xdp generic"));
    agent.expect_line("reflector running");

    let (v4_from, v6_from) = hosts.left.run(|| {
        let c4 = Client::bind(SocketAddr::new(IpAddr::V4(hosts.left_v4), 0));
        let to4 = SocketAddr::new(IpAddr::V4(hosts.right_v4), PORT);
        assert!(answered(&c4, to4, b"ebpf-log-4"), "IPv4 probe answered");
        c4.send(b"not a probe", to4);
        let c6 = Client::bind(SocketAddr::new(IpAddr::V6(hosts.left_v6), 0));
        let to6 = SocketAddr::new(IpAddr::V6(hosts.right_v6), PORT);
        assert!(answered(&c6, to6, b"ebpf-log-6"), "IPv6 probe answered");
        (c4.local_addr().port(), c6.local_addr().port())
    });

    let (l4, r4, l6, r6) = (hosts.left_v4, hosts.right_v4, hosts.left_v6, hosts.right_v6);
    let line = agent.expect_line(&format!(
        "xdp: reflected probe {l4}:{v4_from} -> {r4}:{PORT}"
    ));
    assert!(
        line.contains("DEBUG") && line.contains(EBPF_TARGET),
        "{line}"
    );
    let line = agent.expect_line(&format!(
        "xdp: pass to userspace: not a canonical probe {l4}:{v4_from} -> {r4}:{PORT}"
    ));
    assert!(line.contains("DEBUG"), "{line}");
    agent.expect_line(&format!(
        "xdp: reflected probe [{l6}]:{v6_from} -> [{r6}]:{PORT}"
    ));
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(), "clean exit:\n{}", agent.seen.join("\n"));
}

#[test]
fn off_by_default_nothing_is_logged() {
    if !xdp_ready("off_by_default_nothing_is_logged") {
        return;
    }
    let hosts = TwoHosts::new().expect("namespaces");
    let dev = hosts.veth.b.clone();
    // The subscriber would show every line: none may come from the kernel.
    let mut agent = Agent::start_logging(
        &hosts.right,
        &["--mode", "xdp-skb", "--interface", &dev],
        "info,llama_ebpf=trace",
    );
    agent.expect_line("reflector running");
    hosts.left.run(|| {
        let c = Client::bind(SocketAddr::new(IpAddr::V4(hosts.left_v4), 0));
        let to = SocketAddr::new(IpAddr::V4(hosts.right_v4), PORT);
        assert!(answered(&c, to, b"ebpf-off-1"), "probe answered");
        c.send(b"not a probe", to);
    });
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(), "clean exit:\n{}", agent.seen.join("\n"));
    agent.expect_line("reflected=1");
    assert!(
        ebpf_lines(&agent).is_empty(),
        "no kernel log lines when off:\n{}",
        agent.seen.join("\n")
    );
    assert_eq!(suppressed(&agent), 0, "nothing even tried to log");
}

#[test]
fn a_flood_is_limited_in_the_kernel_and_the_suppression_logged_once() {
    if !xdp_ready("a_flood_is_limited_in_the_kernel_and_the_suppression_logged_once") {
        return;
    }
    const RATE: u64 = 10;
    const FLOOD: usize = 5_000;
    let hosts = TwoHosts::new().expect("namespaces");
    let dev = hosts.veth.b.clone();
    let started = Instant::now();
    let mut agent = Agent::start(
        &hosts.right,
        &[
            "--mode",
            "xdp-skb",
            "--interface",
            &dev,
            "--ebpf-log",
            "debug",
            "--ebpf-log-rate",
            &RATE.to_string(),
            "--stats-interval",
            "1",
        ],
    );
    agent.expect_line("reflector running");
    let sent = hosts.left.run(|| {
        let s = UdpSocket::bind((hosts.left_v4, 0)).expect("bind");
        let to = SocketAddr::new(IpAddr::V4(hosts.right_v4), PORT);
        (0..FLOOD)
            .filter(|_| s.send_to(b"flood, not a probe", to).is_ok())
            .count()
    });
    assert!(sent > FLOOD / 2, "sent {sent}");
    let line = agent.expect_line("debug log lines suppressed in the kernel by --ebpf-log-rate");
    assert!(
        line.contains("WARN") && line.contains("log_suppressed"),
        "{line}"
    );
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(), "clean exit:\n{}", agent.seen.join("\n"));
    let elapsed = started.elapsed().as_secs() + 1;

    // Per CPU: a burst of RATE/10 (at least 1) plus RATE per second.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let bound = cpus * (RATE * (elapsed + 1) + 1);
    let lines = ebpf_lines(&agent).len() as u64;
    assert!(lines >= 1, "some lines get through");
    assert!(
        lines <= bound,
        "{lines} lines in {elapsed} s exceed {bound} ({cpus} CPUs x {RATE}/s)"
    );
    let dropped = suppressed(&agent);
    assert!(
        dropped >= sent as u64 - lines,
        "suppressed {dropped}, sent {sent}, logged {lines}"
    );
    let mentions = agent
        .seen
        .iter()
        .filter(|l| l.contains("debug log lines suppressed"))
        .count();
    assert_eq!(mentions, 1, "said once:\n{}", agent.seen.join("\n"));
}

#[test]
fn bad_levels_and_rates_are_refused() {
    /// Arguments, environment, what stderr must say.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["reflect", "--ebpf-log", "loud"],
            &[],
            "--ebpf-log / LLAMA_EBPF_LOG \"loud\" is not a level: use off, error, warn, info, debug or trace",
        ),
        (
            &["reflect"],
            &[("LLAMA_EBPF_LOG", "verbose")],
            "--ebpf-log / LLAMA_EBPF_LOG \"verbose\" is not a level",
        ),
        (
            &["reflect", "--ebpf-log-rate", "0"],
            &[],
            "--ebpf-log-rate / LLAMA_EBPF_LOG_RATE must be at least 1",
        ),
        (
            &["run"],
            &[("LLAMA_SERVER", "http://h"), ("LLAMA_EBPF_LOG", "loud")],
            "--ebpf-log / LLAMA_EBPF_LOG \"loud\" is not a level",
        ),
    ];
    for (args, env, want) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-agent"));
        cmd.args(*args).env_clear();
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run llama-agent");
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{args:?} {env:?}: {stderr}");
    }
}
