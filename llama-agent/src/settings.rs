//! Flags and environment of `llama-agent run` (docs/agent.md) and their
//! validation into a typed [`Settings`].
//!
//! Parsing is split in two on purpose: clap reads the raw values (so flags and
//! environment variables behave exactly like the original client's and
//! probe's), and [`RunArgs::validate`] turns them into [`Settings`], refusing
//! every bad value with one message that names both the flag and the
//! variable — a mistyped `LLAMA_TAGS` in a compose file must fail loudly at
//! start-up, not register garbage every minute.

pub mod limits;
pub mod state_dir;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use llama_common::DEFAULT_PROBE_PORT;
use reqwest::Url;

use self::limits::{LimitArgs, LimitError};
use crate::{
    config::Limits,
    control::{self, ControlConfig, Token, TokenError},
    duration,
    reflector::{
        ReflectorSetup,
        flags::{FlagError, ReflectorArgs},
    },
    tags::{self, Tags},
};

/// Where the agent's HTTP API listens by default: every IPv4 address, on the
/// probe port (the port the server's scraper and issued configs assume).
pub const DEFAULT_API_BIND: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DEFAULT_PROBE_PORT));

/// Flags and environment of `llama-agent run` (also used when no subcommand
/// is given). Every flag has an environment variable; the original client's
/// and probe's names are kept.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// URL of the llama server, e.g. `http://llama.example.com:5000`, or
    /// several separated by commas (replicas or sites, in order of
    /// preference): the agent uses the first that answers and comes back
    /// to the first when it recovers. Without it, `--config` runs a
    /// standalone collector.
    #[arg(short = 's', long, env = "LLAMA_SERVER", value_name = "URL[,URL…]")]
    pub server: Option<String>,

    /// Group to register in; the agent probes every member of its group.
    #[arg(short = 'g', long, env = "LLAMA_GROUP", default_value = "default")]
    pub group: String,

    /// Address to register and probe from. Needed when the server sees the
    /// agent through NAT or a proxy (or both run on one host); otherwise the
    /// server uses the address the request comes from.
    #[arg(short = 'i', long, env = "LLAMA_SOURCE_IP", value_name = "IP")]
    pub ip: Option<IpAddr>,

    /// Seconds the server keeps this agent registered without a refresh.
    /// Default 300 (five registration periods), so a dead agent leaves its
    /// peers' target lists within minutes rather than the server's default
    /// of a day. Must be longer than the registration interval.
    #[arg(
        short = 'k',
        long,
        env = "LLAMA_KEEPALIVE",
        value_name = "SECONDS",
        default_value_t = 300
    )]
    pub keepalive: u64,

    /// Extra tags sent with every registration: `[location: Las Vegas,
    /// src_name: Office]` (the original form) or a JSON object.
    #[arg(short = 't', long, env = "LLAMA_TAGS", default_value = "")]
    pub tags: String,

    /// Collector config file (docs/collector-config.md). Without `--server`: a standalone
    /// collector as the original ran. With `--server`: the config used at
    /// start-up when no persisted config exists yet.
    #[arg(short = 'c', long, env = "APP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Debug logging.
    #[arg(short = 'v', long, env = "APP_VERBOSE", default_value_t = false)]
    pub verbose: bool,

    /// UDP probe port and TCP API port this agent registers (the server's
    /// configs send peers' probes here).
    #[arg(long, env = "LLAMA_PORT", default_value_t = DEFAULT_PROBE_PORT)]
    pub port: u16,

    /// Descriptive name of this probe (tag `probe_name`; peers see it as
    /// `dst_name`). Default: the host name.
    #[arg(long, env = "PROBE_NAME", value_name = "NAME")]
    pub probe_name: Option<String>,

    /// Short name of this probe (tag `probe_shortname`; the server keeps one
    /// entry per short name and group). Default: the host name.
    #[arg(long, env = "PROBE_SHORTNAME", value_name = "NAME")]
    pub probe_shortname: Option<String>,

    /// How often to register: `60`, `60s`, `500ms`, `5m`.
    #[arg(
        long,
        env = "LLAMA_REGISTER_INTERVAL",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub register_interval: String,

    /// How often to fetch the collector config from the server.
    #[arg(
        long,
        env = "LLAMA_POLL_INTERVAL",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub poll_interval: String,

    /// Directory for the last good config, so an agent restarted while the
    /// server is down still probes. Default `/var/lib/llama`, falling back to
    /// `$XDG_STATE_HOME/llama` or `~/.local/state/llama` when not writable.
    #[arg(long, env = "LLAMA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(flatten)]
    pub reflector: ReflectorArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Token the server requires for registration, sent as `Authorization:
    /// Bearer <token>` on register and on the deregistration at shutdown.
    /// No default (servers without a token accept any agent). Never logged;
    /// prefer `--registration-token-file`, which keeps it out of the
    /// process list.
    #[arg(
        long,
        env = "LLAMA_REGISTRATION_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "registration_token_file"
    )]
    pub registration_token: Option<String>,

    /// File holding the registration token (surrounding whitespace ignored).
    #[arg(long, env = "LLAMA_REGISTRATION_TOKEN_FILE", value_name = "FILE")]
    pub registration_token_file: Option<PathBuf>,

    /// PEM file of the CA certificate(s) an `https://` server's certificate
    /// must chain to (a private CA). Without it, Mozilla's public roots,
    /// bundled in the binary, are trusted.
    #[arg(long, env = "LLAMA_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Address of the agent's HTTP API (`/status`, `/influxdata`, `/metrics`).
    #[arg(
        long,
        env = "LLAMA_API_BIND",
        value_name = "ADDR",
        default_value_t = DEFAULT_API_BIND
    )]
    pub api_bind: SocketAddr,

    #[command(flatten)]
    pub tx: crate::collector::txstamp::TxArgs,
}

