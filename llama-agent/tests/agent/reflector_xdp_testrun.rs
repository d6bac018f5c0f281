//! The XDP program's decisions and output bytes, frame by frame, through
//! BPF_PROG_TEST_RUN: every case states the exact action and, for XDP_TX,
//! the exact reply, built independently and checksummed from scratch by
//! `reflector_support/packets.rs`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU16, Ordering},
};

use ipnet::IpNet;
use llama_agent::xdp::XdpReflector;
use llama_common::{Counter, LogLevel, ReflectorConfig};

use crate::support::{
    packets::{self, Frame, UdpCsum, canonical_probe, parse_frame},
    xdp_ready,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const PORT: u16 = 8100;
const SIG: [u8; 10] = *b"sig0123456";
const SENT: u64 = 1_764_000_000_123_456_789;

fn v4(a: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 0, a))
}

fn v6(a: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x11a, 0xa, 0, 0, 0, 0, a))
}

/// Loads the program, or returns `None` when this test cannot run here.
fn load(test: &str, config: ReflectorConfig) -> Option<XdpReflector> {
    if !xdp_ready(test) {
        return None;
    }
    Some(XdpReflector::load(config).expect("program loads and passes the verifier"))
}

/// A signature of its own for every probe built, as a collector sends them:
/// the loop guard answers each probe once, so a test that wants several
/// answers sends several probes.
fn fresh_sig() -> [u8; 10] {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let mut sig = SIG;
    sig[8..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    sig
}

fn probe_v4(tos_in_probe: u8) -> Frame {
    Frame::udp(
        v4(1),
        v4(2),
        40123,
        PORT,
        canonical_probe(fresh_sig(), tos_in_probe, SENT),
    )
}

fn probe_v6(tos_in_probe: u8) -> Frame {
    Frame::udp(
        v6(1),
        v6(2),
        40123,
        PORT,
        canonical_probe(fresh_sig(), tos_in_probe, SENT),
    )
}

fn counter(r: &XdpReflector, c: Counter) -> u64 {
    r.counters()
        .expect("counters")
        .into_iter()
        .find(|(k, _)| *k == c)
        .map_or(0, |(_, v)| v)
}

/// Runs `frame` once and checks it is reflected as exactly `expected`.
fn assert_reflected(r: &XdpReflector, case: &str, frame: &Frame, expected: &Frame) {
    let input = frame.build();
    let out = r.test_run(&input, 1).expect("test run");
    assert_eq!(out.action, XDP_TX, "{case}: action");
    let want = expected.build();
    assert_eq!(out.output.len(), want.len(), "{case}: length");
    if out.output != want {
        let first = out.output.iter().zip(&want).position(|(a, b)| a != b);
        panic!("{case}: reply bytes differ from the expected reply at offset {first:?}");
    }
}

/// Runs `input` once and checks the action and that the bytes are untouched.
fn assert_untouched(r: &XdpReflector, case: &str, input: &[u8], action: u32) {
    let out = r.test_run(input, 1).expect("test run");
    assert_eq!(out.action, action, "{case}: action");
    assert_eq!(out.output, input, "{case}: bytes must be untouched");
}

#[test]
fn canonical_probes_are_reflected_with_exact_bytes() {
    let Some(r) = load(
        "canonical_probes_are_reflected_with_exact_bytes",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    let mut cases = 0;
    for tos in [0u8, 0x20, 0xb8] {
        for ttl in [1u8, 255] {
            for csum in [UdpCsum::Full, UdpCsum::Zero] {
                for ip_tos_in in [0u8, 0xfc] {
                    let mut f = probe_v4(tos);
                    f.ttl = ttl;
                    f.csum = csum;
                    f.tos = ip_tos_in;
                    let case =
                        format!("ipv4 tos {tos:#x} ttl {ttl} {csum:?} ip tos {ip_tos_in:#x}");
                    assert_reflected(&r, &case, &f, &f.expected_reply(tos));
                    cases += 1;
                }
            }
            let mut f = probe_v6(tos);
            f.ttl = ttl;
            f.tos = 0x04;
            assert_reflected(
                &r,
                &format!("ipv6 tos {tos:#x} hop limit {ttl}"),
                &f,
                &f.expected_reply(tos),
            );
            cases += 1;
        }
    }
    assert_eq!(counter(&r, Counter::Reflected), cases);
}

#[test]
fn replies_carry_valid_checksums_and_swapped_endpoints() {
    let Some(r) = load(
        "replies_carry_valid_checksums_and_swapped_endpoints",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    for (frame, zero) in [
        (probe_v4(0xb8), false),
        (
            Frame {
                csum: UdpCsum::Zero,
                ..probe_v4(0x20)
            },
            true,
        ),
        (probe_v6(0xb8), false),
    ] {
        let input = frame.build();
        let out = r.test_run(&input, 1).expect("run");
        assert_eq!(out.action, XDP_TX);
        let p = parse_frame(&out.output).expect("reply parses");
        assert_eq!((p.src, p.dst), (frame.dst, frame.src));
        assert_eq!((p.src_port, p.dst_port), (frame.dst_port, frame.src_port));
        assert_eq!((p.src_mac, p.dst_mac), (frame.dst_mac, frame.src_mac));
        assert_eq!(p.ttl, 64);
        assert_eq!(p.tos, frame.payload[14]);
        assert!(p.ip_checksum_ok, "IPv4 header checksum must verify");
        assert!(p.udp_checksum_ok, "UDP checksum must verify");
        assert_eq!(
            p.udp_checksum == 0,
            zero,
            "a zero UDP checksum stays zero, others stay non-zero"
        );
        assert_eq!(p.payload, frame.payload, "identical payload");
    }
}

#[test]
fn vlan_tags_and_ipv4_options_are_parsed() {
    let Some(r) = load(
        "vlan_tags_and_ipv4_options_are_parsed",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    let single = vec![(0x8100, 0x0064)];
    let double = vec![(0x88a8, 0x00c8), (0x8100, 0x0064)];
    let qinq = vec![(0x8100, 0x0001), (0x8100, 0x0002)];
    for vlans in [single, double, qinq] {
        for mut f in [probe_v4(0x20), probe_v6(0x20)] {
            f.vlans = vlans.clone();
            let case = format!(
                "{} vlans {:?}",
                if f.src.is_ipv4() { "ipv4" } else { "ipv6" },
                vlans
            );
            assert_reflected(&r, &case, &f, &f.expected_reply(0x20));
        }
    }
    // IHL 6, 8 and 15 (the maximum: 40 bytes of options).
    for opts in [
        vec![0x01, 0x01, 0x01, 0x00],
        vec![0x01; 12],
        [vec![0x01; 39], vec![0x00]].concat(),
    ] {
        let mut f = probe_v4(0xb8);
        f.ip_options = opts.clone();
        f.vlans = vec![(0x8100, 7)];
        assert_reflected(
            &r,
            &format!("ipv4 with {} option bytes", opts.len()),
            &f,
            &f.expected_reply(0xb8),
        );
    }
    // Three tags are more than the program parses: passed up untouched.
    let mut f = probe_v4(0);
    f.vlans = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    assert_untouched(&r, "three vlan tags", &f.build(), XDP_PASS);
}

#[test]
fn other_traffic_is_passed_untouched() {
    let Some(r) = load(
        "other_traffic_is_passed_untouched",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    // Wrong port, both families, and a probe *from* 8100 to another port.
    let mut wrong = probe_v4(0);
    wrong.dst_port = 8101;
    assert_untouched(&r, "ipv4 wrong port", &wrong.build(), XDP_PASS);
    let mut wrong6 = probe_v6(0);
    wrong6.dst_port = 53;
    assert_untouched(&r, "ipv6 wrong port", &wrong6.build(), XDP_PASS);
    let mut reply = probe_v4(0);
    reply.src_port = PORT;
    reply.dst_port = 40123;
    assert_untouched(
        &r,
        "a reply going back to a collector",
        &reply.build(),
        XDP_PASS,
    );

    // ARP request.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&packets::MAC_A);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&packets::MAC_A);
    arp.extend_from_slice(&[10, 200, 0, 1, 0, 0, 0, 0, 0, 0, 10, 200, 0, 2]);
    arp.resize(60, 0);
    assert_untouched(&r, "arp", &arp, XDP_PASS);

    // ICMP echo and TCP to port 8100 carrying a canonical probe as payload:
    // the protocol decides, not the bytes.
    for (proto, name) in [(1u8, "icmp"), (6u8, "tcp to 8100")] {
        let mut f = probe_v4(0);
        f.protocol = proto;
        assert_untouched(&r, name, &f.build(), XDP_PASS);
    }
    let mut icmp6 = probe_v6(0);
    icmp6.protocol = 58;
    assert_untouched(&r, "icmpv6", &icmp6.build(), XDP_PASS);
    assert_eq!(counter(&r, Counter::Reflected), 0);
    assert_eq!(
        counter(&r, Counter::PassNotCanonical),
        0,
        "other traffic is not counted"
    );
}

#[test]
fn unusual_probes_fragments_and_extension_headers_go_to_userspace() {
    let Some(r) = load(
        "unusual_probes_fragments_and_extension_headers_go_to_userspace",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    // Valid probes in a non-canonical encoding: tos before signature, a
    // 12-byte signature, no tos field at all, an empty datagram, garbage.
    let mut reordered = vec![0x12, 0x01, 0x20, 0x0a, 0x0a];
    reordered.extend_from_slice(&SIG);
    let mut long_sig = vec![0x0a, 0x0c];
    long_sig.extend_from_slice(&[7; 12]);
    long_sig.extend_from_slice(&[0x12, 0x01, 0x20]);
    let mut no_tos = vec![0x0a, 0x0a];
    no_tos.extend_from_slice(&SIG);
    no_tos.extend_from_slice(&[0x18, 0x01]);
    let payloads: [(&str, Vec<u8>); 5] = [
        ("tos first", reordered),
        ("12-byte signature", long_sig),
        ("no tos field", no_tos),
        ("empty datagram", Vec::new()),
        ("garbage", vec![0xff; 1400]),
    ];
    for (name, payload) in &payloads {
        for (src, dst) in [(v4(1), v4(2)), (v6(1), v6(2))] {
            let f = Frame::udp(src, dst, 40000, PORT, payload.clone());
            assert_untouched(&r, name, &f.build(), XDP_PASS);
        }
    }
    assert_eq!(
        counter(&r, Counter::PassNotCanonical),
        2 * payloads.len() as u64
    );

    // IPv4 fragments: first (MF) and a later one (offset), with probe bytes.
    for frag in [0x2000u16, 0x0010, 0x2010] {
        let mut f = probe_v4(0);
        f.frag = frag;
        assert_untouched(&r, &format!("fragment {frag:#06x}"), &f.build(), XDP_PASS);
    }
    assert_eq!(counter(&r, Counter::PassFragment), 3);

    // IPv6 with a hop-by-hop options header (8 bytes: next=UDP, len 0, PadN).
    let mut f = probe_v6(0);
    f.v6_ext = Some((0, vec![17, 0, 1, 4, 0, 0, 0, 0]));
    assert_untouched(&r, "ipv6 hop-by-hop", &f.build(), XDP_PASS);
    // ... and a destination options header.
    f.v6_ext = Some((60, vec![17, 0, 1, 4, 0, 0, 0, 0]));
    assert_untouched(&r, "ipv6 destination options", &f.build(), XDP_PASS);
    assert_eq!(counter(&r, Counter::PassIpv6ExtHeaders), 2);

    // Group addresses: broadcast MAC, multicast IPv4 and IPv6 destinations.
    let mut bcast = probe_v4(0);
    bcast.dst_mac = [0xff; 6];
    assert_untouched(&r, "broadcast mac", &bcast.build(), XDP_PASS);
    let mut mcast = probe_v4(0);
    mcast.dst = IpAddr::V4(Ipv4Addr::new(239, 1, 2, 3));
    assert_untouched(&r, "multicast ipv4", &mcast.build(), XDP_PASS);
    let mut mcast6 = probe_v6(0);
    mcast6.dst = "ff02::1".parse().expect("literal");
    assert_untouched(&r, "multicast ipv6", &mcast6.build(), XDP_PASS);
    assert_eq!(counter(&r, Counter::PassNotUnicast), 3);
    assert_eq!(counter(&r, Counter::Reflected), 0);
}

#[test]
fn truncated_frames_are_never_reflected() {
    let Some(r) = load(
        "truncated_frames_are_never_reflected",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    let mut tagged = probe_v4(0x20);
    tagged.vlans = vec![(0x88a8, 1), (0x8100, 2)];
    tagged.ip_options = vec![0x01; 8];
    for frame in [probe_v4(0x20), probe_v6(0x20), tagged] {
        let full = frame.build();
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header,
        // so cut at every length from 14 bytes: every header boundary (VLAN
        // tags, IP header, options, UDP header, probe prefix) and everything
        // in between, up to one byte short of the full frame.
        for len in 14..full.len() {
            let cut = &full[..len];
            let out = r.test_run(cut, 1).expect("test run");
            assert_eq!(out.action, XDP_PASS, "cut at {len} of {}", full.len());
            assert_eq!(out.output, cut, "cut at {len}: untouched");
        }
        // The full frame is reflected, so the cuts were the only problem.
        assert_eq!(r.test_run(&full, 1).expect("run").action, XDP_TX);
    }
    assert_eq!(counter(&r, Counter::Reflected), 3);
}

#[test]
fn allowlist_blocks_and_admits_and_switches_at_run_time() {
    let Some(mut r) = load(
        "allowlist_blocks_and_admits_and_switches_at_run_time",
        ReflectorConfig::new(PORT).with_allowlist(true),
    ) else {
        return;
    };
    let (p4, p6) = (|| probe_v4(0).build(), || probe_v6(0).build());
    let action = |r: &XdpReflector, f: &[u8]| r.test_run(f, 1).expect("run").action;
    // Enabled and empty: nobody is answered.
    assert_eq!(action(&r, &p4()), XDP_DROP);
    assert_eq!(action(&r, &p6()), XDP_DROP);
    // Other prefixes only.
    r.set_allowlist(&[net("10.200.1.0/24"), net("fd00:11a:b::/48")])
        .expect("set");
    assert_eq!(action(&r, &p4()), XDP_DROP);
    assert_eq!(action(&r, &p6()), XDP_DROP);
    // Covering prefixes (host bits in the given address are ignored).
    r.set_allowlist(&[net("10.200.0.77/24"), net("fd00:11a:a::/64")])
        .expect("set");
    assert_eq!(action(&r, &p4()), XDP_TX);
    assert_eq!(action(&r, &p6()), XDP_TX);
    // Exact host entries.
    r.set_allowlist(&[IpNet::from(v4(1)), IpNet::from(v6(1))])
        .expect("set");
    assert_eq!(action(&r, &p4()), XDP_TX);
    assert_eq!(action(&r, &p6()), XDP_TX);
    let mut other = probe_v4(0);
    other.src = v4(3);
    assert_eq!(action(&r, &other.build()), XDP_DROP);
    assert_eq!(counter(&r, Counter::DropAllowlist), 5);
    // Switched off at run time: everyone is answered again.
    let off = r.config().with_allowlist(false);
    r.set_config(off).expect("config");
    assert_eq!(action(&r, &other.build()), XDP_TX);
}

fn net(text: &str) -> IpNet {
    text.parse().expect("prefix literal")
}

#[test]
fn rate_limit_and_port_change_at_run_time() {
    let Some(mut r) = load(
        "rate_limit_and_port_change_at_run_time",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    // A fresh probe each time: the loop guard answers each probe once.
    let p4 = || probe_v4(0).build();
    // Off by default: a burst is fully reflected.
    for _ in 0..50 {
        assert_eq!(r.test_run(&p4(), 1).expect("run").action, XDP_TX);
    }
    // 1 probe per second with a bucket of 3: three back-to-back probes pass,
    // then drops (this loop takes far less than a second).
    let mut limited = r.config();
    limited.max_pps = 1;
    limited.burst = 3;
    r.set_config(limited).expect("config");
    let actions: Vec<u32> = (0..20)
        .map(|_| r.test_run(&p4(), 1).expect("run").action)
        .collect();
    let tx = actions.iter().filter(|a| **a == XDP_TX).count();
    assert!((3..=4).contains(&tx), "admitted {tx} of 20: {actions:?}");
    assert!(actions.iter().all(|a| *a == XDP_TX || *a == XDP_DROP));
    assert_eq!(counter(&r, Counter::DropRateLimit), 20 - tx as u64);
    // Rate 0 switches it off again.
    r.set_config(ReflectorConfig::new(PORT)).expect("config");
    assert_eq!(r.test_run(&p4(), 1).expect("run").action, XDP_TX);

    // The port changes without a reload.
    r.set_config(ReflectorConfig::new(9000)).expect("config");
    assert_untouched(&r, "old port after the change", &p4(), XDP_PASS);
    let mut f = probe_v4(0x20);
    f.dst_port = 9000;
    assert_reflected(&r, "new port", &f, &f.expected_reply(0x20));
    // Port 0 reflects nothing.
    r.set_config(ReflectorConfig::new(0)).expect("config");
    assert_untouched(&r, "port 0", &f.build(), XDP_PASS);
}

#[test]
fn mismatched_lengths_are_not_reflected() {
    let Some(r) = load(
        "mismatched_lengths_are_not_reflected",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    // UDP length larger than the IP packet says.
    let f = probe_v4(0);
    let mut bytes = f.build();
    let udp_len_at = 14 + 20 + 4;
    bytes[udp_len_at..udp_len_at + 2].copy_from_slice(&2000u16.to_be_bytes());
    assert_untouched(&r, "udp length past the frame", &bytes, XDP_PASS);
    // UDP length shorter than a header.
    bytes[udp_len_at..udp_len_at + 2].copy_from_slice(&4u16.to_be_bytes());
    assert_untouched(&r, "udp length below 8", &bytes, XDP_PASS);
    // IHL below 5.
    let mut bytes = f.build();
    bytes[14] = 0x44;
    assert_untouched(&r, "ihl 4", &bytes, XDP_PASS);
    // Not version 4 behind an IPv4 EtherType.
    let mut bytes = f.build();
    bytes[14] = 0x65;
    assert_untouched(&r, "version 6 in ipv4", &bytes, XDP_PASS);
    assert_eq!(counter(&r, Counter::PassMalformed), 4);
}

#[test]
fn loop_guards_drop_probes_from_the_probe_port_and_repeats() {
    let Some(mut r) = load(
        "loop_guards_drop_probes_from_the_probe_port_and_repeats",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    let run = |r: &XdpReflector, f: &[u8]| r.test_run(f, 1).expect("run").action;
    // From the probe port: another reflector's reply, dropped untouched.
    for mut f in [probe_v4(0), probe_v6(0)] {
        f.src_port = PORT;
        assert_untouched(&r, "from the probe port", &f.build(), XDP_DROP);
    }
    assert_eq!(counter(&r, Counter::DropLoopPort), 2);
    // The same probe again: answered once (the default), then dropped.
    for f in [probe_v4(0), probe_v6(0)] {
        let bytes = f.build();
        assert_eq!(run(&r, &bytes), XDP_TX);
        assert_untouched(&r, "repeated", &bytes, XDP_DROP);
        assert_untouched(&r, "repeated", &bytes, XDP_DROP);
        // Another source port, `sent` or signature is another probe.
        let mut other_port = f.clone();
        other_port.src_port += 1;
        assert_eq!(run(&r, &other_port.build()), XDP_TX);
        let mut other_sent = f.clone();
        other_sent.payload =
            canonical_probe(f.payload[2..12].try_into().expect("sig"), 0, SENT + 1);
        assert_eq!(run(&r, &other_sent.build()), XDP_TX);
    }
    assert_eq!(counter(&r, Counter::DropRepeated), 4);
    // Three answers per probe when configured so.
    r.set_config(ReflectorConfig::new(PORT).with_answers_per_probe(3))
        .expect("config");
    let bytes = probe_v4(0).build();
    let actions: Vec<u32> = (0..5).map(|_| run(&r, &bytes)).collect();
    assert_eq!(actions, [XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_DROP]);
    // Guards off (benchmark baselines only): everything is answered.
    r.set_config(ReflectorConfig::new(PORT).with_loop_guard(false))
        .expect("config");
    let mut from_port = probe_v4(0);
    from_port.src_port = PORT;
    for _ in 0..3 {
        assert_eq!(run(&r, &bytes), XDP_TX);
        assert_eq!(run(&r, &from_port.build()), XDP_TX);
    }
}

#[test]
fn the_recent_probes_table_is_bounded_and_sized_by_the_loader() {
    if !xdp_ready("the_recent_probes_table_is_bounded_and_sized_by_the_loader") {
        return;
    }
    // Room for 4 probes: the fifth and later push the oldest out, so the
    // first probe is answered again after many others (bounded memory, at
    // the price of forgetting; a loop comes back long before that).
    let object = llama_agent::xdp::embedded_object().expect("embedded");
    let r = XdpReflector::load_object_with(object, ReflectorConfig::new(PORT), 4)
        .expect("loads with a 4-entry table");
    let first = probe_v4(0).build();
    assert_eq!(r.test_run(&first, 1).expect("run").action, XDP_TX);
    assert_eq!(r.test_run(&first, 1).expect("run").action, XDP_DROP);
    for _ in 0..64 {
        assert_eq!(
            r.test_run(&probe_v4(0).build(), 1).expect("run").action,
            XDP_TX
        );
    }
    assert_eq!(
        r.test_run(&first, 1).expect("run").action,
        XDP_TX,
        "forgotten after 64 newer probes in a 4-entry table"
    );
}

#[test]
fn debug_log_is_checked_first_and_limited_per_cpu() {
    let Some(off) = load(
        "debug_log_is_checked_first_and_limited_per_cpu",
        ReflectorConfig::new(PORT),
    ) else {
        return;
    };
    // Off (the default): not even the bucket is consulted.
    for _ in 0..100 {
        assert_eq!(
            off.test_run(&probe_v4(0).build(), 1).expect("run").action,
            XDP_TX
        );
    }
    assert_eq!(counter(&off, Counter::LogSuppressed), 0);

    let config = ReflectorConfig::new(PORT).with_log(LogLevel::Info, 1);
    let r = XdpReflector::load(config).expect("loads with the log on");
    assert_eq!(
        r.config().log_level,
        LogLevel::Info as u8,
        "the log is read"
    );
    // Reflected probes are debug lines: below `info`, nothing is attempted,
    // and the reply is byte for byte what it is without the log.
    for _ in 0..20 {
        let f = probe_v4(0x28);
        assert_reflected(&r, "log on", &f, &f.expected_reply(0x28));
    }
    assert_eq!(counter(&r, Counter::LogSuppressed), 0);
    // Loop-port drops are info lines: at 1 line/s per CPU (burst 1) nearly
    // all of a burst is suppressed, and still dropped as before.
    let started = std::time::Instant::now();
    let mut from_probe_port = probe_v4(0);
    from_probe_port.src_port = PORT;
    for _ in 0..50 {
        let out = r.test_run(&from_probe_port.build(), 1).expect("run");
        assert_eq!(out.action, XDP_DROP);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let most_logged = cpus * (1 + started.elapsed().as_secs() + 1);
    let suppressed = counter(&r, Counter::LogSuppressed);
    assert!(
        suppressed <= 49 && suppressed >= 50u64.saturating_sub(most_logged),
        "suppressed {suppressed} of 50 ({cpus} CPUs)"
    );
    assert_eq!(counter(&r, Counter::DropLoopPort), 50);
}
