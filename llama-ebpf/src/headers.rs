//! Packet headers as the XDP program reads and rewrites them.
//!
//! Every multi-byte field is kept in network byte order exactly as it sits in
//! the packet, and nothing is wider than 16 bits: after the 14-byte Ethernet
//! header the IP header is only 2-byte aligned, so 32-bit fields (addresses)
//! are arrays of `u16` and every access stays naturally aligned.

/// EtherType values (host order; compare against `u16::from_be`).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_UDP: u8 = 17;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u16; 3],
    pub src: [u16; 3],
    pub proto: u16,
}

/// An 802.1Q / 802.1ad tag as it follows the MAC addresses: TCI, then the
/// EtherType of what comes next.
#[repr(C)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and IHL in 32-bit words (low nibble); together
    /// with `tos` this is the first 16-bit word of the header checksum.
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    /// Flags (3 bits) and fragment offset (13 bits).
    pub frag_off: u16,
    /// `ttl` and `protocol` form the fifth checksum word.
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u16; 2],
    pub daddr: [u16; 2],
}

#[repr(C)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub vtc_flow: [u8; 4],
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u16; 8],
    pub daddr: [u16; 8],
}

#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

/// Whether an IPv6 next-header value is an extension header (RFC 8200 and
/// the IANA list) rather than an upper-layer protocol.
#[inline(always)]
pub fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}
