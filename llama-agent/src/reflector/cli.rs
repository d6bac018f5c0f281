//! `llama-agent reflect`: run the reflector until SIGINT/SIGTERM.

use std::{sync::mpsc, thread, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use llama_common::DEFAULT_PROBE_PORT;
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::info;

use super::{
    allowlist::AllowSpec,
    attach::{Mode, Reflector, ReflectorSetup},
};

/// Flags of `llama-agent reflect`.
#[derive(Args, Debug, Clone)]
pub struct ReflectArgs {
    /// Where probes are answered: `auto` tries XDP native, then XDP generic,
    /// then userspace on each interface; `xdp` and `xdp-skb` require that
    /// mode; `userspace` never loads the XDP program.
    #[arg(long, env = "LLAMA_REFLECTOR_MODE", value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Interface to attach XDP to; repeat or comma-separate. Default: the
    /// interfaces that carry the default routes.
    #[arg(long = "interface", env = "LLAMA_INTERFACES", value_delimiter = ',', default_values_t = Vec::<String>::new())]
    pub interfaces: Vec<String>,
    /// UDP port probes are sent to.
    #[arg(long, env = "LLAMA_PORT", default_value_t = DEFAULT_PROBE_PORT)]
    pub port: u16,
    /// Answer at most this many probes per second (0 = unlimited), like the
    /// original's `-max-pps`.
    #[arg(long, env = "LLAMA_MAX_PPS", default_value_t = 0)]
    pub max_pps: u32,
    /// Answer only these sources: a comma-separated list of addresses and
    /// prefixes (`10.0.0.0/8,fd00::/16`), or `peers` for the group's members
    /// (needs the agent's control loop). Empty: answer anyone.
    #[arg(long, env = "LLAMA_ALLOW", default_value = "")]
    pub allow: AllowSpec,
    /// Debug logging.
    #[arg(short, long, env = "APP_VERBOSE", default_value_t = false)]
    pub verbose: bool,
    /// Log the counters every this many seconds (0: only at exit).
    #[arg(long, env = "LLAMA_REFLECT_STATS_INTERVAL", default_value_t = 60)]
    pub stats_interval: u64,
}

/// Runs the reflector until SIGINT or SIGTERM, then detaches and exits.
pub fn run(args: ReflectArgs) -> anyhow::Result<()> {
    if args.allow == AllowSpec::Peers {
        // Standalone `reflect` has no server to learn the group from, and an
        // empty allowlist would silently answer nobody.
        bail!(
            "--allow peers needs the group membership from a server; standalone `reflect` has none: pass prefixes instead"
        );
    }
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

    let setup = ReflectorSetup {
        mode: args.mode,
        interfaces: args.interfaces.clone(),
        port: args.port,
        max_pps: args.max_pps,
        allow: args.allow.clone(),
    };
    let reflector = Reflector::start(&setup)?;
    info!(mode = %args.mode, port = reflector.port(), "reflector running");

    let tick = match args.stats_interval {
        0 => Duration::from_secs(3600),
        s => Duration::from_secs(s),
    };
    let signal = loop {
        match rx.recv_timeout(tick) {
            Ok(sig) => break Some(sig),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if args.stats_interval != 0 {
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
    let s = reflector.userspace_stats();
    info!(
        "userspace counters: received={} reflected={} not_probe={} not_unicast={} dropped_allowlist={} dropped_rate_limit={} send_errors={}",
        s.received,
        s.reflected,
        s.not_probe,
        s.not_unicast,
        s.dropped_allowlist,
        s.dropped_rate_limit,
        s.send_errors
    );
}
