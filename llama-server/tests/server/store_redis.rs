//! The Redis store with a real `redis-server`: two routers on one Redis
//! are two replicas, and what one registers the other lists, configures
//! and deletes; limits and the shortname rule hold across them; entries
//! expire with their keepalive; a Redis outage answers 503 for writes and
//! serves configs from the cache for a bounded time; a restarted Redis is
//! used again without restarting the server.

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, http::Request};
use llama_server::{AppState, Settings, registry::RedisOptions, router, settings::StoreSettings};
use serde_json::json;

use crate::support::{
    app::{get, peer, post_json, reg, send},
    redis::Redis,
};

fn settings(redis: &Redis, prefix: &str, tune: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings {
        store: StoreSettings::Redis(RedisOptions {
            url: redis.url(),
            prefix: prefix.into(),
            timeout: Duration::from_secs(2),
            stale_for: Duration::from_secs(300),
        }),
        ..Settings::default()
    };
    tune(&mut s);
    s
}

fn replica(settings: Settings) -> (Router, AppState) {
    let state = AppState::from_settings(settings).expect("state over Redis");
    (router(state.clone()), state)
}

async fn delete(app: &Router, id: &str) -> u16 {
    let req = Request::delete(format!("/api/v1/register/{id}"))
        .body(Body::empty())
        .unwrap();
    send(app, req, peer("10.0.0.1:40000")).await.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_answer_alike() {
    let Some(redis) = Redis::start("store_redis::two_replicas_answer_alike") else {
        return;
    };
    let (a, _) = replica(settings(&redis, "t1", |_| {}));
    let (b, _) = replica(settings(&redis, "t1", |_| {}));
    for (i, app) in [&a, &b, &a].into_iter().enumerate() {
        let host = format!("10.0.0.{}:40000", i + 1);
        let r = post_json(
            app,
            reg(8100, &format!("h{i}"), json!({"group": "lab"})),
            peer(&host),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["id"], format!("10.0.0.{}:8100", i + 1));
    }
    let list_a = get(&a, "/api/v1/list/lab", peer("10.9.9.9:1")).await;
    let list_b = get(&b, "/api/v1/list/lab", peer("10.9.9.9:1")).await;
    assert_eq!(list_a.status, 200);
    assert_eq!(list_a.json(), list_b.json());
    let ids: Vec<String> = list_b.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // Configs alike from either replica, in registration order.
    let path = "/api/v1/config/lab?llamaport=8100&srcip=10.0.0.2";
    let config_a = get(&a, path, peer("10.0.0.2:1")).await;
    let config_b = get(&b, path, peer("10.0.0.2:1")).await;
    assert_eq!(config_a.status, 200, "{}", config_a.text());
    assert_eq!(config_a.text(), config_b.text());
    let text = config_b.text();
    let at = |ip: &str| text.find(ip).unwrap_or_else(|| panic!("{ip} in {text}"));
    assert!(at("10.0.0.1") < at("10.0.0.3"), "registration order");
    // Deleted through the other replica: gone for both.
    assert_eq!(delete(&b, "10.0.0.1:8100").await, 204);
    for app in [&a, &b] {
        let list = get(app, "/api/v1/list/lab", peer("10.9.9.9:1")).await;
        assert_eq!(list.json().as_object().unwrap().len(), 2);
    }
    let counts = get(&a, "/metrics.json", peer("10.9.9.9:1")).await;
    assert_eq!(counts.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_the_shortname_rule_hold_across_replicas() {
    let Some(redis) = Redis::start("store_redis::limits_and_the_shortname_rule") else {
        return;
    };
    let small = |s: &mut Settings| {
        s.limits.max_group_members = 2;
        s.limits.max_groups = 2;
    };
    let (a, _) = replica(settings(&redis, "t2", small));
    let (b, _) = replica(settings(&redis, "t2", small));
    let r = post_json(
        &a,
        reg(8100, "one", json!({"group": "g"})),
        peer("10.0.0.1:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    // Without a token a live entry keeps its name, whichever replica asks.
    let r = post_json(
        &b,
        reg(8100, "one", json!({"group": "g"})),
        peer("10.0.0.2:1"),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = post_json(
        &b,
        reg(8100, "two", json!({"group": "g"})),
        peer("10.0.0.2:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(
        &a,
        reg(8100, "three", json!({"group": "g"})),
        peer("10.0.0.3:1"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("max_group_members"), "{}", r.error());
    // A refresh of a member is no new member.
    let r = post_json(
        &b,
        reg(8100, "two", json!({"group": "g"})),
        peer("10.0.0.2:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(
        &a,
        reg(8100, "x", json!({"group": "h"})),
        peer("10.0.0.4:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(
        &b,
        reg(8100, "y", json!({"group": "i"})),
        peer("10.0.0.5:1"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("max_groups"), "{}", r.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_newest_registration_of_a_name_wins() {
    let Some(redis) = Redis::start("store_redis::newest_wins") else {
        return;
    };
    let token = |s: &mut Settings| s.registration_token = Some("t0k".into());
    let (a, _) = replica(settings(&redis, "t3", token));
    let (b, _) = replica(settings(&redis, "t3", token));
    let register = |app: Router, host: &'static str| async move {
        let req = Request::post("/api/v1/register")
            .header("content-type", "application/json")
            .header("authorization", "Bearer t0k")
            .body(Body::from(reg(8100, "mover", json!({"group": "g"}))))
            .unwrap();
        send(&app, req, peer(host)).await
    };
    assert_eq!(register(a.clone(), "10.0.0.1:1").await.status, 200);
    assert_eq!(register(b.clone(), "10.0.0.2:1").await.status, 200);
    let list = get(&a, "/api/v1/list/g", peer("10.9.9.9:1")).await.json();
    let ids: Vec<&String> = list.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["10.0.0.2:8100"], "the probe that moved, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_with_their_keepalive_and_the_reap_drops_the_group() {
    let Some(redis) = Redis::start("store_redis::entries_expire") else {
        return;
    };
    let (a, state) = replica(settings(&redis, "t4", |_| {}));
    let r = post_json(
        &a,
        reg(8100, "brief", json!({"group": "g", "keepalive": 1})),
        peer("10.0.0.1:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(state.store.counts().await.unwrap().probes, 1);
    // Each group key outlives the keepalive by a minute, no more.
    for key in ["seen", "data", "order", "names", "short", "version"] {
        let ttl: u64 = redis
            .cli(&["PTTL", &format!("t4:{{g}}:{key}")])
            .parse()
            .unwrap();
        assert!((60_000..=61_000).contains(&ttl), "{key}: PTTL {ttl}");
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let list = get(&a, "/api/v1/list/g", peer("10.9.9.9:1")).await;
    assert!(
        list.status == 404 || list.json().as_object().is_none_or(|m| m.is_empty()),
        "an expired entry is invisible at once: {}",
        list.text()
    );
    let report = state
        .store
        .reap(std::time::SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        (report.expired, report.groups_removed),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(state.store.counts().await.unwrap().groups, 0);
    assert_eq!(redis.cli(&["GET", "t4:entries"]), "0");
    // Every key of the group went with it.
    assert_eq!(redis.cli(&["KEYS", "t4:{g}:*"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_serves_cached_configs_and_recovers() {
    let Some(mut redis) = Redis::start("store_redis::an_outage") else {
        return;
    };
    let (a, state) = replica(settings(&redis, "t5", |s| {
        if let StoreSettings::Redis(o) = &mut s.store {
            o.timeout = Duration::from_millis(500);
            o.stale_for = Duration::from_secs(3);
        }
    }));
    for i in 1..=2 {
        let r = post_json(
            &a,
            reg(8100, &format!("h{i}"), json!({"group": "g"})),
            peer(&format!("10.0.0.{i}:1")),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let path = "/api/v1/config/g?llamaport=8100&srcip=10.0.0.1";
    let before = get(&a, path, peer("10.0.0.1:1")).await;
    assert_eq!(before.status, 200);

    redis.kill();
    let r = post_json(
        &a,
        reg(8100, "h3", json!({"group": "g"})),
        peer("10.0.0.3:1"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("store unavailable"), "{}", r.error());
    assert_eq!(r.headers["retry-after"], "5");
    let cached = get(&a, path, peer("10.0.0.1:1")).await;
    assert_eq!(
        cached.status,
        200,
        "served from the cache: {}",
        cached.text()
    );
    assert_eq!(cached.text(), before.text());
    // Beyond stale_for the cache is not trusted any more.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let stale = get(&a, path, peer("10.0.0.1:1")).await;
    assert_eq!(stale.status, 503, "{}", stale.text());

    // Redis back (empty, as after a restart without persistence): the same
    // server registers again without a restart.
    redis.restart();
    let mut status = 0;
    for _ in 0..40 {
        let r = post_json(
            &a,
            reg(8100, "h1", json!({"group": "g"})),
            peer("10.0.0.1:1"),
        )
        .await;
        status = r.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "registration works again once Redis is back");
    assert_eq!(state.store.counts().await.unwrap().probes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_group_reuses_its_probes() {
    let Some(redis) = Redis::start("store_redis::an_unchanged_group") else {
        return;
    };
    let (a, state) = replica(settings(&redis, "t6", |_| {}));
    for i in 1..=3 {
        let r = post_json(
            &a,
            reg(8100, &format!("h{i}"), json!({"group": "g"})),
            peer(&format!("10.0.0.{i}:1")),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let first = state.store.group("g").await.unwrap().unwrap();
    // A refresh changes no data: the probes (and their rendered targets)
    // are kept; the refreshed entry shows its new registration time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = post_json(
        &a,
        reg(8100, "h2", json!({"group": "g"})),
        peer("10.0.0.2:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    // Within a second of a read, an unchanged version serves that read.
    let cached = state.store.group("g").await.unwrap().unwrap();
    assert_eq!(cached[1].last_seen, first[1].last_seen);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = state.store.group("g").await.unwrap().unwrap();
    assert_eq!(first.len(), 3);
    for (x, y) in first.iter().zip(&second) {
        assert!(
            Arc::ptr_eq(&x.probe, &y.probe),
            "probe {} re-read",
            x.probe.id
        );
    }
    assert!(second[1].last_seen > first[1].last_seen);
    assert!(
        Arc::ptr_eq(&first[0], &second[0]),
        "an unrefreshed entry is reused"
    );
    // A changed tag is new data.
    let r = post_json(
        &a,
        reg(8100, "h2", json!({"group": "g", "tags": {"rack": "7"}})),
        peer("10.0.0.2:1"),
    )
    .await;
    assert_eq!(r.status, 200);
    let third = state.store.group("g").await.unwrap().unwrap();
    assert_eq!(third[1].probe.tags.get("rack"), Some("7"));
    assert!(Arc::ptr_eq(&third[0].probe, &first[0].probe));
}
