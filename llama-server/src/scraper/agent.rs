//! One agent's `/influxdata` (docs/agent-api.md): fetching it within a size
//! bound, reading the path reports the history keeps (`raw_stats` and
//! `raw_stats_flow`), and turning its objects into InfluxDB points.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    history::{FlowReport, PathReport},
    influx::{FieldValue, Point},
};

mod lenient;

use lenient::{Num, Text};

/// The measurement of agents' path points (docs/scraper.md).
pub const MEASUREMENT: &str = "raw_stats";
/// The measurement of agents' per-flow points.
pub const FLOW_MEASUREMENT: &str = "raw_stats_flow";

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
    /// The answer was larger than the limit.
    TooLarge,
    Failed(String),
}

/// `http://<ip>:<port>/influxdata` (IPv6 in brackets).
pub fn url(ip: IpAddr, port: u16) -> String {
    format!("http://{}/influxdata", std::net::SocketAddr::new(ip, port))
}

/// Fetches one agent's answer within `timeout` (connect, answer and body
/// together), reading at most `max_bytes` of it.
pub async fn fetch(
    client: &reqwest::Client,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let get = async {
        let mut resp = client
            .get(url(ip, port))
            .send()
            .await
            .map_err(|e| FetchError::Failed(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Failed(format!("HTTP {status}")));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Failed(e.to_string()))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(timeout, get).await {
        Err(_) => Err(FetchError::Timeout),
        Ok(r) => r,
    }
}

/// The fields of a point that the history keeps (others are skipped unread).
#[derive(Default, Deserialize)]
#[serde(default)]
struct WireFields {
    lost: Num,
    rtt: Num,
    sent: Num,
    rtt_p50: Num,
    rtt_p90: Num,
    rtt_p99: Num,
    jitter: Num,
    src_port: Num,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct WireTags<'a> {
    #[serde(borrow)]
    dst_ip: Text<'a>,
    #[serde(borrow)]
    flow: Text<'a>,
}

#[derive(Deserialize)]
struct WirePoint<'a> {
    #[serde(default)]
    fields: WireFields,
    #[serde(default, borrow)]
    tags: WireTags<'a>,
    #[serde(default, borrow)]
    measurement: Text<'a>,
}

/// The path reports of one agent's answer, by destination, and how many
/// points it held. A destination on loopback is the agent itself (its own
/// entry in an issued config). Reports of one destination from several
/// source addresses are merged; points without a usable `dst_ip` (or flow
/// points without a `flow` index of 0–254) are skipped.
pub fn reports(agent: IpAddr, body: &[u8]) -> Result<(Vec<(IpAddr, PathReport)>, usize), String> {
    let points: Vec<WirePoint> =
        serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let n = points.len();
    let mut by_dst: HashMap<IpAddr, PathReport> = HashMap::new();
    for p in points {
        let Some(dst) = p
            .tags
            .dst_ip
            .get()
            .and_then(|d| d.trim().parse::<IpAddr>().ok())
        else {
            continue;
        };
        let dst = if dst.is_loopback() { agent } else { dst };
        let f = &p.fields;
        match p.measurement.get().unwrap_or(MEASUREMENT) {
            MEASUREMENT => {
                let report = PathReport {
                    sent: f.sent.or(0.0),
                    lost: f.lost.or(0.0),
                    rtt: f.rtt.or(0.0),
                    p50: f.rtt_p50.or(0.0),
                    p90: f.rtt_p90.or(0.0),
                    p99: f.rtt_p99.or(0.0),
                    jitter: f.jitter.or(0.0),
                    flows: Vec::new(),
                };
                match by_dst.get_mut(&dst) {
                    Some(r) => r.absorb(report),
                    None => {
                        by_dst.insert(dst, report);
                    }
                }
            }
            FLOW_MEASUREMENT => {
                let Some(flow) = p.tags.flow.get().and_then(|f| f.trim().parse::<u8>().ok()) else {
                    continue;
                };
                if flow == u8::MAX {
                    continue;
                }
                let port = f.src_port.or(0.0);
                let flow = FlowReport {
                    flow,
                    src_port: if (0.0..=65535.0).contains(&port) {
                        port as u16
                    } else {
                        0
                    },
                    sent: f.sent.or(0.0),
                    lost: f.lost.or(0.0),
                };
                by_dst.entry(dst).or_default().absorb(PathReport {
                    flows: vec![flow],
                    ..PathReport::default()
                });
            }
            _ => {}
        }
    }
    Ok((by_dst.into_iter().collect(), n))
}

/// Parses an answer into generic points (for InfluxDB).
pub fn points(body: &[u8]) -> Result<Vec<AgentPoint>, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))
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

