//! The reflector's flags, shared by `llama-agent run` and `llama-agent
//! reflect` (`#[command(flatten)]`), so both read the same variables the
//! same way.
//!
//! clap reads the raw text and [`ReflectorArgs::setup`] checks it: a bad
//! value is refused with one message naming the flag and its variable (a
//! mistyped `LLAMA_REFLECTOR_MODE` in a compose file must fail at start-up
//! with a line an operator can act on, not with clap's usage screen).

use clap::Args;
use llama_common::{
    DEFAULT_ANSWERS_PER_PROBE, DEFAULT_EBPF_LOG_RATE, DEFAULT_MAX_PPS, DEFAULT_RECENT_PROBES,
    LogLevel,
};

use super::{AllowSpec, Mode, ReflectorSetup};

/// Flags of the reflector. Every flag has an environment variable.
#[derive(Args, Debug, Clone)]
pub struct ReflectorArgs {
    /// Reflector mode: `auto` (XDP native, else generic, else userspace, per
    /// interface), `xdp` (native only), `xdp-skb` (generic only) or
    /// `userspace` (never loads the XDP program).
    #[arg(long, env = "LLAMA_REFLECTOR_MODE", default_value = "auto")]
    pub mode: String,

    /// Interface to attach the XDP reflector to (repeatable; the variable is
    /// comma-separated). Default: the interfaces that carry the default routes.
    #[arg(
        long = "interface",
        env = "LLAMA_INTERFACES",
        value_name = "IFACE",
        value_delimiter = ','
    )]
    pub interfaces: Vec<String>,

    /// Whom the reflector answers: `peers` (the members of this agent's
    /// group, following the server; `run` only), `any`, or comma-separated
    /// addresses and prefixes (`10.0.0.0/8,fd00::/16`). Default: anyone.
    #[arg(long, env = "LLAMA_ALLOW", value_name = "peers|any|CIDR,...")]
    pub allow: Option<String>,

    /// Reflector rate limit in probes per second, XDP and userspace each.
    /// The default, 10000, covers a group of 1,000 agents with 25 % headroom:
    /// the server's default template sends 4 ports x 2.0 cycles/s = 8 probes/s
    /// to each peer, so `n` agents send `8n` probes/s to every reflector.
    /// It bounds what forged-source probes can make a reflector send.
    #[arg(long, env = "LLAMA_MAX_PPS", value_name = "PPS", default_value_t = DEFAULT_MAX_PPS)]
    pub max_pps: u32,

    /// Loop guard: how many times the reflector answers the same probe (same
    /// source, signature and `sent`). A collector sends each probe once, so 1
    /// answers every legitimate probe; a copy coming back is a duplicate or
    /// a reflection loop started by a forged source.
    #[arg(
        long,
        env = "LLAMA_ANSWERS_PER_PROBE",
        value_name = "N",
        default_value_t = DEFAULT_ANSWERS_PER_PROBE
    )]
    pub answers_per_probe: u32,

    /// Loop guard: how many answered probes the reflector remembers to
    /// recognise one coming back (XDP and userspace each; the XDP table
    /// rounds up to a power of two, 16 bytes a slot). The default keeps
    /// 1.6 s of answers at the default --max-pps; a loop comes back within
    /// milliseconds.
    #[arg(
        long,
        env = "LLAMA_RECENT_PROBES",
        value_name = "N",
        default_value_t = DEFAULT_RECENT_PROBES
    )]
    pub recent_probes: u32,

    /// Debug log of the XDP program's decisions, in this agent's log (target
    /// `llama_ebpf`): `off` (default), `error`, `warn`, `info` (drops:
    /// allowlist, rate limit, loop guards), `debug` (plus reflected probes
    /// and probe-port traffic passed to userspace) or `trace` (plus all
    /// other traffic). Each line names the decision, addresses and ports.
    /// Costs microseconds per logged packet, nothing when off.
    #[arg(
        long,
        env = "LLAMA_EBPF_LOG",
        value_name = "LEVEL",
        default_value = "off"
    )]
    pub ebpf_log: String,

    /// Limit of --ebpf-log lines per second and CPU, applied in the kernel;
    /// lines over it are only counted (`log_suppressed`), and the agent says
    /// so once (then at most every 10 minutes).
    #[arg(
        long,
        env = "LLAMA_EBPF_LOG_RATE",
        value_name = "LINES",
        default_value_t = DEFAULT_EBPF_LOG_RATE
    )]
    pub ebpf_log_rate: u32,
}

