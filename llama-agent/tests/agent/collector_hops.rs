//! Hop counts (64 minus the replies' TTL / hop limit) against real
//! reflectors: host A (the collector) reaches host B (the reflectors)
//! directly over one veth and through router R over two; IPv4 and IPv6, on
//! a dual-stack socket and on an IPv4 and an IPv6-only one. Direct: 0 hops,
//! from the XDP and the userspace reflector alike; through R: 1. A route
//! change during a run (B's loopback address reached first directly, then
//! through R) is counted in `hop_changes`, once per flow, and `hops` ends at
//! the new value.

use std::{collections::BTreeMap, time::Duration};

use llama_agent::{
    api,
    collector::{
        Collector,
        metrics::TargetLabels,
        summary::{PathSummary, Published},
    },
    config::{CollectorConfig, LoadOptions},
};
use llama_testkit::{NetNs, Veth, privileged};

use crate::support::{
    publications::{next_publication, path},
    reflector::{Mode, start_reflector, start_reflector_on},
    xdp_ready,
};

const WAIT: Duration = Duration::from_secs(30);

/// A, R and B; links A–B (10.210.1.0/24, fd00:210:1::/64), A–R (.2) and
/// R–B (.3), host `.1` on the first-named end; R forwards. B's loopback has
/// 10.210.9.2 / fd00:210:9::2, A's 10.210.9.1 / fd00:210:9::1: reached
/// directly until [`Triangle::via_router`].
struct Triangle {
    a: NetNs,
    b: NetNs,
    /// Kept for its lifetime: dropping it removes the router.
    _r: NetNs,
    ab: Veth,
    rb: Veth,
}

