//! Who is asking: the peer address, or the first `X-Forwarded-For` address
//! when the server is told it sits behind a trusted proxy ([`ClientIp`],
//! what an agent is registered as); and the peer address alone
//! ([`PeerIp`], what access decisions judge).

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{StatusCode, request::Parts},
};

use crate::{error::ApiError, state::AppState};

/// The client's address (IPv4-mapped IPv6 shown as IPv4).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The first address of an `X-Forwarded-For` header, if it parses.
pub fn forwarded_for(parts: &Parts) -> Option<IpAddr> {
    let value = parts.headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    // Some proxies write `[v6]` or `v4:port`.
    let first = first
        .strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .unwrap_or(first);
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The TCP peer's address (IPv4-mapped IPv6 shown as IPv4), whatever
/// `X-Forwarded-For` says.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp(pub IpAddr);

fn peer(parts: &Parts) -> Result<IpAddr, ApiError> {
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => Ok(peer.ip().to_canonical()),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "peer address unknown (serve with connect info)",
        )),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        peer(parts).map(PeerIp)
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.settings.trust_forwarded_for
            && let Some(ip) = forwarded_for(parts)
        {
            return Ok(ClientIp(ip));
        }
        peer(parts).map(ClientIp)
    }
}
