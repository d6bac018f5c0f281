//! How far actual sends stray from the schedule, seen from outside the
//! sender: a packet socket on the sender's veth end timestamps every probe
//! as it leaves (the kernel's transmit tap, in the sender's own send path),
//! for a short capture. Probe `i` of the capture is due `i` slots after the
//! first, so `offset_i = t_i - i × slot` is its deviation from an evenly
//! paced schedule up to a constant; the spread is reported around the
//! median offset. A probe missing from the capture (a skipped slot) shifts
//! the later ones by a slot, which the captured count shows.

use std::{
    mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::bail;
use llama_testkit::NetNs;

/// Deviations from the schedule, µs, around the median.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    pub captured: usize,
    pub expected: usize,
    pub p1_us: f64,
    pub p99_us: f64,
    pub max_abs_us: f64,
}

/// Captures the UDP datagrams to `port` leaving `dev` in `ns` for
/// `duration` (on CPU `cpu`), expected at `rate` per second.
pub fn capture(
    ns: &NetNs,
    dev: &str,
    cpu: usize,
    port: u16,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Spread> {
    let stamps = ns.run(|| -> anyhow::Result<Vec<i128>> {
        super::isolation::pin_self(cpu)?;
        // ETH_P_ALL: only such sockets see a device's outgoing packets.
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        if fd < 0 {
            bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let fd = sock.as_raw_fd();
        let name = std::ffi::CString::new(dev)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {dev}");
        }
        let one: libc::c_int = 1;
        let rcvbuf: libc::c_int = 256 << 20;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: live option values of the sizes passed.
        unsafe {
            let sz = |n: usize| n as libc::socklen_t;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&raw const one).cast(),
                sz(4),
            );
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const rcvbuf).cast(),
                sz(4),
            );
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                sz(mem::size_of::<libc::timeval>()),
            );
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut ll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = proto;
        ll.sll_ifindex = ifindex as i32;
        // SAFETY: a live sockaddr_ll of the size passed.
        if unsafe {
            libc::bind(
                fd,
                (&raw const ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        } != 0
        {
            bail!("bind packet socket: {}", std::io::Error::last_os_error());
        }
        let mut stamps = Vec::with_capacity(rate as usize * duration.as_secs().max(1) as usize);
        let mut buf = [0u8; 64];
        let mut ctrl = [0u64; 16];
        let end = Instant::now() + duration;
        while Instant::now() < end {
            // SAFETY: all-zero is a valid sockaddr_ll / msghdr.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_name = (&raw mut from).cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctrl.as_mut_ptr().cast();
            msg.msg_controllen = mem::size_of_val(&ctrl) as _;
            // SAFETY: every pointer in `msg` is live for the call.
            let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
            if n < 28
                || from.sll_pkttype != libc::PACKET_OUTGOING
                || from.sll_protocol != (libc::ETH_P_IP as u16).to_be()
            {
                continue;
            }
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if buf[9] != libc::IPPROTO_UDP as u8 || ihl + 4 > buf.len() {
                continue;
            }
            if u16::from_be_bytes([buf[ihl + 2], buf[ihl + 3]]) != port {
                continue;
            }
            // SAFETY: the kernel filled `msg_controllen` bytes of `ctrl`.
            let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            while !c.is_null() {
                // SAFETY: `c` points at a complete header inside `ctrl`.
                let h = unsafe { &*c };
                if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS {
                    // SAFETY: SCM_TIMESTAMPNS carries a timespec.
                    let ts: libc::timespec =
                        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
                    stamps.push(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
                }
                // SAFETY: as above.
                c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
            }
        }
        Ok(stamps)
    })?;
    let slot = 1e9 / f64::from(rate);
    let mut offsets: Vec<f64> = stamps
        .iter()
        .enumerate()
        .map(|(i, t)| (t - stamps[0]) as f64 - i as f64 * slot)
        .collect();
    offsets.sort_by(f64::total_cmp);
    let expected = (duration.as_secs_f64() * f64::from(rate)) as usize;
    if offsets.is_empty() {
        return Ok(Spread {
            expected,
            ..Spread::default()
        });
    }
    let q = |p: f64| offsets[((offsets.len() - 1) as f64 * p) as usize];
    let median = q(0.5);
    let max_abs = offsets
        .iter()
        .map(|o| (o - median).abs())
        .fold(0.0, f64::max);
    Ok(Spread {
        captured: offsets.len(),
        expected,
        p1_us: (q(0.01) - median) / 1e3,
        p99_us: (q(0.99) - median) / 1e3,
        max_abs_us: max_abs / 1e3,
    })
}
