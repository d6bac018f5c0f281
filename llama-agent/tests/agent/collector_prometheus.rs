//! The collector's growing per-path Prometheus series
//! (`llama_collector_target_*`, docs/agent-api.md) on a real collector with
//! real sockets: the `/metrics` exposition parses with an exposition parser,
//! loss computed from the two counters' deltas over a window matches loss
//! injected with nftables, and a removed target's series are gone one
//! interval after the reconfiguration.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use llama_agent::{
    api,
    collector::{Collector, Shared},
    config::{CollectorConfig, LoadOptions},
};
use llama_testkit::{NetNs, TwoHosts, privileged};
use prometheus_parse::{Sample, Scrape, Value};
use tower::ServiceExt;

use crate::support::{
    publications::next_publication,
    reflector::{Mode, start_local_echo, start_reflector},
};

const WAIT: Duration = Duration::from_secs(10);
const SENT: &str = "llama_collector_target_probes_sent_total";
const LOST: &str = "llama_collector_target_probes_lost_total";
const RTT: &str = "llama_collector_target_rtt_seconds";

/// `/metrics` of the collector, through the agent's HTTP router.
fn scrape_text(state: &Arc<Shared>) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = api::router(state.clone().into())
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("router never fails");
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    })
}

/// Checks what the lenient parser lets through (every sample belongs to a
/// family declared once, one `# EOF` at the end), then parses.
fn scrape(c: &Collector) -> Scrape {
    let text = scrape_text(&c.shared());
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    let mut families = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().expect("a name");
            assert!(families.insert(name.to_owned()), "{name} declared twice");
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().expect("a name");
            assert!(
                families.iter().any(|f| name.starts_with(f.as_str())),
                "sample {line:?} has no declared family"
            );
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

fn find<'a>(s: &'a Scrape, metric: &str, dst: &str) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && x.labels.get("dst") == Some(dst))
}

fn number(s: &Scrape, metric: &str, dst: &str) -> f64 {
    match find(s, metric, dst).map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v)) => *v,
        other => panic!("{metric} of {dst}: {other:?}"),
    }
}

/// The cumulative buckets of the RTT histogram of `dst`, checked for shape.
fn buckets(s: &Scrape, dst: &str) -> Vec<(f64, f64)> {
    let Some(Value::Histogram(h)) = find(s, RTT, dst).map(|x| &x.value) else {
        panic!("no {RTT} histogram for {dst}");
    };
    let b: Vec<(f64, f64)> = h.iter().map(|c| (c.less_than, c.count)).collect();
    assert_eq!(b.len(), 17, "16 bounds and +Inf: {b:?}");
    assert_eq!((b[0].0, b[15].0), (1e-5, 1.0), "10 µs to 1 s: {b:?}");
    assert!(b[16].0.is_infinite());
    assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {b:?}");
    assert_eq!(b[16].1, number(s, &format!("{RTT}_count"), dst));
    b
}

