//! Who may change the registry (docs/server-api.md, "Access"): the
//! registration token, the networks allowed to register, and the
//! per-source rate of registrations and deletions.
//!
//! Every decision here judges the TCP peer address, never
//! `X-Forwarded-For`: that header is written by the client, so trusting it
//! for access would let anyone pick the address they are judged by (and
//! escape their rate limit by writing a new one per request). Behind a
//! reverse proxy, the proxy is the peer: allow its address and size the rate
//! for everything behind it.

mod rate;

use std::{
    net::IpAddr,
    str::FromStr,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, StatusCode, header};
pub use rate::RateLimiter;

use crate::{error::ApiError, settings::Settings, throttle::Throttle};

/// An IP network: an address and a prefix length (`10.0.0.0/8`,
/// `2001:db8::/32`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A malformed network in `--register-allow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a network (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8)")]
pub struct BadCidr(String);

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.to_owned());
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| bad())?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An address in the top bits of a `u128`.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (net, ip) = (bits(self.addr), bits(ip));
        // Both families sit in the top bits, so the prefix masks the same.
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        net & mask == ip & mask
    }
}

/// Parses a comma-separated (or repeated) list of networks.
pub fn parse_networks(items: &[String]) -> Result<Vec<Cidr>, BadCidr> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Compares two byte strings in time that depends only on their lengths,
/// so a wrong token's answer time does not tell how much of it was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// The access rules of one server.
#[derive(Debug)]
pub struct Access {
    token: Option<Box<[u8]>>,
    allow: Vec<Cidr>,
    rate: Option<RateLimiter>,
    rate_log: Throttle,
    capacity_log: Throttle,
    conflict_log: Throttle,
}

impl Access {
    pub fn new(settings: &Settings) -> Self {
        let l = &settings.limits;
        Access {
            token: settings
                .registration_token
                .as_ref()
                .map(|t| t.as_bytes().into()),
            allow: settings.register_allow.clone(),
            rate: (l.register_rate > 0.0)
                .then(|| RateLimiter::new(l.register_rate, l.register_burst, l.max_rate_sources)),
            rate_log: Throttle::default(),
            capacity_log: Throttle::default(),
            conflict_log: Throttle::default(),
        }
    }

    /// Logs a registration the registry refused (full: 503; a shortname
    /// held by a live entry: 409), at most once a minute per kind.
    pub fn log_refusal(&self, err: &ApiError) {
        let throttle = match err.status {
            StatusCode::SERVICE_UNAVAILABLE => &self.capacity_log,
            StatusCode::CONFLICT => &self.conflict_log,
            _ => return,
        };
        if throttle.ready() {
            tracing::warn!(
                error = %err.message,
                "registration refused (logged at most once a minute)"
            );
        }
    }

    /// Whether registrations must carry the token.
    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request that changes the registry, in this order: the
    /// peer's network (403), the token (401), the peer's rate (429).
    /// Refusals by network or token do not use up the peer's rate.
    pub fn check(&self, peer: IpAddr, headers: &HeaderMap, now: Instant) -> Result<(), ApiError> {
        let peer = peer.to_canonical();
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(peer)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{peer} may not register (not in register_allow)"),
            ));
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            match given {
                None => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "registration needs 'Authorization: Bearer <token>'",
                    ));
                }
                Some(given) if !constant_time_eq(given.as_bytes(), token) => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "wrong registration token",
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(rate) = &self.rate
            && let Err(refusal) = rate.take(peer, now)
        {
            if self.rate_log.ready() {
                tracing::warn!(
                    %peer,
                    full = refusal.table_full,
                    "registration rate limit hit (limits register_rate, register_burst, max_rate_sources); refusing with 429 (logged at most once a minute)"
                );
            }
            let message = if refusal.table_full {
                "too many registering addresses at once (limit max_rate_sources)".to_owned()
            } else {
                format!("{peer} registers too often (limits register_rate, register_burst)")
            };
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
                .with_retry_after(retry_after_secs(refusal.retry_after)));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Rounds a wait up to whole seconds for `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_match() {
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.200.1.2".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let n: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(n.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!n.contains("2001:db9::5".parse().unwrap()));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::/129", "1.2.3.4/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let list = parse_networks(&["10.0.0.0/8,192.0.2.1".into(), "::1".into()]).unwrap();
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn compares_tokens_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
