//! Server settings: the original's defaults, the YAML config file named by
//! `-c/--config` (the original's keys `host`, `port`, `keepalive`, `group`,
//! `interval`, `verbose`, plus ours), and the limits that keep one client from
//! exhausting the server. Precedence: flag/env, then file, then default.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

pub use crate::access::Cidr;
use crate::error::Error;

/// The defaults of the server's settings (the original server's where it
/// had one), shared by the flags and [`Settings::default`].
pub mod defaults {
    /// Listen address.
    pub const HOST: &str = "127.0.0.1";
    /// Listen port.
    pub const PORT: u16 = 5000;
    /// The server's base URL for `llama-server scrape`: `http://HOST:PORT`.
    pub const SERVER_URL: &str = "http://127.0.0.1:5000";
    /// Group of registrations that name none.
    pub const GROUP: &str = "default";
    /// Keepalive of registrations that give none, seconds (a day).
    pub const KEEPALIVE_S: f64 = 86_400.0;
    /// Summarization and scrape interval, seconds.
    pub const INTERVAL_S: u64 = 10;
    /// Seconds between reaps.
    pub const REAP_INTERVAL_S: f64 = 5.0;
    /// Most entries the registry holds.
    pub const MAX_ENTRIES: usize = 200_000;
    /// Most members one group holds (every member probes every other, so
    /// this also bounds the probes one registration can direct at an
    /// address, and the size of one config).
    pub const MAX_GROUP_MEMBERS: usize = 1_000;
    /// Most groups the registry holds.
    pub const MAX_GROUPS: usize = 1_000;
    /// Longest keepalive a registration may ask for, seconds (a week).
    pub const MAX_KEEPALIVE_S: f64 = 604_800.0;
    /// Registrations (and deletions) per second one source address may
    /// make, sustained; 0 turns the limit off.
    pub const REGISTER_RATE: f64 = 10.0;
    /// Registrations one source address may make at once before the rate
    /// applies.
    pub const REGISTER_BURST: f64 = 100.0;
    /// Source addresses whose registration rate is tracked at once.
    pub const MAX_RATE_SOURCES: usize = 65_536;
    /// Bytes of configs and lists being sent at once, all requests together.
    pub const MAX_RENDER_BYTES: usize = 64 * 1024 * 1024;
    /// Seconds a client may take to send a request's headers (and an idle
    /// keep-alive connection may wait for its next request). Well away from
    /// the periods of the server's clients (scraper 10 s, agents' config
    /// poll 30 s and registration 60 s), so a pooled connection is not
    /// closed just as its next request is sent.
    pub const HEADER_READ_TIMEOUT_S: f64 = 20.0;
    /// Where the registry lives: this process's memory.
    pub const STORE: &str = "memory";
    /// Prefix of the Redis store's keys.
    pub const STORE_PREFIX: &str = "llama";
    /// Bound on one Redis operation, seconds.
    pub const STORE_TIMEOUT_S: f64 = 2.0;
    /// How long configs are served from the cache while Redis is away, seconds.
    pub const STORE_STALE_FOR_S: f64 = 300.0;
    /// Most connections served at once, all listen addresses together
    /// (below the common 1,024 file-descriptor limit).
    pub const MAX_CONNECTIONS: usize = 768;
    /// InfluxDB's HTTP port.
    pub const INFLUXDB_PORT: u16 = 8086;
    /// InfluxDB database.
    pub const INFLUXDB_NAME: &str = "llama";
    /// The agents' API port (the agents' probe port too).
    pub const AGENT_PORT: u16 = llama_common::DEFAULT_PROBE_PORT;
    /// How long one agent may take to answer the scraper, seconds.
    pub const SCRAPE_TIMEOUT_S: f64 = 5.0;
}

