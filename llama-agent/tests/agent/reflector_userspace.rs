//! The userspace reflector on real sockets: malformed input never stops it,
//! replies carry the probe's TOS and TTL 64, come from the probed address on
//! a two-address host, and the allowlist and rate limit hold.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use llama_agent::reflector::{Allowlist, ReflectorOptions, UserspaceReflector};
use llama_testkit::{TwoHosts, privileged, wait_for_within};

use crate::support::{client::Client, packets::canonical_probe};

const WAIT: Duration = Duration::from_secs(5);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn loopback_reflector() -> llama_agent::reflector::ReflectorHandle {
    let mut options = ReflectorOptions::new(0);
    options.bind = vec![LOCALHOST];
    UserspaceReflector::spawn(options).expect("spawn on loopback")
}

/// Waits until the reflector's counters satisfy `done` (they are updated
/// once per batch, after the replies went out).
fn wait_stats(
    r: &llama_agent::reflector::ReflectorHandle,
    done: impl Fn(&llama_agent::reflector::ReflectorStats) -> bool,
) -> llama_agent::reflector::ReflectorStats {
    // The caller asserts on what it gets, so a timeout returns the last
    // counters rather than panicking here.
    wait_for_within(WAIT, || Some(r.stats()).filter(|s| done(s))).unwrap_or_else(|| r.stats())
}

#[test]
fn survives_malformed_input_and_keeps_answering() {
    let r = loopback_reflector();
    let to = SocketAddr::new(LOCALHOST, r.port());
    let c = Client::bind(SocketAddr::new(LOCALHOST, 0));
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x18, 0x80, 0x80],
        vec![
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        vec![0x0a, 0x0a, 1, 2],
        vec![0xff; 65507],
        (0..65507u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect(),
    ];
    for i in 0..200u32 {
        garbage.push(
            (0..(i % 97))
                .map(|j| (i * 31 + j * 17) as u8 | 0x80)
                .collect(),
        );
    }
    for g in &garbage {
        c.send(g, to);
    }
    // None of that is answered...
    assert!(
        c.recv(Duration::from_millis(300)).is_none(),
        "garbage must not be answered"
    );
    // ...and the reflector still answers: a probe without field 2 (the input
    // that kills the Go reflector) with TOS 0, and a canonical one.
    let mut no_tos = vec![0x0a, 0x0a];
    no_tos.extend_from_slice(b"0123456789");
    no_tos.extend_from_slice(&[0x18, 0x05]);
    c.send(&no_tos, to);
    let reply = c.recv(WAIT).expect("probe without tos answered");
    assert_eq!(reply.payload, no_tos);
    assert_eq!(reply.tos, Some(0));
    let probe = canonical_probe(*b"abcdefghij", 0xb8, 42);
    c.send(&probe, to);
    let reply = c.recv(WAIT).expect("canonical probe answered");
    assert_eq!(reply.payload, probe);
    assert_eq!(reply.tos, Some(0xb8));
    assert_eq!(reply.ttl, Some(64));
    assert_eq!(reply.from, to, "reply from the probed address and port");
    let stats = wait_stats(&r, |s| s.reflected == 2);
    assert_eq!(stats.reflected, 2);
    // The loopback may drop under pressure; what arrived was judged right.
    assert_eq!(stats.not_probe, stats.received - 2);
    assert!(stats.received > 100, "{stats:?}");
    assert_eq!(stats.truncated, 0);
}

#[test]
fn tos_per_reply_and_ttl_64() {
    let r = loopback_reflector();
    let to = SocketAddr::new(LOCALHOST, r.port());
    let c = Client::bind(SocketAddr::new(LOCALHOST, 0));
    // Interleaved TOS values: each reply carries its own probe's.
    for round in 0..3 {
        for tos in [0u8, 0x20, 0xb8, 0x04] {
            let probe = canonical_probe([round; 10], tos, u64::from(tos));
            c.send(&probe, to);
            let reply = c.recv(WAIT).expect("reply");
            assert_eq!(reply.payload, probe);
            assert_eq!(reply.tos, Some(tos), "tos {tos:#x}");
            assert_eq!(reply.ttl, Some(64));
        }
    }
}

