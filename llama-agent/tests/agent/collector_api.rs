//! The collector's HTTP API (docs/agent-api.md) on a known summary: `/status`,
//! `/influxdata` byte for byte (names, units, six-decimal formatting, tag
//! merging, `[]` before the first interval) and `/metrics`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use llama_agent::{
    api,
    collector::{
        Shared,
        metrics::histogram::RttCounts,
        summary::{PathSummary, PortLoss, Published},
    },
};
use tower::ServiceExt;

async fn get(state: &Arc<Shared>, path: &str) -> (u16, String, String) {
    let resp = api::router(state.clone().into())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("router never fails");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        ctype,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

fn known_summary() -> PathSummary {
    let tags: BTreeMap<String, String> = [
        ("name", "llama_server"),
        ("src_name", "las2"),
        ("version", "0.0.1"),
        ("quote", "a \"b\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    PathSummary {
        src_ip: "::".parse().unwrap(),
        dst_ip: "127.0.0.1".parse().unwrap(),
        tags: Arc::new(tags),
        sent: 76,
        lost: 0,
        loss_pct: 0.0,
        rtt_mean_ms: 0.299736,
        rtt_min_ms: 0.1,
        rtt_max_ms: 1.25,
        rtt_p50_ms: 0.2995,
        rtt_p90_ms: 0.5,
        rtt_p99_ms: 1.0000004,
        jitter_ms: 0.0123456789,
        late: 1,
        duplicates: 2,
        unexpected: 0,
        send_errors: 3,
        ports: vec![
            PortLoss {
                flow: 0,
                src_port: 40001,
                sent: 38,
                lost: 0,
                loss_pct: 0.0,
            },
            PortLoss {
                flow: 1,
                src_port: 40002,
                sent: 38,
                lost: 0,
                loss_pct: 100.0 / 3.0,
            },
        ],
        rtt_buckets: {
            let mut c = RttCounts::default();
            for _ in 0..76 {
                c.record(299_736);
            }
            c
        },
        hops: Some(3),
        hop_changes: 2,
        tx_kernel: 70,
        tx_fallback: 6,
    }
}

#[tokio::test]
async fn status_is_ok() {
    let state = Shared::detached();
    let (code, _, body) = get(&state, "/status").await;
    assert_eq!((code, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn influxdata_is_empty_before_the_first_interval() {
    let state = Shared::detached();
    let (code, ctype, body) = get(&state, "/influxdata").await;
    assert_eq!(
        (code, ctype.as_str(), body.as_str()),
        (200, "application/json", "[]")
    );
}

#[tokio::test]
async fn influxdata_is_byte_exact() {
    let state = Shared::detached();
    let mut lost_all = known_summary();
    lost_all.dst_ip = "fd00:11a:a::2".parse().unwrap();
    lost_all.src_ip = "fd00:11a:a::1".parse().unwrap();
    lost_all.tags = Arc::new(BTreeMap::new());
    lost_all.sent = 250;
    lost_all.lost = 250;
    lost_all.loss_pct = 100.0;
    lost_all.rtt_mean_ms = 0.0;
    lost_all.ports.clear();
    // No reply, no hop count: the field is left out, not 0.
    lost_all.hops = None;
    lost_all.hop_changes = 0;
    state.publish(Published {
        interval_end: 1_764_000_000,
        paths: vec![known_summary(), lost_all],
    });
    let (_, _, body) = get(&state, "/influxdata").await;
    let expected = concat!(
        r#"[{"fields":{"loss":0.000000,"lost":0.000000,"rtt":0.299736,"sent":76.000000,"#,
        r#""rtt_min":0.100000,"rtt_max":1.250000,"rtt_p50":0.299500,"rtt_p90":0.500000,"rtt_p99":1.000000,"#,
        r#""jitter":0.012346,"late":1.000000,"duplicates":2.000000,"unexpected":0.000000,"send_errors":3.000000,"#,
        r#""hops":3.000000,"hop_changes":2.000000,"tx_kernel":70.000000,"tx_fallback":6.000000},"#,
        r#""tags":{"dst_ip":"127.0.0.1","name":"llama_server","quote":"a \"b\"","src_ip":"::","src_name":"las2","version":"0.0.1"},"#,
        r#""time":"0001-01-01T00:00:00Z","measurement":"raw_stats"},"#,
        r#"{"fields":{"loss":100.000000,"lost":250.000000,"rtt":0.000000,"sent":250.000000,"#,
        r#""rtt_min":0.100000,"rtt_max":1.250000,"rtt_p50":0.299500,"rtt_p90":0.500000,"rtt_p99":1.000000,"#,
        r#""jitter":0.012346,"late":1.000000,"duplicates":2.000000,"unexpected":0.000000,"send_errors":3.000000,"#,
        r#""hop_changes":0.000000,"tx_kernel":70.000000,"tx_fallback":6.000000},"#,
        r#""tags":{"dst_ip":"fd00:11a:a::2","src_ip":"fd00:11a:a::1"},"#,
        r#""time":"0001-01-01T00:00:00Z","measurement":"raw_stats"},"#,
        r#"{"fields":{"loss":0.000000,"lost":0.000000,"sent":38.000000,"src_port":40001.000000},"#,
        r#""tags":{"dst_ip":"127.0.0.1","flow":"0","name":"llama_server","quote":"a \"b\"","src_ip":"::","src_name":"las2","version":"0.0.1"},"#,
        r#""time":"0001-01-01T00:00:00Z","measurement":"raw_stats_flow"},"#,
        r#"{"fields":{"loss":33.333333,"lost":0.000000,"sent":38.000000,"src_port":40002.000000},"#,
        r#""tags":{"dst_ip":"127.0.0.1","flow":"1","name":"llama_server","quote":"a \"b\"","src_ip":"::","src_name":"las2","version":"0.0.1"},"#,
        r#""time":"0001-01-01T00:00:00Z","measurement":"raw_stats_flow"}]"#,
    );
    assert_eq!(body, expected);
    // And it is valid JSON a scraper can read.
    let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(v[1]["fields"]["loss"], 100.0);
    assert_no_field_name_has_a_number(&v);
}

/// Field keys are a fixed set: none carries a port number (the percentile
/// names aside, no number at all),
/// so agent restarts never add columns to InfluxDB.
fn assert_no_field_name_has_a_number(points: &serde_json::Value) {
    for p in points.as_array().expect("array") {
        for key in p["fields"].as_object().expect("fields").keys() {
            // The percentile statistics are the only names with digits.
            let rest = key.replace("p50", "").replace("p90", "").replace("p99", "");
            assert!(
                !rest.contains(|c: char| c.is_ascii_digit()),
                "field name {key:?} contains a number"
            );
        }
    }
}

#[tokio::test]
async fn a_target_tag_named_flow_does_not_replace_the_flow_index() {
    let state = Shared::detached();
    let mut s = known_summary();
    let mut tags = (*s.tags).clone();
    tags.insert("flow".into(), "mine".into());
    s.tags = Arc::new(tags);
    state.publish(Published {
        interval_end: 1,
        paths: vec![s],
    });
    let (_, _, body) = get(&state, "/influxdata").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(
        v[0]["tags"]["flow"], "mine",
        "a path point keeps target tags"
    );
    assert_eq!(v[1]["tags"]["flow"], "0");
    assert_eq!(v[2]["tags"]["flow"], "1");
}

#[tokio::test]
async fn metrics_expose_paths_and_collector_counters() {
    let state = Shared::detached();
    state.metrics.probes_sent.inc_by(7);
    state.publish(Published {
        interval_end: 1,
        paths: vec![known_summary()],
    });
    let (code, ctype, body) = get(&state, "/metrics").await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    for needle in [
        "llama_collector_probes_sent_total 7",
        "llama_collector_send_errors_total 0",
        "llama_collector_replies_late_total 0",
        "llama_collector_replies_duplicate_total 0",
        "llama_collector_timestamp_source_info{rx=\"",
        // Which clock started the replies' RTTs, from the summaries.
        "llama_collector_replies_send_clock_total{clock=\"kernel\"} 70",
        "llama_collector_replies_send_clock_total{clock=\"fallback\"} 6",
        "llama_collector_tx_timestamps_unmatched_total 0",
        "llama_collector_tx_key_resyncs_total 0",
        "llama_collector_path_loss_ratio{src_ip=\"::\",dst_ip=\"127.0.0.1\"} 0.0",
        "llama_collector_path_probes_sent{src_ip=\"::\",dst_ip=\"127.0.0.1\"} 76",
        "llama_collector_path_rtt_seconds{src_ip=\"::\",dst_ip=\"127.0.0.1\",stat=\"p99\"} 0.001",
        "llama_collector_path_port_loss_ratio{src_ip=\"::\",dst_ip=\"127.0.0.1\",src_port=\"40002\"} 0.333",
        // The growing series: the summary's counts, its tags' `dst_name`
        // and `group` (absent here, so empty), RTTs in seconds.
        "# TYPE llama_collector_target_probes_sent counter",
        "llama_collector_target_probes_sent_total{src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 76",
        "llama_collector_target_probes_lost_total{src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 0",
        "# TYPE llama_collector_target_rtt_seconds histogram",
        "llama_collector_target_rtt_seconds_count{src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 76",
        "llama_collector_target_rtt_seconds_bucket{le=\"0.00025\",src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 0",
        "llama_collector_target_rtt_seconds_bucket{le=\"0.0005\",src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 76",
        "# TYPE llama_collector_target_hops gauge",
        "llama_collector_target_hops{src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 3",
        "# TYPE llama_collector_target_hop_changes counter",
        "llama_collector_target_hop_changes_total{src=\"::\",dst=\"127.0.0.1\",dst_name=\"\",group=\"\"} 2",
        "# EOF",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    // A new publication replaces the per-path series.
    state.publish(Published {
        interval_end: 2,
        paths: vec![],
    });
    let (_, _, body) = get(&state, "/metrics").await;
    assert!(
        !body.contains("dst_ip=\"127.0.0.1\"") && !body.contains("dst=\"127.0.0.1\""),
        "stale path series must go:\n{body}"
    );
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let state = Shared::detached();
    let (code, _, _) = get(&state, "/nope").await;
    assert_eq!(code, 404);
}
