//! Collector configuration (docs/collector-config.md): the original LLAMA
//! collector's YAML, in both its full and its legacy (`<ip>: {tag: value}`)
//! form, loaded unchanged, validated and resolved into the typed
//! [`CollectorConfig`] the collector runs from.
//!
//! Loading is two steps: [`raw`] mirrors the YAML (unknown keys are accepted
//! and ignored, as the original's yaml.v2 did) and [`resolve`] checks every
//! reference and value, resolves host names and expands port groups, so the
//! collector never sees a half-valid configuration. Resolution also enforces
//! the agent's [`limits`] (rates, targets, sockets, timeouts, group-wide
//! addresses), before anything sized by the configuration is allocated.

pub mod limits;
pub mod raw;
pub mod resolve;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

pub use self::limits::Limits;

/// The port legacy-format targets are probed on (the original's
/// `-llama.dst-port` default).
pub const DEFAULT_LEGACY_PORT: u16 = llama_common::DEFAULT_PROBE_PORT;

/// The original collector's built-in default configuration
/// (`defaultCollectorConfigYAML` in dropbox/llama `config.go`). Legacy files
/// are merged into it, and `collect` without `--config` runs it.
pub const DEFAULT_CONFIG_YAML: &str = "\
summarization:
    interval:   30
    handlers:   2
api:
    bind:   0.0.0.0:5000
ports:
    default:
        ip:         0.0.0.0
        port:       0
        tos:        0
        timeout:    1000
port_groups:
    default:
        - port:     default
          count:    4
rate_limits:
    default:
        cps:    4.0
tests:
    - targets:      default
      port_group:   default
      rate_limit:   default
targets:
    default:
        - ip:       127.0.0.1
          port:     8100
          tags:     {}
";

/// Why a configuration was rejected. Every variant names the offending key
/// or value so the operator can find it in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("the configuration is empty")]
    Empty,
    #[error("legacy format: the value of `{key}` must be a map of tags (`{key}: {{tag: value}}`)")]
    LegacyNotAMap { key: String },
    #[error("{context}: tag `{tag}` must be a scalar (string, number or boolean)")]
    BadTag { context: String, tag: String },
    #[error("tests[{test}]: unknown port group `{name}`")]
    UnknownPortGroup { test: usize, name: String },
    #[error("tests[{test}]: unknown rate limit `{name}`")]
    UnknownRateLimit { test: usize, name: String },
    #[error("tests[{test}]: unknown target set `{name}`")]
    UnknownTargetSet { test: usize, name: String },
    #[error("port_groups.{group}: unknown port `{name}`")]
    UnknownPort { group: String, name: String },
    #[error("rate_limits.{name}: cps must be a finite number > 0, got {cps}")]
    BadCps { name: String, cps: f64 },
    #[error("ports.{name}: timeout must be > 0 ms, got {timeout}")]
    BadTimeout { name: String, timeout: i64 },
    #[error(
        "ports.{name}: timeout {timeout} ms exceeds this agent's limit of {max} ms (--max-timeout)"
    )]
    TimeoutTooLong {
        name: String,
        timeout: i64,
        max: u128,
    },
    #[error(
        "port_groups.{group}: {count} sockets exceed this agent's limit of {max} (--max-sockets)"
    )]
    TooManySockets {
        group: String,
        count: i128,
        max: usize,
    },
    #[error("tests use {count} sockets in all, over this agent's limit of {max} (--max-sockets)")]
    TooManyTestSockets { count: usize, max: usize },
    #[error("{what}: {count} targets exceed this agent's limit of {max} (--max-targets)")]
    TooManyTargets {
        what: String,
        count: usize,
        max: usize,
    },
    #[error(
        "the configuration asks for {rate:.0} probes/s, over this agent's limit of {max} (--max-probe-rate)"
    )]
    ProbeRateTooHigh { rate: f64, max: f64 },
    #[error(
        "target {target} would get {rate:.0} probes/s, over this agent's limit of {max} per address (--max-target-rate)"
    )]
    TargetRateTooHigh { target: IpAddr, rate: f64, max: f64 },
    #[error("{context}: {addr} is {what}, which is never probed")]
    RefusedTarget {
        context: String,
        addr: IpAddr,
        what: &'static str,
    },
    #[error("ports.{name}: tos must be 0..=255, got {tos}")]
    BadTos { name: String, tos: i64 },
    #[error("port_groups.{group}: count of port `{port}` must be >= 1, got {count}")]
    BadCount {
        group: String,
        port: String,
        count: i64,
    },
    #[error("{context}: `{value}` is not an IP address")]
    BadIp { context: String, value: String },
    #[error("{context}: port must be {range}, got {value}")]
    BadPort {
        context: String,
        value: i64,
        range: &'static str,
    },
    #[error("{context}: cannot resolve host `{host}`: {reason}")]
    Resolve {
        context: String,
        host: String,
        reason: String,
    },
    #[error("targets.{name}: the target set is empty")]
    EmptyTargetSet { name: String },
    #[error("summarization.interval must be >= 1 s, got {0}")]
    BadInterval(i64),
    #[error("api.bind: `{0}` is not a host:port address")]
    BadBind(String),
    #[error(
        "tests[{test}]: port `{port}` is bound to {bind}, which cannot send to {family} target {target}"
    )]
    FamilyMismatch {
        test: usize,
        port: String,
        bind: IpAddr,
        family: &'static str,
        target: SocketAddr,
    },
}

