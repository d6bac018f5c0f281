//! The agent's HTTP API (docs/agent-api.md): `GET /status`
//! → `ok`, `GET /influxdata` → the last interval's summaries in the
//! original collector's JSON, and `GET /metrics` → OpenMetrics text.
//!
//! One router serves both `llama-agent collect` (one collector) and
//! `llama-agent run` (whichever collector the control loop has started, see
//! [`CollectorView`]); `run` adds the reflector's and the control loop's
//! counters to `/metrics` as extra [`MetricsSource`]s.

pub mod influx;

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use llama_common::OPENMETRICS_CONTENT_TYPE;
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::net::TcpListener;

use crate::collector::Shared;

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve the agent API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent API: {0}")]
    Serve(#[source] std::io::Error),
}

/// Where the API finds the collector state to serve, at each request.
pub trait CollectorView: Send + Sync {
    fn current(&self) -> Arc<Shared>;
}

/// A fixed collector.
impl CollectorView for Arc<Shared> {
    fn current(&self) -> Arc<Shared> {
        Arc::clone(self)
    }
}

/// Counters appended to the collector's in `/metrics`.
pub trait MetricsSource: Send + Sync {
    /// Calls `f` with the registries to encode now (none, one or several).
    fn visit(&self, f: &mut dyn FnMut(&Registry));
}

/// A registry whose metrics update themselves (counters kept as events
/// happen).
impl MetricsSource for Registry {
    fn visit(&self, f: &mut dyn FnMut(&Registry)) {
        f(self)
    }
}

/// What the router serves.
#[derive(Clone)]
pub struct ApiState {
    collector: Arc<dyn CollectorView>,
    extra: Vec<Arc<dyn MetricsSource>>,
}

impl ApiState {
    pub fn new(collector: Arc<dyn CollectorView>) -> Self {
        Self {
            collector,
            extra: Vec::new(),
        }
    }

    /// Adds `source` to `/metrics`, after the collector's and earlier sources.
    pub fn with_metrics(mut self, source: Arc<dyn MetricsSource>) -> Self {
        self.extra.push(source);
        self
    }
}

impl From<Arc<Shared>> for ApiState {
    fn from(shared: Arc<Shared>) -> Self {
        Self::new(Arc::new(shared))
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/influxdata", get(influxdata))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn status() -> &'static str {
    "ok"
}

async fn influxdata(State(state): State<ApiState>) -> Response {
    let body = influx::render(&state.collector.current().published());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let collector = state.collector.current();
    let mut body = String::new();
    let mut failed = false;
    let mut append = |registry: &Registry| {
        let mut text = String::new();
        failed |= encode(&mut text, registry).is_err();
        // One exposition: each encoding ends with its own EOF marker.
        body.push_str(text.strip_suffix("# EOF\n").unwrap_or(&text));
    };
    append(&collector.metrics.registry);
    for source in &state.extra {
        source.visit(&mut append);
    }
    if failed {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    body.push_str("# EOF\n");
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
}

/// Binds the API's listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn extra_sources_join_one_exposition() {
        let mut extra = Registry::with_prefix("extra");
        let counter = Counter::<u64>::default();
        counter.inc_by(7);
        extra.register("things", "Things counted", counter);
        let state = ApiState::from(Shared::detached()).with_metrics(Arc::new(extra));
        let resp = router(state)
            .oneshot(
                axum::http::Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("router never fails");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.contains("extra_things_total 7"), "{text}");
        assert!(text.contains("llama_collector_"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
