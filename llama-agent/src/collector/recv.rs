//! Batched receive: `recvmmsg` into preallocated buffers, with the kernel
//! receive timestamp and the reply's TOS / traffic class read from the
//! control messages. One batch is reused for every socket and every call.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::RawFd,
};

use super::clock::timespec_ns;

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 32;
/// Bytes per datagram buffer: a canonical probe is 1028 bytes; anything
/// that does not fit is flagged truncated and is not ours.
const BUF_LEN: usize = 2048;
/// Control buffer per datagram, in u64 words (cmsg data must be aligned).
const CMSG_WORDS: usize = 32;

/// One received datagram.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub payload: &'a [u8],
    pub from: Option<SocketAddr>,
    /// Kernel receive timestamp, ns since the Unix epoch.
    pub rx_ns: Option<u64>,
    /// The IP TOS / IPv6 traffic class the datagram arrived with.
    pub tos: Option<u8>,
    pub truncated: bool,
}

/// Reusable `recvmmsg` buffers.
pub struct RecvBatch {
    bufs: Vec<u8>,
    cmsgs: Vec<u64>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("batch", &BATCH).finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: all-zero bytes are a valid value of these plain C structs.
        let zero_storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            bufs: vec![0; BATCH * BUF_LEN],
            cmsgs: vec![0; BATCH * CMSG_WORDS],
            addrs: vec![zero_storage; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            hdrs: vec![zero_hdr; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams from the non-blocking socket `fd`;
    /// returns how many (0 when none are waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // The pointers are rebuilt on every call: it is a few stores, and it
        // keeps this struct free of self-references.
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * BUF_LEN..].as_mut_ptr().cast(),
                iov_len: BUF_LEN,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i * CMSG_WORDS..].as_mut_ptr().cast();
            // size_t in glibc, socklen_t in musl.
            h.msg_controllen = (CMSG_WORDS * 8) as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by `self` that
        // outlive the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                // glibc declares the flags as int, musl as unsigned int.
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub fn get(&self, i: usize) -> Datagram<'_> {
        let hdr = &self.hdrs[i];
        let len = (hdr.msg_len as usize).min(BUF_LEN);
        let payload = &self.bufs[i * BUF_LEN..i * BUF_LEN + len];
        let from = sockaddr_to_std(&self.addrs[i], hdr.msg_hdr.msg_namelen);
        let (rx_ns, tos) = parse_cmsgs(&hdr.msg_hdr);
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        Datagram {
            payload,
            from,
            rx_ns,
            tos,
            truncated,
        }
    }
}

fn parse_cmsgs(msg: &libc::msghdr) -> (Option<u64>, Option<u8>) {
    let mut rx = None;
    let mut tos = None;
    // SAFETY: `msg` was filled by recvmmsg; the CMSG_* macros walk its
    // control buffer within msg_controllen, and each payload is read with
    // read_unaligned at the size the kernel documents for its type.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let kind = (*c).cmsg_type;
            let data = libc::CMSG_DATA(c);
            let avail = (*c).cmsg_len as usize - (data as usize - c as usize);
            if level == libc::SOL_SOCKET
                && kind == libc::SO_TIMESTAMPING
                && avail >= size_of::<libc::timespec>()
            {
                // struct scm_timestamping { timespec ts[3]; }: [0] is software.
                let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                let ns = timespec_ns(&ts);
                if ns != 0 {
                    rx = Some(ns);
                }
            } else if level == libc::SOL_SOCKET
                && kind == libc::SO_TIMESTAMPNS
                && avail >= size_of::<libc::timespec>()
            {
                let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                rx = Some(timespec_ns(&ts));
            } else if level == libc::IPPROTO_IP && kind == libc::IP_TOS && avail >= 1 {
                tos = Some(*data);
            } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_TCLASS && avail >= 4 {
                tos = Some(std::ptr::read_unaligned(data.cast::<i32>()) as u8);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    (rx, tos)
}

/// A kernel socket address as a std one, with IPv4-mapped IPv6 addresses
/// (replies to a dual-stack socket) turned back into IPv4.
pub fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(
                ip.to_canonical(),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}
