//! Registration: `POST /api/v1/register` every register interval, the job the
//! original llama-client's curl loop did every 60 s.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use rand::{SeedableRng, rngs::StdRng};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::{
    ControlConfig, Shared,
    backoff::{Backoff, jittered},
    finish_or_abandon,
    health::{Health, Transition},
    metrics::Loop,
    wait_or_stop,
};
use crate::duration;

/// The registration body (docs/server-api.md), field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterBody {
    pub port: u16,
    /// Seconds.
    pub keepalive: u64,
    pub group: String,
    /// Only when configured: otherwise the server takes the request's
    /// X-Forwarded-For or peer address, as it did for the original client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// `version`, `probe_shortname`, `probe_name` plus the user tags.
    pub tags: BTreeMap<String, String>,
}

impl RegisterBody {
    /// The body this agent sends.
    pub fn new(config: &ControlConfig) -> Self {
        // User tags first, then the agent's own keys: the agent's keys win
        // (settings already refuse user tags with these names).
        let mut tags: BTreeMap<String, String> = config
            .tags
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        tags.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        tags.insert("probe_shortname".into(), config.probe_shortname.clone());
        tags.insert("probe_name".into(), config.probe_name.clone());
        Self {
            port: config.port,
            keepalive: config.keepalive.as_secs(),
            group: config.group.clone(),
            ip: config.ip,
            tags,
        }
    }
}

/// Register until shutdown: every `register_interval` (±10%) while it works,
/// with backoff while it does not, and at once when the poller finds that
/// the server forgot us (a server restarted with an empty registry). Each
/// registration goes through the server list from the first (preferred)
/// server, so the agent returns to it as soon as it answers again.
pub(super) async fn run_loop(shared: Arc<Shared>) {
    let config = &shared.config;
    let body = RegisterBody::new(config);
    let mut backoff = Backoff::new(
        config.backoff_base,
        config.backoff_cap(config.register_interval),
    );
    let mut health = Health::new();
    let mut rng = StdRng::from_os_rng();
    loop {
        let round = shared.servers.try_round(0, |server| {
            let body = &body;
            let shared = &shared;
            async move {
                let id = shared.servers.client(server).register(body).await?;
                Ok((server, id))
            }
        });
        let Some(result) = finish_or_abandon(round, &shared.shutdown, config.shutdown_grace).await
        else {
            break;
        };
        let delay = match result {
            Ok((server, id)) => {
                if let Ok(mut last) = shared.registered.lock() {
                    *last = id.map(|id| (server, id));
                }
                shared.metrics.registrations_ok.inc();
                shared.metrics.server_reachable.set(1);
                backoff.reset();
                match health.success() {
                    Some(Transition::FirstSuccess) => info!(
                        server = %shared.servers.client(server).base(),
                        group = %config.group,
                        every = %duration::display(config.register_interval),
                        "registered with the server"
                    ),
                    Some(Transition::Recovered { failures, down_for }) => info!(
                        failures,
                        down_for = %duration::display(down_for),
                        "registration works again"
                    ),
                    _ => debug!("registered"),
                }
                shared
                    .metrics
                    .set_backoff(Loop::Register, std::time::Duration::ZERO);
                jittered(config.register_interval, &mut rng)
            }
            Err(error) => {
                shared.metrics.registrations_failed.inc();
                shared.metrics.server_reachable.set(0);
                let delay = backoff.fail(&mut rng);
                match health.failure(&error.kind()) {
                    Some(_) => warn!(
                        %error,
                        retry_within = %duration::display(backoff.cap()),
                        "registration failing; retrying with backoff (logged again when this changes)"
                    ),
                    None => debug!(%error, retry_in = ?delay, "registration still failing"),
                }
                shared.metrics.set_backoff(Loop::Register, delay);
                delay
            }
        };
        shared.first_registration.send_replace(true);
        if !wait_or_stop(delay, &shared.shutdown, Some(&shared.reregister)).await {
            break;
        }
    }
}
