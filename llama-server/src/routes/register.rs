//! `POST /api/v1/register`: validate, apply defaults, store, and answer with
//! the stored entry (the original answered with the whole database).

use axum::{
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::client::ClientIp;
use crate::{error::ApiError, metrics::StatusLabel, registration::Registration, state::AppState};

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
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match register_inner(&state, client, &headers, body).await {
        Ok(resp) => {
            state.metrics.registrations.inc();
            resp
        }
        Err(err) => {
            state
                .metrics
                .rejected
                .get_or_create(&StatusLabel {
                    status: err.status.as_u16(),
                })
                .inc();
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
