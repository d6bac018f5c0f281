//! `/influxdata` rendering, byte-compatible with the original collector.
//!
//! The Go collector marshalled `[]DataPoint` with encoding/json, its numbers
//! through `fmt.Sprintf("%f")` (always six decimals, so InfluxDB never sees
//! an integer) and its maps with sorted keys. serde_json prints floats
//! shortest-round-trip instead, so this writes the JSON by hand: strings
//! still go through serde_json for escaping.
//!
//! Fields: the original four (`loss` %, `lost`, `rtt` mean ms, `sent`) first,
//! in their original order, then the new statistics. Tags: the target's
//! tags plus `src_ip`/`dst_ip`, sorted; as in the original a target tag of
//! the same name wins over the computed one.

use std::{collections::BTreeMap, fmt::Write};

use crate::collector::summary::{PathSummary, Published};

/// `time` of every point: Go's zero `time.Time`, which the original sent.
pub const TIME: &str = "0001-01-01T00:00:00Z";
pub const MEASUREMENT: &str = "raw_stats";

/// Go's `%f`: six decimals. Non-finite values (never produced) print as 0.
fn num(out: &mut String, v: f64) {
    let v = if v.is_finite() { v } else { 0.0 };
    let _ = write!(out, "{v:.6}");
}

fn string(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// The fields of one point, in output order.
pub fn fields(s: &PathSummary) -> Vec<(String, f64)> {
    let mut f: Vec<(String, f64)> = vec![
        ("loss".into(), s.loss_pct),
        ("lost".into(), s.lost as f64),
        ("rtt".into(), s.rtt_mean_ms),
        ("sent".into(), s.sent as f64),
        ("rtt_min".into(), s.rtt_min_ms),
        ("rtt_max".into(), s.rtt_max_ms),
        ("rtt_p50".into(), s.rtt_p50_ms),
        ("rtt_p90".into(), s.rtt_p90_ms),
        ("rtt_p99".into(), s.rtt_p99_ms),
        ("jitter".into(), s.jitter_ms),
        ("late".into(), s.late as f64),
        ("duplicates".into(), s.duplicates as f64),
        ("unexpected".into(), s.unexpected as f64),
        ("send_errors".into(), s.send_errors as f64),
    ];
    for p in &s.ports {
        f.push((format!("loss_sport_{}", p.src_port), p.loss_pct));
    }
    f
}

/// The JSON array `/influxdata` returns (`[]` before the first interval).
pub fn render(p: &Published) -> String {
    let mut out = String::with_capacity(64 + p.paths.len() * 700);
    out.push('[');
    for (i, s) in p.paths.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"fields\":{");
        for (j, (k, v)) in fields(s).iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            string(&mut out, k);
            out.push(':');
            num(&mut out, *v);
        }
        out.push_str("},\"tags\":{");
        let mut tags: BTreeMap<&str, &str> = BTreeMap::new();
        let (src, dst) = (s.src_ip.to_string(), s.dst_ip.to_string());
        tags.insert("src_ip", &src);
        tags.insert("dst_ip", &dst);
        for (k, v) in s.tags.iter() {
            tags.insert(k, v);
        }
        for (j, (k, v)) in tags.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            string(&mut out, k);
            out.push(':');
            string(&mut out, v);
        }
        out.push_str("},\"time\":");
        string(&mut out, TIME);
        out.push_str(",\"measurement\":");
        string(&mut out, MEASUREMENT);
        out.push('}');
    }
    out.push(']');
    out
}
