//! The flags that bound what a collector configuration may ask of this agent
//! (`--max-probe-rate`, `--max-target-rate`, `--max-targets`,
//! `--max-sockets`, `--max-timeout`), shared by `run` and `collect`. The
//! checks themselves live in [`crate::config::limits`].

use clap::Args;

use crate::{
    config::{
        Limits,
        limits::{
            DEFAULT_MAX_PROBE_RATE, DEFAULT_MAX_SOCKETS, DEFAULT_MAX_TARGET_RATE,
            DEFAULT_MAX_TARGETS,
        },
    },
    duration,
};

/// A bad limit flag.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{flag} must be a finite number greater than 0, got {value}")]
    Rate { flag: &'static str, value: f64 },
    #[error("{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error(
        "--max-timeout / LLAMA_MAX_TIMEOUT {0:?} is not a duration greater than zero (e.g. 10s, 1500ms)"
    )]
    Timeout(String),
}

/// Bounds on the collector configurations this agent accepts, from the
/// server or a file. A configuration over any of them is refused whole (one
/// log line) and the one in force keeps running.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Most probes per second the whole configuration may send (targets ×
    /// port count × cps, summed over tests). The default is a full group of
    /// `--max-targets` at the server's default 4 ports × 2 cps.
    #[arg(long, env = "LLAMA_MAX_PROBE_RATE", value_name = "PROBES_PER_SECOND", default_value_t = DEFAULT_MAX_PROBE_RATE)]
    pub max_probe_rate: f64,

    /// Most probes per second to any one address (the server's default
    /// sends 8 to each target).
    #[arg(long, env = "LLAMA_MAX_TARGET_RATE", value_name = "PROBES_PER_SECOND", default_value_t = DEFAULT_MAX_TARGET_RATE)]
    pub max_target_rate: f64,

    /// Most targets a configuration may list (summed over target sets, and
    /// over the tests that probe them).
    #[arg(long, env = "LLAMA_MAX_TARGETS", value_name = "N", default_value_t = DEFAULT_MAX_TARGETS)]
    pub max_targets: usize,

    /// Most probe sockets (port group counts, summed over tests); each is
    /// a file descriptor and a source port.
    #[arg(long, env = "LLAMA_MAX_SOCKETS", value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS)]
    pub max_sockets: usize,

    /// Longest probe timeout a configuration may set: probes are remembered
    /// that long, so it bounds the agent's memory.
    #[arg(
        long,
        env = "LLAMA_MAX_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s"
    )]
    pub max_timeout: String,
}

impl LimitArgs {
    /// The validated limits.
    pub fn limits(&self) -> Result<Limits, LimitError> {
        let rate = |flag, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(LimitError::Rate { flag, value })
            }
        };
        let count = |flag, value: usize| {
            if value == 0 {
                Err(LimitError::Zero { flag })
            } else {
                Ok(value)
            }
        };
        Ok(Limits {
            max_probe_rate: rate(
                "--max-probe-rate / LLAMA_MAX_PROBE_RATE",
                self.max_probe_rate,
            )?,
            max_target_rate: rate(
                "--max-target-rate / LLAMA_MAX_TARGET_RATE",
                self.max_target_rate,
            )?,
            max_targets: count("--max-targets / LLAMA_MAX_TARGETS", self.max_targets)?,
            max_sockets: count("--max-sockets / LLAMA_MAX_SOCKETS", self.max_sockets)?,
            max_timeout: duration::parse(&self.max_timeout)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| LimitError::Timeout(self.max_timeout.clone()))?,
        })
    }
}
