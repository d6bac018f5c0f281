//! The live matrix and the path view, computed from a group's members (the
//! registry) and the collected history: what `/api/v1/matrix`,
//! `/api/v1/path` and `/api/v1/groups` answer (field names in
//! docs/api.md).
//!
//! Rows are sources (the agent that measured), columns destinations; a
//! member's own cell is its loopback path. Grouped by a tag, a cell sums
//! every path between members with those tag values (loopback paths left
//! out): loss is lost over sent, RTT statistics are means weighted by
//! replies.

pub mod json;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use crate::{
    entry::Entry,
    history::{AgentHistory, Sample, Snapshot},
};

/// What a cell's `value` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Loss,
    Rtt,
    P50,
    P90,
    P99,
    Jitter,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Loss,
        Metric::Rtt,
        Metric::P50,
        Metric::P90,
        Metric::P99,
        Metric::Jitter,
    ];

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Rtt => "rtt",
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::Jitter => "jitter",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Loss => "%",
            _ => "ms",
        }
    }

    /// The RTT statistic of a sample this metric reads (not for loss).
    fn rtt_stat(self, s: &Sample) -> f32 {
        match self {
            Metric::Loss | Metric::Rtt => s.rtt,
            Metric::P50 => s.p50,
            Metric::P90 => s.p90,
            Metric::P99 => s.p99,
            Metric::Jitter => s.jitter,
        }
    }
}

/// One cell: one path, or the sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cell {
    pub sent: u64,
    pub lost: u64,
    /// Replies-weighted sum of the metric's RTT statistic (ms × replies).
    rtt_weighted: f64,
    /// Seconds since the oldest contributing sample was scraped.
    pub age: u32,
    pub paths: u32,
}

impl Cell {
    fn add(&mut self, s: &Sample, metric: Metric, now: u32) {
        let replies = u64::from(s.replies());
        self.rtt_weighted += f64::from(metric.rtt_stat(s)) * replies as f64;
        self.sent += u64::from(s.sent);
        self.lost += u64::from(s.lost);
        self.age = self.age.max(now.saturating_sub(s.at));
        self.paths += 1;
    }

    pub fn replies(&self) -> u64 {
        self.sent.saturating_sub(self.lost)
    }

    /// The cell's value for `metric`: loss in percent (`None` without
    /// probes), an RTT statistic in ms (`None` without replies).
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Loss => (self.sent > 0).then(|| self.lost as f64 * 100.0 / self.sent as f64),
            _ => (self.replies() > 0).then(|| self.rtt_weighted / self.replies() as f64),
        }
    }
}

/// A row or column: a member, or the members sharing a tag value.
#[derive(Debug, Clone)]
pub struct Axis {
    /// The member's id (`ip:port`), or the tag value.
    pub id: String,
    /// `probe_shortname`, or the tag value.
    pub name: String,
    /// The members (one in the member view).
    pub members: Vec<Arc<Entry>>,
    /// Members whose last scrape failed or is older than two intervals.
    pub stale: usize,
    /// Seconds since the newest successful scrape of its members (`None`:
    /// never scraped).
    pub age: Option<u32>,
    /// Why the last scrape of its (only) member failed.
    pub error: Option<&'static str>,
}

/// The matrix of one group.
#[derive(Debug)]
pub struct Matrix {
    pub metric: Metric,
    pub by: Option<String>,
    pub axes: Vec<Axis>,
    /// Row-major: `cells[src * axes.len() + dst]`.
    pub cells: Vec<Option<Cell>>,
}

/// Whether an agent's row is stale at `now`: its last scrape failed, or
/// worked longer than two intervals ago, or never happened.
pub fn agent_stale(agent: Option<&AgentHistory>, now: u32, interval: u32) -> bool {
    match agent {
        None => true,
        Some(a) => {
            a.failure.is_some()
                || a.last_ok
                    .is_none_or(|ok| now.saturating_sub(ok) > 2 * interval)
        }
    }
}

/// The union of the members' tag keys, sorted.
pub fn tag_keys(members: &[Arc<Entry>]) -> Vec<String> {
    let keys: BTreeSet<&str> = members
        .iter()
        .flat_map(|e| e.probe.tags.iter().map(|(k, _)| k))
        .collect();
    keys.into_iter().map(str::to_owned).collect()
}

