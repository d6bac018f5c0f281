//! The collector's event loop: one thread, one epoll set (the probe sockets
//! and a wake-up eventfd), timeouts computed from the next send deadline and
//! the next summary boundary.
//!
//! Each turn: drain replies, expire timeouts, publish if a boundary passed,
//! send what is due. Draining always precedes expiry, and receive times are
//! kernel timestamps, so a reply that arrived in time is never declared lost
//! because the loop woke late.
//!
//! With send timestamps ([`super::txstamp`]) a socket's error queue is read
//! before its replies, on every wake-up, every [`DRAIN_EVERY`] sends and
//! after each send turn: a timestamp is queued as its datagram leaves, so it
//! is normally applied before its reply is matched, the queue stays short
//! (it counts against the receive buffer) and an entry never leaves epoll
//! reporting `EPOLLERR` in a loop.
//!
//! Above [`BATCHED_PPS`] the sockets leave the epoll set and are drained on
//! every send wake-up instead (at most [`MIN_WAKE_GAP_NS`] apart): at high
//! rates that replaces one wake-up per reply with one per batch, and costs
//! nothing in accuracy for the same reason. The same gap is the send
//! window: every probe that fell due since the last wake-up goes out in
//! that turn, so a probe leaves at most [`MIN_WAKE_GAP_NS`] (plus the
//! scheduler's delay) after its slot, never before it, and the probes of one
//! turn that share a socket leave in one `sendmmsg` ([`super::sendq`]). In
//! this mode a socket's error queue is read at the start of the next turn,
//! before its replies, rather than right after the sends: the timestamps
//! are still applied first, with one read fewer per socket and turn. Below
//! [`BATCHED_PPS`] nothing waits: each probe has its own wake-up at its
//! deadline, and a quiet collector wakes no more often than it sends.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, mpsc},
};

use llama_common::probe::{self, CANONICAL_MAX_LEN, SIGNATURE_LEN};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use socket2::SockAddr;

use super::{
    Error, Shared, SwapReport,
    clock::{monotonic_ns, realtime_ns},
    inflight::{InFlight, ReplyOutcome, TxOutcome},
    memory,
    paths::Paths,
    recv::{BATCH, RecvBatch},
    schedule::Schedule,
    sendq::{Queued, SendQueue},
    socket::{ProbeSocket, RxClock},
    summary::{Flow, Published},
    txstamp::{self, DRAIN_EVERY, ErrQueue},
};
use crate::config::CollectorConfig;

/// Total probe rate above which sockets are drained per send batch rather
/// than per readiness event.
pub const BATCHED_PPS: f64 = 2_000.0;
/// Minimum time between wake-ups in batched mode, hence the send window:
/// the most a probe is sent after its slot by design.
pub const MIN_WAKE_GAP_NS: u64 = 250_000;
/// Longest sleep: bounds how long expired records wait to be freed.
const MAX_SLEEP_NS: u64 = 200_000_000;
/// Most probes one turn sends before it drains replies again.
const MAX_SENDS_PER_TURN: usize = 4096;
const WAKE_TOKEN: u64 = u64::MAX;
/// Freed paths (about 18 KiB each) worth returning to the kernel at once.
const FREED_PATHS_TRIM: usize = 64;

pub enum Command {
    Swap(
        Box<CollectorConfig>,
        mpsc::SyncSender<Result<SwapReport, Error>>,
    ),
    Shutdown,
}

/// A running test: its schedule and, per (port, target) pair, the socket
/// address, the path id and the timeout.
#[derive(Debug)]
pub(super) struct TestRun {
    pub schedule: Schedule,
    pub sockets: Vec<u32>,
    pub timeouts_ns: Vec<u64>,
    pub targets: Vec<SocketAddr>,
    /// `[port * targets + target]`
    pub dests: Vec<SockAddr>,
    /// `[port * targets + target]`
    pub paths: Vec<u32>,
}

