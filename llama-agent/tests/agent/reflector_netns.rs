//! The reflector between two network namespaces joined by a veth pair, in
//! XDP native, XDP generic and userspace mode: a sender in one namespace,
//! the reflector in the other. Replies are checked on the wire (raw capture,
//! checksums recomputed independently) and at the socket (TOS, TTL).

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use llama_agent::{
    reflector::{AllowSpec, Mode, Outcome, Reflector, ReflectorSetup},
    xdp::{AttachMode, XdpReflector},
};
use llama_common::{Counter, ReflectorConfig};
use llama_testkit::{NetNs, TwoHosts};

use crate::support::{
    capture::Capture,
    client::Client,
    packets::{canonical_probe, parse_frame},
    xdp_ready,
};

const PORT: u16 = 8100;
const WAIT: Duration = Duration::from_secs(5);

fn ethtool_tx_off(ns: &NetNs, dev: &str) {
    let out = ns
        .exec("ethtool", &["-K", dev, "tx", "off"])
        .expect("run ethtool");
    assert!(
        out.status.success(),
        "ethtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two hosts prepared for every mode: full checksums from both stacks (so
/// captured frames can be verified; native XDP on veth needs it
/// on the sender, docs/development.md), and, for native mode, an XDP program on the peer end
/// (pass-everything: port 0) without which veth drops XDP_TX frames.
struct Setup {
    hosts: TwoHosts,
    _peer: Option<XdpReflector>,
}

fn setup(native_peer: bool) -> Setup {
    let hosts = TwoHosts::new().expect("namespaces");
    ethtool_tx_off(&hosts.left, &hosts.veth.a);
    ethtool_tx_off(&hosts.right, &hosts.veth.b);
    let peer = native_peer.then(|| {
        let a = hosts.veth.a.clone();
        hosts.left.run(|| {
            let mut p = XdpReflector::load(ReflectorConfig::new(0)).expect("load peer program");
            p.attach(&a, AttachMode::Native)
                .expect("attach peer program");
            p
        })
    });
    Setup { hosts, _peer: peer }
}

fn start(s: &Setup, mode: Mode, max_pps: u32, allow: AllowSpec) -> Reflector {
    let setup = ReflectorSetup {
        mode,
        interfaces: vec![s.hosts.veth.b.clone()],
        port: PORT,
        max_pps,
        allow,
        answers_per_probe: llama_common::DEFAULT_ANSWERS_PER_PROBE,
        recent_probes: llama_common::DEFAULT_RECENT_PROBES,
        ebpf_log: llama_common::LogLevel::Off,
        ebpf_log_rate: llama_common::DEFAULT_EBPF_LOG_RATE,
    };
    s.hosts
        .right
        .run(|| Reflector::start(&setup))
        .expect("reflector starts")
}

fn xdp_counter(r: &Reflector, c: Counter) -> u64 {
    r.xdp_counters()
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| *k == c)
        .map_or(0, |(_, v)| v)
}

fn mac_of(ns: &NetNs, dev: &str) -> [u8; 6] {
    let out = ns
        .ip_output(&["link", "show", "dev", dev])
        .expect("ip link");
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether");
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

/// Sends canonical probes with several TOS values over IPv4 and IPv6 and
/// checks every reply at the socket and on the wire. Returns how many.
fn probe_and_verify(s: &Setup) -> u64 {
    let h = &s.hosts;
    let capture = h.left.run(|| Capture::open(&h.veth.a)).expect("capture");
    let left_mac = mac_of(&h.left, &h.veth.a);
    let right_mac = mac_of(&h.right, &h.veth.b);
    let targets = [
        (IpAddr::V4(h.left_v4), IpAddr::V4(h.right_v4)),
        (IpAddr::V6(h.left_v6), IpAddr::V6(h.right_v6)),
    ];
    let tos_values = [0u8, 0x20, 0xb8];
    let mut client_ports = Vec::new();
    for (local, target) in targets {
        h.left.run(|| {
            let c = Client::bind(SocketAddr::new(local, 0));
            client_ports.push(c.local_addr().port());
            let to = SocketAddr::new(target, PORT);
            for tos in tos_values {
                let probe = canonical_probe([tos; 10], tos, 1_764_000_000_000_000_000);
                c.send(&probe, to);
                let reply = c
                    .recv(WAIT)
                    .unwrap_or_else(|| panic!("no reply from {target} for tos {tos:#x}"));
                assert_eq!(reply.payload, probe, "identical payload");
                assert_eq!(reply.from, to, "from the probed address and port");
                assert_eq!(reply.tos, Some(tos), "TOS asked for");
                assert_eq!(reply.ttl, Some(64), "TTL 64");
            }
        });
    }
    let expected = targets.len() * tos_values.len();
    let frames = capture.collect(expected, WAIT, |f| {
        parse_frame(f).is_some_and(|p| p.src_port == PORT && client_ports.contains(&p.dst_port))
    });
    assert_eq!(frames.len(), expected, "replies seen on the wire");
    for f in frames {
        let p = parse_frame(&f).expect("parsed above");
        assert!(p.ip_checksum_ok, "IPv4 header checksum: {p:?}");
        assert!(p.udp_checksum_ok, "UDP checksum: {p:?}");
        assert_eq!(p.ttl, 64);
        assert_eq!(p.tos, p.payload[14], "TOS = the probe's tos byte");
        assert_eq!((p.src_mac, p.dst_mac), (right_mac, left_mac));
        assert!(
            targets.iter().any(|(l, r)| (p.src, p.dst) == (*r, *l)),
            "swapped addresses"
        );
    }
    expected as u64
}

/// A probe in a valid but non-canonical encoding (no tos field): XDP passes
/// it up and userspace answers with TOS 0.
fn unusual_probe_answered(s: &Setup) {
    let h = &s.hosts;
    h.left.run(|| {
        let c = Client::bind(SocketAddr::new(IpAddr::V4(h.left_v4), 0));
        let mut probe = vec![0x0a, 0x0a];
        probe.extend_from_slice(b"unusual!!!");
        probe.extend_from_slice(&[0x18, 0x01]);
        c.send(&probe, SocketAddr::new(IpAddr::V4(h.right_v4), PORT));
        let reply = c
            .recv(WAIT)
            .expect("non-canonical probe answered by userspace");
        assert_eq!(reply.payload, probe);
        assert_eq!(reply.tos, Some(0));
    });
}

/// Ping (v4 and v6) and a TCP exchange with the reflector host.
fn other_traffic_still_works(s: &Setup) {
    let h = &s.hosts;
    for (flag, addr) in [
        ("-4", h.right_v4.to_string()),
        ("-6", h.right_v6.to_string()),
    ] {
        let out = h
            .left
            .exec("ping", &[flag, "-c", "2", "-i", "0.2", "-W", "5", &addr])
            .expect("run ping");
        assert!(
            out.status.success(),
            "ping {addr}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let listener = h
        .right
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)))
        .expect("tcp listen");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
    });
    let right = h.right_v4;
    let echoed = h.left.run(|| {
        let mut conn = TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(right), PORT), WAIT)
            .expect("connect");
        conn.set_read_timeout(Some(WAIT)).expect("timeout");
        conn.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read echo");
        buf
    });
    assert_eq!(&echoed, b"hello", "TCP to the probe port still works");
    server.join().expect("server thread");
}

