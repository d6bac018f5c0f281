//! A test client for the reflector: sends probes and receives replies with
//! the TOS / traffic class and TTL / hop limit they arrived with
//! (IP_RECVTOS, IP_RECVTTL, IPV6_RECVTCLASS, IPV6_RECVHOPLIMIT).

use std::{
    io::{self, IoSliceMut},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use nix::{
    cmsg_space,
    sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt,
        sockopt::{IpRecvTos, Ipv4RecvTtl, Ipv6RecvHopLimit, Ipv6RecvTClass},
    },
};

/// One received reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub payload: Vec<u8>,
    pub from: SocketAddr,
    pub tos: Option<u8>,
    pub ttl: Option<u8>,
}

pub struct Client {
    pub socket: UdpSocket,
}

impl Client {
    /// Binds `addr` (port 0 for any) and asks for TOS/TTL of arriving datagrams.
    pub fn bind(addr: SocketAddr) -> Self {
        let socket = UdpSocket::bind(addr).expect("bind client");
        let set = if addr.is_ipv4() {
            setsockopt(&socket, IpRecvTos, &true).and(setsockopt(&socket, Ipv4RecvTtl, &true))
        } else {
            setsockopt(&socket, Ipv6RecvTClass, &true).and(setsockopt(
                &socket,
                Ipv6RecvHopLimit,
                &true,
            ))
        };
        set.expect("ask for the TOS and TTL of replies");
        Self { socket }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    pub fn send(&self, payload: &[u8], to: SocketAddr) {
        self.socket.send_to(payload, to).expect("send");
    }

    /// The next datagram within `timeout`, or `None`.
    pub fn recv(&self, timeout: Duration) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.recv_once() {
                Ok(r) => return Some(r),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Collects replies until `quiet` passes without one or `max` passes.
    pub fn drain(&self, quiet: Duration, max: Duration) -> Vec<Reply> {
        let end = Instant::now() + max;
        let mut out = Vec::new();
        while Instant::now() < end {
            match self.recv(quiet) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    fn recv_once(&self) -> io::Result<Reply> {
        let mut buf = vec![0u8; 65536];
        let mut ctrl = cmsg_space!(libc::c_int, libc::c_int);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut ctrl),
            MsgFlags::empty(),
        )?;
        let (mut tos, mut ttl) = (None, None);
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::Ipv4Tos(t) => tos = Some(t),
                ControlMessageOwned::Ipv6TClass(t) => tos = Some(t as u8),
                ControlMessageOwned::Ipv4Ttl(t) => ttl = Some(t as u8),
                ControlMessageOwned::Ipv6HopLimit(t) => ttl = Some(t as u8),
                _ => {}
            }
        }
        let from = msg
            .address
            .and_then(|a| llama_agent::net::std_addr(&a))
            .expect("source address");
        let n = msg.bytes;
        buf.truncate(n);
        Ok(Reply {
            payload: buf,
            from,
            tos,
            ttl,
        })
    }
}
