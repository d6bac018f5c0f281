//! The collector against real reflectors in network namespaces: the XDP
//! reflector, the userspace reflector and an address where nothing answers
//! (0 %, 0 % and 100 % loss), an IPv6 path end to end through `/influxdata`,
//! and the TOS of probes and replies on the wire, counted by nftables.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use llama_agent::{
    api,
    collector::Collector,
    config::{CollectorConfig, LoadOptions},
};
use llama_testkit::{NetNs, TwoHosts, privileged};
use tower::ServiceExt;

use crate::support::{
    publications::{next_publication, path},
    reflector::{Mode, start_reflector},
};

const WAIT: Duration = Duration::from_secs(20);

fn config(yaml: &str) -> CollectorConfig {
    CollectorConfig::from_yaml(yaml, &LoadOptions::default()).expect("valid test config")
}

fn start_in(ns: &NetNs, cfg: CollectorConfig) -> Collector {
    ns.run(move || Collector::start(cfg))
        .expect("collector starts")
}

#[test]
fn xdp_userspace_and_dead_targets() {
    if !privileged("collector_netns::xdp_userspace_and_dead_targets") {
        return;
    }
    let hosts = TwoHosts::new().expect("two hosts");
    hosts
        .right
        .add_addr(&hosts.veth.b, "10.200.0.3/24")
        .expect("second address");
    let xdp = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);
    let _user = start_reflector(&hosts.right, Mode::Userspace, &hosts.veth.b, 8101);
    let cfg = config(
        "
summarization: {interval: 1, handlers: 2}
api: {bind: 127.0.0.1:8100}
ports: {p: {ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 2}]}
rate_limits: {r: {cps: 20}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets:
  t:
    - {ip: 10.200.0.2, port: 8100, tags: {reflector: xdp}}
    - {ip: 10.200.0.3, port: 8101, tags: {reflector: userspace}}
    - {ip: 10.200.0.9, port: 8100, tags: {reflector: none}}
",
    );
    let c = start_in(&hosts.left, cfg);
    // The first publication covers a partial interval; judge the second.
    let first = next_publication(&c, 0, WAIT);
    let p = next_publication(&c, first.interval_end, WAIT);
    for (dst, kind) in [("10.200.0.2", "xdp"), ("10.200.0.3", "userspace")] {
        let s = path(&p, dst).unwrap_or_else(|| panic!("no summary for {dst}: {p:?}"));
        assert_eq!(s.tags["reflector"], kind);
        assert_eq!(
            s.src_ip,
            "10.200.0.1".parse::<IpAddr>().unwrap(),
            "the source the probes left from"
        );
        assert!(s.sent >= 20, "{dst}: sent {}", s.sent);
        assert_eq!((s.lost, s.loss_pct), (0, 0.0), "{dst}: {s:?}");
        assert!(
            s.rtt_min_ms > 0.0 && s.rtt_mean_ms < 200.0,
            "{dst}: implausible RTT {s:?}"
        );
        assert!(
            s.rtt_min_ms <= s.rtt_p50_ms * 1.01 && s.rtt_p50_ms <= s.rtt_p99_ms,
            "{dst}: {s:?}"
        );
        assert!(
            s.rtt_p99_ms <= s.rtt_max_ms * 1.01 && s.rtt_mean_ms <= s.rtt_max_ms,
            "{dst}: {s:?}"
        );
        assert_eq!(s.ports.len(), 2, "one entry per source port: {s:?}");
        assert_eq!((s.late, s.duplicates, s.unexpected), (0, 0, 0));
    }
    let dead = path(&p, "10.200.0.9").expect("dead target summarised");
    assert!(dead.sent >= 20, "sent {}", dead.sent);
    assert_eq!(
        (dead.lost, dead.loss_pct, dead.rtt_mean_ms),
        (dead.sent, 100.0, 0.0)
    );
    assert!(dead.ports.iter().all(|p| p.loss_pct == 100.0));
    // The probes to 10.200.0.2 were answered in the kernel, not by userspace.
    assert!(
        xdp.xdp_reflected() >= 20,
        "XDP reflected {}",
        xdp.xdp_reflected()
    );
    let m = &c.shared().metrics;
    assert!(m.replies.get() > 0);
    assert_eq!(m.tos_mismatch.get(), 0);
    assert_eq!(m.send_errors.get(), 0);
}

