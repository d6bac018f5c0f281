//! Probe sockets: one UDP socket per `ports` entry × `count`, bound to the
//! configured `ip:port` with the port's TOS, kernel receive timestamps,
//! IP_RECVTOS and IP_RECVTTL (their IPv6 counterparts on IPv6 sockets), plus
//! the route lookup that names the local address a probe leaves from.
//!
//! A socket bound to a wildcard address (`0.0.0.0` or `::`) is created as a
//! dual-stack IPv6 socket, as Go's `ListenUDP` did for the original
//! collector, so one default config probes IPv4 and IPv6 targets alike. Its
//! source port never changes for the life of the socket: that port is what
//! pins the probes of one socket to one ECMP path.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
};

use nix::sys::socket::{
    TimestampingFlag, setsockopt,
    sockopt::{Ipv4RecvTtl, RcvBufForce, ReceiveTimestampns, SndBufForce, Timestamping},
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::PortSpec;

/// Receive buffer requested per socket: room for tens of milliseconds of
/// replies at 50,000 probes/s should the loop be descheduled.
const RCVBUF: usize = 4 << 20;
const SNDBUF: usize = 1 << 20;

/// Where a reply's receive time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxClock {
    /// SO_TIMESTAMPING with SOF_TIMESTAMPING_RX_SOFTWARE.
    Timestamping,
    /// SO_TIMESTAMPNS.
    TimestampNs,
    /// Neither is available: the clock read after `recvmmsg` returns.
    UserClock,
}

impl RxClock {
    pub fn as_str(self) -> &'static str {
        match self {
            RxClock::Timestamping => "kernel SO_TIMESTAMPING (software)",
            RxClock::TimestampNs => "kernel SO_TIMESTAMPNS",
            RxClock::UserClock => "user clock after recvmmsg",
        }
    }

    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            RxClock::Timestamping => "so_timestamping",
            RxClock::TimestampNs => "so_timestampns",
            RxClock::UserClock => "user_clock",
        }
    }
}

/// Identity of a socket across reconfigurations: a socket whose key is
/// unchanged is kept (same fd, same source port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketKey {
    pub ip: IpAddr,
    pub port: u16,
    pub tos: u8,
    /// Which copy of an identical (ip, port, tos) triple this is.
    pub ordinal: u32,
}

/// An open probe socket.
#[derive(Debug)]
pub struct ProbeSocket {
    pub sock: Socket,
    pub key: SocketKey,
    /// The bound address (with the kernel-chosen port).
    pub local: SocketAddr,
    /// Whether this is an IPv6 socket (IPv4 targets then go as v4-mapped).
    pub is_v6: bool,
    pub rx_clock: RxClock,
    /// Send timestamp keys, when the socket has send timestamps
    /// ([`super::txstamp`]; turned on by the engine after opening).
    pub tx: Option<Box<super::txstamp::Keys>>,
}

