//! Where the scraper learns which agents exist: the server's own registry,
//! or (for `llama-server scrape`) a server's `/api/v1/scraper` list, fetched
//! every round so changes apply without a restart.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crate::{registration::parse_ip, registry::Store};

/// A source of agent addresses.
pub enum TargetSource {
    Store(Arc<dyn Store>),
    Server {
        client: reqwest::Client,
        url: String,
        last: Mutex<Vec<IpAddr>>,
    },
}

impl std::fmt::Debug for TargetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSource::Store(_) => f.write_str("TargetSource::Store"),
            TargetSource::Server { url, .. } => write!(f, "TargetSource::Server({url})"),
        }
    }
}

/// Parses the `/api/v1/scraper` answer: comma-separated IPs.
pub fn parse_list(text: &str) -> Vec<IpAddr> {
    let mut seen = HashSet::new();
    text.split(',')
        .filter_map(|s| {
            let s = s.trim();
            let ip = parse_ip(s).ok();
            if ip.is_none() && !s.is_empty() {
                tracing::warn!(entry = s, "scraper list: not an IP address, skipped");
            }
            ip
        })
        .filter(|ip| seen.insert(*ip))
        .collect()
}

impl TargetSource {
    /// A server's list at `server` (a base URL like `http://host:5000`).
    /// `ca_cert`: PEM CA certificates of an `https://` server.
    pub fn server(
        server: &str,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, crate::error::Error> {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let client = crate::tls::client_tls(builder, ca_cert, "--ca-cert")?
            .build()
            .map_err(|e| crate::error::Error::http("HTTP client", e))?;
        let url = format!("{}/api/v1/scraper", server.trim_end_matches('/'));
        Ok(TargetSource::Server {
            client,
            url,
            last: Mutex::default(),
        })
    }

    /// The agents to scrape now. A failed list fetch keeps the last list.
    pub async fn targets(&self) -> Vec<IpAddr> {
        match self {
            TargetSource::Store(store) => {
                let groups = store.groups().await.unwrap_or_default();
                let mut seen = HashSet::new();
                groups
                    .iter()
                    .flat_map(|(_, m)| m)
                    .map(|e| e.probe.ip())
                    .filter(|ip| seen.insert(*ip))
                    .collect()
            }
            TargetSource::Server { client, url, last } => {
                let fetched = async {
                    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                    if !resp.status().is_success() {
                        return Err(format!("HTTP {}", resp.status()));
                    }
                    resp.text().await.map_err(|e| e.to_string())
                };
                match fetched.await {
                    Ok(text) => {
                        let list = parse_list(&text);
                        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                        if *last != list {
                            tracing::info!(agents = list.len(), "scraper list changed");
                            *last = list.clone();
                        }
                        list
                    }
                    Err(why) => {
                        tracing::warn!(%url, %why, "scraper list unavailable, keeping the last one");
                        last.lock().unwrap_or_else(PoisonError::into_inner).clone()
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_with_ipv6_and_junk() {
        let l = parse_list("10.0.0.1, ::1,[2001:db8::2],junk,10.0.0.1,");
        let want: Vec<IpAddr> = vec![
            "10.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ];
        assert_eq!(l, want);
    }
}
