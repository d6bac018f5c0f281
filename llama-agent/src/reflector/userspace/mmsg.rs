//! Batched datagram I/O with `recvmmsg`/`sendmmsg` and the control messages
//! the reflector needs: the local address each datagram was sent to
//! (IP_PKTINFO / IPV6_PKTINFO) on the way in; the source address, TOS and
//! TTL of each reply on the way out.
//!
//! All buffers live in one [`Batch`] per thread and replies point straight
//! into the receive buffers: a reflected payload is never copied.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::RawFd,
    ptr,
};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: the largest UDP payload fits, so nothing is
/// ever truncated (a truncated probe must not be echoed as a shorter one).
/// The memory is allocated zeroed and only touched pages become resident.
pub const MAX_DATAGRAM: usize = 65536;
/// Room for control messages, in u64s so that `cmsghdr` is aligned.
const CTRL_WORDS: usize = 16;
/// TTL / hop limit of every reply (DESIGN.md A1).
pub const REPLY_TTL: libc::c_int = 64;

/// One received datagram's metadata (the payload stays in the batch).
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub len: usize,
    pub src: SocketAddr,
    /// The address the datagram was sent to, if the kernel told us.
    pub dst: Option<IpAddr>,
    pub ifindex: u32,
    /// The kernel cut the datagram (cannot happen with [`MAX_DATAGRAM`]
    /// buffers, checked anyway).
    pub truncated: bool,
}

/// Receive and send state for one socket's thread.
pub struct Batch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    ctrl_in: Vec<[u64; CTRL_WORDS]>,
    iov_in: Vec<libc::iovec>,
    hdr_in: Vec<libc::mmsghdr>,
    ctrl_out: Vec<[u64; CTRL_WORDS]>,
    iov_out: Vec<libc::iovec>,
    hdr_out: Vec<libc::mmsghdr>,
    queued: usize,
}

