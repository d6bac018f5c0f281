//! A minimal in-test llama server (a subset of docs/server-api.md) on 127.0.0.1 that tests
//! can make fail, hang, forget its registry, stop and restart on the same port.
//! It records the `Authorization` header of registrations and every
//! `DELETE /api/v1/register/<id>`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde_json::{Value, json};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Every request gets HTTP 500.
    Fail,
    /// Every request waits a minute before answering.
    Hang,
}

#[derive(Debug, Default)]
struct Inner {
    mode: Option<Mode>,
    /// (when, body) of every accepted registration since the last (re)start.
    registrations: Vec<(Instant, Value)>,
    /// Attempts of any outcome, across restarts.
    register_attempts: usize,
    /// The `Authorization` header of every registration attempt.
    register_auth: Vec<Option<String>>,
    /// (id as decoded from the path, `Authorization`) of every DELETE.
    deletes: Vec<(String, Option<String>)>,
    /// Status DELETE answers (default 204).
    delete_status: Option<u16>,
    /// group → YAML served.
    configs: HashMap<String, String>,
    /// (group, query) of every config request.
    config_requests: Vec<(String, HashMap<String, String>)>,
    my_ip_requests: usize,
    /// Answer 404 to config requests from agents that did not register
    /// since the last (re)start, as the real server does.
    require_registration: bool,
}

type Shared = Arc<Mutex<Inner>>;

/// The test server. Dropping it stops it.
pub struct TestServer {
    inner: Shared,
    addr: SocketAddr,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TestServer {
    /// Start on a random loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner: Shared = Arc::default();
        let task = spawn(listener, Arc::clone(&inner));
        Self {
            inner,
            addr,
            task: Mutex::new(Some(task)),
        }
    }

    /// Base URL, as given to `--server`.
    pub fn url(&self) -> reqwest::Url {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Stop listening (new connections are refused).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listen again on the same port with an empty registry (a restarted
    /// server with an in-memory store); served configs are kept.
    pub async fn restart(&self) {
        self.stop().await;
        self.inner.lock().unwrap().registrations.clear();
        // Retried: the port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebind {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        *self.task.lock().unwrap() = Some(spawn(listener, Arc::clone(&self.inner)));
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    pub fn set_config(&self, group: &str, yaml: &str) {
        self.inner
            .lock()
            .unwrap()
            .configs
            .insert(group.to_owned(), yaml.to_owned());
    }

    pub fn require_registration(&self, on: bool) {
        self.inner.lock().unwrap().require_registration = on;
    }

    pub fn registrations(&self) -> Vec<(Instant, Value)> {
        self.inner.lock().unwrap().registrations.clone()
    }

    pub fn register_auth(&self) -> Vec<Option<String>> {
        self.inner.lock().unwrap().register_auth.clone()
    }

    pub fn deletes(&self) -> Vec<(String, Option<String>)> {
        self.inner.lock().unwrap().deletes.clone()
    }

    pub fn set_delete_status(&self, status: u16) {
        self.inner.lock().unwrap().delete_status = Some(status);
    }

    pub fn register_attempts(&self) -> usize {
        self.inner.lock().unwrap().register_attempts
    }

    pub fn config_requests(&self) -> Vec<(String, HashMap<String, String>)> {
        self.inner.lock().unwrap().config_requests.clone()
    }

    pub fn my_ip_requests(&self) -> usize {
        self.inner.lock().unwrap().my_ip_requests
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

fn spawn(listener: tokio::net::TcpListener, inner: Shared) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/api/v1/register", post(register))
        .route("/api/v1/register/{id}", delete(deregister))
        .route("/api/v1/config/{group}", get(config))
        .route("/api/v1/my_ip_address", get(my_ip))
        .with_state(inner);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Applies the failure mode; `None` = answer normally.
async fn misbehave(inner: &Shared) -> Option<Response> {
    let mode = inner.lock().unwrap().mode.unwrap_or(Mode::Normal);
    match mode {
        Mode::Normal => None,
        Mode::Fail => Some((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Some((StatusCode::SERVICE_UNAVAILABLE, "late").into_response())
        }
    }
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("<not UTF-8>").to_owned())
}

async fn register(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    {
        let mut inner = inner.lock().unwrap();
        inner.register_attempts += 1;
        inner.register_auth.push(authorization(&headers));
    }
    if let Some(r) = misbehave(&inner).await {
        return r;
    }
    // The schema checks of docs/server-api.md that matter to the agent.
    let ok = body["port"].is_u64()
        && ["version", "probe_shortname", "probe_name"]
            .iter()
            .all(|k| body["tags"][k].is_string());
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "bad schema"})),
        )
            .into_response();
    }
    // The stored entry, as the real server answers (its `id` is what the
    // agent deletes at shutdown).
    let ip = body["ip"].as_str().unwrap_or("127.0.0.1").to_owned();
    let id = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", body["port"]),
        _ => format!("{ip}:{}", body["port"]),
    };
    let entry = json!({"ip": ip, "port": body["port"], "group": body["group"], "id": id});
    inner
        .lock()
        .unwrap()
        .registrations
        .push((Instant::now(), body));
    Json(entry).into_response()
}

async fn deregister(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let status = {
        let mut inner = inner.lock().unwrap();
        inner.deletes.push((id, authorization(&headers)));
        inner.delete_status.unwrap_or(204)
    };
    if let Some(r) = misbehave(&inner).await {
        return r;
    }
    StatusCode::from_u16(status).unwrap().into_response()
}

async fn config(
    State(inner): State<Shared>,
    Path(group): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    inner
        .lock()
        .unwrap()
        .config_requests
        .push((group.clone(), query.clone()));
    if let Some(r) = misbehave(&inner).await {
        return r;
    }
    let inner = inner.lock().unwrap();
    let known = inner.registrations.iter().any(|(_, b)| {
        b["group"].as_str() == Some(group.as_str())
            && query.get("llamaport").map(String::as_str) == Some(&b["port"].to_string())
    });
    if inner.require_registration && !known {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown requester"})),
        )
            .into_response();
    }
    match inner.configs.get(&group) {
        Some(yaml) => yaml.clone().into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown group '{group}'")})),
        )
            .into_response(),
    }
}

async fn my_ip(State(inner): State<Shared>) -> Response {
    inner.lock().unwrap().my_ip_requests += 1;
    if let Some(r) = misbehave(&inner).await {
        return r;
    }
    Json(json!({"ip": "127.0.0.1"})).into_response()
}
