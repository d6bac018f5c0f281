//! The real collector against a guest: `llama-agent collect` (the host's
//! static agent) in the tap's namespace probes the guest over IPv4 and IPv6
//! for a few seconds; then a reload with no tests stops it sending, and its
//! `/metrics` must show no loss, no late or duplicate replies, and a probe
//! count the guest's own `reflected` counter agrees with.

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use llama_testkit::{ChildGuard, http::http_get_ok};
use nix::sys::signal::Signal;

use super::net::{self, Link};

/// Where the collector's API listens, inside the tap's namespace.
const API: &str = "127.0.0.1:5000";
/// How long the collector probes the guest.
const PROBING: Duration = Duration::from_secs(6);
/// The probes' timeout (ms): generous for a software-emulated guest.
const TIMEOUT_MS: u64 = 2000;

/// The collector's counters after it stopped probing.
#[derive(Debug)]
pub struct Counts {
    pub sent: u64,
    pub replies: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicate: u64,
    pub dropped_on_reload: u64,
}

/// Runs the collector against the guest and returns its counters.
pub fn run(link: &Link, agent: &Path, work: &Path) -> Result<Counts> {
    let config = work.join("collect.yaml");
    fs::write(&config, config_text(true)).context("write the collector config")?;
    let mut collector = Command::new(agent);
    collector
        .args(["collect", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error");
    let mut child: ChildGuard = link.ns.spawn(collector).context("start the collector")?;
    let api: SocketAddr = API.parse()?;
    let metrics = || link.ns.run(|| http_get_ok(api, "/metrics"));
    wait(Duration::from_secs(30), || metrics().is_some()).context("the collector's API")?;
    std::thread::sleep(PROBING);
    // No tests: the collector stops probing and keeps its API up.
    fs::write(&config, config_text(false)).context("rewrite the collector config")?;
    child.signal(Signal::SIGHUP)?;
    // Every probe's fate is known a timeout after the last one was sent,
    // and booked at the next interval (1 s).
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(TIMEOUT_MS + 1500));
        let counts = parse(&metrics().context("the collector's /metrics")?)?;
        let settled = counts.replies + counts.lost + counts.dropped_on_reload == counts.sent;
        if settled
            && last
                .as_ref()
                .is_some_and(|l: &Counts| l.sent == counts.sent)
        {
            return Ok(counts);
        }
        if Instant::now() >= deadline {
            bail!("the collector's counters did not settle: {counts:?}");
        }
        last = Some(counts);
    }
}

fn wait(timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() >= deadline {
            bail!("not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The full-form configuration: both guest addresses, two sockets, four
/// cycles a second, TOS 0x28; `probing: false` gives the same file with no
/// tests.
fn config_text(probing: bool) -> String {
    let tests = if probing {
        "tests:\n  - targets: guest\n    port_group: default\n    rate_limit: default\n"
    } else {
        "tests: []\n"
    };
    format!(
        "summarization:\n  interval: 1\n  handlers: 1\napi:\n  bind: {API}\n\
         ports:\n  default:\n    ip: \"::\"\n    port: 0\n    tos: 40\n    timeout: {TIMEOUT_MS}\n\
         port_groups:\n  default:\n    - port: default\n      count: 2\n\
         rate_limits:\n  default:\n    cps: 4.0\n{tests}\
         targets:\n  guest:\n    - ip: {}\n      port: 8100\n    - ip: {}\n      port: 8100\n",
        net::GUEST_V4,
        net::GUEST_V6
    )
}

fn parse(metrics: &str) -> Result<Counts> {
    let get = |name: &str| -> Result<u64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("no {name} in the collector's /metrics"))
    };
    Ok(Counts {
        sent: get("llama_collector_probes_sent_total")?,
        replies: get("llama_collector_replies_total")?,
        lost: get("llama_collector_probes_lost_total")?,
        late: get("llama_collector_replies_late_total")?,
        duplicate: get("llama_collector_replies_duplicate_total")?,
        dropped_on_reload: get("llama_collector_probes_dropped_on_reload_total")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters() {
        let text = "llama_collector_probes_sent_total 10\nllama_collector_replies_total 9\n\
                    llama_collector_probes_lost_total 0\nllama_collector_replies_late_total 0\n\
                    llama_collector_replies_duplicate_total 0\n\
                    llama_collector_probes_dropped_on_reload_total 1\n";
        let c = parse(text).unwrap();
        assert_eq!((c.sent, c.replies, c.dropped_on_reload), (10, 9, 1));
    }

    #[test]
    fn the_config_parses_as_the_agent_reads_it() {
        for probing in [true, false] {
            let text = config_text(probing);
            llama_agent::config::CollectorConfig::from_yaml(&text, &Default::default())
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
}