fn exercise(mode: Mode, expected: Outcome) {
    let s = setup(mode == Mode::Xdp);
    let r = start(&s, mode, 0, AllowSpec::Anyone);
    assert_eq!(r.outcomes(), &[(s.hosts.veth.b.clone(), expected.clone())]);
    let n = probe_and_verify(&s);
    unusual_probe_answered(&s);
    other_traffic_still_works(&s);
    let via_xdp = xdp_counter(&r, Counter::Reflected);
    let user = r.userspace_stats();
    if matches!(expected, Outcome::Xdp(_)) {
        assert_eq!(via_xdp, n, "every canonical probe answered in XDP");
        assert_eq!(xdp_counter(&r, Counter::PassNotCanonical), 1);
        assert_eq!(
            user.reflected, 1,
            "only the unusual probe reached userspace"
        );
    } else {
        assert_eq!(via_xdp, 0);
        assert_eq!(user.reflected, n + 1);
    }
    let (_, stats) = s.hosts.right.run(move || r.shutdown());
    assert!(stats.send_errors == 0, "{stats:?}");
}

#[test]
fn xdp_native_mode_on_veth() {
    if !xdp_ready("xdp_native_mode_on_veth") {
        return;
    }
    exercise(Mode::Xdp, Outcome::Xdp(AttachMode::Native));
}

#[test]
fn xdp_generic_mode_on_veth() {
    if !xdp_ready("xdp_generic_mode_on_veth") {
        return;
    }
    exercise(Mode::XdpSkb, Outcome::Xdp(AttachMode::Generic));
}

#[test]
fn userspace_mode_on_veth() {
    if !xdp_ready("userspace_mode_on_veth") {
        return;
    }
    exercise(
        Mode::Userspace,
        Outcome::Userspace {
            reason: "--mode userspace".to_owned(),
        },
    );
}