/// Orders names the way people number hosts: `h2` before `h10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let (Some(ca), Some(cb)) = (a.chars().next(), b.chars().next()) else {
            return a.len().cmp(&b.len());
        };
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let (na, nb) = (
                a[..da].trim_start_matches('0'),
                b[..db].trim_start_matches('0'),
            );
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o.is_ne() {
                return o;
            }
            (a, b) = (&a[da..], &b[db..]);
        } else {
            let o = ca.cmp(&cb);
            if o.is_ne() {
                return o;
            }
            (a, b) = (&a[ca.len_utf8()..], &b[cb.len_utf8()..]);
        }
    }
}

/// Members sorted for display: by `probe_shortname` (naturally), then id.
pub fn sorted(members: &[Arc<Entry>]) -> Vec<Arc<Entry>> {
    let mut m = members.to_vec();
    m.sort_by(|a, b| {
        natural_cmp(a.probe.shortname(), b.probe.shortname()).then(a.probe.id.cmp(&b.probe.id))
    });
    m
}

fn axis(
    members: Vec<Arc<Entry>>,
    id: String,
    name: String,
    history: &Snapshot,
    now: u32,
    interval: u32,
) -> Axis {
    let mut stale = 0;
    let mut age: Option<u32> = None;
    let mut error = None;
    for m in &members {
        let agent = history.agent(&m.probe.ip());
        if agent_stale(agent, now, interval) {
            stale += 1;
        }
        if let Some(a) = agent {
            if let Some(ok) = a.last_ok {
                let this = now.saturating_sub(ok);
                age = Some(age.map_or(this, |x| x.min(this)));
            }
            error = error.or(a.failure);
        }
    }
    if members.len() > 1 {
        error = None;
    }
    Axis {
        id,
        name,
        members,
        stale,
        age,
        error,
    }
}

/// Builds the matrix of `members` (sorted for display) for `metric`,
/// grouped by the tag `by` if given (members without it fall under "").
pub fn build(
    members: &[Arc<Entry>],
    history: &Snapshot,
    metric: Metric,
    by: Option<&str>,
    now: u32,
    interval: u32,
) -> Matrix {
    let members = sorted(members);
    let axes: Vec<Axis> = match by {
        None => members
            .into_iter()
            .map(|m| {
                let (id, name) = (m.probe.id.to_string(), m.probe.shortname().to_owned());
                axis(vec![m], id, name, history, now, interval)
            })
            .collect(),
        Some(tag) => {
            let mut groups: BTreeMap<String, Vec<Arc<Entry>>> = BTreeMap::new();
            for m in members {
                let value = m.probe.tags.get(tag).unwrap_or_default().to_owned();
                groups.entry(value).or_default().push(m);
            }
            let mut groups: Vec<_> = groups.into_iter().collect();
            groups.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            groups
                .into_iter()
                .map(|(value, ms)| axis(ms, value.clone(), value, history, now, interval))
                .collect()
        }
    };
    let n = axes.len();
    let mut cells = vec![None; n * n];
    // Which columns each destination address is on (a member's address is
    // usually unique; two members may share one).
    let mut columns: HashMap<IpAddr, Vec<usize>> = HashMap::with_capacity(n);
    for (i, a) in axes.iter().enumerate() {
        for m in &a.members {
            columns.entry(m.probe.ip()).or_default().push(i);
        }
    }
    for (row, src_axis) in axes.iter().enumerate() {
        for src in &src_axis.members {
            let src_ip = src.probe.ip();
            let Some(agent) = history.agent(&src_ip) else {
                continue;
            };
            for (dst_ip, sample) in agent.latest() {
                // Grouped cells measure the network between members, not
                // each member's loopback.
                if by.is_some() && *dst_ip == src_ip {
                    continue;
                }
                let Some(cols) = columns.get(dst_ip) else {
                    continue;
                };
                for &col in cols {
                    cells[row * n + col]
                        .get_or_insert_with(Cell::default)
                        .add(sample, metric, now);
                }
            }
        }
    }
    Matrix {
        metric,
        by: by.map(str::to_owned),
        axes,
        cells,
    }
}

/// Where a matrix answer comes from, for its header fields.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub group: &'a str,
    pub interval: u32,
    pub now: u32,
    pub tags: &'a [String],
}

