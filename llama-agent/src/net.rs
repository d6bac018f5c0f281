//! The datagram plumbing the collector and the userspace reflector share:
//! batched receive with `recvmmsg` ([`mmsg`]), control messages in and out
//! ([`cmsg`]), and kernel socket addresses as std ones.
//!
//! Socket options go through `socket2` and `nix` at their call sites. What
//! is here is what those crates cannot do for a per-packet path: nix's
//! `sendmmsg` attaches one set of control messages to every message of a
//! batch (a reply needs its own source address and TOS), and its owned
//! control-message type allocates for kinds it does not know. So the batch
//! buffers and the control-message walk are ours, bounds-checked, with no
//! allocation or extra system call per datagram.

pub mod cmsg;
pub mod mmsg;

use std::net::SocketAddr;

use nix::sys::socket::{SockaddrLike, SockaddrStorage};

/// A socket address the kernel wrote into `storage` (`len` bytes of it) as
/// a std one; `None` for a family other than IPv4 and IPv6.
pub fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: `storage` is a live sockaddr_storage; nix copies at most `len`
    // bytes of it (refusing a length beyond the storage) and checks the
    // family before reading it as an IPv4 or IPv6 address.
    let addr = unsafe {
        SockaddrStorage::from_raw((storage as *const libc::sockaddr_storage).cast(), Some(len))
    }?;
    std_addr(&addr)
}

/// An IPv4 or IPv6 address nix returned as a std one.
pub fn std_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// A `timespec` as nanoseconds (negative values clamp to 0).
pub fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV6};

    use socket2::SockAddr;

    use super::*;

    fn storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        let sa = SockAddr::from(addr);
        // SAFETY: all-zero is a valid sockaddr_storage; `sa` holds `len`
        // initialised bytes, at most the storage's size.
        unsafe {
            let mut out: libc::sockaddr_storage = std::mem::zeroed();
            std::ptr::copy_nonoverlapping(
                sa.as_ptr().cast::<u8>(),
                (&raw mut out).cast::<u8>(),
                sa.len() as usize,
            );
            (out, sa.len())
        }
    }

    #[test]
    fn kernel_addresses_become_std_ones() {
        for addr in [
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 8100)),
            SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse().expect("literal"),
                40000,
                0,
                3,
            )),
            "[::ffff:10.0.0.1]:9".parse().expect("literal"),
        ] {
            let (ss, len) = storage(addr);
            assert_eq!(socket_addr(&ss, len), Some(addr));
        }
        let (ss, _) = storage("10.0.0.1:1".parse().expect("literal"));
        assert_eq!(socket_addr(&ss, 1), None, "too short for any address");
    }

    #[test]
    fn timespecs_clamp() {
        let ts = libc::timespec {
            tv_sec: 2,
            tv_nsec: 5,
        };
        assert_eq!(timespec_ns(&ts), 2_000_000_005);
        let neg = libc::timespec {
            tv_sec: -1,
            tv_nsec: -1,
        };
        assert_eq!(timespec_ns(&neg), 0);
    }
}