#[test]
fn auto_mode_takes_generic_on_veth() {
    if !xdp_ready("auto_mode_takes_generic_on_veth") {
        return;
    }
    let s = setup(false);
    let r = start(&s, Mode::Auto, 0, AllowSpec::Anyone);
    assert_eq!(
        r.outcomes(),
        &[(s.hosts.veth.b.clone(), Outcome::Xdp(AttachMode::Generic))]
    );
    assert_eq!(probe_and_verify(&s), xdp_counter(&r, Counter::Reflected));
    s.hosts.right.run(move || r.shutdown());
}

/// Sends `count` distinct probes from `from` as fast as the socket takes them and
/// returns how many replies came back.
fn blast(s: &Setup, from: IpAddr, count: usize) -> usize {
    let to = SocketAddr::new(IpAddr::V4(s.hosts.right_v4), PORT);
    s.hosts.left.run(|| {
        let c = Client::bind(SocketAddr::new(from, 0));
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..count {
            if Instant::now() > deadline {
                break;
            }
            // Each its own probe (`sent`): the loop guard answers each once.
            c.send(&canonical_probe(*b"blast12345", 0, i as u64), to);
        }
        c.drain(Duration::from_millis(500), Duration::from_secs(10))
            .len()
    })
}

#[test]
fn allowlist_blocks_and_admits_in_both_paths() {
    if !xdp_ready("allowlist_blocks_and_admits_in_both_paths") {
        return;
    }
    let s = setup(false);
    let other: ipnet::IpNet = "10.200.9.0/24".parse().expect("cidr");
    let mut r = start(&s, Mode::XdpSkb, 0, AllowSpec::Static(vec![other]));
    assert_eq!(
        blast(&s, IpAddr::V4(s.hosts.left_v4), 20),
        0,
        "not on the list"
    );
    assert_eq!(xdp_counter(&r, Counter::DropAllowlist), 20);
    // Extra address on the sender, on the list: admitted; the old one not.
    let admitted = Ipv4Addr::new(10, 200, 0, 77);
    s.hosts
        .left
        .add_addr(&s.hosts.veth.a, &format!("{admitted}/24"))
        .expect("addr");
    let list: Vec<ipnet::IpNet> = vec!["10.200.0.77/32".parse().expect("cidr")];
    r.set_allowlist(Some(&list)).expect("update allowlist");
    assert_eq!(blast(&s, IpAddr::V4(admitted), 20), 20, "on the list");
    assert_eq!(
        blast(&s, IpAddr::V4(s.hosts.left_v4), 20),
        0,
        "still not on the list"
    );
    // Userspace enforces the same list for what XDP passes up.
    let h = &s.hosts;
    let answered = h.left.run(|| {
        let c = Client::bind(SocketAddr::new(IpAddr::V4(h.left_v4), 0));
        let mut probe = vec![0x0a, 0x01, 0x00];
        probe.extend_from_slice(&[0x18, 0x01]);
        c.send(&probe, SocketAddr::new(IpAddr::V4(h.right_v4), PORT));
        c.recv(Duration::from_millis(500)).is_some()
    });
    assert!(!answered, "a non-canonical probe from outside the list");
    assert!(r.userspace_stats().dropped_allowlist >= 1);
    // Off again: everyone.
    r.set_allowlist(None).expect("disable");
    assert_eq!(blast(&s, IpAddr::V4(s.hosts.left_v4), 20), 20);
    s.hosts.right.run(move || r.shutdown());
}

#[test]
fn rate_limit_caps_replies() {
    if !xdp_ready("rate_limit_caps_replies") {
        return;
    }
    let s = setup(false);
    let mut r = start(&s, Mode::XdpSkb, 100, AllowSpec::Anyone);
    let start_at = Instant::now();
    let replies = blast(&s, IpAddr::V4(s.hosts.left_v4), 2000);
    let elapsed = start_at.elapsed().as_secs_f64();
    assert!(replies >= 1, "some probes must get through");
    // Burst 10 plus 100/s over the whole exchange, with slack for timing.
    let ceiling = 10 + (elapsed * 100.0) as usize + 20;
    assert!(
        replies <= ceiling && replies < 1000,
        "{replies} replies in {elapsed:.2}s"
    );
    assert!(xdp_counter(&r, Counter::DropRateLimit) >= 1000);
    // Lifted at run time.
    r.set_max_pps(0).expect("unlimit");
    assert_eq!(blast(&s, IpAddr::V4(s.hosts.left_v4), 50), 50);
    s.hosts.right.run(move || r.shutdown());
}
