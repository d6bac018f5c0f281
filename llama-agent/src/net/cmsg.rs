//! Control messages (`cmsghdr` records) in a datagram's control buffer:
//! walking the ones the kernel wrote on receive, decoding the kinds llama
//! reads, and writing the ones a reply carries.
//!
//! Buffers are arrays of `u64` so that every `cmsghdr` in them is aligned;
//! records are read and written with unaligned copies all the same, so a
//! corrupt length can never make a reference misaligned or reach past the
//! buffer.

use std::{
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ptr,
};

use super::timespec_ns;

/// Words of control space per datagram: room for a receive timestamp
/// (`scm_timestamping`, three timespecs), the TOS / traffic class, the TTL /
/// hop limit and the packet info the kernel adds (at most 152 bytes, see
/// the `room_for_what_a_probe_socket_receives` test), or for the three
/// messages a reply carries.
pub const WORDS: usize = 32;

/// One datagram's control space.
pub type Buffer = [u64; WORDS];

/// The byte length of a [`Buffer`], as `msg_controllen` wants it.
pub const BUFFER_LEN: usize = WORDS * 8;

fn bytes(buf: &Buffer) -> &[u8; BUFFER_LEN] {
    // SAFETY: same size; u8 has no alignment or validity requirement.
    unsafe { &*(buf as *const Buffer).cast() }
}

fn bytes_mut(buf: &mut Buffer) -> &mut [u8; BUFFER_LEN] {
    // SAFETY: as in `bytes`.
    unsafe { &mut *(buf as *mut Buffer).cast() }
}

/// `CMSG_LEN(0)`: the header's size including its padding.
fn header_len() -> usize {
    // SAFETY: CMSG_LEN is pure arithmetic.
    unsafe { libc::CMSG_LEN(0) as usize }
}

/// `CMSG_SPACE(data_len)`: a record's size including trailing padding.
fn space(data_len: usize) -> usize {
    // SAFETY: CMSG_SPACE is pure arithmetic.
    unsafe { libc::CMSG_SPACE(data_len as libc::c_uint) as usize }
}

/// One control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmsg<'a> {
    pub level: libc::c_int,
    pub kind: libc::c_int,
    pub data: &'a [u8],
}

impl Cmsg<'_> {
    fn read<T: Copy>(&self) -> Option<T> {
        // SAFETY: the length is checked and read_unaligned copes with any
        // alignment; T is one of the plain C structs / integers below, for
        // which any bytes are a valid value.
        (self.data.len() >= mem::size_of::<T>())
            .then(|| unsafe { ptr::read_unaligned(self.data.as_ptr().cast::<T>()) })
    }

    /// The kernel's receive timestamp, ns since the Unix epoch: the software
    /// one of `SO_TIMESTAMPING` (the first of its three timespecs; absent
    /// when zero) or the one of `SO_TIMESTAMPNS`.
    pub fn rx_timestamp_ns(&self) -> Option<u64> {
        if self.level != libc::SOL_SOCKET {
            return None;
        }
        match self.kind {
            libc::SO_TIMESTAMPING => self
                .read::<libc::timespec>()
                .map(|ts| timespec_ns(&ts))
                .filter(|&ns| ns != 0),
            libc::SO_TIMESTAMPNS => self.read::<libc::timespec>().map(|ts| timespec_ns(&ts)),
            _ => None,
        }
    }

    /// The IP TOS (`IP_TOS`, one byte) or IPv6 traffic class
    /// (`IPV6_TCLASS`, an int) the datagram arrived with.
    pub fn tos(&self) -> Option<u8> {
        match (self.level, self.kind) {
            (libc::IPPROTO_IP, libc::IP_TOS) => self.data.first().copied(),
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => self.read::<libc::c_int>().map(|t| t as u8),
            _ => None,
        }
    }

    /// The IP TTL (`IP_TTL`) or IPv6 hop limit (`IPV6_HOPLIMIT`) the
    /// datagram arrived with: both an int, 0–255. A value outside that range
    /// (never written by a kernel) reads as absent rather than truncated.
    pub fn ttl(&self) -> Option<u8> {
        match (self.level, self.kind) {
            (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => self
                .read::<libc::c_int>()
                .and_then(|t| u8::try_from(t).ok()),
            _ => None,
        }
    }

    /// The local address the datagram was sent to and the interface it came
    /// in on (`IP_PKTINFO` / `IPV6_PKTINFO`).
    pub fn packet_info(&self) -> Option<(IpAddr, u32)> {
        match (self.level, self.kind) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                let info = self.read::<libc::in_pktinfo>()?;
                let addr = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                Some((IpAddr::V4(addr), info.ipi_ifindex as u32))
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                let info = self.read::<libc::in6_pktinfo>()?;
                let addr = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                Some((IpAddr::V6(addr), info.ipi6_ifindex))
            }
            _ => None,
        }
    }
}