pub(super) struct Engine {
    pub epfd: OwnedFd,
    pub wake: Arc<OwnedFd>,
    pub cmds: mpsc::Receiver<Command>,
    pub shared: Arc<Shared>,
    pub sockets: Vec<Option<ProbeSocket>>,
    /// Whether socket `i` is in the epoll set.
    pub registered: Vec<bool>,
    pub tests: Vec<TestRun>,
    pub inflight: InFlight,
    pub paths: Paths,
    pub rng: SmallRng,
    pub interval_ns: u64,
    /// Next summary boundary, CLOCK_REALTIME ns.
    pub next_publish: u64,
    /// The first boundary only starts the books (as the original did: the
    /// first summary covers the partial interval plus a full one).
    pub started: bool,
    pub batched: bool,
    batch: RecvBatch,
    errq: ErrQueue,
    sendq: SendQueue,
    buf: Vec<u8>,
    ready: Vec<u32>,
    last_wake: u64,
    last_error_log: u64,
}

fn epoll_ctl(epfd: &OwnedFd, op: libc::c_int, fd: libc::c_int, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid epoll and target descriptors and a live event struct.
    if unsafe { libc::epoll_ctl(epfd.as_raw_fd(), op, fd, &mut ev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// When to wake for a send due at `deadline`: at the deadline, or in
/// batched mode no sooner than [`MIN_WAKE_GAP_NS`] after the last wake-up
/// (`last_wake`), so every probe due within that window goes out together.
fn send_wake(deadline: u64, last_wake: u64, batched: bool) -> u64 {
    if batched {
        deadline.max(last_wake + MIN_WAKE_GAP_NS)
    } else {
        deadline
    }
}

impl Engine {
    pub fn new(
        shared: Arc<Shared>,
        wake: Arc<OwnedFd>,
        cmds: mpsc::Receiver<Command>,
        config: &CollectorConfig,
    ) -> Result<Self, Error> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Setup(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        epoll_ctl(&epfd, libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE_TOKEN)
            .map_err(Error::Setup)?;
        // Deadlines are absolute; a 1 µs timer slack keeps low-rate sends on
        // time instead of the default 50 µs late.
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64) };
        let now = monotonic_ns();
        let mut engine = Self {
            epfd,
            wake,
            cmds,
            shared,
            sockets: Vec::new(),
            registered: Vec::new(),
            tests: Vec::new(),
            inflight: InFlight::new(1024, now),
            paths: Paths::default(),
            rng: SmallRng::from_os_rng(),
            interval_ns: 0,
            next_publish: 0,
            started: false,
            batched: false,
            batch: RecvBatch::new(),
            errq: ErrQueue::default(),
            sendq: SendQueue::new(),
            buf: vec![0; CANONICAL_MAX_LEN],
            ready: Vec::with_capacity(64),
            last_wake: now,
            last_error_log: 0,
        };
        engine.apply(config)?;
        Ok(engine)
    }

    pub fn run(mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let now = monotonic_ns();
            let sleep = self.next_wake(now).saturating_sub(now);
            let n = self.wait(&mut events, sleep);
            self.ready.clear();
            let mut woken = false;
            for ev in &events[..n] {
                if ev.u64 == WAKE_TOKEN {
                    woken = true;
                } else {
                    let id = ev.u64 as u32;
                    self.ready.push(id);
                    if ev.events & libc::EPOLLERR as u32 != 0 {
                        self.mark_errqueue(id);
                    }
                }
            }
            if woken && !self.handle_commands() {
                return;
            }
            self.last_wake = monotonic_ns();
            let now = self.last_wake;
            if self.batched {
                self.drain_all();
            } else {
                for i in 0..self.ready.len() {
                    self.drain(self.ready[i]);
                }
            }
            self.expire(now);
            if realtime_ns() >= self.next_publish {
                // Everything that arrived before the boundary is in the
                // books before they close.
                self.drain_all();
                self.expire(monotonic_ns());
                self.publish();
            }
            self.send_due();
            if !self.batched {
                self.drain_errqueues();
            }
        }
    }

    /// Waits for events for at most `sleep_ns`; returns how many arrived.
    fn wait(&mut self, events: &mut [libc::epoll_event], sleep_ns: u64) -> usize {
        // The raw system call rather than libc's wrapper: musl has none, and
        // the kernel takes a 64-bit `__kernel_timespec` on every architecture
        // (32-bit ARM included), which this layout is.
        #[repr(C)]
        struct KernelTimespec {
            tv_sec: i64,
            tv_nsec: i64,
        }
        let ts = KernelTimespec {
            tv_sec: (sleep_ns / 1_000_000_000) as i64,
            tv_nsec: (sleep_ns % 1_000_000_000) as i64,
        };
        // SAFETY: `events` is a live buffer of the length passed; `ts` lives
        // across the call; no signal mask (null, size ignored).
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts as *const KernelTimespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n >= 0 {
            return n as usize;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            // Kernels before 5.11: millisecond resolution, rounded up.
            let ms = sleep_ns.div_ceil(1_000_000).min(i32::MAX as u64) as libc::c_int;
            // SAFETY: as above.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    ms,
                )
            };
            return n.max(0) as usize;
        }
        0
    }

    /// Monotonic time of the next thing to do.
    fn next_wake(&self, now: u64) -> u64 {
        let mut wake = now + MAX_SLEEP_NS;
        for t in &self.tests {
            wake = wake.min(t.schedule.next_deadline());
        }
        let wake = send_wake(wake, self.last_wake, self.batched);
        let real = realtime_ns();
        wake.min(now + self.next_publish.saturating_sub(real))
    }

    /// Returns false when the engine must stop.
    fn handle_commands(&mut self) -> bool {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
        loop {
            match self.cmds.try_recv() {
                Ok(Command::Swap(config, reply)) => {
                    let result = self.apply(&config);
                    if let Err(e) = &result {
                        tracing::warn!(
                            "configuration rejected, the previous one keeps running: {e}"
                        );
                    }
                    let _ = reply.send(result);
                }
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn drain_all(&mut self) {
        for id in 0..self.sockets.len() {
            if self.sockets[id].is_some() {
                self.drain(id as u32);
            }
        }
    }

    /// Reads every waiting datagram of socket `id` and matches it.
    fn drain(&mut self, id: u32) {
        // Send timestamps first: they precede their replies.
        self.drain_tx(id);
        let Some(sock) = self.sockets.get(id as usize).and_then(Option::as_ref) else {
            return;
        };
        let fd = sock.sock.as_raw_fd();
        let tos = sock.key.tos;
        let user_clock = sock.rx_clock == RxClock::UserClock;
        let m = &self.shared.metrics;
        loop {
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("recvmmsg on probe socket: {e}");
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let fallback = if user_clock { realtime_ns() } else { 0 };
            for i in 0..n {
                let d = self.batch.get(i);
                let parsed = if d.truncated {
                    None
                } else {
                    probe::parse(d.payload).ok()
                };
                let Some(p) = parsed else {
                    m.unmatched.inc();
                    continue;
                };
                let rx = d
                    .rx_ns
                    .unwrap_or(if user_clock { fallback } else { realtime_ns() });
                match self
                    .inflight
                    .on_reply(p.signature, d.from, rx, d.ttl, &mut self.paths)
                {
                    ReplyOutcome::Answered(_) => {
                        m.replies.inc();
                        if d.tos.is_some_and(|t| t != tos) {
                            m.tos_mismatch.inc();
                        }
                    }
                    ReplyOutcome::Late => {
                        m.late.inc();
                    }
                    ReplyOutcome::Duplicate => {
                        m.duplicates.inc();
                    }
                    ReplyOutcome::Unexpected => {
                        m.unexpected.inc();
                    }
                    ReplyOutcome::Unknown => {
                        m.unmatched.inc();
                    }
                }
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Notes that socket `id`'s error queue has entries (`EPOLLERR`).
    fn mark_errqueue(&mut self, id: u32) {
        if let Some(Some(sock)) = self.sockets.get_mut(id as usize) {
            if let Some(tx) = sock.tx.as_mut() {
                tx.unread = tx.unread.max(1);
            } else {
                // Not ours to read (no send timestamps): empty it anyway so
                // that epoll does not report the socket forever.
                let fd = sock.sock.as_raw_fd();
                while self.errq.recv(fd) == BATCH {}
            }
        }
    }

    /// Reads the error queues of the sockets that sent since theirs was
    /// last found empty.
    fn drain_errqueues(&mut self) {
        for id in 0..self.sockets.len() {
            self.drain_tx(id as u32);
        }
    }

    /// Reads socket `id`'s send timestamps, if any can be waiting, and
    /// starts their probes' RTTs at them.
    fn drain_tx(&mut self, id: u32) {
        let Some(Some(sock)) = self.sockets.get_mut(id as usize) else {
            return;
        };
        let fd = sock.sock.as_raw_fd();
        let Some(tx) = sock.tx.as_mut() else {
            return;
        };
        if tx.unread == 0 {
            return;
        }
        let m = &self.shared.metrics;
        loop {
            let n = self.errq.recv(fd);
            for i in 0..n {
                let Some(stamp) = self.errq.stamp(i) else {
                    continue;
                };
                let applied = tx
                    .take(stamp.key)
                    .map(|h| self.inflight.on_tx_timestamp(h, stamp.ns));
                match applied {
                    Some(TxOutcome::Applied) | Some(TxOutcome::Resolved) => {}
                    Some(TxOutcome::Implausible) | None => {
                        m.tx_unmatched.inc();
                    }
                }
            }
            if n < BATCH {
                break;
            }
        }
        tx.unread = 0;
    }

    /// After a failed send on socket `id`: the kernel may or may not have
    /// used a key for it, so both counts restart at 0 (the timestamps
    /// already queued are read first, with the old keys).
    fn resync_tx(&mut self, id: u32) {
        match self.sockets.get_mut(id as usize) {
            Some(Some(ProbeSocket { tx: Some(tx), .. })) => tx.unread = tx.unread.max(1),
            _ => return,
        }
        self.drain_tx(id);
        let Some(sock) = self.sockets[id as usize].as_mut() else {
            return;
        };
        if !txstamp::rearm(&sock.sock) {
            // The count cannot be restarted: this socket's probes use the
            // fallback clock from now on.
            tracing::warn!("cannot rearm send timestamps on {}", sock.local);
            sock.tx = None;
            return;
        }
        if let Some(tx) = sock.tx.as_mut() {
            tx.reset();
        }
        self.shared.metrics.tx_resyncs.inc();
    }

    fn expire(&mut self, now: u64) {
        let lost = self.inflight.expire(now, &mut self.paths);
        if lost > 0 {
            self.shared.metrics.lost.inc_by(lost);
        }
    }

    fn publish(&mut self) {
        let real = realtime_ns();
        let boundary = real - real % self.interval_ns;
        self.next_publish = boundary + self.interval_ns;
        self.shared
            .metrics
            .in_flight
            .set(self.inflight.len() as i64);
        if !self.started {
            self.started = true;
            return;
        }
        let (paths, freed) = self.paths.publish();
        tracing::debug!(paths = paths.len(), freed, "published summaries");
        if freed >= FREED_PATHS_TRIM {
            memory::release_free_pages();
        }
        let live = self.paths.labels();
        self.shared.publish_live(
            Published {
                interval_end: boundary / 1_000_000_000,
                paths,
            },
            Some(live),
        );
    }

    /// Sends every probe whose deadline has passed.
    fn send_due(&mut self) {
        let mut sent = 0;
        let now = monotonic_ns();
        for ti in 0..self.tests.len() {
            while sent < MAX_SENDS_PER_TURN {
                let Some((slot, skipped)) = self.tests[ti].schedule.pop_due(now) else {
                    break;
                };
                if skipped > 0 {
                    self.shared.metrics.schedule_skipped.inc_by(skipped);
                }
                self.send_probe(ti, slot.port, slot.target);
                sent += 1;
            }
        }
        self.flush_sends();
    }

    /// Sends probe (`port`, `target`) of test `ti`: queued for the turn's
    /// batch on a socket with send timestamps, sent at once otherwise.
    fn send_probe(&mut self, ti: usize, port: usize, target: usize) {
        let test = &self.tests[ti];
        let sid = test.sockets[port];
        let Some(sock) = self.sockets[sid as usize].as_ref() else {
            return;
        };
        if sock.tx.is_none() {
            self.send_one(ti, port, target);
            return;
        }
        if !self.sendq.accepts(sid) {
            self.flush_sends();
        }
        let sig = self.fresh_signature();
        let test = &self.tests[ti];
        let Some(sock) = self.sockets[sid as usize].as_ref() else {
            return;
        };
        let Some(len) =
            probe::encode_canonical(self.sendq.next_buf(), &sig, sock.key.tos, realtime_ns())
        else {
            return;
        };
        let queued = queued(test, port, target, sig, sock.port());
        let i = port * test.targets.len() + target;
        self.sendq.push(sid, len, &test.dests[i], queued);
    }

    /// A signature that no probe in flight or in the batch carries.
    fn fresh_signature(&mut self) -> [u8; SIGNATURE_LEN] {
        let mut sig = [0u8; SIGNATURE_LEN];
        loop {
            self.rng.fill(&mut sig[..]);
            if self.inflight.is_free(&sig) && !self.sendq.holds(&sig) {
                return sig;
            }
        }
    }

    /// Sends the queued batch. Each datagram the kernel accepts is recorded
    /// in order (its send-timestamp key is the next one); a batch cut short
    /// rearms the keys like a failed `sendto`, then the rest is retried; a
    /// datagram refused on its own is a send error, and the rest still go.
    fn flush_sends(&mut self) {
        let Some(sid) = self.sendq.socket() else {
            return;
        };
        let total = self.sendq.len();
        let mut off = 0;
        while off < total {
            let Some(sock) = self.sockets[sid as usize].as_ref() else {
                break;
            };
            let fd = sock.sock.as_raw_fd();
            // The fallback send time of the whole call; with send timestamps
            // (the only sockets that batch) each datagram gets its own.
            let sent_mono = monotonic_ns();
            let sent_real = realtime_ns();
            match self.sendq.send(fd, off) {
                Ok(0) => break,
                Ok(n) => {
                    for k in off..off + n {
                        let q = *self.sendq.entry(k);
                        self.record_sent(sid, &q, sent_real, sent_mono);
                    }
                    off += n;
                    if off < total {
                        self.resync_tx(sid);
                    }
                }
                Err(e) => {
                    let q = *self.sendq.entry(off);
                    self.send_failed(sid, &q, sent_mono, &e);
                    off += 1;
                }
            }
        }
        self.sendq.clear();
        if let Some(Some(ProbeSocket { tx: Some(tx), .. })) = self.sockets.get(sid as usize)
            && tx.unread >= DRAIN_EVERY
        {
            self.drain_tx(sid);
        }
    }

    /// The kernel accepted probe `q` on socket `sid`: it is in flight.
    fn record_sent(&mut self, sid: u32, q: &Queued, sent_real: u64, sent_mono: u64) {
        let handle = self.inflight.insert(
            q.sig,
            sid,
            q.flow,
            q.path,
            q.target,
            sent_real,
            sent_mono,
            q.timeout_ns,
        );
        self.paths.acquire(q.path);
        self.shared.metrics.probes_sent.inc();
        let tx = self.sockets[sid as usize]
            .as_mut()
            .and_then(|s| s.tx.as_mut());
        if let Some(tx) = tx {
            match handle {
                Some(h) => tx.sent(h),
                None => tx.skip(),
            }
        }
    }

    /// Sending probe `q` on socket `sid` failed with `e`.
    fn send_failed(&mut self, sid: u32, q: &Queued, now_mono: u64, e: &io::Error) {
        self.shared.metrics.send_errors.inc();
        let acc = self.paths.acc(q.path);
        acc.send_error();
        // No route: the path is down, which is loss to whoever reads the
        // summary. Local trouble (a full buffer, a firewall EPERM) is a send
        // error only.
        if matches!(
            e.raw_os_error(),
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
        ) {
            acc.lost(q.flow);
        }
        if now_mono.saturating_sub(self.last_error_log) > 10_000_000_000 {
            self.last_error_log = now_mono;
            tracing::warn!("sending a probe to {} failed: {e}", q.target);
        }
        self.resync_tx(sid);
    }

    /// One `sendto`, timed by the clock read just before it: the path of
    /// sockets without send timestamps.
    fn send_one(&mut self, ti: usize, port: usize, target: usize) {
        let sig = self.fresh_signature();
        let test = &self.tests[ti];
        let sid = test.sockets[port];
        let Some(sock) = self.sockets[sid as usize].as_ref() else {
            return;
        };
        let i = port * test.targets.len() + target;
        let Some(len) = probe::encode_canonical(&mut self.buf, &sig, sock.key.tos, realtime_ns())
        else {
            return;
        };
        let q = queued(test, port, target, sig, sock.port());
        let sent_mono = monotonic_ns();
        let sent_real = realtime_ns();
        match sock.sock.send_to(&self.buf[..len], &test.dests[i]) {
            Ok(_) => self.record_sent(sid, &q, sent_real, sent_mono),
            Err(e) => self.send_failed(sid, &q, sent_mono, &e),
        }
    }

    /// A random phase in [0, 1) for a new schedule.
    pub fn phase(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    pub fn register(&mut self, id: u32, on: bool) {
        let Some(sock) = self.sockets.get(id as usize).and_then(Option::as_ref) else {
            return;
        };
        let fd = sock.sock.as_raw_fd();
        let was = self.registered.get(id as usize).copied().unwrap_or(false);
        if was == on {
            return;
        }
        let op = if on {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_DEL
        };
        if let Err(e) = epoll_ctl(&self.epfd, op, fd, u64::from(id)) {
            tracing::warn!("epoll_ctl on probe socket: {e}");
            return;
        }
        if self.registered.len() <= id as usize {
            self.registered.resize(id as usize + 1, false);
        }
        self.registered[id as usize] = on;
    }
}

/// Probe (`port`, `target`) of `test` with signature `sig`, as booked once
/// sent; `src_port` is its socket's port.
fn queued(
    test: &TestRun,
    port: usize,
    target: usize,
    sig: [u8; SIGNATURE_LEN],
    src_port: u16,
) -> Queued {
    let i = port * test.targets.len() + target;
    Queued {
        sig,
        // The flow is the socket's place in the test's port group.
        flow: Flow {
            index: u16::try_from(port).unwrap_or(u16::MAX),
            src_port,
        },
        path: test.paths[i],
        target: test.targets[target],
        timeout_ns: test.timeouts_ns[port],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_sends_wait_for_the_window_and_never_go_early() {
        let last = 1_000_000;
        // Due 10 µs after the last wake-up: batched, it waits for the
        // window, gathering what falls due meanwhile.
        assert_eq!(send_wake(last + 10_000, last, true), last + MIN_WAKE_GAP_NS);
        // Due after the window: at its deadline, not before.
        let late = last + MIN_WAKE_GAP_NS + 5;
        assert_eq!(send_wake(late, last, true), late);
        // Unbatched (low rates): every probe at its own deadline, no
        // wake-up added.
        assert_eq!(send_wake(last + 10_000, last, false), last + 10_000);
    }
}
