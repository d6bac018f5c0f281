//! `GET /api/v1/config/<group>?llamaport=<p>&srcip=<ip>`: the collector
//! config for one member of a group (see `render`). A config's size is
//! bounded by the group's member limit; all configs being sent together by
//! the render budget (`budget`).

use axum::{
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::client::ClientIp;
use crate::{
    entry::Id,
    error::ApiError,
    registration::parse_ip,
    render::{RenderParams, render_config},
    settings::defaults,
    state::AppState,
};

#[derive(Debug, Deserialize)]
pub struct ConfigQuery {
    llamaport: Option<String>,
    srcip: Option<String>,
}

pub async fn config(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Path(group): Path<String>,
    Query(q): Query<ConfigQuery>,
) -> Result<Response, ApiError> {
    let port = match q.llamaport.as_deref().map(str::trim) {
        // The original looked the requester up as `ip:null` and always failed.
        None | Some("") => defaults::AGENT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            ApiError::field("llamaport", "must be an integer between 1 and 65535")
        })?,
    };
    let ip = match q.srcip.as_deref().map(str::trim) {
        None | Some("") => client,
        Some(s) => parse_ip(s).map_err(|_| ApiError::field("srcip", "is not an IP address"))?,
    };
    let id = Id::new(ip, port);
    let Some(members) = state.store.group(&group).await? else {
        return Err(ApiError::unknown_group(&group));
    };
    // The registry keeps groups within the limit; a shared store written
    // by servers with a larger one might not, and a config of every member
    // is what the limit bounds.
    let max = state.settings.limits.max_group_members;
    if members.len() > max {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "group '{group}' has {} members, more than this server serves configs for (limit max_group_members {max})",
                members.len()
            ),
        ));
    }
    let Some(requester) = members.iter().find(|e| e.probe.id == id) else {
        return Err(ApiError::not_found(format!(
            "unknown probe '{id}', please register"
        )));
    };
    let params = RenderParams {
        interval: state.settings.interval,
        collector: &state.settings.collector,
    };
    let yaml = render_config(&group, &members, requester, &params);
    // Rendering is synchronous, so at most one config per worker thread is
    // being built; the budget bounds the ones being sent.
    let yaml = state.render_budget.reserve(yaml.len())?.body(yaml);
    Ok(([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], yaml).into_response())
}
