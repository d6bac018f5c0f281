//! Stand-in agents for scraper tests: HTTP servers on distinct loopback
//! addresses (127.0.0.x) sharing one port, serving `/influxdata` like the
//! collector API (docs/agent-api.md); and a "dead" agent that accepts connections and
//! never answers.

use std::net::{IpAddr, SocketAddr};

use axum::{Router, routing::get};
use tokio::net::TcpListener;

/// The `/influxdata` payload of an agent `src` probing `dsts`: one
/// `raw_stats` point per path, then two `raw_stats_flow` points per path.
pub fn payload(src: &str, dsts: &[&str]) -> String {
    let mut points: Vec<serde_json::Value> = dsts
        .iter()
        .map(|dst| {
            serde_json::json!({
                "fields": {"loss": 0.0, "lost": 0.0, "rtt": 0.25, "sent": 40.0},
                "tags": {"dst_ip": dst, "src_ip": "::", "src_name": src, "dst_name": format!("to-{dst}")},
                "time": "0001-01-01T00:00:00Z",
                "measurement": "raw_stats"
            })
        })
        .collect();
    for dst in dsts {
        for flow in 0..2 {
            points.push(serde_json::json!({
                "fields": {"loss": 0.0, "lost": 0.0, "sent": 20.0, "src_port": 40000 + flow},
                "tags": {"dst_ip": dst, "src_ip": "::", "src_name": src, "flow": flow.to_string()},
                "time": "0001-01-01T00:00:00Z",
                "measurement": "raw_stats_flow"
            }));
        }
    }
    serde_json::to_string(&points).unwrap()
}

pub struct Agents {
    pub port: u16,
    pub ips: Vec<IpAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps the dead agent's socket open (connections queue, never served).
    _dead: Option<TcpListener>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// Starts `count` live agents on 127.0.0.{first..} and, if `dead`, one dead
/// agent on the next address, all on one port.
pub async fn start(first: u8, count: u8, dead: bool) -> Agents {
    // Find a port free on every address (retry on collisions).
    for _ in 0..20 {
        let probe = TcpListener::bind(SocketAddr::new(loopback(first), 0))
            .await
            .unwrap();
        let port = probe.local_addr().unwrap().port();
        let mut listeners = vec![probe];
        let mut ok = true;
        for n in 1..count + u8::from(dead) {
            match TcpListener::bind(SocketAddr::new(loopback(first + n), port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let dead_listener = if dead { listeners.pop() } else { None };
        let mut ips = Vec::new();
        let mut tasks = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let ip = l.local_addr().unwrap().ip();
            ips.push(ip);
            let body = payload(&format!("agent{i}"), &["10.9.0.1", "10.9.0.2"]);
            let app = Router::new().route("/influxdata", get(move || async move { body }));
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            }));
        }
        if let Some(d) = &dead_listener {
            ips.push(d.local_addr().unwrap().ip());
        }
        return Agents {
            port,
            ips,
            tasks,
            _dead: dead_listener,
        };
    }
    panic!("no port free on all of 127.0.0.{first}..");
}
