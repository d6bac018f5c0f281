//! `POST /api/v1/register`: check access (`access`), validate, apply
//! defaults, store, and answer with the stored entry (the original answered
//! with the whole database). `DELETE /api/v1/register/<id>`: remove an entry
//! (an agent leaving).

use std::time::Instant;

use axum::{
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::client::{ClientIp, PeerIp};
use crate::{
    entry::Id, error::ApiError, metrics::StatusLabel, registration::Registration, state::AppState,
};

/// Whether a Content-Type names JSON (`application/json`, any parameters,
/// or a `+json` type).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub async fn register(
    State(state): State<AppState>,
    PeerIp(peer): PeerIp,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match state.access.check(peer, &headers, Instant::now()) {
        Ok(()) => register_inner(&state, client, &headers, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => {
            state.metrics.registrations.inc();
            resp
        }
        Err(err) => {
            count_refusal(&state, &err);
            state.access.log_refusal(&err);
            tracing::debug!(%client, %err, "registration refused");
            err.into_response()
        }
    }
}

async fn register_inner(
    state: &AppState,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let limit = state.settings.limits.max_body_bytes;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes (limit max_body_bytes)"),
        ),
        status => ApiError::new(status, rejection.body_text()),
    })?;
    let reg = Registration::parse(&body, &state.settings.limits)?;
    let probe = reg.into_probe(
        client,
        &state.settings.default_group,
        state.settings.keepalive,
    );
    let now = std::time::SystemTime::now();
    let entry = state.store.register(probe, now).await?;
    tracing::debug!(id = %entry.probe.id, group = %entry.probe.group, "registered");
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        entry.json().to_owned(),
    )
        .into_response())
}

/// Counts a refused registry change by its status (`/metrics`).
fn count_refusal(state: &AppState, err: &ApiError) {
    state
        .metrics
        .rejected
        .get_or_create(&StatusLabel {
            status: err.status.as_u16(),
        })
        .inc();
}

/// Parses an entry id as the API writes it (`10.0.0.1:8100`,
/// `[2001:db8::1]:8100`); IPv4-mapped IPv6 is the IPv4 address.
fn parse_id(s: &str) -> Result<Id, ApiError> {
    let id: Id = s.trim().parse().map_err(|_| {
        ApiError::field(
            "id",
            "must be an entry id, ip:port or [ipv6]:port (as in the register answer)",
        )
    })?;
    Ok(Id::new(id.ip().to_canonical(), id.port()))
}

pub async fn unregister(
    State(state): State<AppState>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match unregister_inner(&state, peer, &headers, &id).await {
        Ok(resp) => resp,
        Err(err) => {
            count_refusal(&state, &err);
            tracing::debug!(%peer, %err, "deletion refused");
            err.into_response()
        }
    }
}

async fn unregister_inner(
    state: &AppState,
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, ApiError> {
    state.access.check(peer, headers, Instant::now())?;
    let id = parse_id(id)?;
    // Without a token, an address may remove only its own entries: the
    // peer is the one thing a client cannot choose.
    if !state.access.token_required() && id.ip() != peer {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{peer} may delete only its own entries, not {id} (or send the registration token)"
            ),
        ));
    }
    match state.store.remove(id).await? {
        0 => Err(ApiError::not_found(format!("unknown entry '{id}'"))),
        n => {
            tracing::debug!(%id, entries = n, "deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}
