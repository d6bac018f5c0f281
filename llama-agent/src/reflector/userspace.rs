//! The userspace reflector: answers every probe that reaches a socket —
//! loopback traffic, probes in unusual encodings, and everything on
//! interfaces where XDP is not attached.
//!
//! One blocking thread per socket (per bound address, times
//! `threads_per_socket` with SO_REUSEPORT), each moving up to
//! [`crate::net::mmsg::BATCH`] datagrams per `recvmmsg` and `sendmmsg`. A reply is the
//! received buffer itself, sent back from the probed address (IP_PKTINFO /
//! IPV6_PKTINFO) with the probe's TOS and TTL 64 as per-message control
//! messages.
//!
//! ```no_run
//! use llama_agent::reflector::{ReflectorOptions, UserspaceReflector};
//! let handle = UserspaceReflector::spawn(ReflectorOptions::new(8100))?;
//! println!("reflecting on port {}", handle.port());
//! let stats = handle.stop();
//! println!("{} probes answered", stats.reflected);
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod mmsg;
pub mod socket;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use llama_common::{DEFAULT_ANSWERS_PER_PROBE, DEFAULT_RECENT_PROBES};
use mmsg::Batch;
use tracing::{debug, info, warn};

use super::{
    allowlist::Allowlist,
    decide::{Ignore, judge},
    loopguard::{self, LoopDrop, RecentProbes},
    ratelimit::RateLimiter,
};

/// What to start.
#[derive(Clone, Debug)]
pub struct ReflectorOptions {
    /// UDP port; 0 picks a free one (the same for every bound address),
    /// see [`ReflectorHandle::port`].
    pub port: u16,
    /// Local addresses to bind; the default is `0.0.0.0` and `::`. An IPv6
    /// address that cannot be bound because IPv6 is off is skipped with a
    /// warning; every other failure is an error.
    pub bind: Vec<IpAddr>,
    /// Probes per second answered in total; 0 = unlimited.
    pub max_pps: u32,
    /// Only answer sources in this list (`None` = everyone).
    pub allowlist: Option<Allowlist>,
    /// Sockets (and threads) per bound address, sharing the port through
    /// SO_REUSEPORT.
    pub threads_per_socket: usize,
    /// Loop guard: how many times the same probe is answered (at least 1).
    pub answers_per_probe: u32,
    /// Loop guard: how many answered probes are remembered.
    pub recent_probes: u32,
    /// Loop guards on (the default). Off only for benchmark baselines.
    pub loop_guard: bool,
}

impl ReflectorOptions {
    /// Port `port` on all IPv4 and IPv6 addresses, no limits, one thread each.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            bind: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            max_pps: 0,
            allowlist: None,
            threads_per_socket: 1,
            answers_per_probe: DEFAULT_ANSWERS_PER_PROBE,
            recent_probes: DEFAULT_RECENT_PROBES,
            loop_guard: true,
        }
    }
}

/// Counter totals of a userspace reflector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReflectorStats {
    /// Datagrams received.
    pub received: u64,
    /// Replies handed to the kernel.
    pub reflected: u64,
    /// Datagrams that are not probes (malformed, empty, garbage).
    pub not_probe: u64,
    /// Datagrams from/to group or unspecified addresses.
    pub not_unicast: u64,
    /// Probes from sources outside the allowlist.
    pub dropped_allowlist: u64,
    /// Probes over the rate limit.
    pub dropped_rate_limit: u64,
    /// Loop guard: probes sent from the probe port (another reflector's reply).
    pub dropped_loop_port: u64,
    /// Loop guard: probes already answered `answers_per_probe` times.
    pub dropped_repeated: u64,
    /// Replies the kernel refused to send.
    pub send_errors: u64,
    /// Datagrams cut by the kernel (never answered).
    pub truncated: u64,
}

impl ReflectorStats {
    /// The counters an operator reads (`truncated` cannot happen with the
    /// buffers used), by their metric label.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("received", self.received),
            ("reflected", self.reflected),
            ("not_probe", self.not_probe),
            ("not_unicast", self.not_unicast),
            ("dropped_allowlist", self.dropped_allowlist),
            ("dropped_rate_limit", self.dropped_rate_limit),
            ("dropped_loop_port", self.dropped_loop_port),
            ("dropped_repeated", self.dropped_repeated),
            ("send_errors", self.send_errors),
        ]
    }
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    reflected: AtomicU64,
    not_probe: AtomicU64,
    not_unicast: AtomicU64,
    dropped_allowlist: AtomicU64,
    dropped_rate_limit: AtomicU64,
    dropped_loop_port: AtomicU64,
    dropped_repeated: AtomicU64,
    send_errors: AtomicU64,
    truncated: AtomicU64,
}