/// A bad reflector flag or environment value.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error(
        "--mode / LLAMA_REFLECTOR_MODE {value:?} is not a mode: use auto, xdp, xdp-skb or userspace"
    )]
    Mode { value: String },
    #[error(
        "--interface / LLAMA_INTERFACES {value:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
    )]
    Interface { value: String },
    #[error(
        "--allow / LLAMA_ALLOW {value:?}: {item:?} is neither `peers` nor a CIDR like 10.0.0.0/8"
    )]
    Allow { value: String, item: String },
    #[error(
        "--max-pps / LLAMA_MAX_PPS must be at least 1 (default {DEFAULT_MAX_PPS}; raise it for a larger group)"
    )]
    MaxPpsZero,
    #[error("--answers-per-probe / LLAMA_ANSWERS_PER_PROBE must be at least 1")]
    AnswersPerProbeZero,
    #[error("--recent-probes / LLAMA_RECENT_PROBES must be between 1 and {MAX_RECENT_PROBES}")]
    RecentProbes,
    #[error(
        "--ebpf-log / LLAMA_EBPF_LOG {value:?} is not a level: use off, error, warn, info, debug or trace"
    )]
    EbpfLog { value: String },
    #[error("--ebpf-log-rate / LLAMA_EBPF_LOG_RATE must be at least 1 (lines per second and CPU)")]
    EbpfLogRateZero,
    /// Standalone `reflect` has no server to learn the group from, and an
    /// empty allowlist would silently answer nobody.
    #[error(
        "--allow / LLAMA_ALLOW peers needs the group membership from a server; standalone `reflect` has none: pass prefixes instead"
    )]
    PeersWithoutServer,
}

