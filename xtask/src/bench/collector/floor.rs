//! The kernel's floor per probe: a minimal client that sends the
//! collector's canonical probes, from as many sockets to the same targets at
//! the same rate, in `sendmmsg` batches and reads the replies with
//! `recvmmsg`, with no bookkeeping at all (no in-flight table, no
//! timestamps, no summaries). Its CPU per probe is what sending one probe
//! and receiving its reply costs the kernel plus a minimum of user space,
//! measured on the same CPU in the same setup as the collector.
//!
//! It wakes like the collector at high rates: at each slot's deadline, but
//! no sooner than [`WAKE_GAP_NS`] after the previous wake-up, and sends
//! every slot due by then.

use std::{
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::Context;
use llama_agent::net::mmsg::{self, BATCH, RecvBatch};
use llama_common::probe::{self, CANONICAL_MAX_LEN, SIGNATURE_LEN};
use llama_testkit::NetNs;

/// Minimum time between wake-ups: the collector's send window at high
/// rates (`engine::MIN_WAKE_GAP_NS`).
pub const WAKE_GAP_NS: u64 = 250_000;
/// Longest run of datagrams per `sendmmsg`.
const SEND_BATCH: usize = 64;
/// Receive buffer per socket, as the collector's.
const RCVBUF: libc::c_int = 4 << 20;
/// How long replies are awaited after the last send.
const DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct FloorSample {
    pub window: Duration,
    /// Thread CPU (user + system) over the window.
    pub cpu: Duration,
    /// Probes sent in the window.
    pub sent_window: u64,
    /// Slots that fell due in the window: more than `sent_window` when the
    /// client fell behind (it never skips slots, it catches up late).
    pub due_window: u64,
    /// All probes sent and all replies received (after a final drain).
    pub sent: u64,
    pub received: u64,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a live timespec; no remainder wanted with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// User + system CPU of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: all-zero is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the floor client in `ns` on CPU `cpu`: `ports` sockets probing
/// `targets` (UDP `port`) at `rate` probes/s, slot order as the
/// collector's; CPU and counts over `window` after `warmup`, then `tail`
/// more of sending (for [`super::spread`]).
#[allow(clippy::too_many_arguments)]
pub fn run(
    ns: &NetNs,
    cpu: usize,
    targets: &[Ipv4Addr],
    port: u16,
    ports: usize,
    rate: u32,
    warmup: Duration,
    window: Duration,
    tail: Duration,
) -> anyhow::Result<FloorSample> {
    ns.run(|| -> anyhow::Result<FloorSample> {
        super::isolation::pin_self(cpu)?;
        let socks = (0..ports)
            .map(|_| UdpSocket::bind("0.0.0.0:0"))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &socks {
            s.set_nonblocking(true)?;
            // The collector's receive buffer (`socket::RCVBUF`), so that a
            // stall costs both the same.
            let size: libc::c_int = RCVBUF;
            // SAFETY: a live int of the size passed.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        let mut dests: Vec<libc::sockaddr_in> = targets
            .iter()
            .map(|t| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*t).to_be(),
                },
                sin_zero: [0; 8],
            })
            .collect();
        // One canonical probe per slot of a cycle, built once; only the
        // signature changes per send.
        let slots = ports * targets.len();
        let mut bufs = vec![0u8; SEND_BATCH * CANONICAL_MAX_LEN];
        let mut lens = [0usize; SEND_BATCH];
        for (n, len) in lens.iter_mut().enumerate() {
            let buf = &mut bufs[n * CANONICAL_MAX_LEN..(n + 1) * CANONICAL_MAX_LEN];
            *len = probe::encode_canonical(buf, &[0; SIGNATURE_LEN], 0, 0).context("encode")?;
        }
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; SEND_BATCH];
        // SAFETY: all-zero is a valid mmsghdr.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; SEND_BATCH];
        let mut rx = RecvBatch::new(2048);
        let slot_ns = 1e9 / f64::from(rate);
        let start = now_ns() + 1_000_000;
        let measure_from = start + warmup.as_nanos() as u64;
        let measure_to = measure_from + window.as_nanos() as u64;
        let (mut k, mut sent, mut received) = (0u64, 0u64, 0u64);
        let stop = measure_to + tail.as_nanos() as u64;
        let mut at_window = None;
        let mut window_end = None;
        let mut last_wake = 0u64;
        let mut counter = 0u64;
        let deadline = |k: u64| start + (k as f64 * slot_ns) as u64;
        // Slots due by `now` (those with a deadline at or before it).
        let due = |now: u64| ((now - start) as f64 / slot_ns) as u64 + 1;
        loop {
            let next = deadline(k).max(last_wake + WAKE_GAP_NS);
            sleep_until(next);
            let now = now_ns();
            last_wake = now;
            for s in &socks {
                while let Ok(n) = rx.recv(s.as_raw_fd(), libc::MSG_DONTWAIT) {
                    received += n as u64;
                    if n < BATCH {
                        break;
                    }
                }
            }
            if at_window.is_none() && now >= measure_from {
                at_window = Some((thread_cpu(), sent, Instant::now(), due(now)));
            }
            if window_end.is_none() && now >= measure_to {
                window_end = Some((thread_cpu(), sent, Instant::now(), due(now)));
            }
            if now >= stop {
                break;
            }
            // Send every due slot, one `sendmmsg` per run on a socket.
            while deadline(k) <= now {
                let sock = ((k % slots as u64) as usize) / targets.len();
                let mut n = 0;
                while n < SEND_BATCH && deadline(k) <= now {
                    let within = (k % slots as u64) as usize;
                    if within / targets.len() != sock {
                        break;
                    }
                    counter += 1;
                    let mut sig = [0u8; SIGNATURE_LEN];
                    sig[..8].copy_from_slice(&counter.to_le_bytes());
                    let buf = &mut bufs[n * CANONICAL_MAX_LEN..(n + 1) * CANONICAL_MAX_LEN];
                    // The signature follows the two-byte field header.
                    buf[2..2 + SIGNATURE_LEN].copy_from_slice(&sig);
                    let d = &mut dests[within % targets.len()];
                    iovs[n] = libc::iovec {
                        iov_base: buf.as_mut_ptr().cast(),
                        iov_len: lens[n],
                    };
                    let h = &mut hdrs[n];
                    h.msg_hdr.msg_name = (d as *mut libc::sockaddr_in).cast();
                    h.msg_hdr.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    h.msg_hdr.msg_iov = &raw mut iovs[n];
                    h.msg_hdr.msg_iovlen = 1;
                    n += 1;
                    k += 1;
                }
                let mut off = 0;
                while off < n {
                    match mmsg::send(socks[sock].as_raw_fd(), &mut hdrs[off..n]) {
                        Ok(0) => break,
                        Ok(m) => off += m,
                        Err(_) => off += 1,
                    }
                }
                sent += off as u64;
            }
        }
        let (cpu0, sent0, t0, due0) = at_window.context("the window never started")?;
        let (cpu1, sent1, t1, due1) = window_end.context("the window never ended")?;
        let cpu = cpu1 - cpu0;
        let elapsed = t1 - t0;
        let sent_window = sent1 - sent0;
        let until = Instant::now() + DRAIN;
        while Instant::now() < until && received < sent {
            std::thread::sleep(Duration::from_millis(10));
            for s in &socks {
                while let Ok(n) = rx.recv(s.as_raw_fd(), libc::MSG_DONTWAIT) {
                    received += n as u64;
                    if n < BATCH {
                        break;
                    }
                }
            }
        }
        Ok(FloorSample {
            window: elapsed,
            cpu,
            sent_window,
            due_window: due1 - due0,
            sent,
            received,
        })
    })
}
