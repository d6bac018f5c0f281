//! `/influxdata` rendering, byte-compatible with the original collector.
//!
//! The Go collector marshalled `[]DataPoint` with encoding/json, its numbers
//! through `fmt.Sprintf("%f")` (always six decimals, so InfluxDB never sees
//! an integer) and its maps with sorted keys. serde_json prints floats
//! shortest-round-trip instead, so this writes the JSON by hand: strings
//! still go through serde_json for escaping.
//!
//! Measurement `raw_stats`, one point per path: the original four fields
//! (`loss` %, `lost`, `rtt` mean ms, `sent`) first, in their original order,
//! then the statistics added since, all with fixed names (`hops` only when
//! the interval has a hop count). Tags: the target's
//! tags plus `src_ip`/`dst_ip`, sorted; as in the original a target tag of
//! the same name wins over the computed one.
//!
//! Measurement `raw_stats_flow`, one point per flow of a path (a flow is one
//! source port of the port group): tag `flow` = the socket's index in its
//! port group (`0..count`, stable across restarts, and never overridden by a
//! target tag), the path's tags, and fields `loss`, `lost`, `sent` and
//! `src_port` (the ephemeral port, a value rather than a name so that no
//! field or tag key ever depends on it). The flow points follow every path
//! point, so a reader of only the first measurement sees the original array.

use std::{collections::BTreeMap, fmt::Write};

use crate::collector::summary::{PathSummary, PortLoss, Published};

/// `time` of every point: Go's zero `time.Time`, which the original sent.
pub const TIME: &str = "0001-01-01T00:00:00Z";
pub const MEASUREMENT: &str = "raw_stats";
/// The measurement of per-flow points.
pub const FLOW_MEASUREMENT: &str = "raw_stats_flow";

/// Go's `%f`: six decimals. Non-finite values (never produced) print as 0.
fn num(out: &mut String, v: f64) {
    let v = if v.is_finite() { v } else { 0.0 };
    let _ = write!(out, "{v:.6}");
}

fn string(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// The fields of one point, in output order. `hops` is left out when the
/// interval has no hop count (no reply told one), never written as 0.
pub fn fields(s: &PathSummary) -> impl Iterator<Item = (&'static str, f64)> {
    [
        ("loss", Some(s.loss_pct)),
        ("lost", Some(s.lost as f64)),
        ("rtt", Some(s.rtt_mean_ms)),
        ("sent", Some(s.sent as f64)),
        ("rtt_min", Some(s.rtt_min_ms)),
        ("rtt_max", Some(s.rtt_max_ms)),
        ("rtt_p50", Some(s.rtt_p50_ms)),
        ("rtt_p90", Some(s.rtt_p90_ms)),
        ("rtt_p99", Some(s.rtt_p99_ms)),
        ("jitter", Some(s.jitter_ms)),
        ("late", Some(s.late as f64)),
        ("duplicates", Some(s.duplicates as f64)),
        ("unexpected", Some(s.unexpected as f64)),
        ("send_errors", Some(s.send_errors as f64)),
        ("hops", s.hops.map(f64::from)),
        ("hop_changes", Some(s.hop_changes as f64)),
        ("tx_kernel", Some(s.tx_kernel as f64)),
        ("tx_fallback", Some(s.tx_fallback as f64)),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
}

/// The fields of one flow point, in output order (sorted, as Go sorted them).
pub fn flow_fields(p: &PortLoss) -> [(&'static str, f64); 4] {
    [
        ("loss", p.loss_pct),
        ("lost", p.lost as f64),
        ("sent", p.sent as f64),
        ("src_port", f64::from(p.src_port)),
    ]
}

/// Appends one point object.
fn point<'a>(
    out: &mut String,
    fields: impl Iterator<Item = (&'a str, f64)>,
    tags: &BTreeMap<&str, &str>,
    measurement: &str,
) {
    out.push_str("{\"fields\":{");
    for (j, (k, v)) in fields.enumerate() {
        if j > 0 {
            out.push(',');
        }
        string(out, k);
        out.push(':');
        num(out, v);
    }
    out.push_str("},\"tags\":{");
    for (j, (k, v)) in tags.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        string(out, k);
        out.push(':');
        string(out, v);
    }
    out.push_str("},\"time\":");
    string(out, TIME);
    out.push_str(",\"measurement\":");
    string(out, measurement);
    out.push('}');
}

/// A path's tags: `src_ip`, `dst_ip`, then the target's (which win).
fn path_tags<'a>(s: &'a PathSummary, src: &'a str, dst: &'a str) -> BTreeMap<&'a str, &'a str> {
    let mut tags: BTreeMap<&str, &str> = BTreeMap::new();
    tags.insert("src_ip", src);
    tags.insert("dst_ip", dst);
    for (k, v) in s.tags.iter() {
        tags.insert(k, v);
    }
    tags
}

/// The JSON array `/influxdata` returns (`[]` before the first interval):
/// every path's `raw_stats` point, then every flow's `raw_stats_flow` point.
pub fn render(p: &Published) -> String {
    let flows: usize = p.paths.iter().map(|s| s.ports.len()).sum();
    let mut out = String::with_capacity(64 + p.paths.len() * 700 + flows * 400);
    out.push('[');
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    for s in &p.paths {
        let (src, dst) = (s.src_ip.to_string(), s.dst_ip.to_string());
        sep(&mut out);
        point(&mut out, fields(s), &path_tags(s, &src, &dst), MEASUREMENT);
    }
    for s in &p.paths {
        let (src, dst) = (s.src_ip.to_string(), s.dst_ip.to_string());
        let flows: Vec<String> = s.ports.iter().map(|p| p.flow.to_string()).collect();
        let mut tags = path_tags(s, &src, &dst);
        for (port, flow) in s.ports.iter().zip(&flows) {
            tags.insert("flow", flow);
            sep(&mut out);
            point(
                &mut out,
                flow_fields(port).into_iter(),
                &tags,
                FLOW_MEASUREMENT,
            );
        }
    }
    out.push(']');
    out
}