/// Limits on what a registration may contain and how much the registry holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Most tags one entry may carry.
    pub max_tags: usize,
    /// Longest tag key, bytes.
    pub max_tag_key_len: usize,
    /// Longest tag value, bytes.
    pub max_tag_value_len: usize,
    /// Longest group name, bytes.
    pub max_group_len: usize,
    /// Most entries the registry holds (all groups together).
    pub max_entries: usize,
    /// Most members one group holds.
    pub max_group_members: usize,
    /// Most groups the registry holds.
    pub max_groups: usize,
    /// Longest keepalive a registration may ask for, seconds (longer: 400).
    pub max_keepalive: f64,
    /// Registrations and deletions per second per source address (IPv6:
    /// per /64), sustained; 0 turns the limit off.
    pub register_rate: f64,
    /// Registrations a source may make at once before `register_rate`
    /// applies.
    pub register_burst: f64,
    /// Source addresses whose rate is tracked at once.
    pub max_rate_sources: usize,
    /// Bytes of rendered configs and lists in flight at once (more: 503).
    pub max_render_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_tags: 32,
            max_tag_key_len: 64,
            max_tag_value_len: 256,
            max_group_len: 64,
            max_entries: defaults::MAX_ENTRIES,
            max_group_members: defaults::MAX_GROUP_MEMBERS,
            max_groups: defaults::MAX_GROUPS,
            max_keepalive: defaults::MAX_KEEPALIVE_S,
            register_rate: defaults::REGISTER_RATE,
            register_burst: defaults::REGISTER_BURST,
            max_rate_sources: defaults::MAX_RATE_SOURCES,
            max_render_bytes: defaults::MAX_RENDER_BYTES,
        }
    }
}

/// The collector settings every rendered config carries
/// (docs/collector-config.md). The defaults are the original llama-sd
/// template: 2 handlers, a port group of 4 source ports, 2.0 cycles per
/// second (8 probes/s to each target), timeout 1000 ms, tos 0. Every member
/// probes every member, so a group of `n` members sends
/// `n² × port_count × cps` probes/s in total (n² × 8 with the defaults:
/// 80,000 probes/s for 100 members).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorDefaults {
    pub handlers: u32,
    /// Source address of the probing ports.
    pub port_ip: String,
    /// Timeout of a probe, milliseconds.
    pub timeout_ms: u64,
    pub tos: u8,
    /// Ports in the default port group.
    pub port_count: u32,
    /// Cycles per second of the default rate limit.
    pub cps: f64,
    /// The agents' API address in issued configs (`0.0.0.0:8100` by default).
    pub api_bind: String,
}

impl Default for CollectorDefaults {
    fn default() -> Self {
        CollectorDefaults {
            handlers: 2,
            port_ip: "0.0.0.0".into(),
            timeout_ms: 1000,
            tos: 0,
            port_count: 4,
            cps: 2.0,
            api_bind: format!("0.0.0.0:{}", defaults::AGENT_PORT),
        }
    }
}

/// Where the scraper writes and how it reaches the agents.
#[derive(Debug, Clone, Default)]
pub struct InfluxSettings {
    pub host: String,
    pub port: u16,
    pub name: String,
    /// `https://` instead of `http://`.
    pub tls: bool,
    /// PEM CA certificates InfluxDB's certificate must chain to; `None` =
    /// the bundled public roots.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Credentials sent with every request.
    pub auth: InfluxAuth,
}

impl InfluxSettings {
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("{scheme}://[{v6}]:{}", self.port),
            Err(_) => format!("{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// InfluxDB credentials. `Debug` never shows a password or token.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum InfluxAuth {
    #[default]
    None,
    /// InfluxDB 1.x user and password (HTTP basic authentication).
    Basic { user: String, pass: String },
    /// InfluxDB 2.x/3.x API token on the 1.x-compatible endpoints
    /// (`Authorization: Token <token>`).
    Token(String),
}

impl std::fmt::Debug for InfluxAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InfluxAuth::None => f.write_str("None"),
            InfluxAuth::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, pass: <hidden> }}")
            }
            InfluxAuth::Token(_) => f.write_str("Token(<hidden>)"),
        }
    }
}

