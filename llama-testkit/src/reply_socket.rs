//! A UDP socket that receives each datagram with the TOS / traffic class and
//! TTL / hop limit it arrived with (IP_RECVTOS, IP_RECVTTL, IPV6_RECVTCLASS,
//! IPV6_RECVHOPLIMIT): how a test looks at a reflector's replies, from the
//! agent's tests and from the VM checks in xtask alike.

use std::{
    io::{self, IoSliceMut},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use nix::{
    cmsg_space,
    errno::Errno,
    sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt,
        sockopt::{IpRecvTos, Ipv4RecvTtl, Ipv6RecvHopLimit, Ipv6RecvTClass},
    },
};

/// The largest UDP payload: nothing a reflector sends is truncated.
const MAX_DATAGRAM: usize = 65536;

/// One received datagram.
#[derive(Debug, Clone)]
pub struct Reply {
    pub payload: Vec<u8>,
    pub from: SocketAddr,
    /// TOS (IPv4) or traffic class (IPv6), when the kernel reported it.
    pub tos: Option<u8>,
    /// TTL (IPv4) or hop limit (IPv6), when the kernel reported it.
    pub ttl: Option<u8>,
}

/// A UDP socket asking for the TOS and TTL of what it receives.
#[derive(Debug)]
pub struct ReplySocket {
    socket: UdpSocket,
}

impl ReplySocket {
    /// Binds `addr` (port 0 for any) for the address's family.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        if addr.is_ipv4() {
            setsockopt(&socket, IpRecvTos, &true)?;
            setsockopt(&socket, Ipv4RecvTtl, &true)?;
        } else {
            setsockopt(&socket, Ipv6RecvTClass, &true)?;
            setsockopt(&socket, Ipv6RecvHopLimit, &true)?;
        }
        Ok(Self { socket })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn send_to(&self, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(payload, to)
    }

    /// The next datagram that arrives before `deadline`, or `None`.
    pub fn recv_before(&self, deadline: Instant) -> io::Result<Option<Reply>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            // A zero read timeout would mean "block forever".
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut ctrl = cmsg_space!(libc::c_int, libc::c_int);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<SockaddrStorage>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut ctrl),
                MsgFlags::empty(),
            ) {
                Ok(m) => m,
                // EAGAIN: the read timeout passed; the loop checks the deadline.
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let (mut tos, mut ttl) = (None, None);
            for c in msg.cmsgs()? {
                match c {
                    ControlMessageOwned::Ipv4Tos(t) => tos = Some(t),
                    ControlMessageOwned::Ipv6TClass(t) => tos = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv6HopLimit(t) => ttl = u8::try_from(t).ok(),
                    _ => {}
                }
            }
            let from = msg.address.as_ref().and_then(socket_addr).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a datagram without a source address",
                )
            })?;
            let len = msg.bytes;
            return Ok(Some(Reply {
                payload: buf[..len].to_vec(),
                from,
                tos,
                ttl,
            }));
        }
    }
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn receives_with_the_senders_address_tos_and_ttl_over_loopback() {
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let Ok(rx) = ReplySocket::bind(SocketAddr::new(ip, 0)) else {
                continue; // no IPv6 loopback in this sandbox
            };
            let tx = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
            tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
            let r = rx
                .recv_before(Instant::now() + Duration::from_secs(10))
                .unwrap()
                .expect("a datagram");
            assert_eq!(r.payload, b"hello");
            assert_eq!(r.from, tx.local_addr().unwrap());
            assert_eq!(r.tos, Some(0), "{ip}");
            assert!(r.ttl.is_some_and(|t| t > 0), "{ip}: {:?}", r.ttl);
        }
    }

    #[test]
    fn nothing_before_the_deadline_is_none() {
        let rx = ReplySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = rx
            .recv_before(Instant::now() + Duration::from_millis(20))
            .unwrap();
        assert!(got.is_none());
    }
}