impl ReflectorArgs {
    /// Checks every value; the reflector then answers probes on `port`.
    pub fn setup(&self, port: u16) -> Result<ReflectorSetup, FlagError> {
        let mode = self.mode.parse::<Mode>().map_err(|()| FlagError::Mode {
            value: self.mode.clone(),
        })?;
        let interfaces = self
            .interfaces
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .map(|i| {
                if valid_ifname(i) {
                    Ok(i.to_owned())
                } else {
                    Err(FlagError::Interface {
                        value: i.to_owned(),
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow = match &self.allow {
            None => AllowSpec::Anyone,
            Some(value) => value
                .parse()
                .map_err(|e: super::allowlist::ParsePrefixError| FlagError::Allow {
                    value: value.clone(),
                    item: e.0,
                })?,
        };
        if self.max_pps == 0 {
            return Err(FlagError::MaxPpsZero);
        }
        if self.answers_per_probe == 0 {
            return Err(FlagError::AnswersPerProbeZero);
        }
        if !(1..=MAX_RECENT_PROBES).contains(&self.recent_probes) {
            return Err(FlagError::RecentProbes);
        }
        let ebpf_log = self.ebpf_log_level().ok_or_else(|| FlagError::EbpfLog {
            value: self.ebpf_log.clone(),
        })?;
        if self.ebpf_log_rate == 0 {
            return Err(FlagError::EbpfLogRateZero);
        }
        Ok(ReflectorSetup {
            mode,
            interfaces,
            port,
            max_pps: self.max_pps,
            allow,
            answers_per_probe: self.answers_per_probe,
            recent_probes: self.recent_probes,
            ebpf_log,
            ebpf_log_rate: self.ebpf_log_rate,
        })
    }

    /// `--ebpf-log` as a level (any letter case), `None` if it is none.
    /// Read before the full check too: the log filter is set up first.
    pub fn ebpf_log_level(&self) -> Option<LogLevel> {
        let value = self.ebpf_log.trim();
        LogLevel::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(value))
    }
}

/// Largest `--recent-probes`: 4 Mi slots, 64 MiB of kernel memory.
pub const MAX_RECENT_PROBES: u32 = 1 << 22;

/// Linux interface names: 1..=15 bytes (IFNAMSIZ - 1), none of `/`, `:`
/// (alias syntax) or whitespace.
fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        reflector: ReflectorArgs,
    }

    fn setup(args: &[&str]) -> Result<ReflectorSetup, FlagError> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .expect("clap accepts the raw text")
            .reflector
            .setup(8100)
    }

    #[test]
    fn spellings_and_defaults() {
        let s = setup(&[]).expect("defaults");
        assert_eq!(
            (s.mode, s.port, s.max_pps),
            (Mode::Auto, 8100, DEFAULT_MAX_PPS)
        );
        assert_eq!(s.max_pps, 10_000, "the documented default");
        assert_eq!((s.answers_per_probe, s.recent_probes), (1, 16384));
        assert_eq!(s.allow, AllowSpec::Anyone);
        assert!(s.interfaces.is_empty());
        let s = setup(&["--mode", " XDP-skb ", "--allow", "any", "--max-pps", "5"]).expect("ok");
        assert_eq!((s.mode, s.max_pps), (Mode::XdpSkb, 5));
        assert_eq!(s.allow, AllowSpec::Anyone);
        let s = setup(&["--answers-per-probe", "3", "--recent-probes", "100"]).expect("ok");
        assert_eq!((s.answers_per_probe, s.recent_probes), (3, 100));
        let s = setup(&["--allow", "PEERS", "--interface", "eth0,, eth1"]).expect("ok");
        assert_eq!(s.allow, AllowSpec::Peers);
        assert_eq!(s.interfaces, ["eth0", "eth1"]);
        assert_eq!((s.ebpf_log, s.ebpf_log_rate), (LogLevel::Off, 100));
        let s = setup(&["--ebpf-log", "Debug", "--ebpf-log-rate", "10"]).expect("ok");
        assert_eq!((s.ebpf_log, s.ebpf_log_rate), (LogLevel::Debug, 10));
    }

    #[test]
    fn each_bad_value_names_its_flag() {
        for (args, want) in [
            (
                &["--mode", "fast"][..],
                "--mode / LLAMA_REFLECTOR_MODE \"fast\"",
            ),
            (
                &["--interface", "a:b"],
                "--interface / LLAMA_INTERFACES \"a:b\"",
            ),
            (&["--allow", "peers,10.0.0.0/8"], "\"peers\" is neither"),
            (&["--allow", ""], "--allow / LLAMA_ALLOW \"\""),
            (&["--max-pps", "0"], "--max-pps / LLAMA_MAX_PPS"),
            (
                &["--answers-per-probe", "0"],
                "--answers-per-probe / LLAMA_ANSWERS_PER_PROBE",
            ),
            (
                &["--recent-probes", "0"],
                "--recent-probes / LLAMA_RECENT_PROBES",
            ),
            (
                &["--recent-probes", "99999999"],
                "--recent-probes / LLAMA_RECENT_PROBES",
            ),
            (
                &["--ebpf-log", "loud"],
                "--ebpf-log / LLAMA_EBPF_LOG \"loud\"",
            ),
            (
                &["--ebpf-log-rate", "0"],
                "--ebpf-log-rate / LLAMA_EBPF_LOG_RATE",
            ),
        ] {
            let got = setup(args).expect_err("refused").to_string();
            assert!(got.contains(want), "{args:?}: {got}");
        }
    }
}
