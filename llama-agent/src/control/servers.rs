//! The servers an agent may use (`--server a,b,…`), in order of preference,
//! and the one it uses now.
//!
//! Every request goes first to the server in use; when that server does not
//! answer, or answers that it cannot serve (5xx: a replica that lost its
//! store, a proxy without a backend), the same request goes to the next
//! one, round the list. A 4xx answer is a verdict on this agent (a wrong
//! token, a refused address, a name conflict) that any replica of the same
//! deployment would repeat, so it does not move the agent. The registration
//! loop starts each round at the first server, so the agent comes back to
//! its preferred server within one registration interval of its recovery;
//! the config poll follows the server the agent last reached.

use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use reqwest::Url;
use tracing::{info, warn};

use super::{client::ServerClient, error::Error, metrics::ControlMetrics, token::Token};

/// The server list with one HTTP client per server.
#[derive(Debug)]
pub struct Servers {
    clients: Vec<ServerClient>,
    active: AtomicUsize,
    metrics: ControlMetrics,
}

impl Servers {
    /// Clients for `urls` (at least one; the first is preferred), each
    /// bounded by `timeout`, sending `token` on registration and trusting
    /// `ca_cert` for `https://` servers.
    pub fn new(
        urls: &[Url],
        timeout: Duration,
        token: Option<&Token>,
        ca_cert: Option<&Path>,
        metrics: ControlMetrics,
    ) -> Result<Self, Error> {
        if urls.is_empty() {
            return Err(Error::Client("no server URL given".into()));
        }
        let clients = urls
            .iter()
            .map(|url| ServerClient::new(url.clone(), timeout, token.cloned(), ca_cert))
            .collect::<Result<Vec<_>, _>>()?;
        metrics.active_server.set(0);
        Ok(Self {
            clients,
            active: AtomicUsize::new(0),
            metrics,
        })
    }

    /// The index of the server in use (0 = the preferred one).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The client of server `index`.
    pub fn client(&self, index: usize) -> &ServerClient {
        &self.clients[index % self.clients.len()]
    }

    /// The indices of one round of attempts starting at `first`, wrapping
    /// round the list: every server once.
    pub fn round(&self, first: usize) -> impl Iterator<Item = usize> + use<> {
        let n = self.clients.len();
        (0..n).map(move |k| (first + k) % n)
    }

    /// Whether more than one server is configured.
    pub fn has_alternatives(&self) -> bool {
        self.clients.len() > 1
    }

    /// Server `index` answered: make it the one in use. A change is logged
    /// once and counted; `why` is the failure that made the agent leave the
    /// previous server, when there was one.
    pub fn settle(&self, index: usize, why: Option<&Error>) {
        let previous = self.active.swap(index, Ordering::Relaxed);
        if previous == index {
            return;
        }
        self.metrics.server_switches.inc();
        self.metrics.active_server.set(index as i64);
        let from = self.client(previous).base();
        let to = self.client(index).base();
        match (index, why) {
            (0, _) => info!(%from, %to, "back on the preferred server"),
            (_, Some(error)) => warn!(
                %from,
                %to,
                %error,
                "server failing; switched to the next one (the first server is tried again at each registration)"
            ),
            (_, None) => info!(%from, %to, "switched server"),
        }
    }

    /// Run `attempt` against each server of a round starting at `first`
    /// until one succeeds or fails in a way another server would repeat
    /// (see [`moves_on`]); the server that answered becomes the one in use.
    /// All failing: the last failure.
    pub async fn try_round<T, F, Fut>(&self, first: usize, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut failure: Option<Error> = None;
        for index in self.round(first) {
            match attempt(index).await {
                Ok(value) => {
                    self.settle(index, failure.as_ref());
                    return Ok(value);
                }
                Err(error) if moves_on(&error) => {
                    if self.has_alternatives() {
                        tracing::debug!(server = %self.client(index).base(), %error, "server failed; trying the next one");
                    }
                    failure = Some(error);
                }
                Err(error) => {
                    // It answered: it is up, and it is the one we talk to.
                    self.settle(index, failure.as_ref());
                    return Err(error);
                }
            }
        }
        Err(failure.unwrap_or_else(|| Error::Client("no server URL given".into())))
    }
}

/// Whether a failure of one server is a reason to try the next: it did not
/// answer (unreachable, timeout, TLS, reset), answered garbage, or answered
/// that it cannot serve (5xx).
pub fn moves_on(error: &Error) -> bool {
    match error {
        Error::Connect(_)
        | Error::Tls(_)
        | Error::Timeout(_)
        | Error::Transport(_)
        | Error::TooLarge { .. }
        | Error::BadAnswer(_) => true,
        Error::Status { status, .. } => *status >= 500,
        Error::Client(_) | Error::Io { .. } | Error::Rejected(_) | Error::Task(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Servers {
        let urls: Vec<Url> = (0..n)
            .map(|i| format!("http://127.0.0.{}:5000", i + 1).parse().unwrap())
            .collect();
        Servers::new(
            &urls,
            Duration::from_secs(1),
            None,
            None,
            ControlMetrics::new(),
        )
        .unwrap()
    }

    fn unreachable() -> Error {
        Error::Connect("connection refused".into())
    }

    #[test]
    fn rounds_wrap_and_visit_every_server_once() {
        let s = servers(3);
        assert_eq!(s.round(0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(s.round(2).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(servers(1).round(0).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn what_moves_the_agent_on() {
        assert!(moves_on(&unreachable()));
        assert!(moves_on(&Error::Timeout(Duration::from_secs(1))));
        for status in [500, 502, 503] {
            assert!(moves_on(&Error::Status {
                status,
                body: String::new()
            }));
        }
        for status in [400, 401, 403, 404, 409, 429] {
            assert!(!moves_on(&Error::Status {
                status,
                body: String::new()
            }));
        }
    }

    #[tokio::test]
    async fn a_round_settles_on_the_first_server_that_answers() {
        let s = servers(3);
        let mut tried = vec![];
        let got = s
            .try_round(0, |i| {
                tried.push(i);
                async move { if i < 2 { Err(unreachable()) } else { Ok(i) } }
            })
            .await
            .unwrap();
        assert_eq!((got, tried, s.active()), (2, vec![0, 1, 2], 2));
        assert_eq!(s.metrics.server_switches.get(), 1);
        assert_eq!(s.metrics.active_server.get(), 2);
        // Back on the preferred one as soon as it answers.
        s.try_round(0, |i| async move { Ok::<_, Error>(i) })
            .await
            .unwrap();
        assert_eq!(s.active(), 0);
        assert_eq!(s.metrics.server_switches.get(), 2);
    }

    #[tokio::test]
    async fn a_verdict_on_the_agent_stops_the_round() {
        let s = servers(2);
        let mut tried = vec![];
        let err = s
            .try_round(0, |i| {
                tried.push(i);
                async move {
                    Err::<(), _>(Error::Status {
                        status: 401,
                        body: "token".into(),
                    })
                }
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Status { status: 401, .. }));
        assert_eq!(tried, [0]);
    }

    #[tokio::test]
    async fn all_failing_returns_the_last_failure_and_keeps_the_server() {
        let s = servers(2);
        let err = s
            .try_round(1, |i| async move {
                Err::<(), _>(Error::Status {
                    status: 500 + i as u16,
                    body: String::new(),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Status { status: 500, .. }), "{err}");
        assert_eq!(s.active(), 0);
        assert_eq!(s.metrics.server_switches.get(), 0);
    }
}
