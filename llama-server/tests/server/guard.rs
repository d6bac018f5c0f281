//! Registrations under control (docs/server-api.md, "Access and limits"):
//! the token, the allowed networks, the per-source rate, the keepalive,
//! member and group bounds, deletion, who keeps a `probe_shortname`, and
//! the byte budget of configs and lists. Router tests: the logic, no
//! sockets.

use std::time::{Duration, SystemTime};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use llama_server::{
    Settings,
    settings::{Cidr, Limits},
};
use serde_json::json;

use crate::support::app::*;

const V4: &str = "192.0.2.10:40000";
const OTHER: &str = "192.0.2.20:40000";
const TOKEN: &str = "s3cret-token";

fn register_req(body: String, auth: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/api/v1/register").header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    req.body(Body::from(body)).unwrap()
}

fn delete_req(id: &str, auth: Option<&str>) -> Request<Body> {
    let mut req = Request::delete(format!("/api/v1/register/{id}"));
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    req.body(Body::empty()).unwrap()
}

fn with_token() -> Settings {
    Settings {
        registration_token: Some(TOKEN.into()),
        ..Settings::default()
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> Settings {
    let mut l = Limits::default();
    f(&mut l);
    Settings {
        limits: l,
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_token_guards_registration_and_deletion_but_not_reading() {
    let (app, state) = app_with(with_token());
    let bearer = format!("Bearer {TOKEN}");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0"),
        Some("Bearer"),
    ] {
        let r = send(
            &app,
            register_req(reg(8100, "a", json!({})), auth),
            peer(V4),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}: {}", r.text());
        assert!(r.error().contains("token"), "{}", r.error());
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    assert_eq!(state.store.counts().await.unwrap().probes, 0);
    let r = send(
        &app,
        register_req(reg(8100, "a", json!({})), Some(&bearer)),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // Reading stays open, as the original's clients expect.
    for uri in [
        "/api/v1/list",
        "/api/v1/list/default",
        "/api/v1/config/default?llamaport=8100&srcip=192.0.2.10",
        "/api/v1/scraper",
    ] {
        assert_eq!(
            get(&app, uri, peer(OTHER)).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
    // Deleting needs the token too, from any address.
    let r = send(&app, delete_req(&id, None), peer(V4)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, delete_req(&id, Some(&bearer)), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(state.store.counts().await.unwrap().probes, 0);
}

#[tokio::test]
async fn only_allowed_networks_register_judged_by_the_peer() {
    let (app, _) = app_with(Settings {
        register_allow: vec!["10.0.0.0/8".parse::<Cidr>().unwrap()],
        trust_forwarded_for: true,
        ..Settings::default()
    });
    let r = post_json(&app, reg(8100, "a", json!({})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.error().contains("register_allow"), "{}", r.error());
    // X-Forwarded-For is the client's word: it does not open the door.
    let req = Request::post("/api/v1/register")
        .header("content-type", "application/json")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Body::from(reg(8100, "a", json!({}))))
        .unwrap();
    assert_eq!(
        send(&app, req, peer(V4)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = post_json(&app, reg(8100, "a", json!({})), peer("10.1.2.3:5000")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Reading is open to all.
    assert_eq!(
        get(&app, "/api/v1/list", peer(V4)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn each_source_address_has_a_registration_rate() {
    let (app, _) = app_with(limits(|l| {
        l.register_rate = 0.5;
        l.register_burst = 3.0;
    }));
    for i in 0..3 {
        let r = post_json(&app, reg(8100 + i, &format!("a{i}"), json!({})), peer(V4)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = post_json(&app, reg(8100, "a", json!({})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.error().contains("register_rate"), "{}", r.error());
    let wait: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Deleting draws on the same budget.
    let r = send(&app, delete_req("192.0.2.10:8100", None), peer(V4)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Another address has its own.
    let r = post_json(&app, reg(8100, "b", json!({})), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Off (0): a fleet behind one address registers freely.
    let (app, _) = app_with(limits(|l| l.register_rate = 0.0));
    for i in 0..300 {
        let r = post_json(&app, reg(1000 + i, &format!("p{i}"), json!({})), peer(V4)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

#[tokio::test]
async fn refusals_by_token_do_not_use_up_the_rate() {
    let (app, _) = app_with(Settings {
        limits: Limits {
            register_burst: 1.0,
            register_rate: 0.01,
            ..Limits::default()
        },
        ..with_token()
    });
    for _ in 0..5 {
        let r = send(
            &app,
            register_req(reg(8100, "a", json!({})), None),
            peer(V4),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let bearer = format!("Bearer {TOKEN}");
    let r = send(
        &app,
        register_req(reg(8100, "a", json!({})), Some(&bearer)),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = send(
        &app,
        register_req(reg(8100, "a", json!({})), Some(&bearer)),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_default_rate_lets_an_agent_reregister_every_second() {
    let (app, _) = app();
    // 150 registrations, more than the burst, as fast as the router goes:
    // every one refreshes the same entry, and some are refused; the
    // refusals are 429s, not other errors.
    let mut refused = 0;
    for _ in 0..150 {
        let r = post_json(&app, reg(8100, "a", json!({})), peer(V4)).await;
        match r.status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            s => panic!("{s}: {}", r.text()),
        }
    }
    assert!(refused > 0, "the default burst of 100 was not enforced");
}

#[tokio::test]
async fn keepalive_is_bounded() {
    let (app, _) = app();
    for k in [json!(1e300), json!(604_801)] {
        let r = post_json(&app, reg(8100, "a", json!({"keepalive": k})), peer(V4)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{k}");
        assert_eq!(r.json()["field"], "keepalive");
        assert!(r.error().contains("max_keepalive"), "{}", r.error());
    }
    let r = post_json(
        &app,
        reg(8100, "a", json!({"keepalive": 604_800})),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (app, _) = app_with(limits(|l| l.max_keepalive = 300.0));
    let r = post_json(&app, reg(8100, "a", json!({"keepalive": 301})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn groups_and_their_members_are_bounded() {
    let (app, state) = app_with(limits(|l| {
        l.max_group_members = 2;
        l.max_groups = 2;
    }));
    let ok = |r: &Reply| assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    ok(&post_json(&app, reg(1, "a", json!({"ip": "10.0.0.1"})), peer(V4)).await);
    ok(&post_json(&app, reg(1, "b", json!({"ip": "10.0.0.2"})), peer(V4)).await);
    let r = post_json(&app, reg(1, "c", json!({"ip": "10.0.0.3"})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.error().contains("max_group_members"), "{}", r.error());
    // Members refresh; another group takes new members.
    ok(&post_json(&app, reg(1, "b", json!({"ip": "10.0.0.2"})), peer(V4)).await);
    ok(&post_json(
        &app,
        reg(1, "c", json!({"ip": "10.0.0.3", "group": "g2"})),
        peer(V4),
    )
    .await);
    let r = post_json(
        &app,
        reg(1, "d", json!({"ip": "10.0.0.4", "group": "g3"})),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.error().contains("max_groups"), "{}", r.error());
    let c = state.store.counts().await.unwrap();
    assert_eq!((c.probes, c.groups), (3, 2));
}

#[tokio::test]
async fn an_address_deletes_its_own_entry() {
    let (app, state) = app();
    let r = post_json(&app, reg(8100, "a", json!({})), peer(V4)).await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(id, "192.0.2.10:8100");
    post_json(&app, reg(8100, "a", json!({"group": "other"})), peer(V4)).await;
    // Not someone else's.
    let r = send(&app, delete_req(&id, None), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.json()["error"].is_string());
    // Its own: gone from every group that held it.
    let r = send(&app, delete_req(&id, None), peer(V4)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert!(r.body.is_empty());
    let c = state.store.counts().await.unwrap();
    assert_eq!((c.probes, c.groups), (0, 0), "emptied groups are dropped");
    let r = send(&app, delete_req(&id, None), peer(V4)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains(&id), "{}", r.error());
    // IPv6 ids, percent-encoded or not.
    let v6 = "[2001:db8::7]:40000";
    let r = post_json(&app, reg(8100, "six", json!({})), peer(v6)).await;
    assert_eq!(r.json()["id"], "[2001:db8::7]:8100");
    let r = send(
        &app,
        delete_req("%5B2001%3Adb8%3A%3A7%5D%3A8100", None),
        peer(v6),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = send(&app, delete_req("not-an-id", None), peer(V4)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["field"], "id");
}

#[tokio::test]
async fn without_a_token_a_live_entry_keeps_its_shortname() {
    let (app, state) = app();
    let body =
        |ip: &str, keepalive: f64| reg(8100, "las1", json!({"ip": ip, "keepalive": keepalive}));
    let r = post_json(&app, body("10.0.0.1", 0.5), peer(V4)).await;
    assert_eq!(r.status, StatusCode::OK);
    // A newcomer from another address is refused while the entry lives...
    let r = post_json(&app, body("10.0.0.66", 60.0), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.error().contains("10.0.0.1:8100"), "{}", r.error());
    // ... and the incumbent survives reaps.
    state.store.reap(SystemTime::now()).await.unwrap();
    let list = get(&app, "/api/v1/list/default", peer(V4)).await.json();
    assert_eq!(list.as_object().unwrap().len(), 1);
    assert!(list.get("10.0.0.1:8100").is_some(), "{list}");
    // Nor from the same address on another port: a registration may name
    // any `ip`, so that would be a way to evict too.
    let r = post_json(
        &app,
        reg(8200, "las1", json!({"ip": "10.0.0.1", "keepalive": 60})),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    // The holder itself refreshes as ever.
    let r = post_json(&app, body("10.0.0.1", 0.5), peer(V4)).await;
    assert_eq!(r.status, StatusCode::OK);
    // Once the entry expires, the newcomer takes the name.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = post_json(&app, body("10.0.0.66", 60.0), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    state.store.reap(SystemTime::now()).await.unwrap();
    let list = get(&app, "/api/v1/list/default", peer(V4)).await.json();
    let ids: Vec<&String> = list.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["10.0.0.66:8100"]);
}

#[tokio::test]
async fn with_a_token_the_newest_registration_takes_the_shortname() {
    let (app, state) = app_with(with_token());
    let bearer = format!("Bearer {TOKEN}");
    for ip in ["10.0.0.1", "10.0.0.2"] {
        let r = send(
            &app,
            register_req(reg(8100, "las1", json!({"ip": ip})), Some(&bearer)),
            peer(V4),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = state.store.reap(SystemTime::now()).await.unwrap();
    assert_eq!(report.duplicates, 1);
    let list = get(&app, "/api/v1/list/default", peer(V4)).await.json();
    let ids: Vec<&String> = list.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["10.0.0.2:8100"], "the probe moved");
}

#[tokio::test]
async fn configs_and_lists_being_sent_share_a_byte_budget() {
    let (app, _) = app_with(limits(|l| {
        l.register_rate = 0.0;
        l.max_render_bytes = 64 * 1024;
    }));
    // About 40 KiB of config: 100 members with a 250-byte tag each.
    for i in 0..100 {
        let r = post_json(
            &app,
            reg(
                8100,
                &format!("p{i}"),
                json!({"ip": format!("10.0.0.{}", i + 1), "tags": {"note": "x".repeat(250)}}),
            ),
            peer(V4),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let config = |i: u32| {
        Request::get(format!(
            "/api/v1/config/default?llamaport=8100&srcip=10.0.0.{i}"
        ))
        .body(Body::empty())
        .unwrap()
    };
    // A reader that has not taken its answer yet holds its bytes...
    let held = tower::ServiceExt::oneshot(app.clone(), {
        let mut r = config(1);
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer(V4)));
        r
    })
    .await
    .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    // ... so the next one does not fit.
    let r = send(&app, config(2), peer(V4)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.error().contains("max_render_bytes"), "{}", r.error());
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let r = get(&app, "/api/v1/list", peer(V4)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Once it is gone, there is room again.
    drop(held);
    let r = send(&app, config(2), peer(V4)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.len() > 32 * 1024, "{} bytes", r.body.len());
    // (The bytes a test holds count too.)
    drop(r);
    assert_eq!(
        get(&app, "/api/v1/list", peer(V4)).await.status,
        StatusCode::OK
    );
}

/// Log lines written while the guard lives (this thread only: the tests
/// here run on a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let out = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

#[tokio::test]
async fn limits_hit_over_and_over_log_once() {
    let log = Captured::default();
    let _guard = log.start();
    let (app, _) = app_with(limits(|l| {
        l.max_group_members = 1;
        l.max_render_bytes = 1024;
    }));
    post_json(
        &app,
        reg(8100, "a", json!({"tags": {"note": "x".repeat(250)}})),
        peer(V4),
    )
    .await;
    for i in 0..10 {
        let r = post_json(&app, reg(8101 + i, "b", json!({})), peer(V4)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // One answer larger than the budget is served alone; the budget is
    // spent while it is held.
    let held = get(&app, "/api/v1/list", peer(V4)).await;
    assert_eq!(held.status, StatusCode::OK);
    for _ in 0..10 {
        let r = get(&app, "/api/v1/list", peer(V4)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    drop(held);
    assert_eq!(log.count("max_group_members"), 1);
    assert_eq!(log.count("render budget spent"), 1);
}

#[tokio::test]
async fn a_deleted_entry_frees_its_shortname() {
    let (app, _) = app();
    let r = post_json(&app, reg(8100, "las1", json!({})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_json(&app, reg(8100, "las1", json!({})), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The probe stops (and says so); it moved.
    let r = send(&app, delete_req("192.0.2.10:8100", None), peer(V4)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = post_json(&app, reg(8100, "las1", json!({})), peer(OTHER)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn configs_of_groups_above_the_member_limit_are_refused() {
    // A store filled beyond this server's limit (as a shared store written
    // by other servers could be).
    let store = std::sync::Arc::new(llama_server::registry::MemoryStore::new(100));
    let state = llama_server::AppState::with_store(limits(|l| l.max_group_members = 2), store);
    for i in 1..=3u8 {
        let p = llama_server::registration::Registration::parse(
            reg(8100, &format!("p{i}"), json!({"ip": format!("10.0.0.{i}")})).as_bytes(),
            &Limits::default(),
        )
        .unwrap()
        .into_probe("10.0.0.1".parse().unwrap(), "default", 60.0);
        state.store.register(p, SystemTime::now()).await.unwrap();
    }
    let app = llama_server::router(state);
    let r = get(
        &app,
        "/api/v1/config/default?llamaport=8100&srcip=10.0.0.1",
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.error().contains("max_group_members"), "{}", r.error());
}
