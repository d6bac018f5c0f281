//! Config polling: `GET /api/v1/config/<group>` every poll interval; a changed
//! config goes to the [`ConfigSink`](super::ConfigSink) and, once accepted, to
//! the state file. This replaces the original probe's shell loop that diffed
//! the YAML and restarted the collector.

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::{SeedableRng, rngs::StdRng};
use tracing::{debug, info, warn};

use super::{
    Shared, apply_blocking,
    backoff::{Backoff, jittered},
    error::Error,
    finish_or_abandon,
    health::{Health, Transition},
    metrics::Loop,
    state::StateFile,
    wait_or_stop,
};
use crate::duration;

/// What one successful fetch led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Byte-identical to the config in force: nothing touched.
    Unchanged,
    /// New config handed to the sink and accepted.
    Applied,
    /// The sink refused it; the previous config stays in force.
    Rejected,
}

/// The poller's memory between polls.
pub(super) struct Poller {
    shared: Arc<Shared>,
    state: Option<StateFile>,
    /// The config in force (persisted, bootstrap or fetched).
    applied: Option<String>,
    /// The last config the sink refused: not offered again every poll.
    rejected: Option<String>,
    /// Our address as the server (its index in the list) sees it, when
    /// `--ip` is not given. Servers at other sites may see another one.
    /// Behind a lock only because a fetch round borrows the poller shared.
    my_ip: Mutex<Option<(usize, IpAddr)>>,
    /// The previous fetch got 404 (see [`Poller::fetch_from`]).
    last_was_404: AtomicBool,
}

impl Poller {
    pub(super) fn new(
        shared: Arc<Shared>,
        state: Option<StateFile>,
        applied: Option<String>,
    ) -> Self {
        Self {
            shared,
            state,
            applied,
            rejected: None,
            my_ip: Mutex::new(None),
            last_was_404: AtomicBool::new(false),
        }
    }

