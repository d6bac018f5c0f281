//! Batched receive of replies: [`crate::net::mmsg`] with the kernel receive
//! timestamp, the reply's TOS / traffic class and its TTL / hop limit read
//! from the control messages. One batch is reused for every socket and every call.

use std::{io, net::SocketAddr, os::fd::RawFd};

pub use mmsg::BATCH;

use crate::net::mmsg;

/// Bytes per datagram buffer: a canonical probe is 1028 bytes; anything
/// that does not fit is flagged truncated and is not ours.
const BUF_LEN: usize = 2048;

/// One received datagram.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub payload: &'a [u8],
    /// The sender, with an IPv4-mapped IPv6 address (a reply to a
    /// dual-stack socket) as the IPv4 address it carries.
    pub from: Option<SocketAddr>,
    /// Kernel receive timestamp, ns since the Unix epoch.
    pub rx_ns: Option<u64>,
    /// The IP TOS / IPv6 traffic class the datagram arrived with.
    pub tos: Option<u8>,
    /// The IP TTL / IPv6 hop limit the datagram arrived with.
    pub ttl: Option<u8>,
    pub truncated: bool,
}

/// Reusable `recvmmsg` buffers.
#[derive(Debug)]
pub struct RecvBatch(mmsg::RecvBatch);

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self(mmsg::RecvBatch::new(BUF_LEN))
    }

    /// Receives up to [`BATCH`] datagrams from the non-blocking socket `fd`;
    /// returns how many (0 when none are waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        match self.0.recv(fd, libc::MSG_DONTWAIT) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => Ok(0),
            other => other,
        }
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub fn get(&self, i: usize) -> Datagram<'_> {
        let mut rx_ns = None;
        let mut tos = None;
        let mut ttl = None;
        for c in self.0.cmsgs(i) {
            rx_ns = c.rx_timestamp_ns().or(rx_ns);
            tos = c.tos().or(tos);
            ttl = c.ttl().or(ttl);
        }
        Datagram {
            payload: self.0.payload(i),
            from: self
                .0
                .source(i)
                .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())),
            rx_ns,
            tos,
            ttl,
            truncated: self.0.truncated(i),
        }
    }
}