fn sysctl(ns: &NetNs, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let out = ns
        .exec("sh", &["-c", &format!("echo {value} > {path}")])
        .expect("run sh");
    assert!(
        out.status.success(),
        "sysctl {key}={value}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn route(ns: &NetNs, verb: &str, spec: &str) {
    let mut args = if spec.contains(':') {
        vec!["-6", "route", verb]
    } else {
        vec!["route", verb]
    };
    args.extend(spec.split_whitespace());
    ns.ip(&args)
        .unwrap_or_else(|e| panic!("ip route {verb} {spec}: {e}"));
}

impl Triangle {
    fn new() -> Self {
        let (a, r, b) = (
            NetNs::new().expect("ns A"),
            NetNs::new().expect("ns R"),
            NetNs::new().expect("ns B"),
        );
        let ab = Veth::new(&a, &b).expect("veth A-B");
        let ar = Veth::new(&a, &r).expect("veth A-R");
        let rb = Veth::new(&r, &b).expect("veth R-B");
        for (n, link, first, second) in [(1, &ab, &a, &b), (2, &ar, &a, &r), (3, &rb, &r, &b)] {
            for (ns, dev, host) in [(first, &link.a, 1), (second, &link.b, 2)] {
                ns.add_addr(dev, &format!("10.210.{n}.{host}/24"))
                    .expect("IPv4 address");
                ns.add_addr(dev, &format!("fd00:210:{n}::{host}/64"))
                    .expect("IPv6 address");
            }
        }
        for (ns, host) in [(&a, 1), (&b, 2)] {
            ns.add_addr("lo", &format!("10.210.9.{host}/32"))
                .expect("loopback address");
            ns.add_addr("lo", &format!("fd00:210:9::{host}/128"))
                .expect("loopback address");
        }
        sysctl(&r, "net.ipv4.ip_forward", "1");
        sysctl(&r, "net.ipv6.conf.all.forwarding", "1");
        // The routed subnets, one each way, through R.
        route(&a, "add", "10.210.3.0/24 via 10.210.2.2");
        route(&a, "add", "fd00:210:3::/64 via fd00:210:2::2");
        route(&b, "add", "10.210.2.0/24 via 10.210.3.1");
        route(&b, "add", "fd00:210:2::/64 via fd00:210:3::1");
        // The loopback addresses: R knows both; A and B reach each other's
        // directly for now.
        route(&r, "add", "10.210.9.1/32 via 10.210.2.1");
        route(&r, "add", "10.210.9.2/32 via 10.210.3.2");
        route(&r, "add", "fd00:210:9::1/128 via fd00:210:2::1");
        route(&r, "add", "fd00:210:9::2/128 via fd00:210:3::2");
        route(&a, "add", "10.210.9.2/32 via 10.210.1.2 src 10.210.9.1");
        route(
            &a,
            "add",
            "fd00:210:9::2/128 via fd00:210:1::2 src fd00:210:9::1",
        );
        route(&b, "add", "10.210.9.1/32 via 10.210.1.1 src 10.210.9.2");
        route(
            &b,
            "add",
            "fd00:210:9::1/128 via fd00:210:1::1 src fd00:210:9::2",
        );
        Self {
            a,
            b,
            _r: r,
            ab,
            rb,
        }
    }

    /// Moves the loopback routes of both hosts onto R: each way now
    /// crosses one router. B's route is the one the replies take.
    fn via_router(&self) {
        route(
            &self.a,
            "replace",
            "10.210.9.2/32 via 10.210.2.2 src 10.210.9.1",
        );
        route(
            &self.a,
            "replace",
            "fd00:210:9::2/128 via fd00:210:2::2 src fd00:210:9::1",
        );
        route(
            &self.b,
            "replace",
            "10.210.9.1/32 via 10.210.3.1 src 10.210.9.2",
        );
        route(
            &self.b,
            "replace",
            "fd00:210:9::1/128 via fd00:210:3::1 src fd00:210:9::2",
        );
    }
}

/// Starts a collector in `ns` probing with 2 sockets per port at 20 cycles/s,
/// summarising every second; `tests` is the rest of the configuration.
fn start(ns: &NetNs, tests: &str) -> Collector {
    let yaml = format!(
        "
summarization: {{interval: 1}}
rate_limits: {{r: {{cps: 20}}}}
{tests}"
    );
    let cfg = CollectorConfig::from_yaml(&yaml, &LoadOptions::default()).expect("valid config");
    ns.run(move || Collector::start(cfg))
        .expect("collector starts")
}

/// The first publication (after the one ending at `after`) for which `ok`
/// holds for every path of `dsts`; panics after [`WAIT`].
fn publication_where(
    c: &Collector,
    mut after: u64,
    dsts: &[&str],
    ok: impl Fn(&PathSummary) -> bool,
) -> std::sync::Arc<Published> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let p = next_publication(c, after, WAIT);
        if dsts.iter().all(|d| path(&p, d).is_some_and(&ok)) {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no publication as wanted for {dsts:?}; the last: {p:?}"
        );
        after = p.interval_end;
    }
}

fn answered(s: &PathSummary) -> bool {
    s.sent > 0 && s.lost == 0 && s.ports.len() == 2
}