/// The control messages in the first `len` bytes of `buf`, in order. A
/// record whose length is impossible ends the walk.
pub fn iter(buf: &Buffer, len: usize) -> impl Iterator<Item = Cmsg<'_>> {
    let bytes = bytes(buf);
    let len = len.min(bytes.len());
    let header = header_len();
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset + mem::size_of::<libc::cmsghdr>() > len {
            return None;
        }
        // SAFETY: bounds checked above; read_unaligned for any offset.
        let hdr: libc::cmsghdr = unsafe { ptr::read_unaligned(bytes.as_ptr().add(offset).cast()) };
        let cmsg_len = hdr.cmsg_len as usize;
        if cmsg_len < header || offset + cmsg_len > len {
            return None;
        }
        let data = &bytes[offset + header..offset + cmsg_len];
        offset += space(cmsg_len - header);
        Some(Cmsg {
            level: hdr.cmsg_level,
            kind: hdr.cmsg_type,
            data,
        })
    })
}

/// Appends one control message holding `value` at byte `offset` of `buf`;
/// returns the new end. Panics if `buf` has no room: [`WORDS`] is sized
/// for what a reply carries.
pub fn put<T: Copy>(
    buf: &mut Buffer,
    offset: usize,
    level: libc::c_int,
    kind: libc::c_int,
    value: &T,
) -> usize {
    let data_len = mem::size_of::<T>();
    let (header, record, end) = (
        header_len(),
        header_len() + data_len,
        offset + space(data_len),
    );
    let bytes = bytes_mut(buf);
    assert!(
        end <= bytes.len(),
        "control buffer sized for a reply's messages"
    );
    // Built from zeroes: musl's 64-bit cmsghdr has a padding field that
    // glibc's has not.
    // SAFETY: cmsghdr is plain integers; all zeroes is a valid value.
    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
    hdr.cmsg_len = record as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = kind;
    // SAFETY: bounds asserted above; unaligned writes are fine at any offset.
    unsafe {
        ptr::write_unaligned(bytes.as_mut_ptr().add(offset).cast(), hdr);
        ptr::write_unaligned(bytes.as_mut_ptr().add(offset + header).cast(), *value);
    }
    end
}

/// `ee_info` of a send timestamp taken as the datagram left for the device
/// (`SCM_TSTAMP_SND`; the other kinds are scheduling and ACK timestamps).
const SCM_TSTAMP_SND: u32 = 0;

/// One kernel send timestamp from a socket's error queue
/// (`SO_TIMESTAMPING` with `SOF_TIMESTAMPING_TX_SOFTWARE`,
/// `SOF_TIMESTAMPING_OPT_ID` and `SOF_TIMESTAMPING_OPT_TSONLY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxStamp {
    /// The `OPT_ID` key: the socket's count of timestamped datagrams before
    /// this one.
    pub key: u32,
    /// The software transmit timestamp, CLOCK_REALTIME ns.
    pub ns: u64,
}

impl Cmsg<'_> {
    /// The `sock_extended_err` of an error-queue record (`IP_RECVERR`, or
    /// `IPV6_RECVERR` on an IPv6 socket, IPv4-mapped destinations included).
    /// The kernel may append the offender's address; it is not read.
    pub fn extended_err(&self) -> Option<libc::sock_extended_err> {
        match (self.level, self.kind) {
            (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) => {
                self.read::<libc::sock_extended_err>()
            }
            _ => None,
        }
    }
}

