//! The collector's HTTP API (DESIGN A3): `GET /status` → `ok`,
//! `GET /influxdata` → the last interval's summaries in the original JSON
//! form, and `GET /metrics` → Prometheus exposition.

pub mod influx;

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::collector::{Error, Shared};

/// The API's routes over the collector's shared state.
pub fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/influxdata", get(influxdata))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn status() -> &'static str {
    "ok"
}

async fn influxdata(State(state): State<Arc<Shared>>) -> Response {
    let body = influx::render(&state.published());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(state): State<Arc<Shared>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Api)
}