/// Scraper tuning (docs/scraper.md).
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// TCP port of the agents' API (`/influxdata`).
    pub agent_port: u16,
    /// How long one agent may take to answer.
    pub agent_timeout: Duration,
    /// Most agents fetched at the same time.
    pub concurrency: usize,
    /// Most points per InfluxDB write.
    pub batch_points: usize,
    /// How long fetched points may wait for a batch to fill before they are
    /// written: bounds how much a slow agent can delay the others' points.
    pub linger: Duration,
    /// Paths kept in the in-memory history.
    pub history_max_paths: usize,
    /// Byte budget of the in-memory history.
    pub history_max_bytes: usize,
    /// Largest `/influxdata` answer read from one agent, bytes; a larger
    /// one is refused whole (the scrape counts as failed).
    pub max_body_bytes: usize,
}

impl Default for ScrapeSettings {
    fn default() -> Self {
        ScrapeSettings {
            agent_port: defaults::AGENT_PORT,
            agent_timeout: Duration::from_secs_f64(defaults::SCRAPE_TIMEOUT_S),
            concurrency: 256,
            batch_points: 5000,
            linger: Duration::from_millis(200),
            history_max_paths: 250_000,
            history_max_bytes: crate::history::DEFAULT_MAX_BYTES,
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Limits of the HTTP listener (see `listener`).
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// How long a client may take to send a request's headers; also how
    /// long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            header_read_timeout: Duration::from_secs_f64(defaults::HEADER_READ_TIMEOUT_S),
            max_connections: defaults::MAX_CONNECTIONS,
        }
    }
}

/// Where the registry lives.
#[derive(Debug, Clone, Default)]
pub enum StoreSettings {
    /// This process's memory (one server).
    #[default]
    Memory,
    /// A Redis shared by any number of servers.
    Redis(crate::registry::RedisOptions),
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    pub default_group: String,
    /// Default keepalive, seconds.
    pub keepalive: f64,
    /// Summarization/scrape interval, seconds.
    pub interval: u64,
    pub reap_interval: Duration,
    /// Use the first `X-Forwarded-For` address as the client's (only behind
    /// a trusted proxy: anyone can send the header).
    pub trust_forwarded_for: bool,
    pub limits: Limits,
    /// Shared secret registrations must present as `Authorization: Bearer
    /// <token>`; `None` leaves registration open (the original's way).
    pub registration_token: Option<String>,
    /// Networks whose peers may register and delete; empty allows all.
    pub register_allow: Vec<Cidr>,
    /// Limits of the HTTP listener.
    pub listener: ListenerSettings,
    /// Serve HTTPS with this certificate and key (reloaded on SIGHUP);
    /// `None` serves plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    pub collector: CollectorDefaults,
    pub influx: Option<InfluxSettings>,
    pub scrape: ScrapeSettings,
    /// Fetch the registered agents' summaries every interval (the live
    /// matrix, and InfluxDB when configured). Off, the server only keeps
    /// the registry and issues configs.
    pub collect: bool,
    /// Where the registry lives.
    pub store: StoreSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], defaults::PORT))],
            default_group: defaults::GROUP.into(),
            keepalive: defaults::KEEPALIVE_S,
            interval: defaults::INTERVAL_S,
            reap_interval: Duration::from_secs_f64(defaults::REAP_INTERVAL_S),
            trust_forwarded_for: false,
            limits: Limits::default(),
            registration_token: None,
            register_allow: Vec::new(),
            listener: ListenerSettings::default(),
            tls: None,
            collector: CollectorDefaults::default(),
            influx: None,
            scrape: ScrapeSettings::default(),
            collect: true,
            store: StoreSettings::Memory,
        }
    }
}

/// How far back the in-memory history reaches.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(3600);