/// How to read a configuration.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Port of the targets of a legacy-format file.
    pub legacy_port: u16,
    /// What the configuration may ask of this agent.
    pub limits: Limits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            legacy_port: DEFAULT_LEGACY_PORT,
            limits: Limits::default(),
        }
    }
}

/// Which of the two formats a file was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Full,
    Legacy,
}

/// A validated collector configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectorConfig {
    pub format: Format,
    /// Summaries are published every `interval`, aligned to the wall clock.
    pub interval: Duration,
    /// `summarization.handlers`: accepted for compatibility, unused (the
    /// collector summarises on its own thread without a handler pool).
    pub handlers: i64,
    /// `api.bind`: where the HTTP API listens.
    pub api_bind: SocketAddr,
    pub tests: Vec<Test>,
}

/// One `tests` entry with every name resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub targets_name: String,
    pub port_group: String,
    pub rate_limit: String,
    /// Cycles per second: each cycle sends one probe to every target from
    /// every port.
    pub cps: f64,
    /// The port group expanded: one entry per socket (`count` copies).
    pub ports: Vec<PortInstance>,
    pub targets: Vec<Target>,
}

/// One socket of a test: `ports.<name>`, copy `index` of the group's count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInstance {
    pub name: String,
    pub index: u32,
    pub spec: PortSpec,
}

/// A `ports` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// Local address to bind (0.0.0.0 / :: = any).
    pub ip: IpAddr,
    /// Local port (0 = ephemeral, chosen by the kernel).
    pub port: u16,
    /// IP TOS / IPv6 traffic class of probes (and of the replies).
    pub tos: u8,
    /// A probe unanswered for this long is lost.
    pub timeout: Duration,
}

/// A probe destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The `ip` value as written (an address or a host name).
    pub host: String,
    /// The resolved address probes go to.
    pub addr: SocketAddr,
    /// Tags added to this destination's summaries.
    pub tags: BTreeMap<String, String>,
}

impl CollectorConfig {
    /// Parses and validates YAML text in either format.
    pub fn from_yaml(text: &str, opts: &LoadOptions) -> Result<Self, ConfigError> {
        let (format, raw) = raw::parse(text, opts)?;
        resolve::resolve(format, &raw, &opts.limits)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, opts)
    }

    /// The original collector's default configuration.
    pub fn original_default() -> Result<Self, ConfigError> {
        Self::from_yaml(DEFAULT_CONFIG_YAML, &LoadOptions::default())
    }

    /// Probes per second the whole configuration sends.
    pub fn probes_per_second(&self) -> f64 {
        self.tests
            .iter()
            .map(|t| t.cps * (t.ports.len() * t.targets.len()) as f64)
            .sum()
    }
}
