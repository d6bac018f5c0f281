//! `llama-server`: parses flags and environment (DESIGN A4), sets up
//! logging, and runs the server (or, with `scrape`, the scraper alone).

use std::{path::PathBuf, time::Duration};

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource};
use llama_server::{
    Settings,
    server::{self, ScrapeOnly},
    settings::{self as cfg, FileConfig, InfluxSettings, ScrapeSettings},
};

/// llama service-discovery server: registry, collector configs, scraper.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// YAML config file with defaults and limits (flags and environment win).
    #[arg(short = 'c', long, env = "APP_CONFIG", default_value = "")]
    config: String,
    /// Group of registrations that name none.
    #[arg(short = 'g', long, env = "APP_GROUP", default_value = "default")]
    group: String,
    /// Address to listen on; repeat (or comma-separate) for several, e.g. `-i 0.0.0.0 -i ::`.
    #[arg(
        short = 'i',
        long = "host",
        env = "APP_HOST",
        default_value = "127.0.0.1",
        value_delimiter = ','
    )]
    host: Vec<String>,
    /// Keepalive, seconds, of registrations that give none.
    #[arg(short = 'k', long, env = "APP_KEEPALIVE", default_value_t = 86400.0)]
    keepalive: f64,
    /// TCP port to listen on.
    #[arg(short = 'p', long, env = "APP_PORT", default_value_t = 5000)]
    port: u16,
    /// Debug logging.
    #[arg(short = 'v', long, env = "APP_VERBOSE", default_value_t = false)]
    verbose: bool,
    /// Summarization and scrape interval, seconds.
    #[arg(long, env = "LLAMA_INTERVAL", default_value_t = 10)]
    interval: u64,
    /// Seconds between reaps of expired and duplicate entries.
    #[arg(long, env = "APP_REAP_INTERVAL", default_value_t = 5.0)]
    reap_interval: f64,
    /// Trust the first X-Forwarded-For address (only behind a known proxy).
    #[arg(long, env = "APP_TRUST_FORWARDED_FOR", default_value_t = false)]
    trust_forwarded_for: bool,
    /// Most entries the registry holds.
    #[arg(long, env = "APP_MAX_ENTRIES", default_value_t = 200_000)]
    max_entries: usize,
    /// InfluxDB host; the scraper runs when set.
    #[arg(long, env = "INFLUXDB_HOST", default_value = "")]
    influxdb_host: String,
    /// InfluxDB HTTP port.
    #[arg(long, env = "INFLUXDB_PORT", default_value_t = 8086)]
    influxdb_port: u16,
    /// InfluxDB database.
    #[arg(long, env = "INFLUXDB_NAME", default_value = "llama")]
    influxdb_name: String,
    /// TCP port of the agents' API, where the scraper fetches /influxdata.
    #[arg(long, env = "LLAMA_AGENT_PORT", default_value_t = 8100)]
    agent_port: u16,
    /// Seconds one agent may take to answer the scraper.
    #[arg(long, env = "LLAMA_SCRAPE_TIMEOUT", default_value_t = 5.0)]
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
            default_value = "http://127.0.0.1:5000"
        )]
        server: String,
    },
}

/// The value of `id` unless it is clap's default (so the file may set it).
fn explicit<T>(m: &ArgMatches, id: &str, v: T) -> Option<T> {
    match m.value_source(id) {
        Some(ValueSource::DefaultValue) | None => None,
        Some(_) => Some(v),
    }
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{what} must be a positive number of seconds"))
}