impl Counters {
    fn add(&self, s: &ReflectorStats) {
        let pairs = [
            (&self.received, s.received),
            (&self.reflected, s.reflected),
            (&self.not_probe, s.not_probe),
            (&self.not_unicast, s.not_unicast),
            (&self.dropped_allowlist, s.dropped_allowlist),
            (&self.dropped_rate_limit, s.dropped_rate_limit),
            (&self.dropped_loop_port, s.dropped_loop_port),
            (&self.dropped_repeated, s.dropped_repeated),
            (&self.send_errors, s.send_errors),
            (&self.truncated, s.truncated),
        ];
        for (counter, n) in pairs {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self) -> ReflectorStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReflectorStats {
            received: r(&self.received),
            reflected: r(&self.reflected),
            not_probe: r(&self.not_probe),
            not_unicast: r(&self.not_unicast),
            dropped_allowlist: r(&self.dropped_allowlist),
            dropped_rate_limit: r(&self.dropped_rate_limit),
            dropped_loop_port: r(&self.dropped_loop_port),
            dropped_repeated: r(&self.dropped_repeated),
            send_errors: r(&self.send_errors),
            truncated: r(&self.truncated),
        }
    }
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    counters: Counters,
    allowlist: RwLock<Option<Arc<Allowlist>>>,
    limiter: RateLimiter,
    /// The probe port (the loop guard refuses probes sent from it).
    port: u16,
    /// `None` with the loop guards off.
    recent: Option<Mutex<RecentProbes>>,
    answers_per_probe: u32,
    /// The first loop-guard drop is logged, later ones only counted.
    loop_logged: AtomicBool,
}

/// Entry point: see [`UserspaceReflector::spawn`].
#[derive(Debug)]
pub struct UserspaceReflector;

impl UserspaceReflector {
    /// Binds the sockets and starts the threads. Returns once every socket
    /// is bound, so probes sent after this returns are answered.
    pub fn spawn(options: ReflectorOptions) -> io::Result<ReflectorHandle> {
        let (sockets, port) = bind_all(&options)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            allowlist: RwLock::new(options.allowlist.clone().map(Arc::new)),
            limiter: RateLimiter::new(options.max_pps),
            port,
            recent: options.loop_guard.then(|| {
                Mutex::new(RecentProbes::new(
                    usize::try_from(options.recent_probes).unwrap_or(usize::MAX),
                ))
            }),
            answers_per_probe: options.answers_per_probe,
            loop_logged: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let mut local = Vec::new();
        for (addr, socket) in sockets {
            local.push(addr);
            let shared = Arc::clone(&shared);
            let name = format!("llama-reflect-{}", if addr.is_ipv4() { "v4" } else { "v6" });
            threads.push(
                thread::Builder::new()
                    .name(name)
                    .spawn(move || serve(&socket, &shared))?,
            );
        }
        local.dedup();
        info!(port, addresses = ?local, "userspace reflector listening");
        Ok(ReflectorHandle {
            shared,
            threads,
            port,
            local,
        })
    }
}

/// Binds every requested address `threads_per_socket` times on one port.
fn bind_all(options: &ReflectorOptions) -> io::Result<(Vec<(SocketAddr, socket2::Socket)>, u16)> {
    if options.bind.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to bind",
        ));
    }
    // With port 0 the first socket picks the port and the others must get
    // the same one; another process may hold it for the other family, so
    // try a few ports.
    let attempts = if options.port == 0 { 8 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        match bind_on_port(options, options.port) {
            Ok(bound) => return Ok(bound),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("bind failed")))
}

fn bind_on_port(
    options: &ReflectorOptions,
    mut port: u16,
) -> io::Result<(Vec<(SocketAddr, socket2::Socket)>, u16)> {
    let mut sockets = Vec::new();
    for &ip in &options.bind {
        for _ in 0..options.threads_per_socket.max(1) {
            let addr = SocketAddr::new(ip, port);
            let socket = match socket::open(addr) {
                Ok(s) => s,
                Err(e) if ip.is_ipv6() && ipv6_unavailable(&e) => {
                    warn!(%addr, error = %e, "IPv6 unavailable here; reflecting IPv4 only");
                    break;
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("bind {addr}: {e}"))),
            };
            if port == 0 {
                port = socket
                    .local_addr()?
                    .as_socket()
                    .map(|a| a.port())
                    .ok_or_else(|| io::Error::other("bound socket has no port"))?;
            }
            sockets.push((SocketAddr::new(ip, port), socket));
        }
    }
    if sockets.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address could be bound",
        ));
    }
    Ok((sockets, port))
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// A running userspace reflector. Dropping it stops the threads too.
#[derive(Debug)]
pub struct ReflectorHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    port: u16,
    local: Vec<SocketAddr>,
}

