//! The control loop: keeps the agent registered with the server
//! (docs/server-api.md) and its collector fed with the group's config,
//! through server outages.
//!
//! Two independent tasks share the server list ([`servers`]: one or more
//! servers in order of preference, failing over between them):
//! [`registration`] (POST every 60 s) and [`poller`] (GET every 30 s). Each backs off on its own with
//! jitter ([`backoff`]) and logs once per state change ([`health`]). The last
//! config the collector accepted is persisted ([`state`]) and applied at the
//! next start before the server is asked, so an agent restarted during a
//! server outage keeps probing its peers. The collector is reached only
//! through [`ConfigSink`].
//!
//! At shutdown, once both loops stopped, the agent deregisters
//! (`DELETE /api/v1/register/<id>`, [`deregister`]) so its peers stop
//! probing it at once rather than when its keepalive runs out.

pub mod backoff;
pub mod client;
pub mod error;
pub mod health;
pub mod metrics;
pub mod poller;
pub mod registration;
pub mod servers;
pub mod sink;
pub mod state;
pub mod tls;
pub mod token;

use std::{
    collections::BTreeMap,
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::Url;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::{
    client::ServerClient,
    error::Error,
    metrics::ControlMetrics,
    registration::RegisterBody,
    servers::Servers,
    sink::ConfigSink,
    state::StateFile,
    token::{Token, TokenError},
};
/// Bound on every request to the server (connect + answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First backoff ceiling after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest backoff when none is configured (and the loop's own interval is
/// longer): a failing agent retries at least this often.
pub const BACKOFF_CEILING: Duration = Duration::from_secs(300);
/// How long an in-flight request may still finish after shutdown; part of
/// the agent's shutdown bound (see `daemon`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Bound on the deregistration sent at shutdown, after [`SHUTDOWN_GRACE`];
/// also part of the agent's shutdown bound.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything the control loop needs; the agent builds it from its
/// settings (`Settings::control_config`), tests and embedders directly.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Server base URLs in order of preference (at least one): requests
    /// go to the first that answers ([`servers`]).
    pub servers: Vec<Url>,
    pub group: String,
    /// The agent's probe/API port, registered and sent as `llamaport`.
    pub port: u16,
    /// Registered `ip` and `srcip`; `None` lets the server tell.
    pub ip: Option<IpAddr>,
    pub keepalive: Duration,
    pub probe_name: String,
    pub probe_shortname: String,
    /// User tags (the agent adds `version`, `probe_name`, `probe_shortname`).
    pub tags: BTreeMap<String, String>,
    pub register_interval: Duration,
    pub poll_interval: Duration,
    /// Where the last good config is persisted; `None` = no persistence.
    pub state_dir: Option<PathBuf>,
    /// Config applied at start-up when nothing is persisted (`--config`).
    pub bootstrap_config: Option<PathBuf>,
    /// Bound on every request (connect + answer).
    pub request_timeout: Duration,
    /// First backoff ceiling after a failure.
    pub backoff_base: Duration,
    /// Largest backoff; `None` = the loop's own interval, at most
    /// [`BACKOFF_CEILING`], so a failing agent never retries less often
    /// than a healthy one asks.
    pub backoff_max: Option<Duration>,
    /// How long an in-flight request may still finish after shutdown.
    pub shutdown_grace: Duration,
    /// Sent as a bearer token on register and deregister.
    pub registration_token: Option<Token>,
    /// Bound on the `DELETE` sent at shutdown.
    pub deregister_timeout: Duration,
    /// PEM file of the CA certificates an `https://` server's certificate
    /// must chain to; `None` = the bundled public roots.
    pub ca_cert: Option<PathBuf>,
}

impl ControlConfig {
    /// The backoff cap of a loop running every `interval`.
    pub fn backoff_cap(&self, interval: Duration) -> Duration {
        self.backoff_max
            .unwrap_or_else(|| interval.min(BACKOFF_CEILING))
    }

    /// The state file of this group, when persistence is on.
    pub fn state_file(&self) -> Option<StateFile> {
        self.state_dir
            .as_deref()
            .map(|dir| StateFile::new(dir, &self.group))
    }
}

/// What the two loops share.
struct Shared {
    servers: Servers,
    config: ControlConfig,
    sink: Arc<dyn ConfigSink>,
    metrics: ControlMetrics,
    shutdown: CancellationToken,
    /// Poke the registration loop to register now (the server forgot us).
    reregister: Notify,
    /// Set after the first registration attempt, whatever its outcome.
    first_registration: watch::Sender<bool>,
    /// The server (its index) and entry id of the last successful
    /// registration: what to delete at shutdown, and where.
    registered: Mutex<Option<(usize, String)>>,
}