#[test]
fn ipv6_path_end_to_end() {
    if !privileged("collector_netns::ipv6_path_end_to_end") {
        return;
    }
    let hosts = TwoHosts::new().expect("two hosts");
    let _refl = start_reflector(&hosts.right, Mode::Userspace, &hosts.veth.b, 8100);
    let cfg = config(
        "
summarization: {interval: 1}
ports: {p: {ip: '::', port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 2}]}
rate_limits: {r: {cps: 20}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 'fd00:11a:a::2', port: 8100, tags: {dst_name: right}}]}
",
    );
    let c = start_in(&hosts.left, cfg);
    let first = next_publication(&c, 0, WAIT);
    next_publication(&c, first.interval_end, WAIT);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = rt.block_on(async {
        let resp = api::router(c.shared().into())
            .oneshot(
                Request::get("/influxdata")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        resp.into_body().collect().await.expect("body").to_bytes()
    });
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let points = v.as_array().expect("array");
    // One path point, then one point per flow (two source ports).
    let measurements: Vec<&str> = points
        .iter()
        .map(|p| p["measurement"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        measurements,
        ["raw_stats", "raw_stats_flow", "raw_stats_flow"],
        "{v}"
    );
    assert_eq!(points[2]["tags"]["src_ip"], "fd00:11a:a::1");
    assert_eq!(points[2]["tags"]["flow"], "1");
    let tags: BTreeMap<String, String> =
        serde_json::from_value(points[0]["tags"].clone()).expect("tags");
    assert_eq!(tags["dst_ip"], "fd00:11a:a::2");
    assert_eq!(tags["src_ip"], "fd00:11a:a::1");
    assert_eq!(tags["dst_name"], "right");
    let f = &points[0]["fields"];
    assert!(f["sent"].as_f64().unwrap() >= 20.0, "{f}");
    assert_eq!(f["loss"].as_f64(), Some(0.0), "{f}");
    assert!(f["rtt"].as_f64().unwrap() > 0.0, "{f}");
}

/// Packets counted by the named counter of table `inet llt` in `ns`.
fn nft_counter(ns: &NetNs, name: &str) -> u64 {
    let out = ns
        .exec("nft", &["list", "counter", "inet", "llt", name])
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words
                .next()
                .and_then(|n| n.parse().ok())
                .expect("packet count");
        }
    }
    panic!("no packet count in {text}");
}

pub fn nft_script(ns: &NetNs, script: &str) {
    let path = std::env::temp_dir().join(format!("llt-{}-{}.nft", std::process::id(), ns.name()));
    std::fs::write(&path, script).expect("write nft script");
    let out = ns.exec("nft", &["-f", path.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&path);
    let out = out.expect("nft is installed (apt-get install nftables)");
    assert!(
        out.status.success(),
        "nft -f: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tos_on_the_wire_in_both_directions() {
    if !privileged("collector_netns::tos_on_the_wire_in_both_directions") {
        return;
    }
    let hosts = TwoHosts::new().expect("two hosts");
    let _refl = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);
    // Counters on the collector's host: every probe out and every reply in,
    // and those whose DSCP is EF (tos 0xb8 = DSCP 46, ECN 0).
    let mut script = String::from("table inet llt {\n");
    for c in ["o4", "o4ef", "i4", "i4ef", "o6", "o6ef", "i6", "i6ef"] {
        script.push_str(&format!("  counter {c} {{}}\n"));
    }
    script.push_str(
        "  chain out { type filter hook output priority 0; policy accept;
    meta nfproto ipv4 udp dport 8100 counter name o4
    ip dscp ef ip ecn not-ect udp dport 8100 counter name o4ef
    meta nfproto ipv6 udp dport 8100 counter name o6
    ip6 dscp ef ip6 ecn not-ect udp dport 8100 counter name o6ef
  }
  chain in { type filter hook input priority 0; policy accept;
    meta nfproto ipv4 udp sport 8100 counter name i4
    ip dscp ef ip ecn not-ect udp sport 8100 counter name i4ef
    meta nfproto ipv6 udp sport 8100 counter name i6
    ip6 dscp ef ip6 ecn not-ect udp sport 8100 counter name i6ef
  }
}
",
    );
    nft_script(&hosts.left, &script);
    // One dual-stack socket: IP_TOS for IPv4, IPV6_TCLASS for IPv6.
    let cfg = config(
        "
summarization: {interval: 1}
ports: {ef: {ip: 0.0.0.0, port: 0, tos: 184, timeout: 1000}}
port_groups: {g: [{port: ef, count: 2}]}
rate_limits: {r: {cps: 25}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: 10.200.0.2, port: 8100}, {ip: 'fd00:11a:a::2', port: 8100}]}
",
    );
    let c = start_in(&hosts.left, cfg);
    let first = next_publication(&c, 0, WAIT);
    let p = next_publication(&c, first.interval_end, WAIT);
    c.shutdown();
    for dst in ["10.200.0.2", "fd00:11a:a::2"] {
        let s = path(&p, dst).unwrap_or_else(|| panic!("{dst} summarised"));
        assert_eq!(s.lost, 0, "{dst}: {s:?}");
    }
    for fam in ["4", "6"] {
        let (out, out_ef) = (
            nft_counter(&hosts.left, &format!("o{fam}")),
            nft_counter(&hosts.left, &format!("o{fam}ef")),
        );
        let (inn, in_ef) = (
            nft_counter(&hosts.left, &format!("i{fam}")),
            nft_counter(&hosts.left, &format!("i{fam}ef")),
        );
        assert!(
            out >= 40 && inn >= 40,
            "IPv{fam}: {out} probes out, {inn} replies in"
        );
        assert_eq!(out_ef, out, "IPv{fam}: every probe carries tos 0xb8");
        assert_eq!(in_ef, inn, "IPv{fam}: every reply carries tos 0xb8");
    }
}
