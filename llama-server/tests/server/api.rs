//! Router tests: every endpoint of docs/server-api.md, every refusal, and the original's
//! response shapes.

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use llama_server::{Settings, settings::Limits};
use serde_json::{Value, json};
use support::*;

use crate::support::app as support;

const V4: &str = "192.0.2.10:40000";
const V6: &str = "[2001:db8::7]:40000";

#[tokio::test]
async fn register_applies_defaults_and_answers_with_the_stored_entry() {
    let (app, _) = app();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let r = post_json(
            &app,
            reg(8100, name, json!({"ip": format!("10.0.0.{i}")})),
            peer(V4),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = post_json(&app, reg(8100, "d", json!({})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::OK);
    let e = r.json();
    // The stored entry, not the database.
    assert_eq!(e["id"], "192.0.2.10:8100");
    assert_eq!(e["ip"], "192.0.2.10");
    assert_eq!(e["port"], 8100);
    assert_eq!(e["group"], "default");
    assert_eq!(e["keepalive"], 86400);
    assert_eq!(e["tags"]["probe_shortname"], "d");
    assert!(e["create_date"].as_str().unwrap().len() >= 26);
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "ip",
        "port",
        "keepalive",
        "group",
        "tags",
        "create_date",
        "id",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert!(
        r.body.len() < 400,
        "answer is one entry: {} bytes",
        r.body.len()
    );
}

#[tokio::test]
async fn configured_defaults_apply_to_registrations_that_omit_them() {
    let settings = Settings {
        default_group: "lab".into(),
        keepalive: 60.0,
        ..Settings::default()
    };
    let (app, _) = app_with(settings);
    let e = post_json(&app, reg(8100, "a", json!({})), peer(V4))
        .await
        .json();
    assert_eq!(e["group"], "lab");
    assert_eq!(e["keepalive"], 60);
    let e = post_json(
        &app,
        reg(8100, "a", json!({"group": "wan", "keepalive": 12.5})),
        peer(V4),
    )
    .await
    .json();
    assert_eq!(e["group"], "wan");
    assert_eq!(e["keepalive"], 12.5);
}

#[tokio::test]
async fn reregistration_refreshes_the_same_entry() {
    let (app, state) = app();
    let first = post_json(&app, reg(8100, "a", json!({})), peer(V4))
        .await
        .json();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = post_json(
        &app,
        reg(8100, "a", json!({"tags": {"site": "x"}})),
        peer(V4),
    )
    .await
    .json();
    assert_eq!(first["id"], second["id"]);
    assert_ne!(first["create_date"], second["create_date"]);
    assert_eq!(second["tags"]["site"], "x");
    assert_eq!(state.store.counts().await.unwrap().probes, 1);
}

#[tokio::test]
async fn ipv6_peers_and_ips_get_unambiguous_ids() {
    let (app, _) = app();
    let e = post_json(&app, reg(8100, "a", json!({})), peer(V6))
        .await
        .json();
    assert_eq!(e["id"], "[2001:db8::7]:8100");
    assert_eq!(e["ip"], "2001:db8::7");
    let e = post_json(&app, reg(8101, "b", json!({"ip": "fe80::1"})), peer(V4))
        .await
        .json();
    assert_eq!(e["id"], "[fe80::1]:8101");
    // An IPv4 client seen through a dual-stack socket is stored as IPv4.
    let e = post_json(
        &app,
        reg(8100, "c", json!({})),
        peer("[::ffff:192.0.2.99]:1"),
    )
    .await
    .json();
    assert_eq!(e["id"], "192.0.2.99:8100");
    let list = get(&app, "/api/v1/list/default", peer(V4)).await.json();
    assert!(list.get("[2001:db8::7]:8100").is_some());
    assert!(list.get("[fe80::1]:8101").is_some());
}

#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    let with_xff = |uri: &str, method: &str, body: Body| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("x-forwarded-for", "203.0.113.5, 10.0.0.1")
            .body(body)
            .unwrap()
    };
    let (app, _) = app();
    let r = send(
        &app,
        with_xff("/api/v1/my_ip_address", "GET", Body::empty()),
        peer(V4),
    )
    .await;
    assert_eq!(r.json(), json!({"ip": "192.0.2.10"}));
    let r = send(
        &app,
        with_xff("/api/v1/register", "POST", reg(8100, "a", json!({})).into()),
        peer(V4),
    )
    .await;
    assert_eq!(r.json()["ip"], "192.0.2.10");

    let (app, _) = app_with(Settings {
        trust_forwarded_for: true,
        ..Settings::default()
    });
    let r = send(
        &app,
        with_xff("/api/v1/my_ip_address", "GET", Body::empty()),
        peer(V4),
    )
    .await;
    assert_eq!(r.json(), json!({"ip": "203.0.113.5"}));
    let r = send(
        &app,
        with_xff("/api/v1/register", "POST", reg(8100, "a", json!({})).into()),
        peer(V4),
    )
    .await;
    assert_eq!(r.json()["id"], "203.0.113.5:8100");
    // An explicit `ip` still wins.
    let r = send(
        &app,
        with_xff(
            "/api/v1/register",
            "POST",
            reg(8100, "b", json!({"ip": "10.9.9.9"})).into(),
        ),
        peer(V4),
    )
    .await;
    assert_eq!(r.json()["ip"], "10.9.9.9");
}

