//! Kernel send timestamps: where an RTT starts.
//!
//! With `--tx-timestamps on` (the default) every probe socket asks the
//! kernel for a software transmit timestamp of each datagram
//! (`SOF_TIMESTAMPING_TX_SOFTWARE`), numbered per socket from 0
//! (`SOF_TIMESTAMPING_OPT_ID`) and delivered without the payload
//! (`SOF_TIMESTAMPING_OPT_TSONLY`) on the socket's error queue. The engine
//! reads that queue in batches ([`ErrQueue`]) before it reads replies, maps
//! each timestamp's key back to its probe ([`Keys`]) and replaces the probe's
//! send time, the CLOCK_REALTIME read just before `sendto`, with the
//! kernel's. Both ends of an RTT are then kernel CLOCK_REALTIME software
//! timestamps (the receive one is `SO_TIMESTAMPING`'s too), so neither how
//! long `sendto` takes nor when the loop is scheduled enters it.
//!
//! The key of a datagram is the number of timestamped datagrams the socket
//! sent before it. The kernel counts a datagram when it builds it, so a
//! `sendto` that fails before (no route: `ENETUNREACH`) does not consume a
//! key, one that fails after (a firewall's `EPERM`, a full queue's
//! `ENOBUFS`) does. The collector cannot tell which, so after any failed
//! send it restarts the kernel's count ([`rearm`]: `OPT_ID` off and on sets
//! it to 0) and its own. Keys whose timestamp never comes (a datagram
//! dropped before the device) only leave an unused slot.
//!
//! Sending several datagrams per call (`sendmmsg`) keeps this working: the
//! kernel numbers datagrams, not calls, so each accepted datagram of a batch
//! takes the next key in order ([`Keys::sent`] once per datagram, in batch
//! order), and a batch cut short by an error rearms like a failed `sendto`.
//!
//! A timestamp is only taken when it is plausible for its probe: not before
//! the user-space send time (the clock read before `sendto`), and within the
//! probe's timeout of it; and only while the probe is unanswered. A reply
//! read before its probe's timestamp keeps the user-space send time (the
//! fallback), as does every probe of a socket where the kernel refused the
//! option. Each reply's summary counts which clock started it.

use std::os::fd::AsFd;

use nix::sys::socket::{TimestampingFlag, setsockopt, sockopt::Timestamping};

use super::inflight::Handle;
use crate::net::{
    cmsg::{self, TxStamp},
    mmsg,
};

/// Keys remembered per socket. A timestamp normally arrives within
/// microseconds of its `sendto` and the engine reads the error queue at
/// least every [`DRAIN_EVERY`] sends, so a slot is only reused long after
/// its timestamp could have come; one that comes later still is unknown
/// (its probe keeps the fallback), never matched to the wrong probe.
pub const RING: usize = 1024;
/// Sends on one socket after which the engine reads its error queue even in
/// the middle of a send burst: the queue's entries count against the
/// socket's receive buffer, which the replies need.
pub const DRAIN_EVERY: u32 = 64;
/// Payload room per error-queue entry: `OPT_TSONLY` entries have none.
const ERRQUEUE_BUF_LEN: usize = 64;

/// Whether RTTs start at kernel send timestamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TxTimestamps {
    /// Kernel software transmit timestamps where the kernel allows them.
    #[default]
    On,
    /// The clock read just before `sendto`.
    Off,
}

/// The collector's `--tx-timestamps` flag (`llama-agent run` and
/// `llama-agent collect`).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct TxArgs {
    /// Where an RTT starts: `on` takes the kernel's software transmit
    /// timestamp of each probe (read from the socket's error queue), so the
    /// time `sendto` takes and sending-side scheduling delay are not in the
    /// RTT; `off` takes the clock read just before `sendto`. When the
    /// kernel refuses the option, or a probe's timestamp comes after its
    /// reply, that probe falls back to the clock read (counted per path as
    /// `tx_fallback`).
    #[arg(
        long,
        env = "LLAMA_TX_TIMESTAMPS",
        value_enum,
        value_name = "on|off",
        default_value_t = TxTimestamps::On
    )]
    pub tx_timestamps: TxTimestamps,
}

/// The receive flags the sockets always have (see `socket.rs`).
fn rx_flags() -> TimestampingFlag {
    TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE
}

fn tx_flags() -> TimestampingFlag {
    rx_flags()
        | TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_ID
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_TSONLY
}

/// Turns on send timestamps on a socket that has `SO_TIMESTAMPING` receive
/// timestamps; returns its key ring, or `None` when the kernel refuses
/// (logged once per process).
pub fn enable(sock: &impl AsFd) -> Option<Box<Keys>> {
    match setsockopt(sock, Timestamping, &tx_flags()) {
        Ok(()) => Some(Box::new(Keys::new())),
        Err(e) => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                tracing::warn!(
                    "the kernel refuses send timestamps ({e}): RTTs start at the clock read before sendto"
                );
            });
            None
        }
    }
}

/// Restarts the kernel's key count at 0 (turning `OPT_ID` off and on
/// resets it; the receive flags stay on throughout).
pub fn rearm(sock: &impl AsFd) -> bool {
    let without_id = tx_flags() - TimestampingFlag::SOF_TIMESTAMPING_OPT_ID;
    setsockopt(sock, Timestamping, &without_id).is_ok()
        && setsockopt(sock, Timestamping, &tx_flags()).is_ok()
}

