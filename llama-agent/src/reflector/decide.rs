//! The userspace reflector's per-datagram decision: answer or not, and with
//! which TOS. Pure and allocation-free so it can be fuzzed and run on every
//! datagram of a batch.

use std::net::{IpAddr, SocketAddr};

use llama_common::probe::{self, Probe, ProbeError};

/// What to do with one received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the identical payload back with this IP TOS / traffic class.
    Reflect { tos: u8 },
    /// Do not answer.
    Ignore(Ignore),
}

/// Why a datagram is not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignore {
    /// The payload is not a `llama.Probe` (docs/probe.md).
    NotProbe(ProbeError),
    /// Sent from or to an address we must not answer for: unspecified,
    /// multicast, broadcast, or from port 0. Answering would send from a
    /// group address or towards nowhere.
    NotUnicast,
}

/// Decides about `payload`, received from `src` on local address `dst`
/// (the address the probe was sent to, from IP_PKTINFO/IPV6_PKTINFO).
/// Never panics, whatever the bytes.
pub fn decide(payload: &[u8], src: SocketAddr, dst: IpAddr) -> Decision {
    match judge(payload, src, dst) {
        Ok(p) => Decision::Reflect { tos: p.tos() },
        Err(why) => Decision::Ignore(why),
    }
}

/// [`decide`] with the decoded probe, whose signature and `sent` the loop
/// guard needs ([`super::loopguard`]).
pub fn judge(payload: &[u8], src: SocketAddr, dst: IpAddr) -> Result<Probe<'_>, Ignore> {
    if src.port() == 0 || !is_unicast(src.ip()) || !is_unicast(dst) {
        return Err(Ignore::NotUnicast);
    }
    probe::parse(payload).map_err(Ignore::NotProbe)
}

/// A usable unicast address: not unspecified, multicast or (IPv4) limited
/// broadcast. Subnet broadcasts cannot be recognised without the routing
/// table; the kernel refuses them as a reply source anyway (EINVAL).
pub fn is_unicast(addr: IpAddr) -> bool {
    match addr.to_canonical() {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SocketAddr {
        "10.0.0.1:40000".parse().expect("literal")
    }

    fn dst() -> IpAddr {
        "10.0.0.2".parse().expect("literal")
    }

    #[test]
    fn probe_without_tos_is_answered_with_tos_zero() {
        let mut p = vec![0x0a, 0x0a];
        p.extend_from_slice(b"0123456789");
        assert_eq!(decide(&p, src(), dst()), Decision::Reflect { tos: 0 });
    }

    #[test]
    fn malformed_and_group_traffic_is_ignored() {
        assert!(matches!(
            decide(&[], src(), dst()),
            Decision::Ignore(Ignore::NotProbe(_))
        ));
        assert!(matches!(
            decide(&[0x0a, 0x0a, 1], src(), dst()),
            Decision::Ignore(Ignore::NotProbe(_))
        ));
        let probe = [0x0a, 0x01, 0x00, 0x12, 0x01, 0xb8];
        assert_eq!(
            decide(&probe, src(), dst()),
            Decision::Reflect { tos: 0xb8 }
        );
        for (s, d) in [
            ("10.0.0.1:0", "10.0.0.2"),
            ("0.0.0.0:1", "10.0.0.2"),
            ("10.0.0.1:1", "255.255.255.255"),
            ("10.0.0.1:1", "224.0.0.1"),
            ("[ff02::1]:1", "fd00::1"),
            ("[fd00::1]:1", "ff02::1"),
            ("[::ffff:224.0.0.1]:1", "fd00::1"),
        ] {
            let s: SocketAddr = s.parse().expect("literal");
            let d: IpAddr = d.parse().expect("literal");
            assert_eq!(
                decide(&probe, s, d),
                Decision::Ignore(Ignore::NotUnicast),
                "{s} -> {d}"
            );
        }
    }
}
