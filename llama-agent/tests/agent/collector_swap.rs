//! Swapping the whole configuration at run time (the control plane's entry
//! point), on loopback: unchanged sockets keep their source ports, in-flight
//! probes of removed targets are dropped without being booked as loss, and a
//! configuration that cannot be applied leaves the running one untouched.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use llama_agent::{
    collector::{Collector, Error},
    config::{CollectorConfig, LoadOptions},
};

use crate::support::{
    publications::{next_publication, path},
    reflector::start_local_echo,
};

const WAIT: Duration = Duration::from_secs(20);

fn config(ip: &str, tos: u8, count: u32, targets: &[SocketAddr]) -> CollectorConfig {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ip: '{}', port: {}}}", t.ip(), t.port()))
        .collect();
    let yaml = format!(
        "
summarization: {{interval: 1}}
ports: {{p: {{ip: '{ip}', port: 0, tos: {tos}, timeout: 5000}}}}
port_groups: {{g: [{{port: p, count: {count}}}]}}
rate_limits: {{r: {{cps: 10}}}}
tests: [{{targets: t, port_group: g, rate_limit: r}}]
targets: {{t: [{}]}}
",
        targets.join(", ")
    );
    CollectorConfig::from_yaml(&yaml, &LoadOptions::default()).expect("valid")
}

fn ports_of(p: &llama_agent::collector::summary::Published, dst: &str) -> Vec<u16> {
    path(p, dst)
        .map(|s| s.ports.iter().map(|p| p.src_port).collect())
        .unwrap_or_default()
}

#[test]
fn swap_keeps_sockets_and_drops_removed_targets_silently() {
    let echo = start_local_echo(&["127.0.0.1:0".parse().unwrap()]);
    let alive = echo.addrs[0];
    // A port nothing listens on: its probes are never answered.
    let dead = {
        let s = UdpSocket::bind("127.0.0.2:0").expect("bind");
        s.local_addr().expect("addr")
    };
    let c = Collector::start(config("0.0.0.0", 0, 2, &[alive, dead])).expect("start");
    let first = next_publication(&c, 0, WAIT);
    let ports = ports_of(&first, "127.0.0.1");
    assert_eq!(ports.len(), 2, "{first:?}");
    assert!(
        path(&first, "127.0.0.2").is_none(),
        "dead probes time out after 5 s, not yet"
    );

    // Same sockets (a new TOS is applied in place), target `dead` removed.
    let r = c
        .swap_config(config("0.0.0.0", 0x20, 2, &[alive]))
        .expect("swap");
    assert_eq!(
        (r.sockets_kept, r.sockets_opened, r.sockets_closed),
        (2, 0, 0),
        "{r:?}"
    );
    assert!(
        r.probes_dropped >= 5,
        "the dead target's pending probes are dropped: {r:?}"
    );
    assert_eq!(c.shared().metrics.dropped_on_reload.get(), r.probes_dropped);

    // Long enough for every dropped probe's timeout to pass: none is booked.
    let until = Instant::now() + Duration::from_secs(6);
    let mut last = first.interval_end;
    while Instant::now() < until {
        let p = next_publication(&c, last, WAIT);
        last = p.interval_end;
        assert!(
            path(&p, "127.0.0.2").is_none(),
            "removed target reported: {p:?}"
        );
        let s = path(&p, "127.0.0.1").expect("live target summarised");
        assert_eq!(s.lost, 0, "{s:?}");
        assert_eq!(
            ports_of(&p, "127.0.0.1"),
            ports,
            "kept sockets keep their source ports"
        );
    }
    assert_eq!(
        c.shared().metrics.lost.get(),
        0,
        "nothing was ever booked lost"
    );

    // A configuration whose socket cannot be bound is rejected as a whole.
    let err = c
        .swap_config(config("192.0.2.1", 0, 2, &[alive]))
        .expect_err("unbindable");
    assert!(matches!(err, Error::Socket { .. }), "{err:?}");
    assert!(err.to_string().contains("192.0.2.1"), "{err}");
    let p = next_publication(&c, last, WAIT);
    let p = next_publication(&c, p.interval_end, WAIT);
    assert_eq!(
        ports_of(&p, "127.0.0.1"),
        ports,
        "the previous configuration still runs"
    );

    // Growing the group keeps the two sockets and opens one.
    let r = c
        .swap_config(config("0.0.0.0", 0x20, 3, &[alive]))
        .expect("swap");
    assert_eq!(
        (
            r.sockets_kept,
            r.sockets_opened,
            r.sockets_closed,
            r.probes_dropped
        ),
        (2, 1, 0, 0)
    );
    let p = next_publication(&c, p.interval_end, WAIT);
    let p = next_publication(&c, p.interval_end, WAIT);
    let now = ports_of(&p, "127.0.0.1");
    assert_eq!(now.len(), 3, "{p:?}");
    assert!(
        ports.iter().all(|port| now.contains(port)),
        "{ports:?} kept in {now:?}"
    );
    c.shutdown();
}