fn settings(cli: &Cli, m: &ArgMatches) -> anyhow::Result<(Settings, bool)> {
    let file = match cli.config.as_str() {
        "" => FileConfig::default(),
        path => FileConfig::load(&PathBuf::from(path))?,
    };
    let d = Settings::default();
    let hosts = explicit(m, "host", cli.host.clone())
        .or_else(|| file.host.clone().map(cfg::Hosts::into_vec))
        .unwrap_or_else(|| cli.host.clone());
    let port = explicit(m, "port", cli.port)
        .or(file.port)
        .unwrap_or(cli.port);
    let influx_host = explicit(m, "influxdb_host", cli.influxdb_host.clone())
        .or(file.influxdb_host.clone())
        .unwrap_or_default();
    let influx = (!influx_host.is_empty()).then(|| InfluxSettings {
        host: influx_host,
        port: explicit(m, "influxdb_port", cli.influxdb_port)
            .or(file.influxdb_port)
            .unwrap_or(cli.influxdb_port),
        name: explicit(m, "influxdb_name", cli.influxdb_name.clone())
            .or(file.influxdb_name.clone())
            .unwrap_or_else(|| cli.influxdb_name.clone()),
    });
    let mut limits = file.limits.clone().unwrap_or_default();
    if let Some(max) = explicit(m, "max_entries", cli.max_entries) {
        limits.max_entries = max;
    } else if file.limits.is_none() {
        limits.max_entries = cli.max_entries;
    }
    let scrape = ScrapeSettings {
        agent_port: explicit(m, "agent_port", cli.agent_port)
            .or(file.agent_port)
            .unwrap_or(cli.agent_port),
        agent_timeout: secs(
            explicit(m, "scrape_timeout", cli.scrape_timeout)
                .or(file.scrape_timeout)
                .unwrap_or(cli.scrape_timeout),
            "scrape timeout",
        )?,
        history_max_paths: file.history_max_paths.unwrap_or(d.scrape.history_max_paths),
        history_max_bytes: explicit(m, "history_max_bytes", cli.history_max_bytes)
            .or(file.history_max_bytes)
            .unwrap_or(cli.history_max_bytes),
        max_body_bytes: explicit(m, "scrape_max_body_bytes", cli.scrape_max_body_bytes)
            .or(file.scrape_max_body_bytes)
            .unwrap_or(cli.scrape_max_body_bytes),
        ..ScrapeSettings::default()
    };
    let s = Settings {
        listen: cfg::listen_addrs(&hosts, port)?,
        default_group: explicit(m, "group", cli.group.clone())
            .or(file.group.clone())
            .unwrap_or_else(|| cli.group.clone()),
        keepalive: explicit(m, "keepalive", cli.keepalive)
            .or(file.keepalive)
            .unwrap_or(cli.keepalive),
        interval: explicit(m, "interval", cli.interval)
            .or(file.interval)
            .unwrap_or(cli.interval),
        reap_interval: secs(
            explicit(m, "reap_interval", cli.reap_interval)
                .or(file.reap_interval)
                .unwrap_or(cli.reap_interval),
            "reap interval",
        )?,
        trust_forwarded_for: explicit(m, "trust_forwarded_for", cli.trust_forwarded_for)
            .or(file.trust_forwarded_for)
            .unwrap_or(cli.trust_forwarded_for),
        limits,
        collector: file.collector.clone().unwrap_or_default(),
        influx,
        scrape,
        collect: explicit(m, "collect", cli.collect)
            .or(file.collect)
            .unwrap_or(cli.collect),
    };
    let verbose = explicit(m, "verbose", cli.verbose)
        .or(file.verbose)
        .unwrap_or(cli.verbose);
    Ok((s, verbose))
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let (settings, verbose) = settings(&cli, &matches)?;
    let default_level = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        None => runtime.block_on(server::serve(settings))?,
        Some(Command::Scrape { server }) => {
            let influx = settings.influx.clone().unwrap_or(InfluxSettings {
                host: "127.0.0.1".into(),
                port: cli.influxdb_port,
                name: cli.influxdb_name.clone(),
            });
            let cfg = ScrapeOnly {
                server,
                influx,
                interval: Duration::from_secs(settings.interval.max(1)),
                scrape: settings.scrape.clone(),
            };
            runtime.block_on(server::scrape(cfg))?;
        }
    }
    Ok(())
}
