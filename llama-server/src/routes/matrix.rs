//! `/api/v1/groups`, `/api/v1/matrix` and `/api/v1/path`: the live matrix
//! over HTTP (fields documented in docs/api.md).
//!
//! Polling is made cheap with an `ETag` per state: it changes when the
//! history records anything (every scrape round) or the group's membership
//! changes, and a request whose `If-None-Match` names the current one gets
//! `304 Not Modified` without the matrix being computed. This was chosen
//! over server-sent events because a poll needs no connection and task held
//! open per viewer, passes through any proxy, works with curl and
//! scripts, and the page polls faster than one interval anyway.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::SystemTime,
};

use axum::{
    extract::{FromRequestParts, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};

use crate::{
    clock,
    entry::Entry,
    error::ApiError,
    matrix::{self, Context, Metric, json},
    state::AppState,
};

/// The query of a view of one group: its parameters, `group` required.
pub struct GroupQuery {
    group: String,
    params: HashMap<String, String>,
}

impl FromRequestParts<AppState> for GroupQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("query: {e}")))?;
        let group = required(&params, "group")?.to_owned();
        Ok(Self { group, params })
    }
}

fn required<'a>(p: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    p.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::field(name, "required"))
}

/// `W/"<hash>"` of the history's generation, the group's membership (each
/// member's registered data, not its refresh time) and the query.
fn etag(state: &AppState, members: &[Arc<Entry>], query: &[(&str, &str)]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state.history.generation().hash(&mut h);
    for m in members {
        Arc::as_ptr(&m.probe).hash(&mut h);
    }
    query.hash(&mut h);
    format!("W/\"{:016x}\"", h.finish())
}

/// 304 when the request already has this `etag`; otherwise `body` as JSON.
fn answer(headers: &HeaderMap, etag: String, body: impl FnOnce() -> String) -> Response {
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("W/\"0\""));
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag), cache]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, tag),
            cache,
        ],
        body(),
    )
        .into_response()
}

async fn members_of(state: &AppState, group: &str) -> Result<Vec<Arc<Entry>>, ApiError> {
    state
        .store
        .group(group)
        .await?
        .ok_or_else(|| ApiError::unknown_group(group))
}

fn now() -> u32 {
    u32::try_from(clock::unix_secs(SystemTime::now())).unwrap_or(u32::MAX)
}

/// `GET /api/v1/groups`: every group with its size and tag keys.
pub async fn groups(State(state): State<AppState>) -> Result<Response, ApiError> {
    let groups = state.store.groups().await?;
    let mut out = String::with_capacity(64 + groups.len() * 128);
    out.push('{');
    json::key(&mut out, true, "interval");
    json::int(&mut out, state.settings.interval);
    json::key(&mut out, false, "groups");
    json::array(&mut out, &groups, |o, (name, members)| {
        o.push('{');
        json::key(o, true, "name");
        json::string(o, name);
        json::key(o, false, "members");
        json::int(o, members.len());
        json::key(o, false, "tags");
        json::array(o, matrix::tag_keys(members), |o, t| json::string(o, &t));
        o.push('}');
    });
    out.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// `GET /api/v1/matrix?group=G[&metric=M][&by=TAG]`.
pub async fn matrix(
    State(state): State<AppState>,
    headers: HeaderMap,
    GroupQuery { group, params: p }: GroupQuery,
) -> Result<Response, ApiError> {
    let metric_name = p.get("metric").map_or("loss", String::as_str);
    let metric = Metric::parse(metric_name).ok_or_else(|| {
        ApiError::field(
            "metric",
            format!("'{metric_name}' is not one of loss, rtt, p50, p90, p99, jitter"),
        )
    })?;
    let members = members_of(&state, &group).await?;
    let tags = matrix::tag_keys(&members);
    let by = p.get("by").map(String::as_str).filter(|b| !b.is_empty());
    if let Some(by) = by
        && !tags.iter().any(|t| t == by)
    {
        return Err(ApiError::field(
            "by",
            format!("no member of group '{group}' has the tag '{by}'"),
        ));
    }
    let tag = etag(
        &state,
        &members,
        &[
            ("group", &group),
            ("metric", metric.name()),
            ("by", by.unwrap_or("")),
        ],
    );
    Ok(answer(&headers, tag, || {
        let interval = state.history.interval_secs();
        let now = now();
        let history = state.history.read();
        let m = matrix::build(&members, &history, metric, by, now, interval);
        drop(history);
        m.to_json(&Context {
            group: &group,
            interval,
            now,
            tags: &tags,
        })
    }))
}

/// `GET /api/v1/path?group=G&src=S&dst=D[&since=SECONDS]`.
pub async fn path(
    State(state): State<AppState>,
    headers: HeaderMap,
    GroupQuery { group, params: p }: GroupQuery,
) -> Result<Response, ApiError> {
    let (src, dst) = (required(&p, "src")?, required(&p, "dst")?);
    let window = state.history.window_secs();
    let since = match p.get("since").map(String::as_str) {
        None | Some("") => window,
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                ApiError::field(
                    "since",
                    format!("'{s}' is not a positive number of seconds"),
                )
            })?,
    };
    let members = members_of(&state, &group).await?;
    let find = |name: &str, key: &str| {
        matrix::find_member(&members, key).cloned().ok_or_else(|| {
            let mut e = ApiError::field(name, format!("no member '{key}' in group '{group}'"));
            e.status = StatusCode::NOT_FOUND;
            e
        })
    };
    let (src, dst) = (find("src", src)?, find("dst", dst)?);
    let since_txt = since.to_string();
    let tag = etag(
        &state,
        &[src.clone(), dst.clone()],
        &[
            ("group", &group),
            ("src", &src.probe.id.to_string()),
            ("dst", &dst.probe.id.to_string()),
            ("since", &since_txt),
        ],
    );
    Ok(answer(&headers, tag, || {
        let interval = state.history.interval_secs();
        let now = now();
        let history = state.history.read();
        matrix::path_json(
            &Context {
                group: &group,
                interval,
                now,
                tags: &[],
            },
            &src,
            &dst,
            &history,
            now.saturating_sub(since.min(window)),
            window,
        )
    }))
}