/// Writes an axis object without its closing brace: `id`, `name`, for a
/// member `ip` and `probe_name`, then `stale`, `age`, `error`.
fn write_axis_fields(out: &mut String, a: &Axis, member: Option<&Entry>) {
    out.push('{');
    json::key(out, true, "id");
    json::string(out, &a.id);
    json::key(out, false, "name");
    json::string(out, &a.name);
    if let Some(m) = member {
        json::key(out, false, "ip");
        json::string(out, &m.probe.ip().to_string());
        json::key(out, false, "probe_name");
        json::string(out, m.probe.name());
        json::key(out, false, "stale");
        out.push_str(if a.stale > 0 { "true" } else { "false" });
    } else {
        json::key(out, false, "members");
        json::int(out, a.members.len());
        json::key(out, false, "stale");
        json::int(out, a.stale);
    }
    json::key(out, false, "age");
    match a.age {
        Some(age) => json::int(out, age),
        None => out.push_str("null"),
    }
    json::key(out, false, "error");
    match a.error {
        Some(e) => json::string(out, e),
        None => out.push_str("null"),
    }
}

fn write_axis(out: &mut String, a: &Axis, grouped: bool) {
    let member = if grouped {
        None
    } else {
        a.members.first().map(|m| &**m)
    };
    write_axis_fields(out, a, member);
    out.push('}');
}

impl Matrix {
    /// The JSON answer of `/api/v1/matrix`.
    pub fn to_json(&self, ctx: &Context) -> String {
        let n = self.axes.len();
        let mut out = String::with_capacity(1024 + n * 200 + n * n * 24);
        out.push('{');
        json::key(&mut out, true, "group");
        json::string(&mut out, ctx.group);
        json::key(&mut out, false, "metric");
        json::string(&mut out, self.metric.name());
        json::key(&mut out, false, "unit");
        json::string(&mut out, self.metric.unit());
        json::key(&mut out, false, "by");
        match &self.by {
            Some(b) => json::string(&mut out, b),
            None => out.push_str("null"),
        }
        json::key(&mut out, false, "interval");
        json::int(&mut out, ctx.interval);
        json::key(&mut out, false, "now");
        json::int(&mut out, ctx.now);
        json::key(&mut out, false, "tags");
        json::array(&mut out, ctx.tags, |o, t| json::string(o, t));
        let grouped = self.by.is_some();
        for name in ["sources", "destinations"] {
            json::key(&mut out, false, name);
            json::array(&mut out, &self.axes, |o, a| write_axis(o, a, grouped));
        }
        json::key(&mut out, false, "cells");
        out.push('{');
        let rows = |out: &mut String, f: &dyn Fn(&mut String, &Cell)| {
            json::array(out, self.cells.chunks(n.max(1)).take(n), |o, row| {
                json::array(o, row, |o, c| match c {
                    Some(c) => f(o, c),
                    None => o.push_str("null"),
                });
            });
        };
        json::key(&mut out, true, "value");
        rows(&mut out, &|o, c| json::opt_num(o, c.value(self.metric)));
        json::key(&mut out, false, "sent");
        rows(&mut out, &|o, c| json::int(o, c.sent));
        json::key(&mut out, false, "lost");
        rows(&mut out, &|o, c| json::int(o, c.lost));
        json::key(&mut out, false, "age");
        rows(&mut out, &|o, c| json::int(o, c.age));
        out.push_str("}}");
        out
    }
}

/// Finds a member by id (`ip:port`), IP address or `probe_shortname`.
pub fn find_member<'a>(members: &'a [Arc<Entry>], key: &str) -> Option<&'a Arc<Entry>> {
    let key = key.trim();
    members
        .iter()
        .find(|m| m.probe.id.to_string() == key)
        .or_else(|| {
            let ip = key
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()?;
            members.iter().find(|m| m.probe.ip() == ip)
        })
        .or_else(|| members.iter().find(|m| m.probe.shortname() == key))
}

fn write_member(out: &mut String, m: &Entry, history: &Snapshot, now: u32, interval: u32) {
    let agent = history.agent(&m.probe.ip());
    let a = Axis {
        id: m.probe.id.to_string(),
        name: m.probe.shortname().to_owned(),
        members: vec![],
        stale: usize::from(agent_stale(agent, now, interval)),
        age: agent
            .and_then(|a| a.last_ok)
            .map(|ok| now.saturating_sub(ok)),
        error: agent.and_then(|a| a.failure),
    };
    write_axis_fields(out, &a, Some(m));
    out.push('}');
}