#[tokio::test]
async fn schema_violations_are_400_naming_the_field() {
    let (app, state) = app();
    let tags = json!({"version": "1", "probe_shortname": "a", "probe_name": "A"});
    let cases: Vec<(String, &str)> = vec![
        (json!({"tags": tags}).to_string(), "port"),
        (json!({"port": "8100", "tags": tags}).to_string(), "port"),
        (json!({"port": -8100, "tags": tags}).to_string(), "port"),
        (json!({"port": 8100.5, "tags": tags}).to_string(), "port"),
        (json!({"port": 8100}).to_string(), "tags"),
        (
            json!({"port": 8100, "tags": {"version": "1", "probe_name": "A"}}).to_string(),
            "tags.probe_shortname",
        ),
        (
            json!({"port": 8100, "tags": {"version": "1", "probe_shortname": "a"}}).to_string(),
            "tags.probe_name",
        ),
        (
            json!({"port": 8100, "tags": {"probe_shortname": "a", "probe_name": "A"}}).to_string(),
            "tags.version",
        ),
        (
            json!({"port": 8100, "keepalive": 0, "tags": tags}).to_string(),
            "keepalive",
        ),
        (
            json!({"port": 8100, "keepalive": -1, "tags": tags}).to_string(),
            "keepalive",
        ),
        (
            json!({"port": 8100, "ip": "not-an-ip", "tags": tags}).to_string(),
            "ip",
        ),
        (
            json!({"port": 8100, "ip": "10.0.0.256", "tags": tags}).to_string(),
            "ip",
        ),
        (r#"{"port": NaN, "tags": {}}"#.to_owned(), "port"),
        (
            r#"{"port": 8100, "keepalive": Infinity, "tags": {}}"#.to_owned(),
            "keepalive",
        ),
        (
            r#"{"port": 8100, "keepalive": -Infinity, "tags": {}}"#.to_owned(),
            "keepalive",
        ),
        ("{\"port\": 8100,".to_owned(), "port"),
        ("not json".to_owned(), "body"),
    ];
    for (body, field) in cases {
        let r = post_json(&app, body.clone(), peer(V4)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
    }
    assert_eq!(state.store.counts().await.unwrap().probes, 0);
}

#[tokio::test]
async fn oversized_and_non_json_bodies_are_refused() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    };
    let (app, _) = app_with(Settings {
        limits,
        ..Settings::default()
    });
    let big = reg(8100, "a", json!({"tags": {"pad": "x".repeat(2000)}}));
    let r = post_json(&app, big, peer(V4)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.error().contains("max_body_bytes"), "{}", r.error());

    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = Request::post("/api/v1/register");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = send(
            &app,
            req.body(Body::from(reg(8100, "a", json!({})))).unwrap(),
            peer(V4),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert!(r.error().contains("application/json"));
    }
    // The original clients send a charset.
    let req = Request::post("/api/v1/register")
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(reg(8100, "a", json!({}))))
        .unwrap();
    assert_eq!(send(&app, req, peer(V4)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn limits_give_clear_errors() {
    let limits = Limits {
        max_tags: 4,
        max_tag_key_len: 16,
        max_tag_value_len: 20,
        max_group_len: 8,
        max_entries: 2,
        ..Limits::default()
    };
    let (app, _) = app_with(Settings {
        limits,
        ..Settings::default()
    });
    let cases = [
        (
            reg(1, "a", json!({"tags": {"x": "1", "y": "2"}})),
            "tags",
            "max_tags",
        ),
        (
            reg(1, "a", json!({"tags": {"k".repeat(17): "1"}})),
            "tags.kkkkkkkkkkkkkkkkk",
            "max_tag_key_len",
        ),
        (
            reg(1, "a", json!({"tags": {"x": "v".repeat(21)}})),
            "tags.x",
            "max_tag_value_len",
        ),
        (
            reg(1, "a", json!({"group": "g".repeat(9)})),
            "group",
            "max_group_len",
        ),
    ];
    for (body, field, limit) in cases {
        let r = post_json(&app, body, peer(V4)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["field"], field);
        assert!(r.error().contains(limit), "{}", r.error());
    }
    assert_eq!(
        post_json(&app, reg(1, "a", json!({})), peer(V4))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post_json(&app, reg(2, "b", json!({})), peer(V4))
            .await
            .status,
        StatusCode::OK
    );
    let r = post_json(&app, reg(3, "c", json!({})), peer(V4)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("max_entries"), "{}", r.error());
    // Refreshing an existing entry still works when full.
    assert_eq!(
        post_json(&app, reg(2, "b", json!({})), peer(V4))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn list_endpoints_have_the_original_shapes() {
    let (app, _) = app();
    assert_eq!(get(&app, "/api/v1/list", peer(V4)).await.json(), json!({}));
    post_json(&app, reg(8100, "a", json!({"ip": "10.0.0.1"})), peer(V4)).await;
    post_json(
        &app,
        reg(8100, "b", json!({"ip": "10.0.0.2", "group": "wan"})),
        peer(V4),
    )
    .await;
    post_json(
        &app,
        reg(8100, "c", json!({"ip": "::1", "group": "wan"})),
        peer(V4),
    )
    .await;
    let all = get(&app, "/api/v1/list", peer(V4)).await;
    assert_eq!(all.headers["content-type"], "application/json");
    let all = all.json();
    assert_eq!(all.as_object().unwrap().len(), 2);
    assert_eq!(
        all["default"]["10.0.0.1:8100"]["tags"]["probe_shortname"],
        "a"
    );
    assert_eq!(all["wan"]["10.0.0.2:8100"]["ip"], "10.0.0.2");
    assert_eq!(all["wan"]["[::1]:8100"]["group"], "wan");
    let wan = get(&app, "/api/v1/list/wan", peer(V4)).await.json();
    assert_eq!(wan, all["wan"]);
    let r = get(&app, "/api/v1/list/nope", peer(V4)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json(), json!({"error": "unknown group 'nope'"}));
}

#[tokio::test]
async fn scraper_interval_and_my_ip_have_the_original_shapes() {
    let (app, _) = app_with(Settings {
        interval: 30,
        ..Settings::default()
    });
    assert_eq!(
        get(&app, "/api/v1/scraper", peer(V4)).await.text(),
        "127.0.0.1"
    );
    post_json(&app, reg(8100, "a", json!({"ip": "10.0.0.1"})), peer(V4)).await;
    post_json(&app, reg(8101, "b", json!({"ip": "10.0.0.1"})), peer(V4)).await;
    post_json(
        &app,
        reg(8100, "c", json!({"ip": "2001:db8::1", "group": "x"})),
        peer(V4),
    )
    .await;
    assert_eq!(
        get(&app, "/api/v1/scraper", peer(V4)).await.text(),
        "10.0.0.1,2001:db8::1"
    );
    let r = get(&app, "/api/v1/interval", peer(V4)).await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "30".to_owned()));
    assert_eq!(
        get(&app, "/api/v1/my_ip_address", peer(V6)).await.json(),
        json!({"ip": "2001:db8::7"})
    );
}

fn yaml(text: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("bad YAML ({e}):\n{text}"))
}

#[tokio::test]
async fn config_is_rendered_for_a_registered_requester() {
    let (app, _) = app();
    post_json(
        &app,
        reg(8100, "a", json!({"tags": {"site": "lv"}})),
        peer("10.0.0.1:1"),
    )
    .await;
    post_json(&app, reg(8100, "b", json!({})), peer("10.0.0.2:1")).await;
    post_json(&app, reg(8100, "c", json!({})), peer("[2001:db8::3]:1")).await;
    let r = get(
        &app,
        "/api/v1/config/default?llamaport=8100",
        peer("10.0.0.2:5"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let doc = yaml(&r.text());
    assert_eq!(doc["summarization"]["interval"], 10);
    assert_eq!(doc["api"]["bind"], "0.0.0.0:8100");
    let targets = doc["targets"]["default"].as_sequence().unwrap();
    assert_eq!(targets.len(), 3);
    let by_short = |s: &str| {
        targets
            .iter()
            .find(|t| t["tags"]["dst_shortname"] == s)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_short("b")["ip"],
        "127.0.0.1",
        "requester rewritten to loopback"
    );
    assert_eq!(by_short("a")["ip"], "10.0.0.1");
    assert_eq!(by_short("a")["tags"]["site"], "lv");
    assert_eq!(by_short("c")["ip"], "2001:db8::3");
    for t in targets {
        assert_eq!(t["tags"]["src_shortname"], "b");
        assert_eq!(t["tags"]["src_name"], "b.example.com");
        assert_eq!(t["tags"]["group"], "default");
        assert_eq!(t["port"], 8100);
    }
    // srcip names the requester; an IPv6 requester gets ::1.
    let r = get(
        &app,
        "/api/v1/config/default?llamaport=8100&srcip=2001:db8::3",
        peer(V4),
    )
    .await;
    let doc = yaml(&r.text());
    let me = doc["targets"]["default"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|t| t["tags"]["dst_shortname"] == "c")
        .unwrap()
        .clone();
    assert_eq!(me["ip"], "::1");
    // Without llamaport the agents' default 8100 is assumed.
    assert_eq!(
        get(&app, "/api/v1/config/default", peer("10.0.0.1:9"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn config_refuses_unknown_groups_requesters_and_bad_parameters() {
    let (app, _) = app();
    post_json(&app, reg(8100, "a", json!({})), peer("10.0.0.1:1")).await;
    let r = get(
        &app,
        "/api/v1/config/nope?llamaport=8100",
        peer("10.0.0.1:1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json(), json!({"error": "unknown group 'nope'"}));
    let r = get(
        &app,
        "/api/v1/config/default?llamaport=8100",
        peer("10.0.0.9:1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("10.0.0.9:8100"), "{}", r.error());
    let r = get(
        &app,
        "/api/v1/config/default?llamaport=9999",
        peer("10.0.0.1:1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(
        &app,
        "/api/v1/config/default?llamaport=abc",
        peer("10.0.0.1:1"),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("llamaport"))
    );
    let r = get(&app, "/api/v1/config/default?srcip=zzz", peer("10.0.0.1:1")).await;
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("srcip"))
    );
}

#[tokio::test]
async fn metrics_in_prometheus_and_original_json() {
    let (app, state) = app();
    post_json(&app, reg(8100, "a", json!({})), peer("10.0.0.1:1")).await;
    post_json(
        &app,
        reg(8100, "b", json!({"group": "g2"})),
        peer("10.0.0.2:1"),
    )
    .await;
    post_json(&app, "{}", peer(V4)).await;
    let text = get(&app, "/metrics", peer(V4)).await.text();
    for line in [
        "llama_probes_active 2",
        "llama_groups_active 2",
        "llama_registrations_total 2",
        "llama_registrations_rejected_total{status=\"400\"} 1",
        "llama_uptime_seconds ",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    llama_server::reaper::reap_once(&state).await.unwrap();
    let text = get(&app, "/metrics", peer(V4)).await.text();
    assert!(
        text.contains("llama_reap_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("llama_removals_total{reason=\"expired\"} 0"),
        "{text}"
    );
    let j = get(&app, "/metrics.json", peer(V4)).await.json();
    for key in [
        "probe_count_removed",
        "probe_count_active",
        "group_count_active",
        "group_count_removed",
        "database_size_bytes",
        "clean_runtime",
        "uptime",
        "metrics_timestamp",
        "start_time",
    ] {
        assert!(j.get(key).is_some(), "{key} missing: {j}");
    }
    assert_eq!(j["probe_count_active"], 2);
    assert_eq!(j["group_count_active"], 2);
    assert!(j["database_size_bytes"].as_u64().unwrap() > 0);
    assert!(j["start_time"].as_str().unwrap().ends_with("GMT"));
}

#[tokio::test]
async fn home_and_unknown_routes() {
    let (app, _) = app();
    let r = get(&app, "/", peer(V4)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("llama"));
    let r = get(&app, "/api/v1/nothing", peer(V4)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nothing")
    );
    let r = send(
        &app,
        Request::get("/api/v1/register")
            .body(Body::empty())
            .unwrap(),
        peer(V4),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn tag_values_are_echoed_and_typed_as_strings() {
    let (app, _) = app();
    let r = post_json(
        &app,
        reg(8100, "a", json!({"tags": {"rack": 12, "prod": true}})),
        peer(V4),
    )
    .await;
    let v: Value = r.json();
    assert_eq!(v["tags"]["rack"], "12");
    assert_eq!(v["tags"]["prod"], "true");
    let r = post_json(
        &app,
        reg(8100, "a", json!({"tags": {"nested": {"x": 1}}})),
        peer(V4),
    )
    .await;
    assert_eq!(r.json()["field"], "tags.nested");
}