/// Run the control loop until `shutdown` is cancelled.
///
/// First applies the persisted config (else `bootstrap_config`) so probing
/// starts without the server, then registers and polls. Returns once both
/// loops stopped: promptly after cancellation, letting an in-flight request
/// finish for at most `shutdown_grace`. Errs only when the HTTP client
/// cannot be set up; server trouble is retried, never returned.
pub async fn run(
    config: ControlConfig,
    sink: Arc<dyn ConfigSink>,
    metrics: ControlMetrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let servers = Servers::new(
        &config.servers,
        config.request_timeout,
        config.registration_token.as_ref(),
        config.ca_cert.as_deref(),
        metrics.clone(),
    )?;
    if let Some(dir) = &config.state_dir {
        state::remove_stale_temporaries(dir);
    }
    let state = config.state_file();
    let initial = apply_initial(&config, state.as_ref(), &sink, &metrics).await;
    let shared = Arc::new(Shared {
        servers,
        config,
        sink,
        metrics,
        shutdown,
        reregister: Notify::new(),
        first_registration: watch::Sender::new(false),
        registered: Mutex::new(None),
    });
    let register = tokio::spawn(registration::run_loop(Arc::clone(&shared)));
    let poll = tokio::spawn(poller::Poller::new(Arc::clone(&shared), state, initial).run_loop());
    // A panic in a loop is a bug; report it and let the other loop finish.
    for (name, task) in [("registration", register), ("config poll", poll)] {
        if let Err(e) = task.await {
            warn!(loop = name, error = %e, "control loop task ended abnormally");
        }
    }
    deregister(&shared).await;
    Ok(())
}

/// Tells the server this agent last registered with that it is leaving
/// (`DELETE /api/v1/register/<id>`), when it registered successfully;
/// bounded by `deregister_timeout`. A
/// server that does not know the route (404/405: older servers) or the
/// entry is fine; anything else is logged and ignored, since the entry
/// expires with its keepalive anyway.
async fn deregister(shared: &Shared) {
    let registered = shared.registered.lock().ok().and_then(|r| r.clone());
    let Some((server, id)) = registered else {
        debug!("never registered with an entry id: nothing to deregister");
        return;
    };
    match shared
        .servers
        .client(server)
        .deregister(&id, shared.config.deregister_timeout)
        .await
    {
        Ok(_) => info!(%id, "deregistered from the server"),
        Err(Error::Status {
            status: status @ (404 | 405),
            ..
        }) => debug!(%id, status, "the server has no such entry or route; nothing to deregister"),
        Err(error) => {
            warn!(%id, %error, "deregistering failed; the entry expires with its keepalive")
        }
    }
}

/// Standalone mode (`--config` without `--server`): apply a collector config
/// file once, as the original collector read its file.
pub fn apply_file(path: &Path, sink: &dyn ConfigSink) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    apply_blocking(sink, &text).map_err(Error::Rejected)
}

/// The persisted config, else the bootstrap file, applied before any request.
/// Returns the text in force (so an identical first fetch changes nothing).
async fn apply_initial(
    config: &ControlConfig,
    state: Option<&StateFile>,
    sink: &Arc<dyn ConfigSink>,
    metrics: &ControlMetrics,
) -> Option<String> {
    let persisted = match state.map(StateFile::load) {
        Some(Ok(Some(text))) => state.map(|s| (s.path().to_owned(), text)),
        Some(Err(e)) => {
            warn!(error = %e, "cannot read the persisted config; waiting for the server");
            None
        }
        Some(Ok(None)) | None => None,
    };
    let (path, text) = match (persisted, &config.bootstrap_config) {
        (Some(found), _) => found,
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => (path.clone(), text),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the --config file");
                return None;
            }
        },
        (None, None) => return None,
    };
    let sink = Arc::clone(sink);
    let (text, result) = tokio::task::spawn_blocking(move || {
        let result = apply_blocking(sink.as_ref(), &text);
        (text, result)
    })
    .await
    .ok()?;
    match result {
        Ok(()) => {
            metrics.config_changes_applied.inc();
            info!(path = %path.display(), "applied the last good config before contacting the server");
            Some(text)
        }
        Err(reason) => {
            metrics.config_rejected.inc();
            warn!(path = %path.display(), %reason, "the collector refused the stored config; waiting for the server");
            None
        }
    }
}

/// Call the sink, turning a panic inside it into a rejection: a buggy
/// collector must not take the control loop down with it.
fn apply_blocking(sink: &dyn ConfigSink, text: &str) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.apply(text)))
        .unwrap_or_else(|_| Err("the config sink panicked".into()))
}

/// Drive `fut` to completion, unless shutdown comes first: then give it
/// `grace` to finish. `None` = shut down (whether or not it finished, the
/// caller must stop).
async fn finish_or_abandon<F: Future>(
    fut: F,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    if shutdown.is_cancelled() {
        return None;
    }
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => Some(out),
        _ = shutdown.cancelled() => {
            // Let the request complete (so the server does not see a torn
            // connection) but do not act on it: we are stopping.
            let _ = tokio::time::timeout(grace, fut).await;
            None
        }
    }
}

/// Sleep `delay`, or less when `wake` is notified. `false` = shutdown.
async fn wait_or_stop(
    delay: Duration,
    shutdown: &CancellationToken,
    wake: Option<&Notify>,
) -> bool {
    let woken = async {
        match wake {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
        _ = woken => true,
    }
}