impl Settings {
    /// The bounds of the in-memory history these settings ask for.
    pub fn history_limits(&self) -> crate::history::HistoryLimits {
        crate::history::HistoryLimits {
            window: HISTORY_WINDOW,
            interval: Duration::from_secs(self.interval.max(1)),
            max_bytes: self.scrape.history_max_bytes,
            max_paths: self.scrape.history_max_paths,
        }
    }
}

/// A host list in the file: one address or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Hosts {
    One(String),
    Many(Vec<String>),
}

impl Hosts {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Hosts::One(h) => vec![h],
            Hosts::Many(v) => v,
        }
    }
}

/// The config file (`-c`): the original's keys plus ours; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<Hosts>,
    pub port: Option<u16>,
    pub group: Option<String>,
    pub keepalive: Option<f64>,
    pub interval: Option<u64>,
    pub verbose: Option<bool>,
    pub reap_interval: Option<f64>,
    pub trust_forwarded_for: Option<bool>,
    pub influxdb_host: Option<String>,
    pub influxdb_port: Option<u16>,
    pub influxdb_name: Option<String>,
    pub agent_port: Option<u16>,
    pub scrape_timeout: Option<f64>,
    pub history_max_paths: Option<usize>,
    pub history_max_bytes: Option<usize>,
    pub scrape_max_body_bytes: Option<usize>,
    pub collect: Option<bool>,
    pub registration_token: Option<String>,
    pub register_allow: Option<Hosts>,
    pub header_read_timeout: Option<f64>,
    pub max_connections: Option<usize>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    pub influxdb_tls: Option<bool>,
    pub influxdb_ca_cert: Option<std::path::PathBuf>,
    pub store: Option<String>,
    pub store_prefix: Option<String>,
    pub store_timeout: Option<f64>,
    pub store_stale_for: Option<f64>,
    pub limits: Option<Limits>,
    pub collector: Option<CollectorDefaults>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let err = |reason: String| Error::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// Resolves host strings (IP literals, `[v6]`, or names) and a port into
/// listen addresses.
pub fn listen_addrs(hosts: &[String], port: u16) -> Result<Vec<SocketAddr>, Error> {
    let mut out = Vec::new();
    for host in hosts {
        let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            continue;
        }
        use std::net::ToSocketAddrs;
        let resolved = (bare, port).to_socket_addrs().map_err(|e| Error::Listen {
            addr: host.clone(),
            reason: e.to_string(),
        })?;
        out.extend(resolved);
    }
    out.dedup();
    if out.is_empty() {
        return Err(Error::Listen {
            addr: hosts.join(","),
            reason: "no address".into(),
        });
    }
    Ok(out)
}

/// The store a `--store` value names: `memory`, or a Redis URL
/// (`redis://[user:pass@]host[:port][/db]`, `redis+unix:///path`).
pub fn parse_store(
    value: &str,
    prefix: &str,
    timeout: Duration,
    stale_for: Duration,
) -> Result<StoreSettings, Error> {
    let bad = |reason: String| Error::Config {
        path: "store".into(),
        reason,
    };
    let value = value.trim();
    if value.is_empty() || value == "memory" {
        return Ok(StoreSettings::Memory);
    }
    let scheme = value.split("://").next().unwrap_or_default();
    if !matches!(scheme, "redis" | "redis+unix" | "unix") || !value.contains("://") {
        return Err(bad(format!(
            "{value:?} is neither `memory` nor a redis:// or redis+unix:// URL"
        )));
    }
    if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
        return Err(bad(format!(
            "store prefix {prefix:?} must be non-empty, without spaces or braces"
        )));
    }
    redis::Client::open(value).map_err(|e| bad(format!("{value:?}: {e}")))?;
    Ok(StoreSettings::Redis(crate::registry::RedisOptions {
        url: value.to_owned(),
        prefix: prefix.to_owned(),
        timeout,
        stale_for,
    }))
}

