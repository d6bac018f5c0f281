//! `llama-server`: parses flags and environment (docs/server-api.md), sets up
//! logging, and runs the server (or, with `scrape`, the scraper alone).

use std::{path::PathBuf, time::Duration};

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource};
use llama_server::{
    Settings,
    server::{self, ScrapeOnly},
    settings::{self as cfg, FileConfig, InfluxAuth, InfluxSettings, ScrapeSettings, defaults},
};

/// llama service-discovery server: registry, collector configs, scraper.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// YAML config file with defaults and limits (flags and environment win).
    #[arg(short = 'c', long, env = "APP_CONFIG", default_value = "")]
    config: String,
    /// Group of registrations that name none.
    #[arg(short = 'g', long, env = "APP_GROUP", default_value = defaults::GROUP)]
    group: String,
    /// Address to listen on; repeat (or comma-separate) for several, e.g. `-i 0.0.0.0 -i ::`.
    #[arg(
        short = 'i',
        long = "host",
        env = "APP_HOST",
        default_value = defaults::HOST,
        value_delimiter = ','
    )]
    host: Vec<String>,
    /// Keepalive, seconds, of registrations that give none.
    #[arg(short = 'k', long, env = "APP_KEEPALIVE", default_value_t = defaults::KEEPALIVE_S)]
    keepalive: f64,
    /// TCP port to listen on.
    #[arg(short = 'p', long, env = "APP_PORT", default_value_t = defaults::PORT)]
    port: u16,
    /// Debug logging.
    #[arg(short = 'v', long, env = "APP_VERBOSE", default_value_t = false)]
    verbose: bool,
    /// Summarization and scrape interval, seconds.
    #[arg(long, env = "LLAMA_INTERVAL", default_value_t = defaults::INTERVAL_S)]
    interval: u64,
    /// Seconds between reaps of expired and duplicate entries.
    #[arg(long, env = "APP_REAP_INTERVAL", default_value_t = defaults::REAP_INTERVAL_S)]
    reap_interval: f64,
    /// Trust the first X-Forwarded-For address (only behind a known proxy).
    #[arg(long, env = "APP_TRUST_FORWARDED_FOR", default_value_t = false)]
    trust_forwarded_for: bool,
    /// Most entries the registry holds.
    #[arg(long, env = "APP_MAX_ENTRIES", default_value_t = defaults::MAX_ENTRIES)]
    max_entries: usize,
    /// Shared secret: registrations and deletions must send
    /// `Authorization: Bearer <token>` (401 otherwise). Unset, anyone may
    /// register, as with the original server.
    #[arg(
        long,
        env = "LLAMA_REGISTRATION_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    registration_token: String,
    /// Networks (CIDR, comma-separated or repeated) whose peers may register
    /// and delete (403 otherwise); judged on the TCP peer address, never
    /// X-Forwarded-For. Unset: all.
    #[arg(long, env = "LLAMA_REGISTER_ALLOW", value_delimiter = ',')]
    register_allow: Vec<String>,
    /// Registrations and deletions per second one source address (IPv6: one
    /// /64) may make, sustained (429 beyond); 0 turns the limit off.
    #[arg(long, env = "LLAMA_REGISTER_RATE", default_value_t = defaults::REGISTER_RATE)]
    register_rate: f64,
    /// Registrations one source address may make at once before
    /// --register-rate applies.
    #[arg(long, env = "LLAMA_REGISTER_BURST", default_value_t = defaults::REGISTER_BURST)]
    register_burst: f64,
    /// Source addresses whose registration rate is tracked at once (new
    /// sources beyond: 429).
    #[arg(long, env = "LLAMA_MAX_RATE_SOURCES", default_value_t = defaults::MAX_RATE_SOURCES)]
    max_rate_sources: usize,
    /// Most members one group holds (503 for a new member beyond).
    #[arg(long, env = "LLAMA_MAX_GROUP_MEMBERS", default_value_t = defaults::MAX_GROUP_MEMBERS)]
    max_group_members: usize,
    /// Most groups the registry holds (503 for a new group beyond).
    #[arg(long, env = "LLAMA_MAX_GROUPS", default_value_t = defaults::MAX_GROUPS)]
    max_groups: usize,
    /// Longest keepalive, seconds, a registration may ask for (400 beyond).
    #[arg(long, env = "LLAMA_MAX_KEEPALIVE", default_value_t = defaults::MAX_KEEPALIVE_S)]
    max_keepalive: f64,
    /// Bytes of configs and lists being sent at once, all requests together
    /// (503 beyond).
    #[arg(long, env = "LLAMA_MAX_RENDER_BYTES", default_value_t = defaults::MAX_RENDER_BYTES)]
    max_render_bytes: usize,
    /// Seconds a client may take to send a request's headers, and an idle
    /// connection may wait for its next request, before it is closed.
    #[arg(long, env = "LLAMA_HEADER_READ_TIMEOUT", default_value_t = defaults::HEADER_READ_TIMEOUT_S)]
    header_read_timeout: f64,
    /// Most connections served at once, all listen addresses together; more
    /// wait in the kernel's backlog. Keep it below the file-descriptor limit.
    #[arg(long, env = "LLAMA_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); reread
    /// with the key on SIGHUP. Unset: plain HTTP. Either of the two may come
    /// from the config file instead; both or neither must be set in the end.
    #[arg(long, env = "LLAMA_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "LLAMA_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Where the registry lives: `memory` (this process) or a Redis URL
    /// (`redis://[user:pass@]host[:port][/db]`, `redis+unix:///path`) that
    /// several servers share.
    #[arg(long, env = "LLAMA_STORE", default_value = defaults::STORE, hide_env_values = true)]
    store: String,
    /// Prefix of every Redis key, so deployments can share one Redis.
    #[arg(long, env = "LLAMA_STORE_PREFIX", default_value = defaults::STORE_PREFIX)]
    store_prefix: String,
    /// Seconds one Redis operation may take (connecting included) before
    /// the request fails with 503.
    #[arg(long, env = "LLAMA_STORE_TIMEOUT", default_value_t = defaults::STORE_TIMEOUT_S)]
    store_timeout: f64,
    /// Seconds configs and lists are served from this server's cache while
    /// Redis is unreachable (writes answer 503 meanwhile).
    #[arg(long, env = "LLAMA_STORE_STALE_FOR", default_value_t = defaults::STORE_STALE_FOR_S)]
    store_stale_for: f64,
    /// InfluxDB host; the scraper runs when set.
    #[arg(long, env = "INFLUXDB_HOST", default_value = "")]
    influxdb_host: String,
    /// InfluxDB HTTP port.
    #[arg(long, env = "INFLUXDB_PORT", default_value_t = defaults::INFLUXDB_PORT)]
    influxdb_port: u16,
    /// InfluxDB database.
    #[arg(long, env = "INFLUXDB_NAME", default_value = defaults::INFLUXDB_NAME)]
    influxdb_name: String,
    /// Write to InfluxDB over HTTPS.
    #[arg(long, env = "INFLUXDB_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    influxdb_tls: bool,
    /// PEM CA certificate(s) InfluxDB's certificate must chain to (a private
    /// CA); default: the bundled public roots.
    #[arg(long, env = "INFLUXDB_CA_CERT", value_name = "FILE")]
    influxdb_ca_cert: Option<PathBuf>,
    /// InfluxDB 1.x user (with --influxdb-pass; HTTP basic authentication).
    #[arg(
        long,
        env = "INFLUXDB_USER",
        default_value = "",
        conflicts_with = "influxdb_token"
    )]
    influxdb_user: String,
    /// Password of --influxdb-user.
    #[arg(
        long,
        env = "INFLUXDB_PASS",
        default_value = "",
        hide_env_values = true
    )]
    influxdb_pass: String,
    /// InfluxDB 2.x/3.x API token for the 1.x-compatible write endpoint
    /// (`Authorization: Token …`).
    #[arg(
        long,
        env = "INFLUXDB_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    influxdb_token: String,
    /// TCP port of the agents' API, where the scraper fetches /influxdata.
    #[arg(long, env = "LLAMA_AGENT_PORT", default_value_t = defaults::AGENT_PORT)]
    agent_port: u16,
    /// Seconds one agent may take to answer the scraper.
    #[arg(long, env = "LLAMA_SCRAPE_TIMEOUT", default_value_t = defaults::SCRAPE_TIMEOUT_S)]
    scrape_timeout: f64,
    /// Memory budget, bytes, of the in-memory history behind the live
    /// matrix (the last hour of every path); older samples are downsampled,
    /// then dropped, to stay within it.
    #[arg(long, env = "LLAMA_HISTORY_MAX_BYTES", default_value_t = llama_server::history::DEFAULT_MAX_BYTES)]
    history_max_bytes: usize,
    /// Largest `/influxdata` answer, bytes, read from one agent.
    #[arg(long, env = "LLAMA_SCRAPE_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    scrape_max_body_bytes: usize,
    /// Collect the registered agents' summaries every interval (the live
    /// matrix; InfluxDB too when configured). `false` keeps only the
    /// registry and the configs.
    #[arg(long, env = "LLAMA_COLLECT", default_value_t = true, action = clap::ArgAction::Set)]
    collect: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run only the scraper, taking the agents from a server's /api/v1/scraper.
    Scrape {
        /// URL of the llama server, e.g. http://llama.example.com:5000.
        #[arg(
            short = 's',
            long,
            env = "LLAMA_SERVER",
            default_value = defaults::SERVER_URL
        )]
        server: String,
        /// PEM CA certificate(s) an https:// server's certificate must
        /// chain to; default: the bundled public roots.
        #[arg(long, env = "LLAMA_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
}

