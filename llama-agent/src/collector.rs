//! The collector: sends probes to every target, matches the reflections and
//! publishes per-path summaries (docs/collector-config.md, docs/agent-api.md).
//!
//! One engine thread does all the work in an epoll loop, so probe state needs
//! no locks: it sends the probes that are due (paced by absolute deadlines,
//! [`schedule`]), drains replies with `recvmmsg` ([`recv`]), matches them by
//! signature ([`inflight`]), expires timeouts on a timing wheel ([`wheel`])
//! and books every outcome on its path ([`paths`], [`summary`]). At each
//! wall-clock-aligned interval boundary it publishes the summaries that the
//! HTTP API ([`crate::api`]) serves.
//!
//! RTTs run from the kernel's software send timestamp of the probe
//! ([`txstamp`], from the socket's error queue) to the kernel's receive
//! timestamp of the reply (SO_TIMESTAMPING, else SO_TIMESTAMPNS), both
//! CLOCK_REALTIME, so neither `sendto` nor how promptly the loop wakes
//! changes a measurement; the loop only has to drain sockets before it
//! expires probes. Without a send timestamp (`--tx-timestamps off`, a kernel
//! that refuses it, a reply read first) the RTT starts at the
//! CLOCK_REALTIME read immediately before `sendto`.
//!
//! [`Collector::swap_config`] replaces the configuration at run time: sockets
//! whose address and port are unchanged are kept, in-flight probes of removed
//! targets are dropped without being booked as lost.

pub mod cli;
pub mod clock;
mod engine;
pub mod inflight;
mod memory;
pub mod metrics;
pub mod paths;
mod reconfigure;
pub mod recv;
pub mod schedule;
mod sendq;
pub mod socket;
pub mod summary;
pub mod txstamp;
pub mod wheel;

use std::{
    collections::HashSet,
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, RwLock, mpsc},
    thread,
};

use engine::{Command, Engine};
use metrics::{Metrics, TargetLabels};
use socket::RxClock;
use summary::Published;
use txstamp::TxTimestamps;

use crate::config::{CollectorConfig, ConfigError};

/// How send times are taken, for the start-up log and the metrics label:
/// `(description, label)`.
pub fn tx_clock(kernel: bool) -> (&'static str, &'static str) {
    if kernel {
        (
            "kernel SO_TIMESTAMPING TX software (fallback: user clock before sendto)",
            "so_timestamping_tx",
        )
    } else {
        ("user clock before sendto", "user_clock")
    }
}

/// Collector failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open probe socket on {ip}:{port}: {source}")]
    Socket {
        ip: IpAddr,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the collector's event loop: {0}")]
    Setup(#[source] io::Error),
    #[error("the collector has stopped")]
    Stopped,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// State shared by the engine and the HTTP API.
#[derive(Debug)]
pub struct Shared {
    published: RwLock<Arc<Published>>,
    pub metrics: Metrics,
    pub rx_clock: RxClock,
    /// Whether probe sockets ask for kernel send timestamps.
    pub tx_timestamps: TxTimestamps,
}

impl Shared {
    fn new(rx_clock: RxClock, tx_timestamps: TxTimestamps) -> Self {
        let kernel_tx = rx_clock == RxClock::Timestamping && txstamp::available(tx_timestamps);
        Self {
            published: RwLock::new(Arc::new(Published::default())),
            metrics: Metrics::new(rx_clock.label(), tx_clock(kernel_tx).1),
            rx_clock,
            tx_timestamps,
        }
    }

    /// A standalone state with nothing published yet (for serving the API
    /// without a running collector, e.g. in tests).
    pub fn detached() -> Arc<Self> {
        Arc::new(Self::new(
            socket::detect_rx_clock(),
            TxTimestamps::default(),
        ))
    }

    /// The summaries of the last completed interval.
    pub fn published(&self) -> Arc<Published> {
        self.published.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Replaces the published summaries; the growing per-path series of
    /// paths not in `p` are removed.
    pub fn publish(&self, p: Published) {
        self.publish_live(p, None);
    }

    /// Replaces the published summaries (the engine at each boundary);
    /// `live` are the paths still measured, whose series stay.
    fn publish_live(&self, p: Published, live: Option<HashSet<TargetLabels>>) {
        self.metrics.publish(&p.paths, live);
        if let Ok(mut slot) = self.published.write() {
            *slot = Arc::new(p);
        }
    }
}

/// What a configuration swap did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwapReport {
    /// Sockets kept with their source port (same address and port).
    pub sockets_kept: usize,
    pub sockets_opened: usize,
    pub sockets_closed: usize,
    /// In-flight probes forgotten (their target or socket is gone); they
    /// are not booked as lost.
    pub probes_dropped: u64,
}

/// A running collector. Dropping it stops the engine thread.
#[derive(Debug)]
pub struct Collector {
    cmds: mpsc::Sender<Command>,
    wake: Arc<OwnedFd>,
    thread: Option<thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Collector {
    /// Opens the sockets of `config` and starts probing. Sockets are created
    /// in the calling thread's network namespace.
    pub fn start(config: CollectorConfig) -> Result<Self, Error> {
        Self::start_with(config, TxTimestamps::default())
    }

    /// [`start`](Self::start) with the send clock chosen by
    /// `--tx-timestamps`.
    pub fn start_with(config: CollectorConfig, tx_timestamps: TxTimestamps) -> Result<Self, Error> {
        let rx_clock = socket::detect_rx_clock();
        let kernel_tx = rx_clock == RxClock::Timestamping && txstamp::available(tx_timestamps);
        tracing::info!(
            receive = rx_clock.as_str(),
            send = tx_clock(kernel_tx).0,
            "collector timestamp sources"
        );
        let shared = Arc::new(Shared::new(rx_clock, tx_timestamps));
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Setup(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (cmds, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let engine_shared = shared.clone();
        let engine_wake = wake.clone();
        let thread = thread::Builder::new()
            .name("llama-collector".into())
            .spawn(
                move || match Engine::new(engine_shared, engine_wake, rx, &config) {
                    Ok(engine) => {
                        let _ = ready_tx.send(Ok(()));
                        engine.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            )
            .map_err(Error::Setup)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => return Err(Error::Stopped),
        }
        Ok(Self {
            cmds,
            wake,
            thread: Some(thread),
            shared,
        })
    }

    /// Replaces the whole configuration at run time, atomically: if any new
    /// socket cannot be opened, the old configuration keeps running and the
    /// error is returned. Sockets whose bind address and port are unchanged
    /// are kept (same source port; a changed `tos` is applied in place);
    /// in-flight probes of removed targets or sockets are dropped without
    /// being reported as loss. Blocks until the engine has applied it
    /// (microseconds to milliseconds); from async code call it through
    /// `spawn_blocking`.
    pub fn swap_config(&self, config: CollectorConfig) -> Result<SwapReport, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::Swap(Box::new(config), tx))?;
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// The summaries of the last completed interval.
    pub fn published(&self) -> Arc<Published> {
        self.shared.published()
    }

    /// The state the HTTP API serves.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn send(&self, cmd: Command) -> Result<(), Error> {
        self.cmds.send(cmd).map_err(|_| Error::Stopped)?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        Ok(())
    }

    /// Stops the engine and waits for it to exit.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}
