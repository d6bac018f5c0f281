//! `llama-agent reflect`: run the reflector until SIGINT/SIGTERM.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use llama_common::DEFAULT_PROBE_PORT;
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::info;

use super::{
    allowlist::AllowSpec,
    attach::{Reflector, ReflectorSetup},
    drops::POLL_EVERY,
    flags::{FlagError, ReflectorArgs},
};

/// Flags of `llama-agent reflect`.
#[derive(Args, Debug, Clone)]
pub struct ReflectArgs {
    #[command(flatten)]
    pub reflector: ReflectorArgs,
    /// UDP port probes are sent to.
    #[arg(long, env = "LLAMA_PORT", default_value_t = DEFAULT_PROBE_PORT)]
    pub port: u16,
    /// Debug logging.
    #[arg(short, long, env = "APP_VERBOSE", default_value_t = false)]
    pub verbose: bool,
    /// Log the counters every this many seconds (0: only at exit).
    #[arg(long, env = "LLAMA_REFLECT_STATS_INTERVAL", default_value_t = 60)]
    pub stats_interval: u64,
}

impl ReflectArgs {
    /// The validated reflector setup.
    pub fn setup(&self) -> Result<ReflectorSetup, FlagError> {
        let setup = self.reflector.setup(self.port)?;
        if setup.allow == AllowSpec::Peers {
            return Err(FlagError::PeersWithoutServer);
        }
        Ok(setup)
    }
}

/// Runs the reflector as `setup` says until SIGINT or SIGTERM, then
/// detaches and exits.
pub fn run(args: &ReflectArgs, setup: &ReflectorSetup) -> anyhow::Result<()> {
    // Signals first: a SIGTERM during start-up must still detach.
    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    thread::Builder::new()
        .name("llama-signals".to_owned())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(sig);
            }
        })
        .context("starting the signal thread")?;

    let reflector = Reflector::start(setup)?;
    info!(mode = %setup.mode, port = reflector.port(), "reflector running");

    // Drops are looked at every few seconds; the counters are logged every
    // --stats-interval.
    let stats_every = Duration::from_secs(args.stats_interval);
    let mut last_stats = Instant::now();
    let mut reflector = reflector;
    let signal = loop {
        match rx.recv_timeout(POLL_EVERY) {
            Ok(sig) => break Some(sig),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                reflector.log_drops();
                if args.stats_interval != 0 && last_stats.elapsed() >= stats_every {
                    last_stats = Instant::now();
                    log_counters(&reflector);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    info!(
        ?signal,
        "stopping: detaching XDP and stopping the userspace reflector"
    );
    log_counters(&reflector);
    reflector.shutdown();
    info!("reflector stopped");
    Ok(())
}

fn log_counters(reflector: &Reflector) {
    if let Some(counters) = reflector.xdp_counters() {
        let text: Vec<String> = counters
            .iter()
            .map(|(c, n)| format!("{}={n}", c.name()))
            .collect();
        info!("xdp counters: {}", text.join(" "));
    }
    let text: Vec<String> = reflector
        .userspace_stats()
        .named()
        .iter()
        .map(|(name, n)| format!("{name}={n}"))
        .collect();
    info!("userspace counters: {}", text.join(" "));
}