/// The JSON answer of `/api/v1/path`: the samples of `src → dst` scraped
/// at or after `since` (Unix seconds), and their per-flow loss.
pub fn path_json(
    ctx: &Context,
    src: &Entry,
    dst: &Entry,
    history: &Snapshot,
    since: u32,
    window: u32,
) -> String {
    let series = history
        .agent(&src.probe.ip())
        .and_then(|a| a.path(&dst.probe.ip()));
    let points: Vec<_> = series
        .map(|s| s.points())
        .unwrap_or_default()
        .into_iter()
        .filter(|(s, _)| s.at >= since)
        .collect();
    let ports = series.map(|s| s.ports().to_vec()).unwrap_or_default();
    let mut out = String::with_capacity(1024 + points.len() * 120 * (1 + ports.len()));
    out.push('{');
    json::key(&mut out, true, "group");
    json::string(&mut out, ctx.group);
    json::key(&mut out, false, "interval");
    json::int(&mut out, ctx.interval);
    json::key(&mut out, false, "window");
    json::int(&mut out, window);
    json::key(&mut out, false, "now");
    json::int(&mut out, ctx.now);
    json::key(&mut out, false, "src");
    write_member(&mut out, src, history, ctx.now, ctx.interval);
    json::key(&mut out, false, "dst");
    write_member(&mut out, dst, history, ctx.now, ctx.interval);
    json::key(&mut out, false, "samples");
    out.push('{');
    let col = |out: &mut String, first: bool, name: &str, f: &dyn Fn(&Sample) -> Option<f64>| {
        json::key(out, first, name);
        json::array(out, &points, |o, (s, _)| json::opt_num(o, f(s)));
    };
    let rtt = |v: f32, s: &Sample| (s.replies() > 0).then_some(f64::from(v));
    col(&mut out, true, "time", &|s| Some(f64::from(s.at)));
    col(&mut out, false, "span", &|s| Some(f64::from(s.span)));
    col(&mut out, false, "sent", &|s| Some(f64::from(s.sent)));
    col(&mut out, false, "lost", &|s| Some(f64::from(s.lost)));
    col(&mut out, false, "loss", &|s| (s.sent > 0).then(|| s.loss()));
    col(&mut out, false, "rtt", &|s| rtt(s.rtt, s));
    col(&mut out, false, "p50", &|s| rtt(s.p50, s));
    col(&mut out, false, "p90", &|s| rtt(s.p90, s));
    col(&mut out, false, "p99", &|s| rtt(s.p99, s));
    col(&mut out, false, "jitter", &|s| rtt(s.jitter, s));
    out.push('}');
    json::key(&mut out, false, "flows");
    let n_flows = ports.len().max(1) as u32;
    json::array(&mut out, ports.iter().enumerate(), |o, (flow, port)| {
        // A sample without stored flows lost nothing: its probes count in
        // equal shares on every flow.
        let per_flow = |s: &Sample, fl: &[crate::history::FlowSample]| -> (u32, u32) {
            match fl.iter().find(|f| usize::from(f.flow) == flow) {
                Some(f) => (f.sent, f.lost),
                None if s.flows == 0 => (s.sent / n_flows, 0),
                None => (0, 0),
            }
        };
        o.push('{');
        json::key(o, true, "flow");
        json::int(o, flow);
        json::key(o, false, "src_port");
        json::int(o, *port);
        json::key(o, false, "sent");
        json::array(o, &points, |o, (s, fl)| json::int(o, per_flow(s, fl).0));
        json::key(o, false, "lost");
        json::array(o, &points, |o, (s, fl)| json::int(o, per_flow(s, fl).1));
        json::key(o, false, "loss");
        json::array(o, &points, |o, (s, fl)| {
            let (sent, lost) = per_flow(s, fl);
            json::opt_num(
                o,
                (sent > 0).then(|| f64::from(lost) * 100.0 / f64::from(sent)),
            );
        });
        o.push('}');
    });
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_of_host_names() {
        let mut names = vec![
            "h10", "h2", "h1", "web-03", "web-3a", "h", "h02", "b", "web-20",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "b", "h", "h1", "h2", "h02", "h10", "web-03", "web-3a", "web-20"
            ]
        );
    }
}