/// The validated settings of `llama-agent run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server base URLs in order of preference; empty = standalone.
    pub servers: Vec<Url>,
    pub group: String,
    pub ip: Option<IpAddr>,
    pub keepalive: Duration,
    pub tags: Tags,
    /// Collector config file (standalone, or bootstrap with a server).
    pub config: Option<PathBuf>,
    pub verbose: bool,
    pub port: u16,
    pub probe_name: String,
    pub probe_shortname: String,
    pub register_interval: Duration,
    pub poll_interval: Duration,
    /// The explicitly requested state directory; resolve it (with the
    /// documented fallbacks) through [`state_dir::resolve`].
    pub state_dir: Option<PathBuf>,
    /// What the reflector answers, where and how often (port = `port`).
    pub reflector: ReflectorSetup,
    pub api_bind: SocketAddr,
    /// What a collector configuration may ask of this agent.
    pub limits: Limits,
    /// Sent on register and deregister; `Debug` never shows it.
    pub registration_token: Option<Token>,
    /// Trusted CA certificates (PEM) of an `https://` server.
    pub ca_cert: Option<PathBuf>,
    /// Whether RTTs start at kernel send timestamps.
    pub tx_timestamps: crate::collector::txstamp::TxTimestamps,
}

/// A bad flag or environment value. Each message names the flag and its
/// variable, the offending value and what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "nothing to do: give --server / LLAMA_SERVER (the llama server's URL) or --config / APP_CONFIG (a standalone collector config)"
    )]
    NoServerNorConfig,
    #[error(
        "--server / LLAMA_SERVER {value:?} has no http:// or https:// scheme (e.g. http://llama.example.com:5000)"
    )]
    ServerScheme { value: String },
    #[error(
        "--server / LLAMA_SERVER {value:?}: https is not supported by this build (no TLS library); use http://"
    )]
    ServerHttps { value: String },
    #[error("--server / LLAMA_SERVER {value:?} is not a valid URL: {reason}")]
    ServerUrl { value: String, reason: String },
    #[error(
        "--server / LLAMA_SERVER {value:?} has an empty entry (give URLs separated by commas, e.g. http://a:5000,http://b:5000)"
    )]
    ServerEmptyEntry { value: String },
    #[error("--server / LLAMA_SERVER lists {url} twice")]
    ServerTwice { url: String },
    // `reason`, not `source`: the message already includes it, and a source
    // would print it twice in an error chain.
    #[error("--tags / LLAMA_TAGS {value:?}: {reason}")]
    Tags { value: String, reason: tags::Error },
    #[error("--keepalive / LLAMA_KEEPALIVE must be at least 1 second, got 0")]
    KeepaliveZero,
    #[error(
        "--keepalive / LLAMA_KEEPALIVE ({keepalive} s) must be longer than the registration interval ({interval}), or the server drops this agent between registrations"
    )]
    KeepaliveShort { keepalive: u64, interval: String },
    #[error("{flag} {value:?} is not a duration greater than zero (e.g. 30, 30s, 500ms, 5m)")]
    Interval { flag: &'static str, value: String },
    #[error(transparent)]
    Reflector(#[from] FlagError),
    #[error("--group / LLAMA_GROUP must not be empty")]
    EmptyGroup,
    #[error("{flag} must not be empty")]
    EmptyName { flag: &'static str },
    #[error(
        "the host name is unknown ({0}); set --probe-name / PROBE_NAME and --probe-shortname / PROBE_SHORTNAME"
    )]
    Hostname(String),
    #[error("--port / LLAMA_PORT must not be 0")]
    PortZero,
    #[error("--config / APP_CONFIG {path:?} is not a readable file")]
    ConfigFile { path: PathBuf },
    #[error(transparent)]
    Limits(#[from] LimitError),
    #[error("--registration-token / LLAMA_REGISTRATION_TOKEN(_FILE): {0}")]
    Token(#[from] TokenError),
}

impl RunArgs {
    /// Check every value and build the typed [`Settings`]. The first bad
    /// value is reported (order: what must be present, then each flag).
    pub fn validate(&self) -> Result<Settings, SettingsError> {
        let server = self
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if server.is_none() && self.config.is_none() {
            return Err(SettingsError::NoServerNorConfig);
        }
        let servers = server.map(parse_servers).transpose()?.unwrap_or_default();
        if let Some(path) = &self.config
            && !path.is_file()
        {
            return Err(SettingsError::ConfigFile { path: path.clone() });
        }
        let group = self.group.trim().to_owned();
        if group.is_empty() {
            return Err(SettingsError::EmptyGroup);
        }
        let tags = tags::parse(&self.tags).map_err(|reason| SettingsError::Tags {
            value: self.tags.clone(),
            reason,
        })?;
        let register_interval = interval("--register-interval", &self.register_interval)?;
        let poll_interval = interval("--poll-interval", &self.poll_interval)?;
        if self.keepalive == 0 {
            return Err(SettingsError::KeepaliveZero);
        }
        // Only meaningful when the agent registers at all.
        if !servers.is_empty() && Duration::from_secs(self.keepalive) <= register_interval {
            return Err(SettingsError::KeepaliveShort {
                keepalive: self.keepalive,
                interval: duration::display(register_interval),
            });
        }
        if self.port == 0 {
            return Err(SettingsError::PortZero);
        }
        let (probe_name, probe_shortname) = self.probe_names()?;
        let reflector = self.reflector.setup(self.port)?;
        let limits = self.limits.limits()?;
        let registration_token = match (&self.registration_token, &self.registration_token_file) {
            (Some(text), _) => Some(Token::new(text)?),
            (None, Some(path)) => Some(Token::from_file(path)?),
            (None, None) => None,
        };
        Ok(Settings {
            servers,
            group,
            ip: self.ip,
            keepalive: Duration::from_secs(self.keepalive),
            tags,
            config: self.config.clone(),
            verbose: self.verbose,
            port: self.port,
            probe_name,
            probe_shortname,
            register_interval,
            poll_interval,
            state_dir: self.state_dir.clone(),
            reflector,
            api_bind: self.api_bind,
            limits,
            registration_token,
            ca_cert: self.ca_cert.clone(),
            tx_timestamps: self.tx.tx_timestamps,
        })
    }

    /// Probe name and short name, defaulting to the host name (looked up
    /// only when one of them is missing).
    fn probe_names(&self) -> Result<(String, String), SettingsError> {
        let given = |v: &Option<String>, flag| match v.as_deref().map(str::trim) {
            Some("") => Err(SettingsError::EmptyName { flag }),
            other => Ok(other.map(str::to_owned)),
        };
        let name = given(&self.probe_name, "--probe-name / PROBE_NAME")?;
        let short = given(&self.probe_shortname, "--probe-shortname / PROBE_SHORTNAME")?;
        if let (Some(name), Some(short)) = (&name, &short) {
            return Ok((name.clone(), short.clone()));
        }
        let host = hostname()?;
        Ok((name.unwrap_or_else(|| host.clone()), short.unwrap_or(host)))
    }
}

impl Settings {
    /// What the control loop needs, with its default timeouts; `None` when
    /// no server is set (a standalone collector).
    pub fn control_config(&self, state_dir: Option<PathBuf>) -> Option<ControlConfig> {
        Some(ControlConfig {
            servers: Some(self.servers.clone()).filter(|s| !s.is_empty())?,
            group: self.group.clone(),
            port: self.port,
            ip: self.ip,
            keepalive: self.keepalive,
            probe_name: self.probe_name.clone(),
            probe_shortname: self.probe_shortname.clone(),
            tags: self.tags.0.clone(),
            register_interval: self.register_interval,
            poll_interval: self.poll_interval,
            state_dir,
            bootstrap_config: self.config.clone(),
            request_timeout: control::REQUEST_TIMEOUT,
            backoff_base: control::BACKOFF_BASE,
            backoff_max: None,
            shutdown_grace: control::SHUTDOWN_GRACE,
            registration_token: self.registration_token.clone(),
            deregister_timeout: control::DEREGISTER_TIMEOUT,
            ca_cert: self.ca_cert.clone(),
        })
    }
}

/// The machine's host name, as the original client's default.
pub fn hostname() -> Result<String, SettingsError> {
    let name = nix::unistd::gethostname().map_err(|e| SettingsError::Hostname(e.to_string()))?;
    let name = name.to_string_lossy().trim().to_owned();
    if name.is_empty() {
        return Err(SettingsError::Hostname("empty".into()));
    }
    Ok(name)
}

/// A comma-separated list of server URLs, in order of preference.
fn parse_servers(value: &str) -> Result<Vec<Url>, SettingsError> {
    let mut servers: Vec<Url> = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(SettingsError::ServerEmptyEntry {
                value: value.to_owned(),
            });
        }
        let url = parse_server(entry)?;
        if servers.contains(&url) {
            return Err(SettingsError::ServerTwice {
                url: url.to_string(),
            });
        }
        servers.push(url);
    }
    Ok(servers)
}

fn parse_server(value: &str) -> Result<Url, SettingsError> {
    // Checked before parsing: `llama.example.com:5000` parses as a URL whose
    // scheme is `llama.example.com`, which would produce a baffling message.
    let lower = value.to_ascii_lowercase();
    if !cfg!(feature = "tls") && lower.starts_with("https://") {
        return Err(SettingsError::ServerHttps {
            value: value.to_owned(),
        });
    }
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(SettingsError::ServerScheme {
            value: value.to_owned(),
        });
    }
    let url = Url::parse(value).map_err(|e| SettingsError::ServerUrl {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SettingsError::ServerUrl {
            value: value.to_owned(),
            reason: "no host".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SettingsError::ServerUrl {
            value: value.to_owned(),
            reason: "a base URL takes no ?query or #fragment".into(),
        });
    }
    Ok(url)
}

fn interval(flag: &'static str, value: &str) -> Result<Duration, SettingsError> {
    duration::parse(value)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| SettingsError::Interval {
            flag,
            value: value.to_owned(),
        })
}