/// The send timestamp an error-queue record carries: a `sock_extended_err`
/// of origin `SO_EE_ORIGIN_TIMESTAMPING`, errno `ENOMSG` and kind
/// `SCM_TSTAMP_SND` plus an `SCM_TIMESTAMPING` with a non-zero software
/// timestamp. Anything else (an ICMP error, another timestamp kind, a
/// truncated or corrupt record) is `None`.
pub fn tx_stamp<'a>(cmsgs: impl Iterator<Item = Cmsg<'a>>) -> Option<TxStamp> {
    let (mut key, mut ns) = (None, None);
    for c in cmsgs {
        if let Some(e) = c.extended_err() {
            let ours = e.ee_errno == libc::ENOMSG as u32
                && e.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING
                && e.ee_info == SCM_TSTAMP_SND;
            if !ours {
                return None;
            }
            key = Some(e.ee_data);
        } else if (c.level, c.kind) == (libc::SOL_SOCKET, libc::SO_TIMESTAMPING) {
            ns = c.rx_timestamp_ns();
        }
    }
    Some(TxStamp { key: key?, ns: ns? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_messages_read_back() {
        let mut buf = [0u64; WORDS];
        let mut len = put(&mut buf, 0, libc::IPPROTO_IP, libc::IP_TOS, &0xb8u8);
        len = put(
            &mut buf,
            len,
            libc::IPPROTO_IPV6,
            libc::IPV6_TCLASS,
            &0x20i32,
        );
        let ts = libc::timespec {
            tv_sec: 3,
            tv_nsec: 4,
        };
        len = put(&mut buf, len, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &ts);
        let info = libc::in_pktinfo {
            ipi_ifindex: 7,
            ipi_spec_dst: libc::in_addr { s_addr: 0 },
            ipi_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::new(10, 0, 0, 1)).to_be(),
            },
        };
        len = put(&mut buf, len, libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        let got: Vec<Cmsg<'_>> = iter(&buf, len).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].tos(), Some(0xb8));
        assert_eq!(got[1].tos(), Some(0x20));
        assert_eq!(got[2].rx_timestamp_ns(), Some(3_000_000_004));
        assert_eq!(
            got[3].packet_info(),
            Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7))
        );
        assert_eq!(got[0].rx_timestamp_ns(), None, "kinds are not confused");
    }

    #[test]
    fn ttl_and_hop_limit_read_back_and_reject_bad_data() {
        let mut buf = [0u64; WORDS];
        let mut len = put(&mut buf, 0, libc::IPPROTO_IP, libc::IP_TTL, &63i32);
        len = put(
            &mut buf,
            len,
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &1i32,
        );
        len = put(&mut buf, len, libc::IPPROTO_IP, libc::IP_TOS, &7u8);
        len = put(
            &mut buf,
            len,
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &255i32,
        );
        let got: Vec<Option<u8>> = iter(&buf, len).map(|c| c.ttl()).collect();
        assert_eq!(
            got,
            [Some(63), Some(1), None, Some(255)],
            "TOS is not a TTL"
        );
        assert_eq!(iter(&buf, len).next().and_then(|c| c.tos()), None);
        // Out of range: absent, not truncated to a wrong hop count.
        for bad in [256i32, -1, i32::MAX] {
            let mut buf = [0u64; WORDS];
            let len = put(&mut buf, 0, libc::IPPROTO_IP, libc::IP_TTL, &bad);
            assert_eq!(iter(&buf, len).map(|c| c.ttl()).next(), Some(None), "{bad}");
        }
        // Too short for an int (a corrupt record): absent.
        let mut buf = [0u64; WORDS];
        let len = put(&mut buf, 0, libc::IPPROTO_IP, libc::IP_TTL, &[64u8; 3]);
        let c = iter(&buf, len).next().expect("one record");
        assert_eq!((c.data.len(), c.ttl()), (3, None));
        // Cut off by the length the kernel reported: not read at all.
        let mut buf = [0u64; WORDS];
        put(&mut buf, 0, libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &64i32);
        assert_eq!(iter(&buf, header_len() + 3).count(), 0);
    }

    #[test]
    fn room_for_what_a_probe_socket_receives() {
        // The most a probe socket is sent per datagram: SO_TIMESTAMPING's
        // three timespecs, the TOS (a byte for IPv4, an int for IPv6), the
        // TTL / hop limit and the packet info (the IPv6 one is larger).
        let most = space(3 * mem::size_of::<libc::timespec>())
            + space(mem::size_of::<libc::c_int>())
            + space(mem::size_of::<libc::c_int>())
            + space(mem::size_of::<libc::in6_pktinfo>().max(mem::size_of::<libc::in_pktinfo>()));
        assert!(most <= BUFFER_LEN, "{most} > {BUFFER_LEN}");
    }

    #[test]
    fn a_corrupt_length_ends_the_walk() {
        let mut bad = [0u64; WORDS];
        bad[0] = u64::MAX;
        assert_eq!(iter(&bad, 128).count(), 0);
        // A length past what the kernel said was written is not read.
        let mut buf = [0u64; WORDS];
        let len = put(&mut buf, 0, libc::IPPROTO_IP, libc::IP_TOS, &1i32);
        assert_eq!(iter(&buf, len).count(), 1);
        let record = header_len() + 4;
        assert_eq!(iter(&buf, record - 1).count(), 0);
    }
}

