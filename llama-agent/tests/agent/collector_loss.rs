//! Loss truth: random drop injected with nftables on the receive path
//! (the collector's input hook, where the replies arrive) is measured within
//! ±3 percentage points over thousands of probes, and is 0 % again once the
//! rule is gone; a drop on one source port shows up in that port's loss only.

use std::time::{Duration, Instant};

use llama_agent::{
    collector::{Collector, summary::Published},
    config::{CollectorConfig, LoadOptions},
};
use llama_testkit::{NetNs, TwoHosts, privileged};

use crate::support::{
    publications::{next_publication, path},
    reflector,
    reflector::{Mode, start_reflector},
};

const DST: &str = "10.200.0.2";

fn nft(ns: &NetNs, args: &[&str]) {
    let out = ns
        .exec("nft", args)
        .expect("nft is installed (apt-get install nftables)");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces the drop rule in the collector's input hook.
fn set_rule(ns: &NetNs, rule: Option<&str>) {
    nft(ns, &["flush", "chain", "inet", "llt", "in"]);
    if let Some(rule) = rule {
        let mut args = vec!["add", "rule", "inet", "llt", "in"];
        args.extend(rule.split_whitespace());
        nft(ns, &args);
    }
}

fn setup(cps: f64, count: u32) -> (TwoHosts, reflector::Guard, Collector) {
    let hosts = TwoHosts::new().expect("two hosts");
    let refl = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);
    nft(&hosts.left, &["add", "table", "inet", "llt"]);
    nft(
        &hosts.left,
        &[
            "add",
            "chain",
            "inet",
            "llt",
            "in",
            "{ type filter hook input priority 0; policy accept; }",
        ],
    );
    let yaml = format!(
        "
summarization: {{interval: 1}}
ports: {{p: {{ip: 0.0.0.0, port: 0, tos: 0, timeout: 500}}}}
port_groups: {{g: [{{port: p, count: {count}}}]}}
rate_limits: {{r: {{cps: {cps}}}}}
tests: [{{targets: t, port_group: g, rate_limit: r}}]
targets: {{t: [{{ip: {DST}, port: 8100}}]}}
"
    );
    let cfg = CollectorConfig::from_yaml(&yaml, &LoadOptions::default()).expect("valid");
    let c = hosts
        .left
        .run(move || Collector::start(cfg))
        .expect("collector starts");
    (hosts, refl, c)
}

/// Skips the publications that may mix the old and new rule (probes are
/// booked up to one timeout after they are sent), then sums whole
/// publications until at least `probes` were booked.
fn measure(c: &Collector, mut last: u64, probes: u64) -> (u64, u64, Vec<Published>) {
    for _ in 0..2 {
        last = next_publication(c, last, Duration::from_secs(10)).interval_end;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut lost, mut pubs) = (0, 0, Vec::new());
    while sent < probes {
        assert!(
            Instant::now() < deadline,
            "only {sent} probes booked in 60 s"
        );
        let p = next_publication(c, last, Duration::from_secs(10));
        last = p.interval_end;
        if let Some(s) = path(&p, DST) {
            sent += s.sent;
            lost += s.lost;
        }
        pubs.push((*p).clone());
    }
    (sent, lost, pubs)
}

#[test]
fn injected_random_loss_is_measured_within_three_points() {
    if !privileged("collector_loss::injected_random_loss_is_measured_within_three_points") {
        return;
    }
    // 250 cycles/s x 4 ports x 1 target = 1,000 probes/s.
    let (hosts, _refl, c) = setup(250.0, 4);
    let mut last = next_publication(&c, 0, Duration::from_secs(10)).interval_end;
    for (rate, probes) in [(10u64, 4_000u64), (50, 4_000), (0, 2_000)] {
        let rule = format!("udp sport 8100 numgen random mod 100 < {rate} drop");
        set_rule(&hosts.left, (rate > 0).then_some(rule.as_str()));
        let (sent, lost, pubs) = measure(&c, last, probes);
        last = pubs.last().map_or(last, |p| p.interval_end);
        let measured = lost as f64 * 100.0 / sent as f64;
        eprintln!("injected {rate} %: measured {measured:.2} % over {sent} probes");
        if rate == 0 {
            assert!(measured < 0.1, "rule removed, yet {lost} of {sent} lost");
        } else {
            assert!(
                (measured - rate as f64).abs() <= 3.0,
                "injected {rate} %, measured {measured:.2} % ({lost}/{sent})"
            );
        }
    }
    let m = &c.shared().metrics;
    assert_eq!(
        m.send_errors.get(),
        0,
        "drops on the receive path are not send errors"
    );
    assert_eq!(m.late.get(), 0, "dropped replies never arrive late");
}

#[test]
fn one_bad_source_port_is_visible() {
    if !privileged("collector_loss::one_bad_source_port_is_visible") {
        return;
    }
    let (hosts, _refl, c) = setup(20.0, 4);
    let first = next_publication(&c, 0, Duration::from_secs(10));
    let ports: Vec<u16> = path(&first, DST)
        .expect("summary")
        .ports
        .iter()
        .map(|p| p.src_port)
        .collect();
    assert_eq!(ports.len(), 4, "four source ports: {first:?}");
    let bad = ports[1];
    set_rule(
        &hosts.left,
        Some(&format!("udp sport 8100 udp dport {bad} drop")),
    );
    let (_, _, pubs) = measure(&c, first.interval_end, 200);
    let p = pubs.last().expect("a publication");
    let s = path(p, DST).expect("summary");
    for port in &s.ports {
        if port.src_port == bad {
            assert_eq!(port.loss_pct, 100.0, "{s:?}");
        } else {
            assert_eq!(port.loss_pct, 0.0, "{s:?}");
        }
    }
    assert!(
        (s.loss_pct - 25.0).abs() < 10.0,
        "one port in four lost: {s:?}"
    );
    assert_eq!(
        s.ports.iter().map(|p| p.src_port).collect::<Vec<_>>(),
        ports,
        "source ports are stable for the life of the sockets"
    );
    assert_eq!(
        s.ports.iter().map(|p| p.flow).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "flows are the sockets' indexes in the port group"
    );
}
