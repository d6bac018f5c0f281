//! No reflection loops: two reflectors in two namespaces, started with the
//! default flags, and ONE forged probe whose source is the other reflector
//! (address and probe port), injected with a raw socket. Without the loop
//! guards the two answer each other forever (about 1.45 M packets/s per
//! direction with XDP); with them, at most a handful of answers happen.
//! XDP native, XDP generic and userspace; same probe port and different
//! ones. Legitimate probes between the two are still all answered.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::Duration,
};

use clap::Parser;
use llama_agent::reflector::{Reflector, flags::ReflectorArgs};
use llama_common::Counter;
use llama_testkit::{NetNs, TwoHosts};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::support::{client::Client, packets::canonical_probe, xdp_ready};

/// How long the test watches for a loop after the forged probe.
const WATCH: Duration = Duration::from_secs(5);
/// "A handful": each reflector may answer the forged probe once
/// (`--answers-per-probe 1`), so two answers in all; allow a little slack
/// for the guards' documented races (two CPUs on the same probe).
const HANDFUL: u64 = 4;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    reflector: ReflectorArgs,
}

/// A reflector in `ns` on `port` with the default flags except the mode and
/// the interface.
fn start(ns: &NetNs, mode: &str, iface: &str, port: u16) -> Reflector {
    let cli =
        Cli::try_parse_from(["test", "--mode", mode, "--interface", iface]).expect("flags parse");
    let setup = cli.reflector.setup(port).expect("default flags are valid");
    ns.run(|| Reflector::start(&setup))
        .unwrap_or_else(|e| panic!("{mode} reflector on {iface}: {e}"))
}

/// Probes answered so far, both paths.
fn answered(r: &Reflector) -> u64 {
    xdp(r, Counter::Reflected) + r.userspace_stats().reflected
}

fn xdp(r: &Reflector, c: Counter) -> u64 {
    r.xdp_counters()
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| *k == c)
        .map_or(0, |(_, v)| v)
}

/// Loop-guard drops so far, both paths: (from the probe port, repeated).
fn guard_drops(r: &Reflector) -> (u64, u64) {
    let u = r.userspace_stats();
    (
        xdp(r, Counter::DropLoopPort) + u.dropped_loop_port,
        xdp(r, Counter::DropRepeated) + u.dropped_repeated,
    )
}

/// Sends one IPv4/UDP datagram with a forged source from the current
/// namespace through a raw socket (the kernel fills in the IP checksum and
/// length; UDP checksum 0, "none", is valid over IPv4).
fn send_forged(src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let udp_len = 8 + payload.len();
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    // IPPROTO_RAW implies IP_HDRINCL: the header above goes out as written.
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw socket");
    let sent = socket
        .send_to(&packet, &SockAddr::from(SocketAddr::V4(dst)))
        .expect("send the forged probe");
    assert_eq!(sent, packet.len());
}

/// One forged probe from A's reflector address to B's, then [`WATCH`] of
/// waiting: the two reflectors together answer at most [`HANDFUL`] times,
/// and a loop guard is seen to act. Then normal probing from A to B still
/// gets every reply.
fn no_loop(test: &str, mode: &str, port_a: u16, port_b: u16) {
    let ready = if mode == "userspace" {
        llama_testkit::privileged(test)
    } else {
        xdp_ready(test)
    };
    if !ready {
        return;
    }
    let h = TwoHosts::new().expect("namespaces");
    if mode == "xdp" {
        // Native XDP on veth answers with the sender's checksum as it is:
        // the stacks must send full checksums (docs/development.md).
        for (ns, dev) in [(&h.left, &h.veth.a), (&h.right, &h.veth.b)] {
            let out = ns
                .exec("ethtool", &["-K", dev, "tx", "off"])
                .expect("ethtool");
            assert!(out.status.success(), "ethtool -K {dev} tx off");
        }
    }
    let a = start(&h.left, mode, &h.veth.a, port_a);
    let b = start(&h.right, mode, &h.veth.b, port_b);
    let addr_a = SocketAddr::new(IpAddr::V4(h.left_v4), port_a);
    let addr_b = SocketAddr::new(IpAddr::V4(h.right_v4), port_b);
    // Resolve the neighbours first, so the forged probe is not the one
    // that waits for ARP.
    for (ns, to) in [(&h.left, h.right_v4), (&h.right, h.left_v4)] {
        ns.run(|| {
            let c = Client::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
            c.send(b"neighbour", SocketAddr::new(IpAddr::V4(to), 9));
        });
    }
    thread::sleep(Duration::from_millis(300));
    let before = answered(&a) + answered(&b);

    let probe = canonical_probe(*b"loop-probe", 0, 1_764_000_000_000_000_000);
    h.left.run(|| send_forged(addr_a, addr_b, &probe));
    thread::sleep(WATCH);

    let total = answered(&a) + answered(&b) - before;
    let (port_drops, repeat_drops) = {
        let (pa, ra) = guard_drops(&a);
        let (pb, rb) = guard_drops(&b);
        (pa + pb, ra + rb)
    };
    assert!(
        total <= HANDFUL,
        "{mode} {port_a}->{port_b}: {total} answers in {WATCH:?} after one forged probe: a reflection loop"
    );
    if port_a == port_b {
        // B refuses it at the first hop: it comes from B's probe port.
        assert_eq!(total, 0, "{mode}: same port, never answered");
        assert!(port_drops >= 1, "{mode}: the port guard acted");
    } else {
        // B answers the forged probe, A answers B's answer, B recognises
        // it: two answers (docs/probe.md).
        assert_eq!(total, 2, "{mode}: B once, A once");
        assert!(repeat_drops >= 1, "{mode}: the repeat guard acted");
    }

    // Normal probing with the same defaults: every probe answered.
    h.left.run(|| {
        let c = Client::bind(SocketAddr::new(IpAddr::V4(h.left_v4), 0));
        for i in 0..20u64 {
            let probe = canonical_probe(*b"legitimate", 0, 1_764_000_000_000_000_000 + i);
            c.send(&probe, addr_b);
            let reply = c
                .recv(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("{mode}: probe {i} to {addr_b} not answered"));
            assert_eq!(reply.payload, probe);
            assert_eq!(reply.from, addr_b);
        }
    });
    h.left.run(move || a.shutdown());
    h.right.run(move || b.shutdown());
}

#[test]
fn no_loop_xdp_generic_same_port() {
    no_loop("no_loop_xdp_generic_same_port", "xdp-skb", 8100, 8100);
}

#[test]
fn no_loop_xdp_generic_different_ports() {
    no_loop("no_loop_xdp_generic_different_ports", "xdp-skb", 8100, 8200);
}

#[test]
fn no_loop_xdp_native_same_port() {
    no_loop("no_loop_xdp_native_same_port", "xdp", 8100, 8100);
}

#[test]
fn no_loop_xdp_native_different_ports() {
    no_loop("no_loop_xdp_native_different_ports", "xdp", 8100, 8200);
}

#[test]
fn no_loop_userspace_same_port() {
    no_loop("no_loop_userspace_same_port", "userspace", 8100, 8100);
}

#[test]
fn no_loop_userspace_different_ports() {
    no_loop("no_loop_userspace_different_ports", "userspace", 8100, 8200);
}
