//! What the Grafana dashboards in `docker/grafana/` ask their data sources
//! for: the measurements, fields and tags named by the InfluxQL queries, and
//! the metrics and labels named by the PromQL expressions. The tests check
//! these against what the scraper and the agents really write.

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::Value;

use super::workspace;

pub fn influxdb_dashboard() -> PathBuf {
    workspace().join("docker/grafana/llama-influxdb.json")
}

pub fn prometheus_dashboard() -> PathBuf {
    workspace().join("docker/grafana/llama-prometheus.json")
}

/// Every string under `key` anywhere in the dashboard.
fn strings(path: &PathBuf, key: &str) -> Vec<String> {
    fn walk(v: &Value, key: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) if k == key => out.push(s.clone()),
                        _ => walk(v, key, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, key, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    walk(&json, key, &mut out);
    out
}

/// Identifiers one InfluxQL query names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InfluxNames {
    pub measurements: BTreeSet<String>,
    pub fields: BTreeSet<String>,
    pub tags: BTreeSet<String>,
}

/// The names used by every InfluxQL query of the InfluxDB dashboard
/// (panel targets and template variables).
pub fn influx_names() -> InfluxNames {
    let queries = strings(&influxdb_dashboard(), "query");
    assert!(!queries.is_empty(), "no InfluxQL queries found");
    let mut all = InfluxNames::default();
    for q in &queries {
        let n = parse_influxql(q);
        assert!(!n.measurements.is_empty(), "query without FROM: {q}");
        all.measurements.extend(n.measurements);
        all.fields.extend(n.fields);
        all.tags.extend(n.tags);
    }
    all
}

/// Classifies each double-quoted identifier by what precedes it: `FROM` →
/// measurement, `(` → field (an aggregate's argument), `AS` → alias
/// (ignored), anything else (GROUP BY, WHERE, WITH KEY =) → tag.
pub fn parse_influxql(query: &str) -> InfluxNames {
    let mut names = InfluxNames::default();
    let mut rest = query;
    let mut before = String::new();
    while let Some(start) = rest.find('"') {
        before.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let ident = after[..end].to_owned();
        let context = before.trim_end().to_ascii_uppercase();
        if context.ends_with("FROM") {
            names.measurements.insert(ident);
        } else if context.ends_with('(') {
            names.fields.insert(ident);
        } else if !context.ends_with(" AS") {
            names.tags.insert(ident);
        }
        before.clear();
        rest = &after[end + 1..];
    }
    names
}

/// Metrics and labels one set of PromQL expressions names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PromNames {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

/// Labels Prometheus adds to every scraped series (not the agent's).
pub const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The names used by the Prometheus dashboard's expressions and legends.
pub fn prom_names() -> PromNames {
    let path = prometheus_dashboard();
    let exprs = strings(&path, "expr");
    assert!(!exprs.is_empty(), "no PromQL expressions found");
    let mut names = PromNames::default();
    for e in &exprs {
        let n = parse_promql(e);
        assert!(
            !n.metrics.is_empty(),
            "expression without a llama metric: {e}"
        );
        names.metrics.extend(n.metrics);
        names.labels.extend(n.labels);
    }
    for legend in strings(&path, "legendFormat") {
        let mut rest = legend.as_str();
        while let Some(start) = rest.find("{{") {
            let Some(end) = rest[start..].find("}}") else {
                break;
            };
            names
                .labels
                .insert(rest[start + 2..start + end].trim().to_owned());
            rest = &rest[start + end + 2..];
        }
    }
    names
}

/// Metric names (`llama_…`), matcher labels (`{name="…"}`) and grouping
/// labels (`by (a, b)`) of one expression.
pub fn parse_promql(expr: &str) -> PromNames {
    let mut names = PromNames::default();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for token in expr.split(|c: char| !word(c)) {
        if token.starts_with("llama_") {
            names.metrics.insert(token.to_owned());
        }
    }
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        for matcher in rest[open + 1..open + close].split(',') {
            let label: String = matcher.trim().chars().take_while(|&c| word(c)).collect();
            if !label.is_empty() {
                names.labels.insert(label);
            }
        }
        rest = &rest[open + close + 1..];
    }
    let mut rest = expr;
    while let Some(by) = rest.find("by (") {
        let list = &rest[by + 4..];
        let Some(close) = list.find(')') else { break };
        for label in list[..close].split(',') {
            names.labels.insert(label.trim().to_owned());
        }
        rest = &list[close..];
    }
    names
}