impl ReflectorHandle {
    /// The UDP port (useful after asking for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Counter totals so far.
    pub fn stats(&self) -> ReflectorStats {
        self.shared.counters.snapshot()
    }

    /// Replaces the allowlist (`None` answers everyone); takes effect with
    /// the next batch.
    pub fn set_allowlist(&self, allowlist: Option<Allowlist>) {
        if let Ok(mut slot) = self.shared.allowlist.write() {
            *slot = allowlist.map(Arc::new);
        }
    }

    /// Changes the rate limit (0 = unlimited).
    pub fn set_max_pps(&self, max_pps: u32) {
        self.shared.limiter.set_max_pps(max_pps);
    }

    /// Stops the threads (within [`socket::POLL_INTERVAL`]) and returns the
    /// final counters.
    pub fn stop(mut self) -> ReflectorStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ReflectorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Logs a recurring error at most once per interval, with how often it
/// happened meanwhile (never once per packet).
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn report(&mut self, what: &str, err: &io::Error) {
        match self.last {
            Some(t) if t.elapsed() < Self::INTERVAL => self.suppressed += 1,
            _ => {
                warn!(error = %err, repeated = self.suppressed, "userspace reflector: {what}");
                self.last = Some(Instant::now());
                self.suppressed = 0;
            }
        }
    }
}

/// Logs the first loop-guard drop of this reflector (later ones are only
/// counted: a loop attempt must not turn into a log flood).
fn log_loop_once(shared: &Shared, why: LoopDrop, src: SocketAddr) {
    if !shared.loop_logged.swap(true, Ordering::Relaxed) {
        let rule = match why {
            LoopDrop::FromProbePort => "it was sent from the probe port",
            LoopDrop::Repeated => "it was already answered --answers-per-probe times",
        };
        warn!(
            %src,
            "userspace reflector: not answering a probe because {rule} (a reflection loop or a forged source); \
             further loop-guard drops are only counted (llama_reflector_packets_total)"
        );
    }
}

fn serve(socket: &socket2::Socket, shared: &Shared) {
    let fd = socket.as_raw_fd();
    let mut batch = Batch::new();
    let mut errors = ErrorLog {
        last: None,
        suppressed: 0,
    };
    debug!(?socket, "reflector thread running");
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                errors.report("receive failed", &e);
                // Do not spin on a persistent error.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let allowlist = shared.allowlist.read().ok().and_then(|a| a.clone());
        // One lock per batch; a poisoned table (a panic elsewhere, which
        // cannot happen in this code) is still a table.
        let mut recent = shared
            .recent
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut tally = ReflectorStats::default();
        for i in 0..n {
            tally.received += 1;
            let Some(info) = batch.received(i) else {
                tally.not_unicast += 1;
                continue;
            };
            if info.truncated {
                tally.truncated += 1;
                continue;
            }
            // Without PKTINFO (should not happen) judge by source alone.
            let local = info.dst;
            let judged_dst = local.unwrap_or(match info.src {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
            let probe = match judge(batch.payload(i), info.src, judged_dst) {
                Ok(p) => p,
                Err(Ignore::NotProbe(_)) => {
                    tally.not_probe += 1;
                    continue;
                }
                Err(Ignore::NotUnicast) => {
                    tally.not_unicast += 1;
                    continue;
                }
            };
            if let Some(allow) = &allowlist
                && !allow.contains(info.src.ip())
            {
                tally.dropped_allowlist += 1;
                continue;
            }
            let mut answer_key = None;
            if let Some(recent) = &mut recent {
                let key = recent.key(info.src, probe.signature, probe.sent);
                match loopguard::check(recent, shared.port, shared.answers_per_probe, info.src, key)
                {
                    Ok(()) => answer_key = Some(key),
                    Err(why) => {
                        match why {
                            LoopDrop::FromProbePort => tally.dropped_loop_port += 1,
                            LoopDrop::Repeated => tally.dropped_repeated += 1,
                        }
                        log_loop_once(shared, why, info.src);
                        continue;
                    }
                }
            }
            if !shared.limiter.try_acquire() {
                tally.dropped_rate_limit += 1;
                continue;
            }
            if let (Some(recent), Some(key)) = (&mut recent, answer_key) {
                recent.record(key);
            }
            let tos = probe.tos();
            batch.queue_reply(i, &info, local, tos);
        }
        drop(recent);
        let (sent, failed, err) = batch.send(fd);
        tally.reflected += sent as u64;
        tally.send_errors += failed as u64;
        if let Some(e) = err {
            errors.report("send failed", &e);
        }
        shared.counters.add(&tally);
    }
    debug!("reflector thread stopped");
}
