//! The HTTP API (docs/server-api.md, docs/api.md): the original server's
//! routes and the small read-only handlers, the live matrix API ([`matrix`])
//! and the page at `/` (`ui`). `/list` answers are assembled from each
//! entry's pre-serialized JSON.

mod client;
mod config;
mod matrix;
mod register;

use std::collections::HashSet;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
pub use client::{ClientIp, PeerIp, forwarded_for};
use llama_common::OPENMETRICS_CONTENT_TYPE;

use crate::{error::ApiError, registry::Members, state::AppState};

/// The server's router over `state`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.limits.max_body_bytes;
    Router::new()
        .route("/", get(crate::ui::index))
        .route("/ui/{asset}", get(crate::ui::asset))
        .route("/api/v1/groups", get(matrix::groups))
        .route("/api/v1/matrix", get(matrix::matrix))
        .route("/api/v1/path", get(matrix::path))
        .route("/api/v1/register", post(register::register))
        .route("/api/v1/register/{id}", delete(register::unregister))
        .route("/api/v1/list", get(list_all))
        .route("/api/v1/list/{group}", get(list_group))
        .route("/api/v1/config/{group}", get(config::config))
        .route("/api/v1/scraper", get(scraper_list))
        .route("/api/v1/interval", get(interval))
        .route("/api/v1/my_ip_address", get(my_ip_address))
        .route("/metrics", get(metrics))
        .route("/metrics.json", get(metrics_json))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A large JSON answer, within the render budget.
fn budgeted_json(state: &AppState, body: String) -> Result<Response, ApiError> {
    let body = state.render_budget.reserve(body.len())?.body(body);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `{"<id>": <entry>, ...}` from the entries' stored JSON.
fn push_members(out: &mut String, members: &Members) {
    out.push('{');
    for (i, e) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.list_member());
    }
    out.push('}');
}

async fn list_all(State(state): State<AppState>) -> Result<Response, ApiError> {
    let groups = state.store.groups().await?;
    let size: usize = groups
        .iter()
        .flat_map(|(_, m)| m)
        .map(|e| e.list_member().len() + 1)
        .sum();
    // Reserved before the answer is built: it can be the whole registry.
    let reservation = state.render_budget.reserve(size + 2)?;
    let mut out = String::with_capacity(size + 2);
    out.push('{');
    for (i, (name, members)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&**name).unwrap_or_default());
        out.push(':');
        push_members(&mut out, members);
    }
    out.push('}');
    let body = reservation.body(out);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn list_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Response, ApiError> {
    let Some(members) = state.store.group(&group).await? else {
        return Err(ApiError::unknown_group(&group));
    };
    let mut out = String::with_capacity(members.iter().map(|e| e.list_member().len() + 1).sum());
    push_members(&mut out, &members);
    budgeted_json(&state, out)
}

/// Comma-separated agent IPs (each once), `127.0.0.1` when there are none.
async fn scraper_list(State(state): State<AppState>) -> Result<String, ApiError> {
    let groups = state.store.groups().await?;
    let mut seen = HashSet::new();
    let ips: Vec<String> = groups
        .iter()
        .flat_map(|(_, m)| m)
        .map(|e| e.probe.ip())
        .filter(|ip| seen.insert(*ip))
        .map(|ip| ip.to_string())
        .collect();
    if ips.is_empty() {
        return Ok("127.0.0.1".to_owned());
    }
    Ok(ips.join(","))
}

async fn interval(State(state): State<AppState>) -> String {
    state.settings.interval.to_string()
}

async fn my_ip_address(ClientIp(ip): ClientIp) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ip": ip.to_string() }))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.counts().await?;
    state.metrics.set_history(&state.history.stats());
    let body = state.metrics.prometheus(counts);
    Ok(([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response())
}

async fn metrics_json(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.counts().await?;
    Ok(Json(state.metrics.original_json(counts)).into_response())
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}
