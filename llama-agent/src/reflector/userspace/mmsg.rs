//! Batched datagram I/O for the reflector: [`crate::net::mmsg`] on the way
//! in, reading the local address each datagram was sent to (IP_PKTINFO /
//! IPV6_PKTINFO); `sendmmsg` on the way out, with the source address, TOS
//! and TTL of each reply as its own control messages.
//!
//! Replies point straight into the receive buffers: a reflected payload is
//! never copied.

use std::{
    io, mem,
    net::{IpAddr, SocketAddr},
    os::fd::RawFd,
    ptr,
};

use crate::net::{
    cmsg::{self, put as put_cmsg},
    mmsg::{self, BATCH, RecvBatch},
};

/// Receive buffer per datagram: the largest UDP payload fits, so nothing is
/// ever truncated (a truncated probe must not be echoed as a shorter one).
/// The memory is allocated zeroed and only touched pages become resident.
pub const MAX_DATAGRAM: usize = 65536;
/// [`llama_common::REPLY_TTL`] as the `IP_TTL` / `IPV6_HOPLIMIT` control
/// message carries it.
const REPLY_TTL: libc::c_int = llama_common::REPLY_TTL as libc::c_int;

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
    recv: RecvBatch,
    ctrl_out: Vec<cmsg::Buffer>,
    iov_out: Vec<libc::iovec>,
    hdr_out: Vec<libc::mmsghdr>,
    queued: usize,
}

// SAFETY: the raw pointers inside the headers only ever point into this
// struct's own heap buffers (and the receive batch's), which move with it.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value of this plain C struct.
        let zero_hdr = unsafe { mem::zeroed::<libc::mmsghdr>() };
        let zero_iov = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            recv: RecvBatch::new(MAX_DATAGRAM),
            ctrl_out: vec![[0; cmsg::WORDS]; BATCH],
            iov_out: vec![zero_iov; BATCH],
            hdr_out: vec![zero_hdr; BATCH],
            queued: 0,
        }
    }

    /// Blocks until at least one datagram is there (or the socket's receive
    /// timeout passes), then takes up to [`BATCH`]. Returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.queued = 0;
        self.recv.recv(fd, libc::MSG_WAITFORONE)
    }

    /// Metadata of received datagram `i` (< the count `recv` returned);
    /// `None` if the kernel gave a source address we cannot read.
    pub fn received(&self, i: usize) -> Option<Received> {
        let src = self.recv.source(i)?;
        let (dst, ifindex) = self
            .recv
            .cmsgs(i)
            .find_map(|c| c.packet_info())
            .map_or((None, 0), |(addr, ifindex)| (Some(addr), ifindex));
        Some(Received {
            len: self.recv.len(i),
            src,
            dst,
            ifindex,
            truncated: self.recv.truncated(i),
        })
    }

    /// The payload of received datagram `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        self.recv.payload(i)
    }

    /// Queues datagram `i` to go back to its sender, from `from` (the probed
    /// address; `None` lets routing choose), with IP TOS / traffic class
    /// `tos` and TTL / hop limit 64.
    pub fn queue_reply(&mut self, i: usize, info: &Received, from: Option<IpAddr>, tos: u8) {
        let k = self.queued;
        // Not cleared first: the kernel reads each record by its cmsg_len,
        // so what earlier replies left in the padding is never looked at.
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
        let (iov, name, namelen) = self.recv.reply_parts(i);
        self.iov_out[k] = iov;
        let h = &mut self.hdr_out[k];
        h.msg_len = 0;
        h.msg_hdr.msg_name = name;
        h.msg_hdr.msg_namelen = namelen;
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
            match mmsg::send(fd, &mut self.hdr_out[off..self.queued]) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n;
                    off += n;
                }
                Err(err) => {
                    failed += 1;
                    off += 1;
                    first_err.get_or_insert(err);
                }
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
