//! `llama-server`: parses flags and environment (docs/server-api.md), sets up
//! logging, and runs the server (or, with `scrape`, the scraper alone).

use std::{path::PathBuf, time::Duration};

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource};
use llama_server::{
    Settings,
    server::{self, ScrapeOnly},
    settings::{self as cfg, FileConfig, InfluxSettings, ScrapeSettings, defaults},
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
    /// InfluxDB host; the scraper runs when set.
    #[arg(long, env = "INFLUXDB_HOST", default_value = "")]
    influxdb_host: String,
    /// InfluxDB HTTP port.
    #[arg(long, env = "INFLUXDB_PORT", default_value_t = defaults::INFLUXDB_PORT)]
    influxdb_port: u16,
    /// InfluxDB database.
    #[arg(long, env = "INFLUXDB_NAME", default_value = defaults::INFLUXDB_NAME)]
    influxdb_name: String,
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

fn settings(cli: &Cli, m: &ArgMatches) -> anyhow::Result<(Settings, bool)> {
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
    let influx = (!influx_host.is_empty()).then(|| InfluxSettings {
        host: influx_host,
        port: layered(m, "influxdb_port", &cli.influxdb_port, file.influxdb_port),
        name: layered(
            m,
            "influxdb_name",
            &cli.influxdb_name,
            file.influxdb_name.clone(),
        ),
    });
    let mut limits = file.limits.clone().unwrap_or_default();
    limits.max_entries = layered(
        m,
        "max_entries",
        &cli.max_entries,
        file.limits.as_ref().map(|l| l.max_entries),
    );
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
        collector: file.collector.clone().unwrap_or_default(),
        influx,
        scrape,
        collect: layered(m, "collect", &cli.collect, file.collect),
    };
    let verbose = layered(m, "verbose", &cli.verbose, file.verbose);
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
