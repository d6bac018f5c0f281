//! `llama-agent run`: the per-host daemon — reflector, collector, HTTP API
//! and control loop in one process.
//!
//! The pieces meet here and nowhere else: the control loop hands configs to
//! a [`CollectorSink`], which starts the collector on the first one and swaps
//! it in place afterwards (sockets whose settings did not change are kept),
//! and with `--allow peers` points the reflector's allowlist at the group's
//! members. The API serves whatever collector is current, so `/status` and
//! `/influxdata` (`[]`) answer from the first second, before any config.

mod sink;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::registry::Registry;
pub use sink::CollectorSink;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    api::{self, ApiState, CollectorView, MetricsSource},
    collector::Shared,
    control::{self, ControlMetrics},
    reflector::{self, AllowSpec, Reflector},
    settings::Settings,
};

/// The agent stops within this long after SIGINT/SIGTERM; the binary exits
/// then at the latest (docs/agent.md, "Stopping"). The daemon's own stages
/// below fit inside it, in order.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// Stage 2 of stopping, after the control loop's
/// [`control::SHUTDOWN_GRACE`] and [`control::DEREGISTER_TIMEOUT`]: the collector stops (no more probes), then
/// the reflector detaches XDP and stops. What is left of
/// [`SHUTDOWN_BOUND`] lets the HTTP API close.
pub const STOP_BUDGET: Duration = Duration::from_secs(2);

const _: () = assert!(
    control::SHUTDOWN_GRACE.as_millis()
        + control::DEREGISTER_TIMEOUT.as_millis()
        + STOP_BUDGET.as_millis()
        < SHUTDOWN_BOUND.as_millis(),
    "the daemon's shutdown stages must fit inside the binary's bound"
);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reflector: {0}")]
    Reflector(#[from] reflector::attach::StartError),
    #[error(transparent)]
    Api(#[from] api::Error),
    #[error("control loop: {0}")]
    Control(#[from] control::Error),
    #[error("standalone mode needs --config / APP_CONFIG")]
    NoConfig,
    /// A blocking task panicked or was cancelled: a bug, not bad input.
    #[error("{what} task ended abnormally: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The API serves whichever collector the sink runs now.
impl CollectorView for CollectorSink {
    fn current(&self) -> Arc<Shared> {
        self.shared()
    }
}

/// The reflector's counters, while it runs.
impl MetricsSource for Mutex<Option<Reflector>> {
    fn visit(&self, f: &mut dyn FnMut(&Registry)) {
        let registry = self
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(reflector::metrics::registry));
        if let Some(registry) = &registry {
            f(registry);
        }
    }
}

/// `spawn_blocking(f)`, with a panic in `f` reported as [`Error::Task`].
async fn blocking<R: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Task { what, source })
}

/// Runs the agent until `shutdown` is cancelled: reflector first (so peers
/// are answered even before this agent has targets), then the API, then the
/// control loop (or the standalone config file).
pub async fn run(
    settings: Settings,
    state_dir: Option<PathBuf>,
    metrics: ControlMetrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let setup = settings.reflector.clone();
    let reflector = blocking("reflector start", move || Reflector::start(&setup)).await??;
    let reflector = Arc::new(Mutex::new(Some(reflector)));

    let sink = Arc::new(
        CollectorSink::new(
            settings.port,
            settings.reflector.allow == AllowSpec::Peers,
            Arc::clone(&reflector),
            settings.limits,
        )
        .with_tx_timestamps(settings.tx_timestamps),
    );
    let mut control_registry = Registry::default();
    metrics.register(&mut control_registry);
    let state = ApiState::new(Arc::clone(&sink) as Arc<dyn CollectorView>)
        .with_metrics(Arc::new(control_registry))
        .with_metrics(Arc::clone(&reflector) as Arc<dyn MetricsSource>);

    let listener = api::bind(settings.api_bind).await?;
    info!(
        "agent API (/status, /influxdata, /metrics) on {}",
        settings.api_bind
    );
    let api_stop = shutdown.clone();
    let api = tokio::spawn(api::serve(listener, state, async move {
        api_stop.cancelled().await
    }));

    tokio::spawn(watch_drops(Arc::clone(&reflector), shutdown.clone()));

    let result = match settings.control_config(state_dir) {
        Some(config) => control::run(config, sink.clone(), metrics, shutdown.clone())
            .await
            .map_err(Error::from),
        None => {
            let path = settings.config.clone().ok_or(Error::NoConfig)?;
            let file_sink = Arc::clone(&sink);
            let applied = blocking("config file", move || {
                control::apply_file(&path, file_sink.as_ref())
            })
            .await?;
            match applied {
                Ok(()) => {
                    shutdown.cancelled().await;
                    Ok(())
                }
                Err(e) => Err(Error::from(e)),
            }
        }
    };
    // Whatever ended the loop, stop in order: probes first, then replies.
    shutdown.cancel();
    let stop = tokio::task::spawn_blocking(move || {
        sink.shutdown();
        let taken = reflector.lock().map(|mut r| r.take()).unwrap_or(None);
        if let Some(r) = taken {
            let (xdp, user) = r.shutdown();
            info!(?xdp, ?user, "reflector stopped (XDP detached)");
        }
    });
    if tokio::time::timeout(STOP_BUDGET, stop).await.is_err() {
        warn!("collector/reflector did not stop within {STOP_BUDGET:?}");
    }
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("{e}"),
        Err(e) => warn!("agent API task ended abnormally: {e}"),
    }
    result
}

/// Logs the XDP program's drops as they start (the kernel only counts
/// them), every [`reflector::drops::POLL_EVERY`] until `shutdown`.
async fn watch_drops(reflector: Arc<Mutex<Option<Reflector>>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(reflector::drops::POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // One map read per counter under the lock: short, so the lock's
        // other users (metrics, allowlist updates) barely wait.
        if let Ok(mut guard) = reflector.lock()
            && let Some(r) = guard.as_mut()
        {
            r.log_drops();
        }
    }
}
