//! `llama-agent collect`: a standalone collector, like the original
//! collector binary. Loads the configuration, serves the API, and reloads
//! the file on SIGHUP (a bad file is reported and the running configuration
//! kept); SIGINT/SIGTERM stop it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use tokio::signal::unix::{SignalKind, signal};

use super::Collector;
use crate::{
    api,
    config::{CollectorConfig, ConfigError, DEFAULT_LEGACY_PORT, LoadOptions},
    settings::limits::LimitArgs,
};

/// Why `collect` could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Collector(#[from] super::Error),
    #[error(transparent)]
    Api(#[from] api::Error),
    #[error(transparent)]
    Limits(#[from] crate::settings::limits::LimitError),
    #[error("cannot start the async runtime or watch signals: {0}")]
    Runtime(#[source] std::io::Error),
    /// The API task panicked: a bug, not bad input.
    #[error("the API task ended abnormally: {0}")]
    ApiTask(#[source] tokio::task::JoinError),
}

/// Flags of `llama-agent collect`.
#[derive(Clone, Debug, clap::Args)]
pub struct CollectArgs {
    /// Collector configuration file (docs/collector-config.md, full or legacy
    /// format).
    /// Without one, the original collector's built-in default runs.
    #[arg(short = 'c', long, env = "APP_CONFIG", default_value = None)]
    pub config: Option<PathBuf>,
    /// Address the HTTP API (/status, /influxdata, /metrics) listens on.
    /// Default: the configuration's `api.bind`.
    #[arg(long, env = "LLAMA_API_BIND", default_value = None)]
    pub api_bind: Option<SocketAddr>,
    /// Port the targets of a legacy-format configuration are probed on.
    #[arg(long, env = "LLAMA_DST_PORT", default_value_t = DEFAULT_LEGACY_PORT)]
    pub dst_port: u16,
    /// Debug logging (RUST_LOG overrides).
    #[arg(short, long, env = "APP_VERBOSE", default_value_t = false)]
    pub verbose: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub tx: super::txstamp::TxArgs,
}

/// Loads `path`, or the built-in default when there is none.
pub fn load_config(
    path: Option<&Path>,
    opts: &LoadOptions,
) -> Result<CollectorConfig, ConfigError> {
    match path {
        Some(p) => CollectorConfig::load(p, opts),
        None => {
            tracing::info!("no --config given: running the original default configuration");
            CollectorConfig::original_default()
        }
    }
}

/// Runs the collector until SIGINT or SIGTERM.
pub fn run(args: CollectArgs) -> Result<(), Error> {
    let opts = LoadOptions {
        legacy_port: args.dst_port,
        limits: args.limits.limits()?,
    };
    let config = load_config(args.config.as_deref(), &opts).map_err(super::Error::from)?;
    let bind = args.api_bind.unwrap_or(config.api_bind);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async move {
        let listener = api::bind(bind).await?;
        let mut hup = signal(SignalKind::hangup()).map_err(Error::Runtime)?;
        let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
        let collector = Collector::start_with(config, args.tx.tx_timestamps)?;
        tracing::info!(
            "collector API listening on {}",
            listener.local_addr().map_or_else(|_| bind.to_string(), |a| a.to_string())
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(api::serve(listener, collector.shared().into(), async {
            let _ = stop_rx.await;
        }));
        let result = loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let path = args.config.clone();
                    let opts = opts.clone();
                    // Host names are resolved while loading: keep that off
                    // the runtime thread.
                    let loaded = tokio::task::spawn_blocking(move || load_config(path.as_deref(), &opts)).await;
                    match loaded {
                        Ok(Ok(cfg)) => {
                            if cfg.api_bind != bind && args.api_bind.is_none() {
                                tracing::warn!("api.bind changed to {}: restart to move the API", cfg.api_bind);
                            }
                            match collector.swap_config(cfg) {
                                Ok(r) => tracing::info!(?r, "configuration reloaded"),
                                Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
                            }
                        }
                        Ok(Err(e)) => tracing::error!("reload failed, keeping the running configuration: {e}"),
                        Err(e) => tracing::error!("reload task failed: {e}"),
                    }
                }
                _ = term.recv() => break Ok(()),
                _ = int.recv() => break Ok(()),
                r = &mut server => {
                    break match r {
                        Ok(r) => r.map_err(Error::from),
                        Err(e) => Err(Error::ApiTask(e)),
                    };
                }
            }
        };
        let _ = stop_tx.send(());
        if !server.is_finished() {
            let _ = server.await;
        }
        collector.shutdown();
        tracing::info!("collector stopped");
        result
    })
}
