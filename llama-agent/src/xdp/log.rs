//! The XDP program's debug log (`--ebpf-log`) in the agent's `tracing`
//! output.
//!
//! The program writes aya-log records into a ring buffer; a thread of ours
//! waits on the buffer's descriptor and hands each record to aya-log's
//! [`EbpfLogger`], which decodes it into a `log` record that [`ToTracing`]
//! re-emits as a `tracing` event with the target `llama_ebpf` at the
//! record's level. The program limits the lines in the kernel
//! (`--ebpf-log-rate`), so this thread never sees a flood.

use std::{
    io,
    os::fd::AsRawFd,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
};

use aya::Ebpf;
use aya_log::EbpfLogger;
use tracing::warn;

/// The `tracing` target of every forwarded line (what `RUST_LOG` filters on).
pub const TARGET: &str = "llama_ebpf";

/// How long the thread sleeps in `poll` before it looks at the stop flag.
const POLL_MS: libc::c_int = 200;

/// Why the log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Init(#[from] aya_log::Error),
    #[error("starting the log thread: {0}")]
    Thread(#[from] io::Error),
}

/// The running forwarder; dropping it stops the thread (after one last
/// read of the buffer).
#[derive(Debug)]
pub struct LogForwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogForwarder {
    /// Takes the object's log ring buffer out of `ebpf` and starts reading
    /// it. Call once, after loading.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self, LogError> {
        let mut logger = EbpfLogger::init_with_logger(ebpf, ToTracing)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("llama-ebpf-log".to_owned())
            .spawn(move || {
                let mut pfd = libc::pollfd {
                    fd: logger.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                loop {
                    let done = stopping.load(Ordering::Relaxed);
                    // SAFETY: one valid pollfd; the logger owns the descriptor
                    // for as long as this thread runs.
                    unsafe { libc::poll(&mut pfd, 1, if done { 0 } else { POLL_MS }) };
                    // aya-log panics on a record it cannot decode; ours come
                    // from our own program, but a bug there must not take the
                    // agent down: stop forwarding and say so.
                    if catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
                        warn!(
                            "--ebpf-log: a record from the XDP program could not be decoded; its log is no longer forwarded"
                        );
                        return;
                    }
                    if done {
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LogForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `log::Log` that re-emits each record as a `tracing` event.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // tracing's level must be a constant at each call site.
        let args = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, "{args}"),
            log::Level::Warn => tracing::warn!(target: TARGET, "{args}"),
            log::Level::Info => tracing::info!(target: TARGET, "{args}"),
            log::Level::Debug => tracing::debug!(target: TARGET, "{args}"),
            log::Level::Trace => tracing::trace!(target: TARGET, "{args}"),
        }
    }

    fn flush(&self) {}
}
