//! The live matrix API (`/api/v1/groups`, `/api/v1/matrix`,
//! `/api/v1/path`) and the page's assets, through the router, over a
//! registry and a history filled by hand: values, grouping by tag, stale
//! rows, errors naming the parameter, and `ETag` revalidation.

use std::{net::IpAddr, time::SystemTime};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use llama_server::{AppState, history::PathReport};
use serde_json::{Value, json};

use crate::support::{app, assert_contains};

const GROUP: &str = "g";

fn ip(i: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, i])
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// Members h1..h4 (h1, h2 in location a; h3, h4 in b). h2's row and column
/// lose 30 %; h4 never answered its scrape.
async fn setup() -> (axum::Router, AppState) {
    let (app, state) = app::app();
    for i in 1..=4u8 {
        let loc = if i <= 2 { "a" } else { "b" };
        let body = app::reg(
            8100,
            &format!("h{i}"),
            json!({"ip": ip(i).to_string(), "group": GROUP, "tags": {"location": loc}}),
        );
        let r = app::post_json(&app, body, app::peer("127.0.0.1:9999")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    record_round(&state, now() - 10);
    record_round(&state, now());
    state.history.record_failure(ip(4), now(), "timeout");
    (app, state)
}

fn record_round(state: &AppState, at: u32) {
    for src in 1..=3u8 {
        let reports = (1..=4u8)
            .map(|dst| {
                let lossy = src != dst && (src == 2 || dst == 2);
                // 24 of 80 probes lost: 30 %.
                let lost = if lossy { 24.0 } else { 0.0 };
                (ip(dst), PathReport::synthetic(lost, 0.25 * f64::from(dst)))
            })
            .collect();
        state.history.record(ip(src), at, reports);
    }
}

async fn get(app: &axum::Router, uri: &str) -> app::Reply {
    app::get(app, uri, app::peer("127.0.0.1:1")).await
}

fn cell(m: &Value, what: &str, r: usize, c: usize) -> Value {
    m["cells"][what][r][c].clone()
}

#[tokio::test]
async fn the_matrix_of_a_group_shows_the_lossy_member_and_stale_rows() {
    let (app, _state) = setup().await;
    let r = get(&app, "/api/v1/matrix?group=g").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.content_type(), "application/json");
    let m = r.json();
    assert_eq!(
        (
            m["group"].as_str(),
            m["metric"].as_str(),
            m["unit"].as_str()
        ),
        (Some("g"), Some("loss"), Some("%"))
    );
    assert_eq!(m["by"], Value::Null);
    assert_eq!(m["interval"], 10);
    assert!(m["tags"].as_array().unwrap().contains(&json!("location")));
    let names: Vec<&str> = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["h1", "h2", "h3", "h4"]);
    assert_eq!(m["sources"], m["destinations"]);
    assert_eq!(m["sources"][0]["id"], "10.0.0.1:8100");
    assert_eq!(m["sources"][0]["ip"], "10.0.0.1");
    assert_eq!(m["sources"][0]["stale"], false);
    assert_eq!(m["sources"][3]["stale"], true);
    assert_eq!(m["sources"][3]["error"], "timeout");
    assert_eq!(m["sources"][3]["age"], Value::Null, "never scraped");
    for r in 0..3 {
        for c in 0..4 {
            let lossy = r != c && (r == 1 || c == 1);
            assert_eq!(
                cell(&m, "value", r, c),
                json!(if lossy { 30 } else { 0 }),
                "{r},{c}"
            );
            assert_eq!(cell(&m, "sent", r, c), 80);
            assert_eq!(cell(&m, "lost", r, c), if lossy { 24 } else { 0 });
            assert!(cell(&m, "age", r, c).as_u64().unwrap() <= 5);
        }
    }
    for c in 0..4 {
        assert_eq!(cell(&m, "value", 3, c), Value::Null, "h4's row has no data");
    }
    // Another metric: the mean RTT of the replies, ms.
    let m = get(&app, "/api/v1/matrix?group=g&metric=rtt").await.json();
    assert_eq!(
        (m["metric"].as_str(), m["unit"].as_str()),
        (Some("rtt"), Some("ms"))
    );
    assert_eq!(cell(&m, "value", 0, 3), 1);
    assert_eq!(cell(&m, "value", 0, 1), 0.5);
    let m = get(&app, "/api/v1/matrix?group=g&metric=p99").await.json();
    assert_eq!(cell(&m, "value", 0, 1), 1);
}