fn config(
    targets: &[(SocketAddr, &str)],
    timeout_ms: u32,
    cps: f64,
    count: u32,
) -> CollectorConfig {
    let targets: Vec<String> = targets
        .iter()
        .map(|(a, name)| {
            format!(
                "{{ip: '{}', port: {}, tags: {{dst_name: {name}, group: lab, other: x}}}}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    let yaml = format!(
        "
summarization: {{interval: 1}}
ports: {{p: {{ip: 0.0.0.0, port: 0, tos: 0, timeout: {timeout_ms}}}}}
port_groups: {{g: [{{port: p, count: {count}}}]}}
rate_limits: {{r: {{cps: {cps}}}}}
tests: [{{targets: t, port_group: g, rate_limit: r}}]
targets: {{t: [{}]}}
",
        targets.join(", ")
    );
    CollectorConfig::from_yaml(&yaml, &LoadOptions::default()).expect("valid")
}

fn nft(ns: &NetNs, args: &[&str]) {
    let out = ns
        .exec("nft", args)
        .expect("nft is installed (apt-get install nftables)");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn loss_from_counter_deltas_matches_injected_loss() {
    if !privileged("collector_prometheus::loss_from_counter_deltas_matches_injected_loss") {
        return;
    }
    const DST: &str = "10.200.0.2";
    let hosts = TwoHosts::new().expect("two hosts");
    let _refl = start_reflector(&hosts.right, Mode::Xdp, &hosts.veth.b, 8100);
    // 250 cycles/s x 4 ports = 1,000 probes/s.
    let cfg = config(
        &[(format!("{DST}:8100").parse().unwrap(), "far")],
        500,
        250.0,
        4,
    );
    let c = hosts
        .left
        .run(move || Collector::start(cfg))
        .expect("collector starts");
    let mut last = next_publication(&c, 0, WAIT).interval_end;

    // 20 % of the replies dropped where they arrive.
    nft(&hosts.left, &["add", "table", "inet", "llp"]);
    nft(
        &hosts.left,
        &[
            "add",
            "chain",
            "inet",
            "llp",
            "in",
            "{ type filter hook input priority 0; policy accept; }",
        ],
    );
    let rule = "udp sport 8100 numgen random mod 100 < 20 drop";
    let mut args = vec!["add", "rule", "inet", "llp", "in"];
    args.extend(rule.split_whitespace());
    nft(&hosts.left, &args);
    // Probes are booked up to one timeout after they are sent: skip the
    // intervals that may hold probes from before the rule.
    for _ in 0..2 {
        last = next_publication(&c, last, WAIT).interval_end;
    }

    let a = scrape(&c);
    let sample = find(&a, SENT, DST).expect("sent counter");
    for (k, v) in [("src", "10.200.0.1"), ("dst_name", "far"), ("group", "lab")] {
        assert_eq!(sample.labels.get(k), Some(v), "{:?}", sample.labels);
    }
    assert_eq!(sample.labels.get("other"), None, "only the four labels");
    let (sent0, lost0) = (number(&a, SENT, DST), number(&a, LOST, DST));
    let b0 = buckets(&a, DST);
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = loop {
        last = next_publication(&c, last, WAIT).interval_end;
        let b = scrape(&c);
        let sent = number(&b, SENT, DST);
        assert!(sent >= sent0, "counters never go down");
        if sent - sent0 >= 4_000.0 {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "only {} probes in 60 s",
            sent - sent0
        );
    };
    let sent = number(&b, SENT, DST) - sent0;
    let lost = number(&b, LOST, DST) - lost0;
    let loss = lost * 100.0 / sent;
    eprintln!("injected 20 %: rate(lost)/rate(sent) = {loss:.2} % over {sent} probes");
    assert!((loss - 20.0).abs() <= 5.0, "{lost}/{sent} = {loss:.2} %");

    // The histogram over the same window holds the replies; on a veth pair
    // its median bucket (histogram_quantile(0.5)) is well under a second.
    let b1 = buckets(&b, DST);
    let replies = b1[16].1 - b0[16].1;
    assert!(
        replies > 0.0 && replies <= sent,
        "{replies} replies of {sent} probes"
    );
    let median = b1
        .iter()
        .zip(&b0)
        .find(|(now, then)| now.1 - then.1 >= replies / 2.0)
        .map(|(now, _)| now.0)
        .expect("a bucket holds the median");
    assert!(median <= 1.0, "median bucket le={median}");
}

#[test]
fn removed_target_series_disappear_after_reconfigure() {
    let echo = start_local_echo(&[
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.3:0".parse().unwrap(),
    ]);
    let (stay, leave) = (echo.addrs[0], echo.addrs[1]);
    let c =
        Collector::start(config(&[(stay, "stay"), (leave, "leave")], 500, 10.0, 2)).expect("start");
    let mut last = next_publication(&c, 0, WAIT).interval_end;
    last = next_publication(&c, last, WAIT).interval_end;
    let before = scrape(&c);
    for dst in ["127.0.0.1", "127.0.0.3"] {
        assert!(number(&before, SENT, dst) > 0.0, "{dst} probed");
        assert_eq!(number(&before, LOST, dst), 0.0, "{dst} answers");
        buckets(&before, dst);
    }
    let kept_sent = number(&before, SENT, "127.0.0.1");

    c.swap_config(config(&[(stay, "stay")], 500, 10.0, 2))
        .expect("swap");
    // The first publication after the swap has been applied.
    last = last.max(c.published().interval_end);
    next_publication(&c, last, WAIT);
    let after = scrape(&c);
    for m in [SENT, LOST, &format!("{RTT}_count"), RTT] {
        assert!(
            find(&after, m, "127.0.0.3").is_none(),
            "{m} of the removed target is still exported"
        );
    }
    assert!(
        number(&after, SENT, "127.0.0.1") >= kept_sent,
        "the kept target's counter carries on"
    );
    let labels: BTreeMap<_, _> = find(&after, SENT, "127.0.0.1")
        .expect("kept")
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(labels.get("dst_name").map(String::as_str), Some("stay"));
}
