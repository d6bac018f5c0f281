//! HTTP client for the server API (docs/server-api.md): the calls the agent
//! makes. Register and deregister carry the registration token, when set.

use std::{net::IpAddr, path::Path, time::Duration};

use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::{error::Error, registration::RegisterBody, tls, token::Token};

/// Largest answer accepted. A group of 10,000 agents renders to a few MiB of
/// YAML; anything far beyond is a misbehaving server or proxy.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// How much of an error body is kept for the log line.
const ERROR_BODY_CHARS: usize = 200;

/// A client bound to one server base URL.
#[derive(Debug, Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    token: Option<Token>,
}

impl ServerClient {
    /// `base` is the server URL (a path prefix such as `/llama` is kept);
    /// every request is bounded by `timeout`; `token` goes with register
    /// and deregister requests as a bearer token; `ca_cert` (PEM) replaces
    /// the bundled roots for an `https://` server (see [`super::tls`]).
    pub fn new(
        base: Url,
        timeout: Duration,
        token: Option<Token>,
        ca_cert: Option<&Path>,
    ) -> Result<Self, Error> {
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("llama-agent/", env!("CARGO_PKG_VERSION")))
            // One request per 30-60 s gains nothing from pooling, and a pooled
            // connection to a server that restarted fails the first request
            // after every restart.
            .pool_max_idle_per_host(0);
        let http = tls::configure(builder, ca_cert)?
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(Self {
            http,
            base,
            timeout,
            token,
        })
    }

    /// The server base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `POST /api/v1/register`. Returns the `id` of the stored entry the
    /// server answers with (`None` when the answer has none, as with
    /// servers that answer `{"success": true}`).
    pub async fn register(&self, body: &RegisterBody) -> Result<Option<String>, Error> {
        let url = self.endpoint(&["api", "v1", "register"]);
        let request = self.authorized(self.http.post(url)).json(body);
        let response = request.send().await.map_err(|e| self.map(e))?;
        let bytes = self.read(response).await?;
        #[derive(Deserialize)]
        struct Entry {
            id: Option<String>,
        }
        Ok(serde_json::from_slice::<Entry>(&bytes)
            .ok()
            .and_then(|e| e.id))
    }

    /// `DELETE /api/v1/register/<id>` (the id percent-encoded as one path
    /// segment), bounded by `timeout`. `Ok` carries the success status.
    pub async fn deregister(&self, id: &str, timeout: Duration) -> Result<u16, Error> {
        let url = self.endpoint(&["api", "v1", "register", id]);
        let request = self.authorized(self.http.delete(url)).timeout(timeout);
        let send = async {
            let response = request.send().await.map_err(|e| self.map(e))?;
            let status = response.status().as_u16();
            self.read(response).await.map(|_| status)
        };
        // reqwest's timeout covers the answer; this one covers everything.
        tokio::time::timeout(timeout, send)
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// `GET /api/v1/config/<group>?llamaport=<port>[&srcip=<ip>]`: the YAML text.
    pub async fn config(
        &self,
        group: &str,
        port: u16,
        srcip: Option<IpAddr>,
    ) -> Result<String, Error> {
        let mut url = self.endpoint(&["api", "v1", "config", group]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("llamaport", &port.to_string());
            if let Some(ip) = srcip {
                query.append_pair("srcip", &ip.to_string());
            }
        }
        let response = self.http.get(url).send().await.map_err(|e| self.map(e))?;
        let bytes = self.read(response).await?;
        String::from_utf8(bytes).map_err(|_| Error::BadAnswer("config is not UTF-8".into()))
    }

    /// `GET /api/v1/my_ip_address`: the address the server sees us at.
    pub async fn my_ip(&self) -> Result<IpAddr, Error> {
        #[derive(Deserialize)]
        struct Answer {
            ip: String,
        }
        let url = self.endpoint(&["api", "v1", "my_ip_address"]);
        let response = self.http.get(url).send().await.map_err(|e| self.map(e))?;
        let bytes = self.read(response).await?;
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadAnswer(format!("my_ip_address: {e}")))?;
        // X-Forwarded-For may carry a port or spaces; take the bare address.
        answer
            .ip
            .trim()
            .parse()
            .map_err(|_| Error::BadAnswer(format!("my_ip_address: {:?} is not an IP", answer.ip)))
    }

    /// Base URL + path segments, each percent-encoded (a group name is user input).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Read a whole answer (bounded), turning error statuses into errors.
    async fn read(&self, mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.map(e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Error::TooLarge {
                    limit: MAX_ANSWER_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(body);
        }
        Err(Error::Status {
            status: status.as_u16(),
            body: summary(&body, status),
        })
    }

    fn map(&self, e: reqwest::Error) -> Error {
        if let Some(tls) = tls::tls_failure(&e) {
            Error::Tls(tls)
        } else if e.is_timeout() {
            Error::Timeout(self.timeout)
        } else if e.is_connect() {
            Error::Connect(root_cause(&e))
        } else {
            Error::Transport(root_cause(&e))
        }
    }
}

/// The innermost error message ("connection refused"), which is what an
/// operator needs; reqwest's top level only says "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn summary(body: &[u8], status: StatusCode) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("").to_owned();
    }
    text.chars().take(ERROR_BODY_CHARS).collect()
}