#[tokio::test]
async fn grouped_by_a_tag_cells_sum_the_paths_between_members() {
    let (app, _state) = setup().await;
    let m = get(&app, "/api/v1/matrix?group=g&by=location").await.json();
    assert_eq!(m["by"], "location");
    let axes: Vec<(&str, u64, u64)> = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap(),
                a["members"].as_u64().unwrap(),
                a["stale"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(axes, [("a", 2, 0), ("b", 2, 1)]);
    // a→a: h1→h2 and h2→h1, both lossy (loopback paths left out).
    assert_eq!(
        (cell(&m, "sent", 0, 0), cell(&m, "lost", 0, 0)),
        (json!(160), json!(48))
    );
    assert_eq!(cell(&m, "value", 0, 0), 30);
    // a→b: h1→h3, h1→h4, h2→h3 (lossy), h2→h4 (lossy).
    assert_eq!(
        (cell(&m, "sent", 0, 1), cell(&m, "value", 0, 1)),
        (json!(320), json!(15))
    );
    // b→a: h3→h1, h3→h2 (lossy); h4 has no data.
    assert_eq!(
        (cell(&m, "sent", 1, 0), cell(&m, "value", 1, 0)),
        (json!(160), json!(15))
    );
    // b→b: h3→h4 only.
    assert_eq!(
        (cell(&m, "sent", 1, 1), cell(&m, "value", 1, 1)),
        (json!(80), json!(0))
    );
    // RTT grouped: replies-weighted mean of h1→h3 (0.75), h1→h4 (1.0),
    // h2→h3 (0.75, 56 replies), h2→h4 (1.0, 56 replies).
    let m = get(&app, "/api/v1/matrix?group=g&by=location&metric=rtt")
        .await
        .json();
    assert_eq!(cell(&m, "value", 0, 1), 0.875);
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let (app, _state) = setup().await;
    let cases = [
        ("/api/v1/matrix", StatusCode::BAD_REQUEST, Some("group")),
        ("/api/v1/matrix?group=nope", StatusCode::NOT_FOUND, None),
        (
            "/api/v1/matrix?group=g&metric=bogus",
            StatusCode::BAD_REQUEST,
            Some("metric"),
        ),
        (
            "/api/v1/matrix?group=g&by=nope",
            StatusCode::BAD_REQUEST,
            Some("by"),
        ),
        (
            "/api/v1/path?group=g&src=h1",
            StatusCode::BAD_REQUEST,
            Some("dst"),
        ),
        (
            "/api/v1/path?group=g&src=nope&dst=h1",
            StatusCode::NOT_FOUND,
            Some("src"),
        ),
        (
            "/api/v1/path?group=g&src=h1&dst=10.9.9.9",
            StatusCode::NOT_FOUND,
            Some("dst"),
        ),
        (
            "/api/v1/path?group=g&src=h1&dst=h2&since=abc",
            StatusCode::BAD_REQUEST,
            Some("since"),
        ),
        (
            "/api/v1/path?group=nope&src=h1&dst=h2",
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (uri, status, field) in cases {
        let r = get(&app, uri).await;
        assert_eq!(r.status, status, "{uri}: {}", r.text());
        let body = r.json();
        match field {
            Some(f) => {
                assert_eq!(body["field"], f, "{uri}: {body}");
                assert!(
                    body["error"].as_str().unwrap().starts_with(f),
                    "{uri}: {body}"
                );
            }
            None => assert_eq!(body["error"], "unknown group 'nope'"),
        }
    }
}

#[tokio::test]
async fn unchanged_state_is_answered_304() {
    let (app, state) = setup().await;
    let uri = "/api/v1/matrix?group=g&metric=loss";
    let r = get(&app, uri).await;
    let etag = r.headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let cached = |tag: &str| {
        Request::get(uri)
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::empty())
            .unwrap()
    };
    let from = app::peer("127.0.0.1:1");
    let r = app::send(&app, cached(&etag), from).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.headers[header::ETAG], etag.as_str());
    // Another query has another tag.
    let other = get(&app, "/api/v1/matrix?group=g&metric=rtt").await;
    assert_ne!(other.headers[header::ETAG], etag.as_str());
    // A new scrape changes it.
    record_round(&state, now());
    let r = app::send(&app, cached(&etag), from).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.headers[header::ETAG], etag.as_str());
    // So does a member joining.
    let etag = r.headers[header::ETAG].to_str().unwrap().to_owned();
    let body = app::reg(8100, "h5", json!({"ip": "10.0.0.5", "group": GROUP}));
    app::post_json(&app, body, app::peer("127.0.0.1:9")).await;
    let r = app::send(&app, cached(&etag), from).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sources"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn the_path_view_has_the_series_and_per_flow_loss() {
    let (app, _state) = setup().await;
    // Members can be named by id, address or short name.
    for (src, dst) in [
        ("h2", "h1"),
        ("10.0.0.2:8100", "10.0.0.1"),
        ("10.0.0.2", "h1"),
    ] {
        let r = get(&app, &format!("/api/v1/path?group=g&src={src}&dst={dst}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let p = r.json();
        assert_eq!(
            (p["src"]["name"].as_str(), p["dst"]["name"].as_str()),
            (Some("h2"), Some("h1"))
        );
        assert_eq!(p["window"], 3600);
        let s = &p["samples"];
        assert_eq!(s["time"].as_array().unwrap().len(), 2);
        assert_eq!(s["loss"], json!([30, 30]));
        assert_eq!(s["sent"], json!([80, 80]));
        assert_eq!(s["rtt"], json!([0.25, 0.25]));
        assert_eq!(s["p99"], json!([0.5, 0.5]));
        let flows = p["flows"].as_array().unwrap();
        assert_eq!(flows.len(), 4);
        assert_eq!(flows[2]["src_port"], 40002);
        assert_eq!(flows[2]["loss"], json!([30, 30]));
        assert_eq!(flows[2]["lost"], json!([6, 6]));
    }
    // A clean path keeps no flow samples: its flows show no loss.
    let p = get(&app, "/api/v1/path?group=g&src=h1&dst=h3").await.json();
    assert_eq!(p["flows"][0]["loss"], json!([0, 0]));
    assert_eq!(p["flows"][0]["sent"], json!([20, 20]));
    // `since` limits the series.
    let p = get(&app, "/api/v1/path?group=g&src=h2&dst=h1&since=5")
        .await
        .json();
    assert_eq!(p["samples"]["time"].as_array().unwrap().len(), 1);
    // A member without data: an empty series, and its staleness.
    let p = get(&app, "/api/v1/path?group=g&src=h4&dst=h1").await.json();
    assert_eq!(p["samples"]["time"], json!([]));
    assert_eq!(
        (p["src"]["stale"].as_bool(), p["src"]["error"].as_str()),
        (Some(true), Some("timeout"))
    );
}

#[tokio::test]
async fn groups_list_sizes_and_tags() {
    let (app, _state) = setup().await;
    let g = get(&app, "/api/v1/groups").await.json();
    assert_eq!(g["interval"], 10);
    assert_eq!(g["groups"][0]["name"], "g");
    assert_eq!(g["groups"][0]["members"], 4);
    let tags = g["groups"][0]["tags"].as_array().unwrap();
    for t in ["location", "probe_name", "probe_shortname", "version"] {
        assert!(tags.contains(&json!(t)), "{t}: {g}");
    }
}

/// `GET uri`, which must answer 200 with a `Content-Type` of `content_type`
/// (and a charset): the body.
async fn asset(app: &axum::Router, uri: &str, content_type: &str) -> String {
    let r = get(app, uri).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}");
    assert!(
        r.content_type().starts_with(content_type),
        "{uri}: {}",
        r.content_type()
    );
    r.text()
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary() {
    let (app, _state) = app::app();
    let html = asset(&app, "/", "text/html").await;
    assert_contains(
        &html,
        &[
            "/ui/matrix.js",
            "/ui/matrix.css",
            "href=\"/api/v1/list\"",
            "href=\"/api/v1/scraper\"",
            "href=\"/metrics\"",
            "href=\"/metrics.json\"",
        ],
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    let js = asset(&app, "/ui/matrix.js", "text/javascript").await;
    assert!(js.contains("/api/v1/matrix"));
    asset(&app, "/ui/matrix.css", "text/css").await;
    let missing = get(&app, "/ui/nope.js").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "no asset 'nope.js'");
}

#[tokio::test]
async fn metrics_report_the_history() {
    let (app, _state) = setup().await;
    let text = get(&app, "/metrics").await.text();
    assert_contains(
        &text,
        &[
            "llama_history_paths 12",
            "llama_history_samples 24",
            &format!(
                "llama_history_budget_bytes {}",
                llama_server::history::DEFAULT_MAX_BYTES
            ),
        ],
    );
}