/// Checks settings that would otherwise fail later and less clearly.
pub fn validate(s: &Settings) -> Result<(), Error> {
    let bad = |reason: &str| Error::Config {
        path: "settings".into(),
        reason: reason.into(),
    };
    if !(s.keepalive.is_finite() && s.keepalive > 0.0) {
        return Err(bad("keepalive must be a positive number of seconds"));
    }
    if s.interval == 0 {
        return Err(bad("interval must be at least 1 second"));
    }
    if s.reap_interval.is_zero() {
        return Err(bad("reap_interval must be positive"));
    }
    if s.default_group.is_empty() || s.default_group.len() > s.limits.max_group_len {
        return Err(bad(
            "the default group must be non-empty and within max_group_len",
        ));
    }
    if s.scrape.history_max_bytes == 0 || s.scrape.max_body_bytes == 0 {
        return Err(bad(
            "history_max_bytes and scrape_max_body_bytes must be positive",
        ));
    }
    if s.limits.max_tags < 3 {
        return Err(bad("limits.max_tags must allow the 3 required tags"));
    }
    let l = &s.limits;
    if !(l.max_keepalive.is_finite() && l.max_keepalive >= s.keepalive) {
        return Err(bad(
            "max_keepalive must be a number of seconds no shorter than keepalive",
        ));
    }
    let rate_ok = l.register_rate.is_finite() && l.register_rate >= 0.0;
    let burst_ok = l.register_burst.is_finite() && l.register_burst >= 1.0;
    if !(rate_ok && burst_ok) {
        return Err(bad(
            "register_rate must be 0 or more and register_burst at least 1",
        ));
    }
    if l.max_group_members == 0
        || l.max_groups == 0
        || l.max_rate_sources == 0
        || l.max_render_bytes == 0
        || s.listener.max_connections == 0
    {
        return Err(bad(
            "max_group_members, max_groups, max_rate_sources, max_render_bytes and max_connections must be positive",
        ));
    }
    if s.listener.header_read_timeout.is_zero() {
        return Err(bad("header_read_timeout must be positive"));
    }
    if s.registration_token.as_deref() == Some("") {
        return Err(bad("the registration token must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_values() {
        let t = Duration::from_secs(1);
        assert!(matches!(
            parse_store("memory", "llama", t, t),
            Ok(StoreSettings::Memory)
        ));
        match parse_store(" redis://:pw@10.0.0.5:6379/2 ", "llama", t, t) {
            Ok(StoreSettings::Redis(o)) => assert_eq!(o.url, "redis://:pw@10.0.0.5:6379/2"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_store("redis+unix:///run/redis.sock", "p", t, t),
            Ok(StoreSettings::Redis(_))
        ));
        for (value, prefix, want) in [
            ("etcd://h:2379", "llama", "neither `memory` nor a redis://"),
            ("redis", "llama", "neither `memory` nor a redis://"),
            ("redis://h", "", "store prefix"),
            ("redis://h", "a{b}", "store prefix"),
        ] {
            let err = parse_store(value, prefix, t, t).unwrap_err().to_string();
            assert!(err.contains(want), "{value}: {err}");
        }
    }

    #[test]
    fn influx_secrets_stay_out_of_debug() {
        let basic = InfluxAuth::Basic {
            user: "llama".into(),
            pass: "s3cret-pass".into(),
        };
        let token = InfluxAuth::Token("s3cret-token".into());
        let text = format!("{basic:?} {token:?}");
        assert!(text.contains("llama"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn default_server_url_is_the_default_listen_address() {
        assert_eq!(
            defaults::SERVER_URL,
            format!("http://{}:{}", defaults::HOST, defaults::PORT)
        );
        let s = Settings::default();
        assert_eq!(
            s.listen[0].to_string(),
            format!("{}:{}", defaults::HOST, defaults::PORT)
        );
        assert_eq!(s.collector.api_bind, "0.0.0.0:8100");
        assert_eq!(s.scrape.agent_port, 8100);
    }
}