// SAFETY: the raw pointers inside the headers only ever point into this
// struct's own heap buffers, which move with it.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_hdr = || unsafe { mem::zeroed::<libc::mmsghdr>() };
        let zero_iov = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            bufs: vec![0u8; BATCH * MAX_DATAGRAM],
            // SAFETY: as above.
            names: vec![unsafe { mem::zeroed() }; BATCH],
            ctrl_in: vec![[0; CTRL_WORDS]; BATCH],
            iov_in: vec![zero_iov; BATCH],
            hdr_in: (0..BATCH).map(|_| zero_hdr()).collect(),
            ctrl_out: vec![[0; CTRL_WORDS]; BATCH],
            iov_out: vec![zero_iov; BATCH],
            hdr_out: (0..BATCH).map(|_| zero_hdr()).collect(),
            queued: 0,
        }
    }

    /// Blocks until at least one datagram is there (or the socket's receive
    /// timeout passes), then takes up to [`BATCH`]. Returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.queued = 0;
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.iov_in[i] = libc::iovec {
                // SAFETY: i * MAX_DATAGRAM is inside `bufs`.
                iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut self.hdr_in[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &raw mut self.iov_in[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrl_in[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = mem::size_of::<[u64; CTRL_WORDS]>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr_in.as_mut_ptr(),
                BATCH as libc::c_uint,
                // glibc declares the flags as int, musl as unsigned int.
                libc::MSG_WAITFORONE as _,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Metadata of received datagram `i` (< the count `recv` returned);
    /// `None` if the kernel gave a source address we cannot read.
    pub fn received(&self, i: usize) -> Option<Received> {
        let h = &self.hdr_in[i];
        let src = sockaddr_to_std(&self.names[i], h.msg_hdr.msg_namelen)?;
        let mut dst = None;
        let mut ifindex = 0;
        // size_t in glibc, socklen_t in musl.
        #[allow(clippy::unnecessary_cast)]
        let control_len = h.msg_hdr.msg_controllen as usize;
        for (level, kind, data) in cmsgs(&self.ctrl_in[i], control_len) {
            match (level, kind) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if data.len() >= mem::size_of::<libc::in_pktinfo>() =>
                {
                    // SAFETY: length checked; read_unaligned copes with any alignment.
                    let info: libc::in_pktinfo =
                        unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
                    dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                    ifindex = info.ipi_ifindex as u32;
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if data.len() >= mem::size_of::<libc::in6_pktinfo>() =>
                {
                    // SAFETY: as above.
                    let info: libc::in6_pktinfo =
                        unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
                    dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    ifindex = info.ipi6_ifindex;
                }
                _ => {}
            }
        }
        Some(Received {
            len: (h.msg_len as usize).min(MAX_DATAGRAM),
            src,
            dst,
            ifindex,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }

    /// The payload of received datagram `i`.
    pub fn payload(&self, i: usize, len: usize) -> &[u8] {
        let start = i * MAX_DATAGRAM;
        &self.bufs[start..start + len.min(MAX_DATAGRAM)]
    }

    /// Queues datagram `i` to go back to its sender, from `from` (the probed
    /// address; `None` lets routing choose), with IP TOS / traffic class
    /// `tos` and TTL / hop limit 64.
    pub fn queue_reply(&mut self, i: usize, info: &Received, from: Option<IpAddr>, tos: u8) {
        let k = self.queued;
        self.ctrl_out[k] = [0; CTRL_WORDS];
        let ctrl = &mut self.ctrl_out[k];
        let tos = libc::c_int::from(tos);
        let mut len = 0;
        match info.src {
            SocketAddr::V4(_) => {
                if let Some(IpAddr::V4(local)) = from {
                    let pktinfo = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(local).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    len = put_cmsg(ctrl, len, libc::IPPROTO_IP, libc::IP_PKTINFO, &pktinfo);
                }
                len = put_cmsg(ctrl, len, libc::IPPROTO_IP, libc::IP_TOS, &tos);
                len = put_cmsg(ctrl, len, libc::IPPROTO_IP, libc::IP_TTL, &REPLY_TTL);
            }
            SocketAddr::V6(_) => {
                if let Some(IpAddr::V6(local)) = from {
                    // Pin the interface only where the address needs it.
                    let scoped = local.is_unicast_link_local();
                    let pktinfo = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: local.octets(),
                        },
                        ipi6_ifindex: if scoped { info.ifindex } else { 0 },
                    };
                    len = put_cmsg(ctrl, len, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pktinfo);
                }
                len = put_cmsg(ctrl, len, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos);
                len = put_cmsg(
                    ctrl,
                    len,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_HOPLIMIT,
                    &REPLY_TTL,
                );
            }
        }
        self.iov_out[k] = libc::iovec {
            // SAFETY: inside `bufs`, as in `recv`.
            iov_base: unsafe { self.bufs.as_mut_ptr().add(i * MAX_DATAGRAM) }.cast(),
            iov_len: info.len,
        };
        let h = &mut self.hdr_out[k];
        h.msg_len = 0;
        h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
        h.msg_hdr.msg_namelen = self.hdr_in[i].msg_hdr.msg_namelen;
        h.msg_hdr.msg_iov = &raw mut self.iov_out[k];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = self.ctrl_out[k].as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = len as _;
        h.msg_hdr.msg_flags = 0;
        self.queued += 1;
    }

    /// Sends every queued reply; returns (sent, failed) and the first error.
    /// A reply the kernel refuses is skipped, the rest still go out.
    pub fn send(&mut self, fd: RawFd) -> (usize, usize, Option<io::Error>) {
        let (mut off, mut sent, mut failed, mut first_err) = (0, 0, 0, None);
        while off < self.queued {
            // SAFETY: headers [off, queued) were filled by queue_reply.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdr_out[off..].as_mut_ptr(),
                    (self.queued - off) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                failed += 1;
                off += 1;
                first_err.get_or_insert(err);
            } else {
                sent += n as usize;
                off += n as usize;
            }
        }
        self.queued = 0;
        (sent, failed, first_err)
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends one control message at byte `offset` of `buf`; returns the new
/// end. `buf` is big enough for the three messages a reply carries.
fn put_cmsg<T: Copy>(
    buf: &mut [u64; CTRL_WORDS],
    offset: usize,
    level: i32,
    kind: i32,
    value: &T,
) -> usize {
    let data_len = mem::size_of::<T>() as libc::c_uint;
    // SAFETY: CMSG_* are pure arithmetic.
    let (space, len, header) = unsafe {
        (
            libc::CMSG_SPACE(data_len) as usize,
            libc::CMSG_LEN(data_len) as usize,
            libc::CMSG_LEN(0) as usize,
        )
    };
    let bytes: &mut [u8; CTRL_WORDS * 8] =
        // SAFETY: same size, u8 has no alignment or validity requirement.
        unsafe { &mut *(buf as *mut [u64; CTRL_WORDS]).cast() };
    assert!(
        offset + space <= bytes.len(),
        "control buffer sized for a reply's messages"
    );
    // Built from zeroes: musl's 64-bit cmsghdr has a padding field that
    // glibc's has not.
    // SAFETY: cmsghdr is plain integers; all zeroes is a valid value.
    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
    hdr.cmsg_len = len as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = kind;
    // SAFETY: bounds asserted above; unaligned writes are fine for any offset.
    unsafe {
        ptr::write_unaligned(bytes.as_mut_ptr().add(offset).cast(), hdr);
        ptr::write_unaligned(bytes.as_mut_ptr().add(offset + header).cast(), *value);
    }
    offset + space
}

/// Iterates the control messages in the first `len` bytes of `buf` as
/// (level, type, data).
fn cmsgs(buf: &[u64; CTRL_WORDS], len: usize) -> impl Iterator<Item = (i32, i32, &[u8])> {
    // SAFETY: same size; u8 has no requirements.
    let bytes: &[u8; CTRL_WORDS * 8] = unsafe { &*(buf as *const [u64; CTRL_WORDS]).cast() };
    let len = len.min(bytes.len());
    // SAFETY: pure arithmetic.
    let header = unsafe { libc::CMSG_LEN(0) } as usize;
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset + mem::size_of::<libc::cmsghdr>() > len {
            return None;
        }
        // SAFETY: bounds checked; read_unaligned for any offset.
        let hdr: libc::cmsghdr = unsafe { ptr::read_unaligned(bytes.as_ptr().add(offset).cast()) };
        let cmsg_len = hdr.cmsg_len as usize;
        if cmsg_len < header || offset + cmsg_len > len {
            return None;
        }
        let data = &bytes[offset + header..offset + cmsg_len];
        // SAFETY: pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE((cmsg_len - header) as libc::c_uint) } as usize;
        offset += space;
        Some((hdr.cmsg_level, hdr.cmsg_type, data))
    })
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in and it is long enough.
            let sin: libc::sockaddr_in =
                unsafe { ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        let mut buf = [0u64; CTRL_WORDS];
        let mut len = put_cmsg(&mut buf, 0, libc::IPPROTO_IP, libc::IP_TOS, &0xb8i32);
        len = put_cmsg(&mut buf, len, libc::IPPROTO_IP, libc::IP_TTL, &64i32);
        let got: Vec<_> = cmsgs(&buf, len)
            .map(|(l, t, d)| {
                (
                    l,
                    t,
                    i32::from_ne_bytes(d[..4].try_into().expect("4 bytes")),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (libc::IPPROTO_IP, libc::IP_TOS, 0xb8),
                (libc::IPPROTO_IP, libc::IP_TTL, 64)
            ]
        );
        // A corrupt length ends the walk instead of reading past the buffer.
        let mut bad = [0u64; CTRL_WORDS];
        bad[0] = u64::MAX;
        assert_eq!(cmsgs(&bad, 128).count(), 0);
    }
}