/// Converts an agent's objects into points stamped `time`, in their own
/// measurement (`raw_stats` when they name none).
pub fn convert(points: Vec<AgentPoint>, time: u64) -> Vec<Point> {
    points
        .into_iter()
        .map(|p| {
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
            let measurement = p
                .measurement
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| MEASUREMENT.into());
            Point {
                measurement,
                tags,
                fields,
                time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"[{"fields":{"loss":0.000000,"lost":0.000000,"rtt":0.299736,"sent":76.000000,"rtt_p99":0.5},
            "tags":{"dst_ip":"127.0.0.1","src_ip":"::","src_name":"a"},
            "time":"0001-01-01T00:00:00Z","measurement":"raw_stats"},
        {"fields":{"loss":10.0,"lost":4,"rtt":"0.5","sent":40.0},"tags":{"dst_ip":"10.0.0.2","src_ip":"10.0.0.9"},"measurement":"raw_stats"},
        {"fields":{"loss":20.0,"lost":4,"sent":20.0,"src_port":40001.0},"tags":{"dst_ip":"10.0.0.2","flow":"1"},"measurement":"raw_stats_flow"},
        {"fields":{"loss":0.0,"lost":0,"sent":20.0,"src_port":40000.0},"tags":{"dst_ip":"10.0.0.2","flow":"0"},"measurement":"raw_stats_flow"},
        {"fields":{"sent":[1,2],"lost":{"a":1}},"tags":{"dst_ip":"10.0.0.3","flow":7},"measurement":"raw_stats"},
        {"fields":{"sent":1},"tags":{"dst_ip":"not an address"}},
        {"fields":{"sent":1},"tags":{"dst_ip":"10.0.0.2","flow":"300"},"measurement":"raw_stats_flow"},
        {"fields":{"sent":1},"tags":{"dst_ip":"10.0.0.2"},"measurement":"something_else"}]"#;

    #[test]
    fn converts_the_documented_payload() {
        let pts = points(BODY.as_bytes()).unwrap();
        let points = convert(pts, 42);
        assert_eq!(points.len(), 8);
        assert_eq!(points[0].measurement, "raw_stats");
        assert_eq!(points[2].measurement, "raw_stats_flow");
        assert_eq!(points[5].measurement, "raw_stats", "none named: raw_stats");
        assert_eq!(points[0].time, 42);
        assert!(
            points[0]
                .fields
                .contains(&("rtt".into(), FieldValue::Float(0.299736)))
        );
        assert_eq!(
            url("::1".parse().unwrap(), 8100),
            "http://[::1]:8100/influxdata"
        );
    }

    #[test]
    fn every_field_passes_to_influxdb_including_hop_counts() {
        // What an agent writes (llama_agent::api::influx): the original four
        // fields, the statistics added since, `hops` when known.
        let body = r#"[{"fields":{"loss":0.000000,"lost":0.000000,"rtt":0.3,"sent":8.000000,
            "send_errors":0.000000,"hops":1.000000,"hop_changes":2.000000},
            "tags":{"dst_ip":"10.0.0.2"},"measurement":"raw_stats"}]"#;
        let points = convert(points(body.as_bytes()).unwrap(), 7);
        let fields: Vec<&str> = points[0].fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            fields,
            [
                "hop_changes",
                "hops",
                "loss",
                "lost",
                "rtt",
                "send_errors",
                "sent"
            ]
        );
        let mut line = String::new();
        assert!(points[0].write_line(&mut line));
        assert!(line.contains(" hop_changes=2.0,hops=1.0,"), "{line}");
    }

    #[test]
    fn reads_path_and_flow_reports_leniently() {
        let agent: IpAddr = "10.0.0.9".parse().unwrap();
        let (mut r, n) = reports(agent, BODY.as_bytes()).unwrap();
        assert_eq!(n, 8);
        r.sort_by_key(|(d, _)| *d);
        let dsts: Vec<String> = r.iter().map(|(d, _)| d.to_string()).collect();
        assert_eq!(
            dsts,
            ["10.0.0.2", "10.0.0.3", "10.0.0.9"],
            "loopback is the agent"
        );
        let own = &r[2].1;
        assert_eq!((own.sent, own.rtt, own.p99), (76.0, 0.299736, 0.5));
        let lossy = &r[0].1;
        assert_eq!((lossy.sent, lossy.lost, lossy.rtt), (40.0, 4.0, 0.5));
        let mut flows = lossy.flows.clone();
        flows.sort_by_key(|f| f.flow);
        assert_eq!(
            flows,
            [
                FlowReport {
                    flow: 0,
                    src_port: 40000,
                    sent: 20.0,
                    lost: 0.0
                },
                FlowReport {
                    flow: 1,
                    src_port: 40001,
                    sent: 20.0,
                    lost: 4.0
                }
            ]
        );
        // Values of the wrong type read as absent, not as an error.
        assert_eq!((r[1].1.sent, r[1].1.lost), (0.0, 0.0));
        assert!(reports(agent, b"{\"not\": \"an array\"}").is_err());
        assert!(reports(agent, b"[1, 2]").is_err());
    }
}