/// One setting from its three layers: the flag (or its environment
/// variable) when given, else the config file's value, else the flag's
/// default.
fn layered<T: Clone>(m: &ArgMatches, id: &str, flag: &T, file: Option<T>) -> T {
    match m.value_source(id) {
        Some(ValueSource::DefaultValue) | None => file.unwrap_or_else(|| flag.clone()),
        Some(_) => flag.clone(),
    }
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{what} must be a positive number of seconds"))
}

fn settings(cli: &Cli, m: &ArgMatches) -> anyhow::Result<(Settings, bool, InfluxSettings)> {
    let file = match cli.config.as_str() {
        "" => FileConfig::default(),
        path => FileConfig::load(&PathBuf::from(path))?,
    };
    let d = Settings::default();
    let hosts = layered(
        m,
        "host",
        &cli.host,
        file.host.clone().map(cfg::Hosts::into_vec),
    );
    let port = layered(m, "port", &cli.port, file.port);
    let influx_host = layered(
        m,
        "influxdb_host",
        &cli.influxdb_host,
        file.influxdb_host.clone(),
    );
    let influx_auth = influx_auth(cli)?;
    let influx = InfluxSettings {
        host: influx_host,
        port: layered(m, "influxdb_port", &cli.influxdb_port, file.influxdb_port),
        name: layered(
            m,
            "influxdb_name",
            &cli.influxdb_name,
            file.influxdb_name.clone(),
        ),
        tls: layered(m, "influxdb_tls", &cli.influxdb_tls, file.influxdb_tls),
        ca_cert: cli
            .influxdb_ca_cert
            .clone()
            .or_else(|| file.influxdb_ca_cert.clone()),
        auth: influx_auth,
    };
    let influx_for_scrape = influx.clone();
    let influx = (!influx.host.is_empty()).then_some(influx);
    let tls_files = match (
        cli.tls_cert.clone().or_else(|| file.tls_cert.clone()),
        cli.tls_key.clone().or_else(|| file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some(llama_server::tls::TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key (tls_cert, tls_key) go together"),
    };
    let mut limits = file.limits.clone().unwrap_or_default();
    let fl = file.limits.as_ref();
    limits.max_entries = layered(
        m,
        "max_entries",
        &cli.max_entries,
        fl.map(|l| l.max_entries),
    );
    limits.register_rate = layered(
        m,
        "register_rate",
        &cli.register_rate,
        fl.map(|l| l.register_rate),
    );
    limits.register_burst = layered(
        m,
        "register_burst",
        &cli.register_burst,
        fl.map(|l| l.register_burst),
    );
    limits.max_rate_sources = layered(
        m,
        "max_rate_sources",
        &cli.max_rate_sources,
        fl.map(|l| l.max_rate_sources),
    );
    limits.max_group_members = layered(
        m,
        "max_group_members",
        &cli.max_group_members,
        fl.map(|l| l.max_group_members),
    );
    limits.max_groups = layered(m, "max_groups", &cli.max_groups, fl.map(|l| l.max_groups));
    limits.max_keepalive = layered(
        m,
        "max_keepalive",
        &cli.max_keepalive,
        fl.map(|l| l.max_keepalive),
    );
    limits.max_render_bytes = layered(
        m,
        "max_render_bytes",
        &cli.max_render_bytes,
        fl.map(|l| l.max_render_bytes),
    );
    let token = layered(
        m,
        "registration_token",
        &cli.registration_token,
        file.registration_token.clone(),
    );
    let allow = layered(
        m,
        "register_allow",
        &cli.register_allow,
        file.register_allow.clone().map(cfg::Hosts::into_vec),
    );
    let register_allow = llama_server::access::parse_networks(&allow)
        .map_err(|e| anyhow::anyhow!("--register-allow: {e}"))?;
    let listener = cfg::ListenerSettings {
        header_read_timeout: secs(
            layered(
                m,
                "header_read_timeout",
                &cli.header_read_timeout,
                file.header_read_timeout,
            ),
            "header read timeout",
        )?,
        max_connections: layered(
            m,
            "max_connections",
            &cli.max_connections,
            file.max_connections,
        ),
    };
    let scrape = ScrapeSettings {
        agent_port: layered(m, "agent_port", &cli.agent_port, file.agent_port),
        agent_timeout: secs(
            layered(
                m,
                "scrape_timeout",
                &cli.scrape_timeout,
                file.scrape_timeout,
            ),
            "scrape timeout",
        )?,
        history_max_paths: file.history_max_paths.unwrap_or(d.scrape.history_max_paths),
        history_max_bytes: layered(
            m,
            "history_max_bytes",
            &cli.history_max_bytes,
            file.history_max_bytes,
        ),
        max_body_bytes: layered(
            m,
            "scrape_max_body_bytes",
            &cli.scrape_max_body_bytes,
            file.scrape_max_body_bytes,
        ),
        ..ScrapeSettings::default()
    };
    let store = cfg::parse_store(
        &layered(m, "store", &cli.store, file.store.clone()),
        &layered(
            m,
            "store_prefix",
            &cli.store_prefix,
            file.store_prefix.clone(),
        ),
        secs(
            layered(m, "store_timeout", &cli.store_timeout, file.store_timeout),
            "store timeout",
        )?,
        secs(
            layered(
                m,
                "store_stale_for",
                &cli.store_stale_for,
                file.store_stale_for,
            ),
            "store stale-for time",
        )?,
    )?;
    let s = Settings {
        listen: cfg::listen_addrs(&hosts, port)?,
        default_group: layered(m, "group", &cli.group, file.group.clone()),
        keepalive: layered(m, "keepalive", &cli.keepalive, file.keepalive),
        interval: layered(m, "interval", &cli.interval, file.interval),
        reap_interval: secs(
            layered(m, "reap_interval", &cli.reap_interval, file.reap_interval),
            "reap interval",
        )?,
        trust_forwarded_for: layered(
            m,
            "trust_forwarded_for",
            &cli.trust_forwarded_for,
            file.trust_forwarded_for,
        ),
        limits,
        registration_token: (!token.is_empty()).then_some(token),
        register_allow,
        listener,
        tls: tls_files,
        collector: file.collector.clone().unwrap_or_default(),
        influx,
        scrape,
        collect: layered(m, "collect", &cli.collect, file.collect),
        store,
    };
    let verbose = layered(m, "verbose", &cli.verbose, file.verbose);
    Ok((s, verbose, influx_for_scrape))
}

/// InfluxDB credentials from the flags (secrets are not config-file keys:
/// environment variables or flags keep them out of a file others read).
fn influx_auth(cli: &Cli) -> anyhow::Result<InfluxAuth> {
    match (
        cli.influxdb_user.as_str(),
        cli.influxdb_pass.as_str(),
        cli.influxdb_token.as_str(),
    ) {
        ("", "", "") => Ok(InfluxAuth::None),
        ("", "", token) => Ok(InfluxAuth::Token(token.to_owned())),
        (user, pass, "") if !user.is_empty() => Ok(InfluxAuth::Basic {
            user: user.to_owned(),
            pass: pass.to_owned(),
        }),
        ("", _, "") => {
            anyhow::bail!("--influxdb-pass / INFLUXDB_PASS needs --influxdb-user / INFLUXDB_USER")
        }
        _ => anyhow::bail!(
            "give --influxdb-user/--influxdb-pass (InfluxDB 1.x) or --influxdb-token (2.x/3.x), not both"
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let (settings, verbose, influx) = settings(&cli, &matches)?;
    let default_level = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        None => runtime.block_on(server::serve(settings))?,
        Some(Command::Scrape { server, ca_cert }) => {
            let mut influx = influx;
            if influx.host.is_empty() {
                influx.host = "127.0.0.1".into();
            }
            let cfg = ScrapeOnly {
                server,
                ca_cert,
                influx,
                interval: Duration::from_secs(settings.interval.max(1)),
                scrape: settings.scrape.clone(),
            };
            runtime.block_on(server::scrape(cfg))?;
        }
    }
    Ok(())
}
