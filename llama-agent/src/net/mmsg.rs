//! Batched receive: one `recvmmsg` fills up to [`BATCH`] preallocated
//! slots, each with its payload buffer, source address and control space.
//! The buffers are allocated once and reused for every call and socket.
//! [`send`] is the matching `sendmmsg` call.

use std::{io, mem, net::SocketAddr, os::fd::RawFd, ptr};

use super::cmsg::{self, Cmsg};

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Receive buffers for one thread.
pub struct RecvBatch {
    /// `BATCH` payload buffers of `buf_len` bytes, back to back.
    bufs: Vec<u8>,
    buf_len: usize,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<cmsg::Buffer>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside the headers only ever point into this
// struct's own heap buffers, which move with it.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("batch", &BATCH)
            .field("buf_len", &self.buf_len)
            .finish()
    }
}

/// An empty address, I/O vector and message header: what each slot of a
/// batch starts as, before its pointers are set for a call.
pub fn empty_slot() -> (libc::sockaddr_storage, libc::iovec, libc::mmsghdr) {
    // SAFETY: all-zero bytes are a valid value of these plain C structs.
    let (name, hdr) = unsafe {
        (
            mem::zeroed::<libc::sockaddr_storage>(),
            mem::zeroed::<libc::mmsghdr>(),
        )
    };
    let iov = libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    };
    (name, iov, hdr)
}

impl RecvBatch {
    /// Slots of `buf_len` payload bytes each; a longer datagram is cut and
    /// flagged [`truncated`](Self::truncated). The memory is allocated
    /// zeroed, so only pages that datagrams touch become resident.
    pub fn new(buf_len: usize) -> Self {
        let (zero_name, zero_iov, zero_hdr) = empty_slot();
        Self {
            bufs: vec![0; BATCH * buf_len],
            buf_len,
            names: vec![zero_name; BATCH],
            ctrl: vec![[0; cmsg::WORDS]; BATCH],
            iovs: vec![zero_iov; BATCH],
            hdrs: vec![zero_hdr; BATCH],
        }
    }

    /// One `recvmmsg` on `fd` with `flags` (`MSG_DONTWAIT`,
    /// `MSG_WAITFORONE`, ...); returns how many slots it filled. Errors are
    /// the system call's, `EAGAIN` included.
    pub fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        // The pointers are rebuilt on every call: it is a few stores, and it
        // keeps this struct free of self-references.
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * buf_len is inside `bufs`.
                iov_base: unsafe { base.add(i * self.buf_len) }.cast(),
                iov_len: self.buf_len,
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &raw mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = cmsg::BUFFER_LEN as _;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that
        // outlive the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                // glibc declares the flags as int, musl as unsigned int.
                flags as _,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Payload length of slot `i` (at most the buffer length).
    pub fn len(&self, i: usize) -> usize {
        (self.hdrs[i].msg_len as usize).min(self.buf_len)
    }

    /// The payload of slot `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = i * self.buf_len;
        &self.bufs[start..start + self.len(i)]
    }

    /// Where slot `i` came from.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        super::socket_addr(&self.names[i], self.hdrs[i].msg_hdr.msg_namelen)
    }

    /// Whether the kernel cut slot `i`'s datagram to fit the buffer.
    pub fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// Whether the kernel cut slot `i`'s control messages to fit.
    pub fn control_truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_CTRUNC != 0
    }

    /// The control messages of slot `i`.
    pub fn cmsgs(&self, i: usize) -> impl Iterator<Item = Cmsg<'_>> {
        // size_t in glibc, socklen_t in musl.
        #[allow(clippy::unnecessary_cast)]
        let len = self.hdrs[i].msg_hdr.msg_controllen as usize;
        cmsg::iter(&self.ctrl[i], len)
    }

    /// Slot `i`'s payload and source address as a reply to it needs them:
    /// `sendmmsg` then sends the received bytes back to the received
    /// address, without copying either. The pointers stay valid until the
    /// next [`recv`](Self::recv) and as long as `self` lives.
    pub fn reply_parts(&mut self, i: usize) -> (libc::iovec, *mut libc::c_void, libc::socklen_t) {
        let len = self.len(i);
        let iov = libc::iovec {
            // SAFETY: i * buf_len is inside `bufs`.
            iov_base: unsafe { self.bufs.as_mut_ptr().add(i * self.buf_len) }.cast(),
            iov_len: len,
        };
        let namelen = self.hdrs[i].msg_hdr.msg_namelen;
        (iov, (&raw mut self.names[i]).cast(), namelen)
    }
}

/// One `sendmmsg` of `hdrs` on `fd` (retried on `EINTR`): how many of them,
/// from the first, the kernel accepted. Fewer than all means the next one
/// failed (its error is what the next call returns); an error means the
/// first one failed and nothing was sent.
pub fn send(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    if hdrs.is_empty() {
        return Ok(0);
    }
    let len = hdrs.len().min(libc::c_uint::MAX as usize) as libc::c_uint;
    loop {
        // SAFETY: the caller filled every header with pointers to buffers
        // that outlive the call.
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), len, 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