    /// Poll until shutdown.
    pub(super) async fn run_loop(mut self) {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        // The first poll waits for the first registration attempt: polling
        // first would only earn a 404 from a server that does not know us yet.
        let mut registered = shared.first_registration.subscribe();
        tokio::select! {
            _ = registered.wait_for(|done| *done) => {}
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.request_timeout.saturating_mul(2)) => {}
        }
        let mut backoff = Backoff::new(
            config.backoff_base,
            config.backoff_cap(config.poll_interval),
        );
        let mut health = Health::new();
        let mut rng = StdRng::from_os_rng();
        loop {
            let Some(result) =
                finish_or_abandon(self.poll_once(), &shared.shutdown, config.shutdown_grace).await
            else {
                break;
            };
            let delay = match result {
                Ok(outcome) => {
                    shared.metrics.config_fetches_ok.inc();
                    shared.metrics.server_reachable.set(1);
                    backoff.reset();
                    match health.success() {
                        Some(Transition::Recovered { failures, down_for }) => info!(
                            failures,
                            down_for = %duration::display(down_for),
                            "config polling works again"
                        ),
                        Some(_) => info!(
                            every = %duration::display(config.poll_interval),
                            "polling the collector config"
                        ),
                        None => debug!(?outcome, "config polled"),
                    }
                    shared.metrics.set_backoff(Loop::Poll, Duration::ZERO);
                    jittered(config.poll_interval, &mut rng)
                }
                Err(error) => {
                    shared.metrics.config_fetches_failed.inc();
                    shared.metrics.server_reachable.set(0);
                    let delay = backoff.fail(&mut rng);
                    match health.failure(&error.kind()) {
                        Some(_) => warn!(
                            %error,
                            in_force = if self.applied.is_some() { "last good config" } else { "none" },
                            retry_within = %duration::display(backoff.cap()),
                            "config poll failing; probing continues with the config in force (logged again when this changes)"
                        ),
                        None => debug!(%error, retry_in = ?delay, "config poll still failing"),
                    }
                    shared.metrics.set_backoff(Loop::Poll, delay);
                    delay
                }
            };
            if !wait_or_stop(delay, &shared.shutdown, None).await {
                break;
            }
        }
    }

    /// Fetch once and act on the answer.
    pub(super) async fn poll_once(&mut self) -> Result<Outcome, Error> {
        let text = self.fetch().await?;
        if self.applied.as_deref() == Some(text.as_str()) {
            return Ok(Outcome::Unchanged);
        }
        if self.rejected.as_deref() == Some(text.as_str()) {
            debug!("server still serves the config the collector refused");
            return Ok(Outcome::Rejected);
        }
        let sink = Arc::clone(&self.shared.sink);
        let state = self.state.clone();
        let (text, result) = tokio::task::spawn_blocking(move || {
            let result = apply_blocking(sink.as_ref(), &text);
            // Persist only what the collector accepted: a config it refuses
            // must not come back as "last good" after a restart.
            if result.is_ok()
                && let Some(state) = state
                && let Err(e) = state.store(&text)
            {
                warn!(error = %e, "cannot persist the config; a restart while the server is down would start without it");
            }
            (text, result)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        match result {
            Ok(()) => {
                self.shared.metrics.config_changes_applied.inc();
                info!(
                    bytes = text.len(),
                    "applied a changed collector config from the server"
                );
                self.applied = Some(text);
                self.rejected = None;
                Ok(Outcome::Applied)
            }
            Err(reason) => {
                self.shared.metrics.config_rejected.inc();
                warn!(%reason, "the collector refused the server's config; the previous config stays in force");
                self.rejected = Some(text);
                Ok(Outcome::Rejected)
            }
        }
    }

    /// `GET` the config from the server in use, else from the next one
    /// that answers (see [`super::servers`]).
    async fn fetch(&self) -> Result<String, Error> {
        let servers = &self.shared.servers;
        servers
            .try_round(servers.active(), |server| self.fetch_from(server))
            .await
    }

    /// `GET` the config from server `server`, working out `srcip` first
    /// when `--ip` is not given.
    async fn fetch_from(&self, server: usize) -> Result<String, Error> {
        let shared = &self.shared;
        let config = &shared.config;
        let srcip = match config.ip {
            Some(ip) => Some(ip),
            None => self.lookup_my_ip(server).await?,
        };
        let result = shared
            .servers
            .client(server)
            .config(&config.group, config.port, srcip)
            .await;
        let is_404 = matches!(result, Err(Error::Status { status: 404, .. }));
        if is_404 && !self.last_was_404.load(Ordering::Relaxed) {
            // The server does not know us: it restarted with an empty registry,
            // reaped us, or our address changed. Re-register now rather than at
            // the next period, and ask for our address again. Only on the first
            // 404 of a run: a server that keeps answering 404 (a wrong URL
            // behind a proxy) must not get a registration per poll.
            if config.ip.is_none() {
                self.set_my_ip(None);
            }
            shared.reregister.notify_one();
        }
        self.last_was_404.store(is_404, Ordering::Relaxed);
        result
    }

    fn set_my_ip(&self, value: Option<(usize, IpAddr)>) {
        if let Ok(mut my_ip) = self.my_ip.lock() {
            *my_ip = value;
        }
    }

    /// Our address as the server sees it (asked once, then cached). When the
    /// server answers but cannot tell, poll without `srcip` (the server then
    /// uses the peer address); when it does not answer at all, fail the poll.
    async fn lookup_my_ip(&self, server: usize) -> Result<Option<IpAddr>, Error> {
        let cached = self.my_ip.lock().ok().and_then(|m| *m);
        if let Some((asked, ip)) = cached
            && asked == server
        {
            return Ok(Some(ip));
        }
        match self.shared.servers.client(server).my_ip().await {
            Ok(ip) => {
                debug!(%ip, "the server sees this agent at");
                self.set_my_ip(Some((server, ip)));
                Ok(Some(ip))
            }
            Err(e) if e.server_answered() => {
                debug!(error = %e, "my_ip_address unavailable; polling without srcip");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
