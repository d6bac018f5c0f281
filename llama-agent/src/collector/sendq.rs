//! Batched probe sends: the probes of one send turn that go out of the same
//! socket are queued here, encoded into preallocated buffers, and leave in
//! one `sendmmsg` ([`crate::net::mmsg::send`]) instead of one `sendto` each.
//!
//! Only sockets with kernel send timestamps batch: each datagram's RTT then
//! starts at its own timestamp, however many share the call. Without them
//! the send time is the clock read before the call, which for the later
//! datagrams of a batch would be early by the time the earlier ones took;
//! those sockets keep one `sendto` per probe, timed just before it.
//!
//! Everything is allocated once; queueing and sending allocate nothing.

use std::{io, mem, net::SocketAddr, os::fd::RawFd, ptr};

use llama_common::probe::{CANONICAL_MAX_LEN, SIGNATURE_LEN};
use socket2::SockAddr;

use super::summary::Flow;
use crate::net::mmsg;

/// Most probes one `sendmmsg` carries; a longer run on one socket is sent
/// in several calls.
pub const SEND_BATCH: usize = 64;

/// What the engine needs to record a queued probe once the kernel took it.
#[derive(Clone, Copy, Debug)]
pub struct Queued {
    pub sig: [u8; SIGNATURE_LEN],
    pub flow: Flow,
    pub path: u32,
    pub target: SocketAddr,
    pub timeout_ns: u64,
}

/// Up to [`SEND_BATCH`] encoded probes for one socket.
pub struct SendQueue {
    socket: Option<u32>,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    namelens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    entries: Vec<Queued>,
}

// SAFETY: the raw pointers inside the headers only ever point into this
// struct's own heap buffers, which move with it.
unsafe impl Send for SendQueue {}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("socket", &self.socket)
            .field("queued", &self.entries.len())
            .finish()
    }
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl SendQueue {
    pub fn new() -> Self {
        let (zero_name, zero_iov, zero_hdr) = mmsg::empty_slot();
        Self {
            socket: None,
            bufs: vec![0; SEND_BATCH * CANONICAL_MAX_LEN],
            lens: vec![0; SEND_BATCH],
            names: vec![zero_name; SEND_BATCH],
            namelens: vec![0; SEND_BATCH],
            iovs: vec![zero_iov; SEND_BATCH],
            hdrs: vec![zero_hdr; SEND_BATCH],
            entries: Vec::with_capacity(SEND_BATCH),
        }
    }

    /// The socket the queued probes go out of, if any are queued.
    pub fn socket(&self) -> Option<u32> {
        self.socket
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a probe for `socket` can be queued without sending first.
    pub fn accepts(&self, socket: u32) -> bool {
        self.is_empty() || (self.socket == Some(socket) && self.len() < SEND_BATCH)
    }

    /// Whether a queued probe already uses `sig` (it is not in the
    /// in-flight table until it has been sent).
    pub fn holds(&self, sig: &[u8; SIGNATURE_LEN]) -> bool {
        self.entries.iter().any(|q| &q.sig == sig)
    }

    /// The buffer the next probe is encoded into.
    pub fn next_buf(&mut self) -> &mut [u8] {
        let k = self.entries.len().min(SEND_BATCH - 1);
        &mut self.bufs[k * CANONICAL_MAX_LEN..(k + 1) * CANONICAL_MAX_LEN]
    }

    /// Queues the probe encoded in [`next_buf`](Self::next_buf) (`len`
    /// bytes) for `dest` out of `socket`. The caller checks
    /// [`accepts`](Self::accepts) first.
    pub fn push(&mut self, socket: u32, len: usize, dest: &SockAddr, probe: Queued) {
        debug_assert!(self.accepts(socket));
        let k = self.entries.len();
        if k >= SEND_BATCH {
            return;
        }
        let n = (dest.len() as usize).min(mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: both sides are at least `n` bytes long and do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(
                dest.as_ptr().cast::<u8>(),
                (&raw mut self.names[k]).cast::<u8>(),
                n,
            );
        }
        self.namelens[k] = n as libc::socklen_t;
        self.lens[k] = len.min(CANONICAL_MAX_LEN);
        self.socket = Some(socket);
        self.entries.push(probe);
    }

    /// Queued probe `i`.
    pub fn entry(&self, i: usize) -> &Queued {
        &self.entries[i]
    }

    /// Sends queued probes `from..` on `fd` in one `sendmmsg`: how many,
    /// from `from`, the kernel accepted (see [`mmsg::send`]).
    pub fn send(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let end = self.entries.len();
        let base = self.bufs.as_mut_ptr();
        for k in from..end {
            self.iovs[k] = libc::iovec {
                // SAFETY: k * CANONICAL_MAX_LEN is inside `bufs`.
                iov_base: unsafe { base.add(k * CANONICAL_MAX_LEN) }.cast(),
                iov_len: self.lens[k],
            };
            let h = &mut self.hdrs[k];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&raw mut self.names[k]).cast();
            h.msg_hdr.msg_namelen = self.namelens[k];
            h.msg_hdr.msg_iov = &raw mut self.iovs[k];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        mmsg::send(fd, &mut self.hdrs[from..end])
    }

    /// Empties the queue.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.socket = None;
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    fn probe(sig: u8) -> Queued {
        Queued {
            sig: [sig; SIGNATURE_LEN],
            flow: Flow {
                index: 0,
                src_port: 0,
            },
            path: 0,
            target: "127.0.0.1:9".parse().unwrap(),
            timeout_ns: 1,
        }
    }

    #[test]
    fn one_call_sends_every_queued_probe_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = SockAddr::from(rx.local_addr().unwrap());
        let mut q = SendQueue::new();
        for i in 0..5u8 {
            assert!(q.accepts(7));
            q.next_buf()[..3].copy_from_slice(&[i, i, i]);
            q.push(7, 3, &dest, probe(i));
        }
        assert!(!q.accepts(8), "one socket per batch");
        assert!(q.holds(&[3; SIGNATURE_LEN]));
        assert!(!q.holds(&[9; SIGNATURE_LEN]));
        use std::os::fd::AsRawFd;
        assert_eq!(q.send(tx.as_raw_fd(), 0).unwrap(), 5);
        let mut buf = [0u8; 16];
        for i in 0..5u8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i, i, i]);
        }
        q.clear();
        assert!(q.is_empty() && q.accepts(8));
    }

    #[test]
    fn a_full_queue_takes_no_more() {
        let dest = SockAddr::from("127.0.0.1:9".parse::<SocketAddr>().unwrap());
        let mut q = SendQueue::new();
        for i in 0..SEND_BATCH {
            assert!(q.accepts(1));
            q.push(1, 1, &dest, probe(i as u8));
        }
        assert!(!q.accepts(1));
        assert_eq!(q.len(), SEND_BATCH);
    }
}
