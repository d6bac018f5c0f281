//! A test client for the reflector: sends probes and receives replies with
//! the TOS / traffic class and TTL / hop limit they arrived with
//! (IP_RECVTOS, IP_RECVTTL, IPV6_RECVTCLASS, IPV6_RECVHOPLIMIT).
#![allow(dead_code)]

use std::{
    io, mem,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
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

fn setsockopt(fd: i32, level: i32, name: i32, value: i32) {
    // SAFETY: valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {level}/{name}: {}",
        io::Error::last_os_error()
    );
}

impl Client {
    /// Binds `addr` (port 0 for any) and asks for TOS/TTL of arriving datagrams.
    pub fn bind(addr: SocketAddr) -> Self {
        let socket = UdpSocket::bind(addr).expect("bind client");
        let fd = socket.as_raw_fd();
        if addr.is_ipv4() {
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
        } else {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1);
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1);
        }
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
        let mut ctrl = [0u64; 32];
        // SAFETY: zeroed sockaddr_storage is valid.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: zeroed msghdr is valid; fields set below.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&ctrl) as _;
        // SAFETY: all pointers are valid for the call.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &raw mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        let (mut tos, mut ttl) = (None, None);
        // SAFETY: walking the kernel-filled control buffer with the CMSG macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let value = if len >= 4 {
                    std::ptr::read_unaligned(data.cast::<i32>()) as u8
                } else {
                    *data
                };
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_TOS) => tos = Some(value),
                    (libc::IPPROTO_IP, libc::IP_TTL) => ttl = Some(value),
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => tos = Some(value),
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => ttl = Some(value),
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        Ok(Reply {
            payload: buf,
            from: to_std(&name).expect("source address"),
            tos,
            ttl,
        })
    }
}

fn to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: family checked.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family checked.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                0,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
