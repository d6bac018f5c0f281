//! An independent packet builder and checksum implementation for the
//! reflector tests: frames are assembled byte by byte from a description and
//! checksums are computed from scratch (RFC 1071), never incrementally, so a
//! bug in the program's incremental update cannot hide behind the same bug
//! here.

use std::net::IpAddr;

pub const MAC_A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];

/// How the UDP checksum field of a built frame is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpCsum {
    /// Correct checksum over pseudo-header, header and payload.
    Full,
    /// Zero: "no checksum" (IPv4 only).
    Zero,
}

/// Description of one Ethernet frame carrying UDP.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, TCI) of each VLAN tag, outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tos: u8,
    pub ttl: u8,
    /// IPv4 options (a multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    /// IPv4 flags+fragment offset field.
    pub frag: u16,
    /// IPv6 extension headers inserted before UDP: (next header value of
    /// the extension, its bytes). Empty: UDP follows directly.
    pub v6_ext: Option<(u8, Vec<u8>)>,
    /// IP protocol / next header for the transport (17 for UDP).
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub csum: UdpCsum,
    pub payload: Vec<u8>,
    pub ip_id: u16,
    pub flow_label: u32,
}

impl Frame {
    pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, payload: Vec<u8>) -> Self {
        Self {
            dst_mac: MAC_B,
            src_mac: MAC_A,
            vlans: Vec::new(),
            src,
            dst,
            tos: 0,
            ttl: 64,
            ip_options: Vec::new(),
            frag: 0x4000, // DF
            v6_ext: None,
            protocol: 17,
            src_port,
            dst_port,
            csum: UdpCsum::Full,
            payload,
            ip_id: 0x1234,
            flow_label: 0x12345,
        }
    }

    /// What a correct reflector must send back for this probe: everything
    /// swapped, TOS from the probe, TTL 64, checksums recomputed from scratch.
    pub fn expected_reply(&self, tos: u8) -> Self {
        let mut r = self.clone();
        std::mem::swap(&mut r.dst_mac, &mut r.src_mac);
        std::mem::swap(&mut r.src, &mut r.dst);
        std::mem::swap(&mut r.src_port, &mut r.dst_port);
        r.tos = tos;
        r.ttl = 64;
        r
    }

    pub fn build(&self) -> Vec<u8> {
        let mut udp = Vec::with_capacity(8 + self.payload.len());
        udp.extend_from_slice(&self.src_port.to_be_bytes());
        udp.extend_from_slice(&self.dst_port.to_be_bytes());
        udp.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        if self.csum == UdpCsum::Full {
            let c = udp_checksum(self.src, self.dst, &udp);
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, tci) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = (20 + self.ip_options.len()) / 4;
                let mut h = vec![
                    0x40 | ihl as u8,
                    self.tos,
                    0,
                    0,
                    (self.ip_id >> 8) as u8,
                    self.ip_id as u8,
                    (self.frag >> 8) as u8,
                    self.frag as u8,
                    self.ttl,
                    self.protocol,
                    0,
                    0,
                ];
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&self.ip_options);
                let total = (h.len() + udp.len()) as u16;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let vtcf: u32 =
                    (6 << 28) | (u32::from(self.tos) << 20) | (self.flow_label & 0xfffff);
                f.extend_from_slice(&vtcf.to_be_bytes());
                let ext_len = self.v6_ext.as_ref().map_or(0, |(_, b)| b.len());
                f.extend_from_slice(&((ext_len + udp.len()) as u16).to_be_bytes());
                match &self.v6_ext {
                    Some((ext, _)) => f.push(*ext),
                    None => f.push(self.protocol),
                }
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                if let Some((_, bytes)) = &self.v6_ext {
                    f.extend_from_slice(bytes);
                }
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&udp);
        f
    }
}

/// RFC 1071 Internet checksum of `data` (big-endian words, odd byte padded).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

fn sum_words(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The UDP checksum of `udp` (header with a zero checksum field + payload).
/// A computed zero is sent as 0xffff (RFC 768).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => panic!("mixed address families"),
    }
    let c = !fold(sum_words(udp, sum_words(&pseudo, 0)));
    if c == 0 { 0xffff } else { c }
}

/// Whether an IPv4 header (with its checksum field) sums to all ones.
pub fn ipv4_header_valid(header: &[u8]) -> bool {
    fold(sum_words(header, 0)) == 0xffff
}

/// Whether a UDP datagram (header + payload, checksum field as received)
/// verifies; a zero IPv4 checksum means "none" and is accepted.
pub fn udp_valid(src: IpAddr, dst: IpAddr, udp: &[u8]) -> bool {
    let field = u16::from_be_bytes([udp[6], udp[7]]);
    if field == 0 && src.is_ipv4() {
        return true;
    }
    let mut zeroed = udp.to_vec();
    zeroed[6] = 0;
    zeroed[7] = 0;
    udp_checksum(src, dst, &zeroed) == field
}

/// A canonical probe payload as the reference collector sends it:
/// `0a 0a <sig:10> 12 01 <tos> 18 <sent varint> 3a e8 07 <1000 x 00>`.
pub fn canonical_probe(sig: [u8; 10], tos: u8, sent: u64) -> Vec<u8> {
    let mut p = vec![0x0a, 0x0a];
    p.extend_from_slice(&sig);
    p.extend_from_slice(&[0x12, 0x01, tos, 0x18]);
    let mut v = sent;
    while v >= 0x80 {
        p.push((v as u8) | 0x80);
        v >>= 7;
    }
    p.push(v as u8);
    p.extend_from_slice(&[0x3a, 0xe8, 0x07]);
    p.extend(std::iter::repeat_n(0u8, 1000));
    p
}

/// A parsed view of a received frame: enough to check a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tos: u8,
    pub ttl: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_checksum_ok: bool,
    pub udp_checksum_ok: bool,
    pub udp_checksum: u16,
    pub payload: Vec<u8>,
}

/// Parses an untagged Ethernet frame with IPv4/IPv6 + UDP; `None` otherwise.
pub fn parse_frame(f: &[u8]) -> Option<Parsed> {
    if f.len() < 14 {
        return None;
    }
    let mut dst_mac = [0; 6];
    let mut src_mac = [0; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let ip = &f[14..];
    let (src, dst, tos, ttl, udp, ip_ok) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if ip.len() < ihl || ip[9] != 17 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let s: [u8; 4] = ip[12..16].try_into().ok()?;
            let d: [u8; 4] = ip[16..20].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ip[1],
                ip[8],
                ip.get(ihl..total)?,
                ipv4_header_valid(&ip[..ihl]),
            )
        }
        0x86dd => {
            if ip.len() < 40 || ip[6] != 17 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            let tc = (ip[0] << 4) | (ip[1] >> 4);
            (
                IpAddr::from(s),
                IpAddr::from(d),
                tc,
                ip[7],
                ip.get(40..40 + plen)?,
                true,
            )
        }
        _ => return None,
    };
    if udp.len() < 8 {
        return None;
    }
    Some(Parsed {
        dst_mac,
        src_mac,
        src,
        dst,
        tos,
        ttl,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        ip_checksum_ok: ip_ok,
        udp_checksum_ok: udp_valid(src, dst, udp),
        udp_checksum: u16::from_be_bytes([udp[6], udp[7]]),
        payload: udp[8..].to_vec(),
    })
}
