//! One agent's `/influxdata` (docs/agent-api.md): fetching it and turning its objects into
//! InfluxDB points and history samples.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    history::{PathKey, Sample},
    influx::{FieldValue, Point},
};

/// The measurement of agents' points (docs/scraper.md).
pub const MEASUREMENT: &str = "raw_stats";

/// One object of an agent's `/influxdata` array.
#[derive(Debug, Deserialize)]
pub struct AgentPoint {
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
    #[serde(default)]
    pub tags: BTreeMap<String, Value>,
    #[serde(default)]
    pub measurement: Option<String>,
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    Timeout,
    Failed(String),
}

/// `http://<ip>:<port>/influxdata` (IPv6 in brackets).
pub fn url(ip: IpAddr, port: u16) -> String {
    format!("http://{}/influxdata", std::net::SocketAddr::new(ip, port))
}

/// Fetches and parses one agent's points within `timeout` (connect, answer
/// and body together).
pub async fn fetch(
    client: &reqwest::Client,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<Vec<AgentPoint>, FetchError> {
    let get = async {
        let resp = client
            .get(url(ip, port))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice::<Vec<AgentPoint>>(&body).map_err(|e| format!("bad JSON: {e}"))
    };
    match tokio::time::timeout(timeout, get).await {
        Err(_) => Err(FetchError::Timeout),
        Ok(r) => r.map_err(FetchError::Failed),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn unspecified(s: &str) -> bool {
    s.parse::<IpAddr>()
        .map_or(s.is_empty(), |ip| ip.is_unspecified())
}

/// Converts an agent's objects into points stamped `time`, and history
/// samples keyed by path. The source of a path is the agent's `src_ip` tag,
/// or the agent's address when it reports an unspecified one (`::`).
pub fn convert(
    agent: IpAddr,
    points: Vec<AgentPoint>,
    time: u64,
) -> (Vec<Point>, Vec<(PathKey, Sample)>) {
    let mut out = Vec::with_capacity(points.len());
    let mut samples = Vec::with_capacity(points.len());
    for p in points {
        let tags: Vec<(String, String)> = p
            .tags
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect();
        let fields: Vec<(String, FieldValue)> = p
            .fields
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), FieldValue::Float(number(v)?))))
            .collect();
        let tag = |name: &str| {
            tags.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let field = |name: &str| p.fields.get(name).and_then(number).unwrap_or(0.0) as f32;
        if let Some(dst) = tag("dst_ip") {
            let src = match tag("src_ip") {
                Some(s) if !unspecified(s) => s.to_owned(),
                _ => agent.to_string(),
            };
            let sample = Sample {
                at: time,
                loss: field("loss"),
                rtt: field("rtt"),
                sent: field("sent"),
                lost: field("lost"),
            };
            samples.push((
                PathKey {
                    src: src.into(),
                    dst: dst.into(),
                },
                sample,
            ));
        }
        let measurement = p
            .measurement
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| MEASUREMENT.into());
        out.push(Point {
            measurement,
            tags,
            fields,
            time,
        });
    }
    (out, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_documented_payload() {
        let body = r#"[{"fields":{"loss":0.000000,"lost":0.000000,"rtt":0.299736,"sent":76.000000},
            "tags":{"dst_ip":"127.0.0.1","src_ip":"::","src_name":"a"},
            "time":"0001-01-01T00:00:00Z","measurement":"raw_stats"}]"#;
        let pts: Vec<AgentPoint> = serde_json::from_str(body).unwrap();
        let (points, samples) = convert("10.0.0.9".parse().unwrap(), pts, 42);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].measurement, "raw_stats");
        assert_eq!(points[0].time, 42);
        assert!(
            points[0]
                .fields
                .contains(&("rtt".into(), FieldValue::Float(0.299736)))
        );
        assert_eq!(
            &*samples[0].0.src, "10.0.0.9",
            "unspecified src_ip is the agent"
        );
        assert_eq!(&*samples[0].0.dst, "127.0.0.1");
        assert_eq!(samples[0].1.sent, 76.0);
        assert_eq!(
            url("::1".parse().unwrap(), 8100),
            "http://[::1]:8100/influxdata"
        );
    }
}
