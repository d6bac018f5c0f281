//! The group's loss/latency matrix as the demo prints and checks it, built
//! from every agent's `/influxdata` (docs/agent-api.md), or from the
//! server's `/api/v1/matrix` (docs/api.md; what the live page shows).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
};

use llama_common::DEFAULT_PROBE_PORT;
use serde::Deserialize;

/// One (source, destination) cell over the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub sent: f64,
    pub lost: f64,
    /// Mean RTT of the probes that returned, ms.
    pub rtt_ms: f64,
}

impl Cell {
    pub fn loss_pct(&self) -> f64 {
        if self.sent > 0.0 {
            100.0 * self.lost / self.sent
        } else {
            0.0
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix {
    cells: BTreeMap<(String, String), Cell>,
}

#[derive(Deserialize)]
struct Point {
    fields: BTreeMap<String, f64>,
    tags: BTreeMap<String, String>,
    #[serde(default)]
    measurement: String,
}

impl Matrix {
    /// Asks each agent for its last summaries. An agent that does not answer
    /// leaves its row empty (the matrix is then incomplete, not an error).
    pub fn fetch<'a>(
        client: &reqwest::blocking::Client,
        hosts: impl Iterator<Item = (&'a str, Ipv4Addr)>,
        by_ip: &BTreeMap<Ipv4Addr, String>,
    ) -> Self {
        let mut matrix = Matrix::default();
        for (name, ip) in hosts {
            let url = format!("http://{ip}:{DEFAULT_PROBE_PORT}/influxdata");
            let Ok(body) = client
                .get(&url)
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.text())
            else {
                continue;
            };
            matrix.add_agent(name, &body, by_ip);
        }
        matrix
    }

    /// The server's live matrix of group `demo` (cells by member short
    /// name); empty if the server does not answer.
    pub fn fetch_server(client: &reqwest::blocking::Client, names: &[String]) -> Self {
        let url = format!(
            "http://{}:5000/api/v1/matrix?group=demo&metric=rtt",
            super::hub_address()
        );
        client
            .get(url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .map(|body| Self::from_api(&body, names))
            .unwrap_or_default()
    }

    /// Reads an `/api/v1/matrix?metric=rtt` answer.
    pub fn from_api(body: &str, names: &[String]) -> Self {
        #[derive(Deserialize)]
        struct Axis {
            name: String,
        }
        #[derive(Deserialize)]
        struct Cells {
            value: Vec<Vec<Option<f64>>>,
            sent: Vec<Vec<Option<f64>>>,
            lost: Vec<Vec<Option<f64>>>,
        }
        #[derive(Deserialize)]
        struct Answer {
            sources: Vec<Axis>,
            destinations: Vec<Axis>,
            cells: Cells,
        }
        let mut matrix = Matrix::default();
        let Ok(a) = serde_json::from_str::<Answer>(body) else {
            return matrix;
        };
        for (r, src) in a.sources.iter().enumerate() {
            for (c, dst) in a.destinations.iter().enumerate() {
                if !names.contains(&src.name) || !names.contains(&dst.name) {
                    continue;
                }
                let at = |m: &Vec<Vec<Option<f64>>>| {
                    m.get(r).and_then(|row| row.get(c)).copied().flatten()
                };
                if let (Some(sent), Some(lost)) = (at(&a.cells.sent), at(&a.cells.lost)) {
                    let cell = Cell {
                        sent,
                        lost,
                        rtt_ms: at(&a.cells.value).unwrap_or(0.0),
                    };
                    matrix
                        .cells
                        .insert((src.name.clone(), dst.name.clone()), cell);
                }
            }
        }
        matrix
    }

    /// Adds one agent's `/influxdata` body as row `src`.
    pub fn add_agent(&mut self, src: &str, body: &str, by_ip: &BTreeMap<Ipv4Addr, String>) {
        let Ok(points) = serde_json::from_str::<Vec<Point>>(body) else {
            return;
        };
        // Per-flow points (`raw_stats_flow`) repeat what the path's says.
        for point in points.into_iter().filter(|p| p.measurement == "raw_stats") {
            let Some(dst_ip) = point
                .tags
                .get("dst_ip")
                .and_then(|d| d.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let dst = match dst_ip {
                // The server rewrites an agent's own entry to loopback.
                ip if ip.is_loopback() => src.to_owned(),
                IpAddr::V4(v4) => match by_ip.get(&v4) {
                    Some(name) => name.clone(),
                    None => continue,
                },
                IpAddr::V6(_) => continue,
            };
            let field = |k: &str| point.fields.get(k).copied().unwrap_or(0.0);
            let (sent, lost, rtt) = (field("sent"), field("lost"), field("rtt"));
            let cell = self.cells.entry((src.to_owned(), dst)).or_insert(Cell {
                sent: 0.0,
                lost: 0.0,
                rtt_ms: 0.0,
            });
            // Several source addresses per path are merged, RTT weighted by replies.
            let (old_ok, new_ok) = (cell.sent - cell.lost, sent - lost);
            if old_ok + new_ok > 0.0 {
                cell.rtt_ms = (cell.rtt_ms * old_ok + rtt * new_ok) / (old_ok + new_ok);
            }
            cell.sent += sent;
            cell.lost += lost;
        }
    }

    pub fn cell(&self, src: &str, dst: &str) -> Option<&Cell> {
        self.cells.get(&(src.to_owned(), dst.to_owned()))
    }

    /// Every source × destination cell (the diagonal is each agent probing
    /// itself over loopback) has probes in it.
    pub fn is_complete(&self, names: &[String]) -> bool {
        names.iter().all(|s| {
            names
                .iter()
                .all(|d| self.cell(s, d).is_some_and(|c| c.sent > 0.0))
        })
    }

    /// Loss must show on exactly the cells that cross a lossy host's link:
    /// at least half the injected rate there, at most 5 % anywhere else.
    pub fn check(&self, names: &[String], lossy: &BTreeMap<String, u8>) -> Result<(), String> {
        let mut problems = Vec::new();
        for s in names {
            for d in names {
                let Some(cell) = self.cell(s, d).filter(|c| c.sent > 0.0) else {
                    problems.push(format!("{s}->{d} missing"));
                    continue;
                };
                let injected = if s == d {
                    None
                } else {
                    lossy.get(s).into_iter().chain(lossy.get(d)).copied().max()
                };
                let loss = cell.loss_pct();
                match injected {
                    Some(pct) if loss < f64::from(pct) / 2.0 => problems.push(format!(
                        "{s}->{d} shows {loss:.1}% loss, expected about {pct}%"
                    )),
                    None if loss > 5.0 => {
                        problems.push(format!("{s}->{d} shows {loss:.1}% loss, expected none"))
                    }
                    _ => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join(", "))
        }
    }

    /// The terminal table: rows are sources, columns destinations.
    pub fn render(&self, names: &[String], lossy: &BTreeMap<String, u8>, interval: u64) -> String {
        let now = chrono_like_now();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nllama demo — {now} UTC — last {interval} s interval — loss % / mean RTT ms"
        );
        let _ = writeln!(
            out,
            "(rows: source agent, columns: destination; * = --loss injected on that host's link)"
        );
        let _ = write!(out, "{:>8}", "");
        for d in names {
            let mark = if lossy.contains_key(d) { "*" } else { "" };
            let _ = write!(out, " {:>16}", format!("{d}{mark}"));
        }
        out.push('\n');
        for s in names {
            let mark = if lossy.contains_key(s) { "*" } else { "" };
            let _ = write!(out, "{:>8}", format!("{s}{mark}"));
            for d in names {
                let text = match self.cell(s, d) {
                    Some(c) if c.sent > 0.0 => format!("{:5.1}% {:7.3}", c.loss_pct(), c.rtt_ms),
                    _ => "—".to_owned(),
                };
                let _ = write!(out, " {text:>16}");
            }
            out.push('\n');
        }
        out
    }
}

/// `HH:MM:SS` of the current UTC time, without a date-time dependency.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["h1".into(), "h2".into(), "h3".into()]
    }

    fn by_ip() -> BTreeMap<Ipv4Addr, String> {
        (1..=3)
            .map(|i| (Ipv4Addr::new(10, 201, 0, 10 + i), format!("h{i}")))
            .collect()
    }

    fn body(points: &[(&str, f64, f64)]) -> String {
        let items: Vec<String> = points
            .iter()
            .map(|(dst, sent, lost)| {
                format!(
                    r#"{{"fields":{{"loss":0.0,"lost":{lost:.6},"rtt":0.250000,"sent":{sent:.6}}},"tags":{{"dst_ip":"{dst}","src_ip":"::"}},"time":"0001-01-01T00:00:00Z","measurement":"raw_stats"}}"#
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    }

    fn matrix(loss_h2: f64) -> Matrix {
        let mut m = Matrix::default();
        for (i, src) in ["h1", "h2", "h3"].into_iter().enumerate() {
            let mut pts = Vec::new();
            for j in 1..=3 {
                let dst = if j == i + 1 {
                    "127.0.0.1".to_owned()
                } else {
                    format!("10.201.0.{}", 10 + j)
                };
                let lossy = j != i + 1 && (src == "h2" || j == 2);
                pts.push((dst, 100.0, if lossy { loss_h2 } else { 0.0 }));
            }
            let refs: Vec<(&str, f64, f64)> =
                pts.iter().map(|(d, s, l)| (d.as_str(), *s, *l)).collect();
            m.add_agent(src, &body(&refs), &by_ip());
        }
        m
    }

    #[test]
    fn loopback_destination_is_the_diagonal_and_matrix_is_complete() {
        let m = matrix(0.0);
        assert!(m.is_complete(&names()));
        assert_eq!(m.cell("h2", "h2").map(|c| c.sent), Some(100.0));
        assert!(!Matrix::default().is_complete(&names()));
    }

    #[test]
    fn check_accepts_loss_on_exactly_the_affected_cells() {
        let lossy: BTreeMap<String, u8> = [("h2".to_owned(), 30)].into();
        assert_eq!(matrix(28.0).check(&names(), &lossy), Ok(()));
        // No loss where it was injected: fails on the four h2 cells.
        let err = matrix(0.0).check(&names(), &lossy).expect_err("must fail");
        assert_eq!(err.matches("expected about 30%").count(), 4, "{err}");
        // Loss where none was injected: fails.
        assert!(matrix(28.0).check(&names(), &BTreeMap::new()).is_err());
    }

    #[test]
    fn reads_the_servers_matrix() {
        let body = r#"{"sources":[{"name":"h1"},{"name":"h2"}],"destinations":[{"name":"h1"},{"name":"h2"}],
            "cells":{"value":[[0.05,0.1],[null,null]],"sent":[[80,80],[null,null]],"lost":[[0,24],[null,null]]}}"#;
        let names = vec!["h1".to_owned(), "h2".to_owned()];
        let m = Matrix::from_api(body, &names);
        assert_eq!(m.cell("h1", "h2").map(Cell::loss_pct), Some(30.0));
        assert_eq!(m.cell("h1", "h1").map(|c| c.rtt_ms), Some(0.05));
        assert!(m.cell("h2", "h1").is_none());
        assert!(!m.is_complete(&names));
        assert_eq!(Matrix::from_api("nonsense", &names), Matrix::default());
    }

    #[test]
    fn garbage_bodies_are_ignored() {
        let mut m = Matrix::default();
        m.add_agent("h1", "not json", &by_ip());
        m.add_agent(
            "h1",
            r#"[{"fields":{},"tags":{"dst_ip":"nope"}}]"#,
            &by_ip(),
        );
        assert_eq!(m, Matrix::default());
    }
}
