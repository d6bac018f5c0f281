//! Helpers for router tests: requests through `tower::ServiceExt::oneshot`
//! with a peer address, and registration bodies.

use std::net::SocketAddr;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderMap, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use llama_server::{AppState, Settings, router};
use tower::ServiceExt;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Content-Type` header ("" without one).
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {}", self.text()))
            .to_owned()
    }
}

pub fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub async fn send(app: &Router, mut req: Request<Body>, from: SocketAddr) -> Reply {
    req.extensions_mut().insert(ConnectInfo(from));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(app: &Router, uri: &str, from: SocketAddr) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap(), from).await
}

pub async fn post_json(app: &Router, body: impl Into<Body>, from: SocketAddr) -> Reply {
    let req = Request::post("/api/v1/register")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, req, from).await
}

/// `POST {base}/api/v1/register` over HTTP to a running server; asserts 200
/// and returns the stored entry.
pub async fn register_http(base: &str, body: String) -> serde_json::Value {
    let r = crate::support::http()
        .post(format!("{base}/api/v1/register"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `GET url` over HTTP, as text.
pub async fn get_text(url: String) -> String {
    crate::support::get(url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `GET url` over HTTP, as JSON.
pub async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// A registration body with the required tags.
pub fn reg(port: u16, shortname: &str, extra: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "port": port,
        "tags": {"version": "0.1.0", "probe_shortname": shortname, "probe_name": format!("{shortname}.example.com")},
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, val) in extra {
            if k == "tags" {
                for (tk, tv) in val.as_object().unwrap() {
                    v["tags"][tk] = tv.clone();
                }
            } else {
                v[k] = val;
            }
        }
    }
    v.to_string()
}

pub fn app_with(settings: Settings) -> (Router, AppState) {
    let state = AppState::new(settings);
    (router(state.clone()), state)
}

pub fn app() -> (Router, AppState) {
    app_with(Settings::default())
}