/// Whether send timestamps work on this host with `mode` (checked on a
/// throw-away socket, for the start-up log and the metrics label).
pub fn available(mode: TxTimestamps) -> bool {
    if mode == TxTimestamps::Off {
        return false;
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .or_else(|_| socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None));
    sock.is_ok_and(|s| setsockopt(&s, Timestamping, &tx_flags()).is_ok())
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: u32,
    probe: Option<Handle>,
}

/// One socket's keys: which probe the kernel's n-th timestamped datagram
/// was. A fixed ring indexed by key modulo [`RING`]; nothing allocates
/// after creation.
#[derive(Debug)]
pub struct Keys {
    /// The key the kernel gives the next datagram.
    next: u32,
    slots: Box<[Slot]>,
    /// Sends since the error queue was last found empty (or an `EPOLLERR`
    /// said it has entries): the engine reads it while this is non-zero.
    pub unread: u32,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

impl Keys {
    pub fn new() -> Self {
        Self {
            next: 0,
            slots: vec![Slot::default(); RING].into_boxed_slice(),
            unread: 0,
        }
    }

    /// A datagram of `probe` was accepted by the kernel: it has the next key.
    pub fn sent(&mut self, probe: Handle) {
        let key = self.next;
        self.slots[key as usize % RING] = Slot {
            key,
            probe: Some(probe),
        };
        self.next = key.wrapping_add(1);
        self.unread = self.unread.saturating_add(1);
    }

    /// A datagram was accepted but belongs to no probe record: its key is
    /// used up all the same.
    pub fn skip(&mut self) {
        let key = self.next;
        self.slots[key as usize % RING] = Slot { key, probe: None };
        self.next = key.wrapping_add(1);
        self.unread = self.unread.saturating_add(1);
    }

    /// The probe whose datagram had `key`; `None` for a key never given, one
    /// whose slot has been reused, or one already taken (a duplicate).
    pub fn take(&mut self, key: u32) -> Option<Handle> {
        let slot = &mut self.slots[key as usize % RING];
        if slot.key != key {
            return None;
        }
        slot.probe.take()
    }

    /// Forgets every key and starts again from 0, as [`rearm`] makes the
    /// kernel do.
    pub fn reset(&mut self) {
        self.slots.fill(Slot::default());
        self.next = 0;
    }
}

/// Batched reads of error queues, reused for every socket.
pub struct ErrQueue(mmsg::RecvBatch);

impl std::fmt::Debug for ErrQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrQueue")
    }
}

impl Default for ErrQueue {
    fn default() -> Self {
        Self(mmsg::RecvBatch::new(ERRQUEUE_BUF_LEN))
    }
}

impl ErrQueue {
    /// Reads up to [`mmsg::BATCH`] entries of `fd`'s error queue; how many
    /// (0 when it is empty or on any error).
    pub fn recv(&mut self, fd: std::os::fd::RawFd) -> usize {
        self.0
            .recv(fd, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
            .unwrap_or(0)
    }

    /// The send timestamp of entry `i` of the last [`recv`](Self::recv);
    /// `None` when it is something else or its control data was cut.
    pub fn stamp(&self, i: usize) -> Option<TxStamp> {
        if self.0.control_truncated(i) {
            return None;
        }
        cmsg::tx_stamp(self.0.cmsgs(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_leaves_the_socket_without_send_timestamps() {
        // Not a socket: the kernel refuses SO_TIMESTAMPING (ENOTSOCK), as an
        // old kernel refuses the flags; every call falls back (and the
        // warning is logged once per process).
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        assert!(enable(&r).is_none());
        assert!(enable(&r).is_none());
        assert!(!rearm(&r));
        // A UDP socket takes them.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(enable(&udp).is_some());
        assert!(rearm(&udp));
        assert!(available(TxTimestamps::On) && !available(TxTimestamps::Off));
    }

    #[test]
    fn keys_map_back_to_their_probes_across_wrap_around() {
        let mut k = Keys::new();
        // Several times round the ring, and across u32 overflow.
        for base in [0u32, u32::MAX - 5] {
            k.reset();
            k.next = base;
            for i in 0..(3 * RING as u32) {
                k.sent((i, 7));
                let key = base.wrapping_add(i);
                assert_eq!(k.take(key), Some((i, 7)), "key {key}");
                assert_eq!(k.take(key), None, "a duplicate is unknown");
            }
        }
    }

    #[test]
    fn unknown_overwritten_and_skipped_keys_match_nothing() {
        let mut k = Keys::new();
        assert_eq!(k.take(0), None, "never given");
        k.sent((1, 0));
        k.skip();
        k.sent((3, 0));
        assert_eq!(k.take(1), None, "skipped");
        assert_eq!(k.take(2), Some((3, 0)));
        assert_eq!(k.take(5), None, "not given yet");
        // Key 0's slot is reused RING keys later: the old key is unknown.
        for i in 0..RING as u32 {
            k.sent((100 + i, 0));
        }
        assert_eq!(k.take(0), None);
        assert_eq!(k.take(RING as u32), Some((100 + RING as u32 - 3, 0)));
        // After a reset keys count from 0 again and old ones are gone.
        k.reset();
        assert_eq!(k.take(RING as u32 + 1), None);
        k.sent((9, 9));
        assert_eq!(k.take(0), Some((9, 9)));
    }
}
