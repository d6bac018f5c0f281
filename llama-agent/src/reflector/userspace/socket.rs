//! The reflector's UDP sockets: one per bound address, set up to report the
//! local address of each datagram (IP_PKTINFO / IPV6_RECVPKTINFO) so that
//! replies leave from the probed address.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use nix::sys::socket::{
    setsockopt,
    sockopt::{Ipv4PacketInfo, Ipv6RecvPacketInfo},
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How long a blocked receive waits before the thread checks for `stop`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Opens a UDP socket bound to `addr`.
///
/// SO_REUSEPORT: several reflector threads (and, during a restart, the old
/// and the new agent) share the port; the kernel hands each datagram to
/// exactly one socket, so every probe is still answered once.
/// IPv6 sockets are IPv6-only: IPv4 is served by its own socket with the
/// native IPv4 control messages, and the agent still works on hosts where
/// IPv6 is disabled.
pub fn open(addr: SocketAddr) -> io::Result<Socket> {
    let domain = match addr.ip() {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_read_timeout(Some(POLL_INTERVAL))?;
    // Room for a burst of probes while the thread is descheduled; the kernel
    // caps it at net.core.rmem_max, which is fine.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    match addr.ip() {
        IpAddr::V4(_) => setsockopt(&socket, Ipv4PacketInfo, &true)?,
        IpAddr::V6(_) => {
            socket.set_only_v6(true)?;
            setsockopt(&socket, Ipv6RecvPacketInfo, &true)?;
        }
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}