#[test]
fn allowlist_and_rate_limit_change_at_run_time() {
    let r = loopback_reflector();
    let to = SocketAddr::new(LOCALHOST, r.port());
    let c = Client::bind(SocketAddr::new(LOCALHOST, 0));
    // A fresh probe (`sent`) every time: the loop guard answers each once.
    let mut sent = 0;
    let mut probe = || {
        sent += 1;
        canonical_probe(*b"allowlist!", 0, sent)
    };

    r.set_allowlist(Some(Allowlist::new(vec![
        "10.0.0.0/8".parse().expect("cidr"),
    ])));
    c.send(&probe(), to);
    assert!(
        c.recv(Duration::from_millis(500)).is_none(),
        "127.0.0.1 is not in 10/8"
    );
    assert_eq!(
        wait_stats(&r, |s| s.dropped_allowlist == 1).dropped_allowlist,
        1
    );
    r.set_allowlist(Some(Allowlist::new(vec![
        "127.0.0.0/8".parse().expect("cidr"),
    ])));
    c.send(&probe(), to);
    assert!(c.recv(WAIT).is_some(), "127.0.0.1 is in 127/8");
    r.set_allowlist(None);
    c.send(&probe(), to);
    assert!(c.recv(WAIT).is_some(), "no allowlist: everyone");

    // 2,000 probes as fast as possible against 100 pps (burst 10): far fewer
    // come back, but some do.
    r.set_max_pps(100);
    let start = Instant::now();
    for _ in 0..2000 {
        c.send(&probe(), to);
    }
    let sent_for = start.elapsed();
    let replies = c
        .drain(Duration::from_millis(500), Duration::from_secs(10))
        .len();
    let allowed = 10 + (sent_for.as_secs_f64() * 100.0).ceil() as usize + 10;
    assert!(replies >= 1, "the limit must let some through");
    assert!(
        replies <= allowed && replies < 1000,
        "{replies} replies (limit allows ~{allowed})"
    );
    let stats = r.stats();
    assert!(stats.dropped_rate_limit >= 1000, "{stats:?}");
}

#[test]
fn answers_from_the_probed_address_on_a_two_address_host() {
    if !privileged("answers_from_the_probed_address_on_a_two_address_host") {
        return;
    }
    let hosts = TwoHosts::new().expect("namespaces");
    let extra_v4 = Ipv4Addr::new(10, 200, 0, 3);
    let extra_v6: Ipv6Addr = "fd00:11a:a::3".parse().expect("literal");
    hosts
        .right
        .add_addr(&hosts.veth.b, &format!("{extra_v4}/24"))
        .expect("second v4");
    hosts
        .right
        .add_addr(&hosts.veth.b, &format!("{extra_v6}/64"))
        .expect("second v6");
    let reflector = hosts
        .right
        .run(|| UserspaceReflector::spawn(ReflectorOptions::new(8100)))
        .expect("spawn");
    let targets = [
        IpAddr::V4(hosts.right_v4),
        IpAddr::V4(extra_v4),
        IpAddr::V6(hosts.right_v6),
        IpAddr::V6(extra_v6),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    // From the other host for the veth addresses, and from inside for loopback.
    for target in targets {
        let ns = if target.is_loopback() {
            &hosts.right
        } else {
            &hosts.left
        };
        let from = if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let reply = ns.run(|| {
            let c = Client::bind(SocketAddr::new(from, 0));
            let to = SocketAddr::new(target, 8100);
            let probe = canonical_probe(*b"multihomed", 0x20, 7);
            // An unanswered first attempt can be neighbour discovery on a
            // fresh veth; try a few times.
            (0..5).find_map(|_| {
                c.send(&probe, to);
                c.recv(Duration::from_secs(2))
            })
        });
        let reply = reply.unwrap_or_else(|| panic!("no reply from {target}"));
        assert_eq!(
            reply.from,
            SocketAddr::new(target, 8100),
            "reply source for {target}"
        );
        assert_eq!(reply.tos, Some(0x20));
        assert_eq!(reply.ttl, Some(64));
    }
    let stats = reflector.stop();
    assert!(stats.reflected >= targets.len() as u64, "{stats:?}");
}
