//! The agent's HTTP API: the collector's routes (DESIGN A3) over whichever
//! collector is current, and a `/metrics` that adds the reflector's and the
//! control loop's counters to the collector's.

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::sink::CollectorSink;
use crate::{api::influx, control::ControlMetrics, reflector::Reflector};

/// Shared state of the agent API.
#[derive(Clone)]
pub struct AgentState {
    sink: Arc<CollectorSink>,
    reflector: Arc<Mutex<Option<Reflector>>>,
    control: Arc<Registry>,
}

impl AgentState {
    pub fn new(
        sink: Arc<CollectorSink>,
        reflector: Arc<Mutex<Option<Reflector>>>,
        control: &ControlMetrics,
    ) -> Self {
        let mut registry = Registry::default();
        control.register(&mut registry);
        Self {
            sink,
            reflector,
            control: Arc::new(registry),
        }
    }
}

pub fn router(state: AgentState) -> Router {
    Router::new()
        .route("/status", get(|| async { "ok" }))
        .route("/influxdata", get(influxdata))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn influxdata(State(state): State<AgentState>) -> Response {
    let body = influx::render(&state.sink.shared().published());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
    counter: String,
}

/// The reflector's counters as of now, in a registry of their own (they are
/// totals read from the kernel map and the userspace threads, not events
/// this process counts).
fn reflector_registry(reflector: &Reflector) -> Registry {
    let mut registry = Registry::with_prefix("llama_reflector");
    let family = Family::<PathLabel, Counter>::default();
    if let Some(counters) = reflector.xdp_counters() {
        for (counter, value) in counters {
            family
                .get_or_create(&PathLabel {
                    path: "xdp",
                    counter: counter.name().to_owned(),
                })
                .inc_by(value);
        }
    }
    let s = reflector.userspace_stats();
    for (name, value) in [
        ("received", s.received),
        ("reflected", s.reflected),
        ("not_probe", s.not_probe),
        ("not_unicast", s.not_unicast),
        ("dropped_allowlist", s.dropped_allowlist),
        ("dropped_rate_limit", s.dropped_rate_limit),
        ("send_errors", s.send_errors),
    ] {
        family
            .get_or_create(&PathLabel {
                path: "userspace",
                counter: name.to_owned(),
            })
            .inc_by(value);
    }
    registry.register(
        "packets",
        "Reflector counters by path (xdp or userspace)",
        family,
    );
    let xdp_interfaces = Gauge::<i64>::default();
    xdp_interfaces.set(
        reflector
            .outcomes()
            .iter()
            .filter(|(_, o)| matches!(o, crate::reflector::Outcome::Xdp(_)))
            .count() as i64,
    );
    registry.register(
        "xdp_interfaces",
        "Interfaces where the XDP program is attached",
        xdp_interfaces,
    );
    registry
}

async fn metrics(State(state): State<AgentState>) -> Response {
    let collector = state.sink.shared();
    let mut body = String::new();
    let mut parts = vec![&collector.metrics.registry, state.control.as_ref()];
    let reflector = state
        .reflector
        .lock()
        .ok()
        .and_then(|r| r.as_ref().map(reflector_registry));
    if let Some(r) = &reflector {
        parts.push(r);
    }
    for registry in parts {
        let mut text = String::new();
        if encode(&mut text, registry).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        // One exposition: each encoding ends with its own EOF marker.
        body.push_str(text.strip_suffix("# EOF\n").unwrap_or(&text));
    }
    body.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AgentState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
