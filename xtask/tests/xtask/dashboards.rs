//! The Grafana dashboards query what the code writes: the InfluxDB one the
//! measurement, fields and tags of the agents' `/influxdata` points and the
//! server's configs; the Prometheus one the collector's metrics. (The
//! container test checks both again against a real InfluxDB and a real
//! agent's `/metrics`.)

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::support::dashboards::{self, parse_influxql, parse_promql};

#[test]
fn dashboards_name_what_the_agents_and_scraper_write() {
    use llama_agent::collector::{
        metrics::Metrics,
        summary::{Flow, PathAcc, PathKey},
    };
    // A real summary, as the collector publishes it, with every field.
    let key = PathKey {
        src: "10.0.0.1".parse().expect("literal"),
        dst: "10.0.0.2".parse().expect("literal"),
    };
    let mut acc = PathAcc::new(key, Arc::new(BTreeMap::new()));
    let flow = Flow {
        index: 0,
        src_port: 40000,
    };
    acc.reply(flow, 1_000_000);
    // A reply that crossed one router: the hop count is known.
    acc.reply_ttl(flow, Some(63));
    let summary = acc.take().expect("a summary");
    let fields: BTreeSet<String> = llama_agent::api::influx::fields(&summary)
        .map(|(k, _)| k.to_owned())
        .collect();
    let mut tags: BTreeSet<String> = llama_server::render::SERVER_TAGS.map(str::to_owned).into();
    tags.extend(["src_ip".to_owned(), "dst_ip".to_owned()]);

    let wanted = dashboards::influx_names();
    assert_eq!(
        wanted.measurements,
        BTreeSet::from([llama_agent::api::influx::MEASUREMENT.to_owned()])
    );
    assert!(
        wanted.fields.is_subset(&fields),
        "{:?} not in {fields:?}",
        wanted.fields
    );
    assert!(
        wanted.tags.is_subset(&tags),
        "{:?} not in {tags:?}",
        wanted.tags
    );

    // The collector's exposition, with the summary published.
    let metrics = Metrics::new("test", "test");
    metrics.publish(std::slice::from_ref(&summary), None);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("encode");
    let exposed = parse_promql(&text);
    let wanted = dashboards::prom_names();
    for metric in wanted
        .metrics
        .iter()
        .filter(|m| m.starts_with("llama_collector_"))
    {
        assert!(
            exposed.metrics.contains(metric),
            "{metric} is not exported:\n{text}"
        );
    }
    // The reflector's metrics come from a running agent: the container test
    // checks them against a real /metrics.
    assert!(
        wanted
            .metrics
            .iter()
            .all(|m| m.starts_with("llama_collector_") || m.starts_with("llama_reflector_"))
    );
}

#[test]
fn dashboard_parsers_classify_names() {
    let n = parse_influxql(
        r#"SELECT sum("sent") AS "sent", last("loss") FROM "raw_stats" WHERE "group" =~ /x/ GROUP BY "src_name""#,
    );
    assert_eq!(n.measurements, BTreeSet::from(["raw_stats".to_owned()]));
    assert_eq!(
        n.fields,
        BTreeSet::from(["sent".to_owned(), "loss".to_owned()])
    );
    assert_eq!(
        n.tags,
        BTreeSet::from(["group".to_owned(), "src_name".to_owned()])
    );
    let p = parse_promql(r#"100 * max by (src_ip, dst_ip) (llama_a_b{stat="mean", x=~"y"})"#);
    assert_eq!(p.metrics, BTreeSet::from(["llama_a_b".to_owned()]));
    assert_eq!(
        p.labels,
        ["dst_ip", "src_ip", "stat", "x"].map(str::to_owned).into()
    );
}