#[cfg(test)]
mod tx_tests {
    use super::*;

    fn err(origin: u8, info: u32, key: u32) -> libc::sock_extended_err {
        libc::sock_extended_err {
            ee_errno: libc::ENOMSG as u32,
            ee_origin: origin,
            ee_type: 0,
            ee_code: 0,
            ee_pad: 0,
            ee_info: info,
            ee_data: key,
        }
    }

    /// A record as the kernel writes it: the timestamps, then the error
    /// (with the offender's address after it on IPv6).
    fn record(
        level: libc::c_int,
        kind: libc::c_int,
        e: libc::sock_extended_err,
    ) -> (Buffer, usize) {
        let mut buf = [0u64; WORDS];
        let ts = [
            libc::timespec {
                tv_sec: 5,
                tv_nsec: 7,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        ];
        let len = put(&mut buf, 0, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &ts);
        let len = if level == libc::IPPROTO_IPV6 {
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct WithOffender(libc::sock_extended_err, libc::sockaddr_in6);
            // SAFETY: all-zero is a valid sockaddr_in6.
            let offender: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            put(&mut buf, len, level, kind, &WithOffender(e, offender))
        } else {
            put(&mut buf, len, level, kind, &e)
        };
        (buf, len)
    }

    #[test]
    fn send_timestamps_decode_on_both_families() {
        let origin = libc::SO_EE_ORIGIN_TIMESTAMPING;
        for (level, kind) in [
            (libc::IPPROTO_IP, libc::IP_RECVERR),
            (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
        ] {
            let (buf, len) = record(level, kind, err(origin, SCM_TSTAMP_SND, 41));
            assert_eq!(
                tx_stamp(iter(&buf, len)),
                Some(TxStamp {
                    key: 41,
                    ns: 5_000_000_007
                })
            );
        }
    }

    #[test]
    fn other_records_and_truncations_are_ignored() {
        let origin = libc::SO_EE_ORIGIN_TIMESTAMPING;
        let ip = (libc::IPPROTO_IP, libc::IP_RECVERR);
        // An ICMP error, a scheduling timestamp, a wrong errno.
        for e in [
            err(libc::SO_EE_ORIGIN_ICMP, SCM_TSTAMP_SND, 1),
            err(origin, 1, 1),
            libc::sock_extended_err {
                ee_errno: libc::ECONNREFUSED as u32,
                ..err(origin, SCM_TSTAMP_SND, 1)
            },
        ] {
            let (buf, len) = record(ip.0, ip.1, e);
            assert_eq!(tx_stamp(iter(&buf, len)), None, "{e:?}");
        }
        // Every truncation of a good record: the error cut short, or gone.
        let (buf, len) = record(ip.0, ip.1, err(origin, SCM_TSTAMP_SND, 1));
        for cut in 0..len {
            assert_eq!(tx_stamp(iter(&buf, cut)), None, "cut at {cut}");
        }
        // A zero software timestamp (only hardware ones) is no timestamp.
        let mut buf = [0u64; WORDS];
        let zero = [libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }; 3];
        let len = put(&mut buf, 0, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &zero);
        let len = put(&mut buf, len, ip.0, ip.1, &err(origin, SCM_TSTAMP_SND, 1));
        assert_eq!(tx_stamp(iter(&buf, len)), None);
    }

    #[test]
    fn corrupt_control_bytes_never_panic() {
        // Deterministic pseudo-random garbage, with plausible headers mixed in.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2_000 {
            let mut buf = [0u64; WORDS];
            for w in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *w = x;
            }
            if round % 2 == 0 {
                let (good, len) = record(
                    libc::IPPROTO_IP,
                    libc::IP_RECVERR,
                    err(libc::SO_EE_ORIGIN_TIMESTAMPING, SCM_TSTAMP_SND, 3),
                );
                buf[..len / 8].copy_from_slice(&good[..len / 8]);
                buf[1] = x & 0xffff_ffff;
            }
            let _ = tx_stamp(iter(&buf, (x % (BUFFER_LEN as u64 + 64)) as usize));
        }
    }
}