#[test]
fn direct_and_routed_hop_counts_from_both_reflectors() {
    if !xdp_ready("collector_hops::direct_and_routed_hop_counts_from_both_reflectors") {
        return;
    }
    let t = Triangle::new();
    t.b.add_addr(&t.ab.b, "10.210.1.3/24").expect("address");
    t.b.add_addr(&t.ab.b, "fd00:210:1::3/64").expect("address");
    let xdp = start_reflector_on(&t.b, Mode::Xdp, &[&t.ab.b, &t.rb.b], 8100);
    let _user = start_reflector(&t.b, Mode::Userspace, &t.ab.b, 8101);
    // One dual-stack socket pair for IPv4 and IPv6.
    let c = start(
        &t.a,
        "
ports: {p: {ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}
port_groups: {g: [{port: p, count: 2}]}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets:
  t:
    - {ip: 10.210.1.2, port: 8100}
    - {ip: 'fd00:210:1::2', port: 8100}
    - {ip: 10.210.1.3, port: 8101}
    - {ip: 'fd00:210:1::3', port: 8101}
    - {ip: 10.210.3.2, port: 8100}
    - {ip: 'fd00:210:3::2', port: 8100}
",
    );
    let all = [
        "10.210.1.2",
        "fd00:210:1::2",
        "10.210.1.3",
        "fd00:210:1::3",
        "10.210.3.2",
        "fd00:210:3::2",
    ];
    let p = publication_where(&c, 0, &all, answered);
    for (dst, hops) in all.into_iter().zip([0, 0, 0, 0, 1, 1]) {
        let s = path(&p, dst).expect("summarised");
        assert_eq!(
            (s.hops, s.hop_changes),
            (Some(hops), 0),
            "{dst}: {hops} routers, steady: {s:?}"
        );
    }
    // The direct and routed probes on port 8100 were answered in the kernel.
    assert!(
        xdp.xdp_reflected() >= 40,
        "XDP reflected {}",
        xdp.xdp_reflected()
    );
    // The same numbers in /influxdata.
    let json: serde_json::Value =
        serde_json::from_str(&api::influx::render(&p)).expect("valid JSON");
    let routed = json
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["measurement"] == "raw_stats" && p["tags"]["dst_ip"] == "fd00:210:3::2")
        .expect("the routed IPv6 path's point");
    assert_eq!(routed["fields"]["hops"].as_f64(), Some(1.0), "{routed}");
    assert_eq!(routed["fields"]["hop_changes"].as_f64(), Some(0.0));
    c.shutdown();
}

#[test]
fn a_route_change_counts_once_per_flow() {
    if !privileged("collector_hops::a_route_change_counts_once_per_flow") {
        return;
    }
    let t = Triangle::new();
    // The userspace reflector answers on every interface of B.
    let _refl = start_reflector(&t.b, Mode::Userspace, &t.ab.b, 8100);
    // Sockets bound to A's loopback addresses: an IPv4 and an IPv6-only one.
    let c = start(
        &t.a,
        "
ports:
  p4: {ip: 10.210.9.1, port: 0, tos: 0, timeout: 1000}
  p6: {ip: 'fd00:210:9::1', port: 0, tos: 0, timeout: 1000}
port_groups: {g4: [{port: p4, count: 2}], g6: [{port: p6, count: 2}]}
tests:
  - {targets: t4, port_group: g4, rate_limit: r}
  - {targets: t6, port_group: g6, rate_limit: r}
targets:
  t4: [{ip: 10.210.9.2, port: 8100, tags: {dst_name: b4}}]
  t6: [{ip: 'fd00:210:9::2', port: 8100, tags: {dst_name: b6}}]
",
    );
    let dsts = ["10.210.9.2", "fd00:210:9::2"];
    let before = publication_where(&c, 0, &dsts, |s| answered(s) && s.hops == Some(0));
    let changes = |p: &Published, dst: &str| {
        let s = path(p, dst).expect("summarised");
        let tags: &BTreeMap<String, String> = &s.tags;
        c.shared()
            .metrics
            .target_hop_changes
            .get_or_create(&TargetLabels::new(s.src_ip, s.dst_ip, tags))
            .get()
    };
    for dst in dsts {
        let s = path(&before, dst).expect("summarised");
        assert_eq!(
            s.src_ip.to_string(),
            if dst.contains(':') {
                "fd00:210:9::1"
            } else {
                "10.210.9.1"
            },
            "probes leave from A's loopback address"
        );
        assert_eq!(
            changes(&before, dst),
            0,
            "{dst}: no change on a steady route"
        );
    }
    t.via_router();
    let moved = publication_where(&c, before.interval_end, &dsts, |s| s.hops == Some(1));
    // The interval after: every reply crossed R, and nothing changed again.
    let after = publication_where(&c, moved.interval_end, &dsts, |_| true);
    for dst in dsts {
        let s = path(&after, dst).expect("summarised");
        assert_eq!((s.hops, s.hop_changes), (Some(1), 0), "{dst}: {s:?}");
        // Each of the two flows saw 0 hops, then 1: at least one change
        // each (a reply overtaken by a later one could add more).
        let n = changes(&after, dst);
        assert!(n >= 2, "{dst}: {n} hop changes");
    }
    c.shutdown();
}