impl ProbeSocket {
    /// Opens and configures a socket for `spec`.
    pub fn open(spec: &PortSpec, ordinal: u32) -> io::Result<Self> {
        let key = SocketKey {
            ip: spec.ip,
            port: spec.port,
            tos: spec.tos,
            ordinal,
        };
        let (sock, is_v6) = if spec.ip.is_unspecified() {
            match dual_stack(spec.port) {
                Ok(s) => (s, true),
                // No IPv6 on this host: an IPv4 wildcard still works.
                Err(e) if spec.ip.is_ipv4() => {
                    tracing::debug!("dual-stack socket unavailable ({e}); using IPv4 only");
                    (
                        bind(SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                            spec.port,
                        ))?,
                        false,
                    )
                }
                Err(e) => return Err(e),
            }
        } else {
            (
                bind(SocketAddr::new(spec.ip, spec.port))?,
                spec.ip.is_ipv6(),
            )
        };
        sock.set_nonblocking(true)?;
        // Forcing needs CAP_NET_ADMIN; otherwise take what rmem_max allows.
        if setsockopt(&sock, RcvBufForce, &RCVBUF).is_err() {
            let _ = sock.set_recv_buffer_size(RCVBUF);
        }
        if setsockopt(&sock, SndBufForce, &SNDBUF).is_err() {
            let _ = sock.set_send_buffer_size(SNDBUF);
        }
        let tos = u32::from(spec.tos);
        // A dual-stack socket sends IPv4 with IP_TOS and IPv6 with
        // IPV6_TCLASS, so it needs both; likewise for reading the replies'.
        if is_v6 {
            sock.set_tclass_v6(tos)?;
            sock.set_recv_tclass_v6(true)?;
        }
        if !is_v6 || spec.ip.is_unspecified() {
            sock.set_tos_v4(tos)?;
            sock.set_recv_tos_v4(true)?;
        }
        enable_recv_ttl(&sock, is_v6, !is_v6 || spec.ip.is_unspecified())?;
        let rx_clock = enable_rx_timestamps(&sock);
        let local = sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("probe socket has no IP address"))?;
        Ok(Self {
            sock,
            key,
            local,
            is_v6,
            rx_clock,
            tx: None,
        })
    }

    /// Changes the TOS of a kept socket (the source port stays).
    pub fn set_tos(&mut self, tos: u8) -> io::Result<()> {
        if self.is_v6 {
            self.sock.set_tclass_v6(u32::from(tos))?;
        }
        if !self.is_v6 || self.key.ip.is_unspecified() {
            self.sock.set_tos_v4(u32::from(tos))?;
        }
        self.key.tos = tos;
        Ok(())
    }

    /// The local port probes leave from.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// The address to pass to `sendto` for `dst` on this socket.
    pub fn dest(&self, dst: SocketAddr) -> SockAddr {
        match (self.is_v6, dst) {
            (true, SocketAddr::V4(v4)) => {
                SockAddr::from(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => SockAddr::from(dst),
        }
    }

    /// The local address probes to `dst` leave from: the bound address, or
    /// for a wildcard socket the source the kernel's routing picks (found by
    /// connecting a throw-away socket). `None` when there is no route.
    pub fn source_for(&self, dst: SocketAddr) -> Option<IpAddr> {
        if !self.key.ip.is_unspecified() {
            return Some(self.key.ip);
        }
        let any = match dst {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let probe = UdpSocket::bind(any).ok()?;
        probe.connect(dst).ok()?;
        probe.local_addr().ok().map(|a| a.ip())
    }
}

fn bind(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn dual_stack(port: u16) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_only_v6(false)?;
    sock.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
    Ok(sock)
}

/// The receive clock probe sockets will get on this host (checked on a
/// throw-away socket, so it can be reported before any config is loaded).
pub fn detect_rx_clock() -> RxClock {
    match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .or_else(|_| Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)))
    {
        Ok(s) => enable_rx_timestamps(&s),
        Err(_) => RxClock::UserClock,
    }
}

/// Asks for each reply's TTL / hop limit (the path's hop count is 64 minus
/// it): IPV6_RECVHOPLIMIT on an IPv6 socket, IP_RECVTTL where IPv4 arrives
/// (an IPv4 socket, or a dual-stack one receiving IPv4-mapped replies).
fn enable_recv_ttl(sock: &Socket, v6: bool, v4: bool) -> io::Result<()> {
    if v6 {
        sock.set_recv_hoplimit_v6(true)?;
    }
    if v4 {
        setsockopt(sock, Ipv4RecvTtl, &true)?;
    }
    Ok(())
}

/// Turns on the best kernel receive timestamp available.
fn enable_rx_timestamps(sock: &Socket) -> RxClock {
    let flags = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE;
    if setsockopt(sock, Timestamping, &flags).is_ok() {
        return RxClock::Timestamping;
    }
    if setsockopt(sock, ReceiveTimestampns, &true).is_ok() {
        return RxClock::TimestampNs;
    }
    RxClock::UserClock
}
