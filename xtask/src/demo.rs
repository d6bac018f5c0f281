//! `cargo xtask demo`: a server and N agents in network namespaces on one
//! machine, printing the group's live loss/latency matrix every interval.
//!
//! Topology (all inside namespaces this command creates, named `llama-demo-*`
//! so they are easy to inspect with `ip netns exec`):
//!
//! ```text
//!   llama-demo-hub:  br0 10.201.0.1/24, routing; llama-server on 10.201.0.1:5000
//!     ├── h1 ── eth0 in llama-demo-h1 (10.201.0.11/32, via 10.201.0.1), llama-agent
//!     ├── h2 ── eth0 in llama-demo-h2 (10.201.0.12/32, via 10.201.0.1), llama-agent
//!     └── …
//! ```
//!
//! The hosts reach each other through the hub, which routes (each host has
//! a /32 address and the hub as its gateway), not over the bridge directly:
//! the kernel's neighbour table is shared by all namespaces (1,024 entries
//! by default), and 50 hosts that each resolve 49 peers would overflow it
//! and silently cut some hosts off. Routed, each host resolves only the hub.
//!
//! `--loss h2=30` drops 30 % of the UDP packets from h2's address that the
//! hub forwards (nftables, inet family, forward hook, in the hub). Dropping
//! in the hub rather than on h2's own input hook matters: a probe that the
//! XDP reflector answers never reaches netfilter on h2. So every cell in
//! h2's row (h2's probes) and column (h2's replies) shows about 30 % loss,
//! and no other.
//!
//! Ctrl-C (or the end of `--intervals`) stops the processes and removes every
//! namespace and link. A run killed with SIGKILL leaves them behind; the next
//! run removes them first, and the agents die with the demo (PDEATHSIG).

mod forward;
mod matrix;
mod topology;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};
use clap::Args;
pub use matrix::Matrix;
use topology::Topology;

use crate::{build_ebpf, cmd, prereqs};

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Number of agent hosts (namespaces).
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Summarization interval in seconds (the server hands it to the agents).
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Random loss on one host's link, e.g. `h2=30` (repeatable).
    #[arg(long, value_parser = parse_loss)]
    pub loss: Vec<(String, u8)>,
    /// Reflector mode of the agents: auto, xdp, xdp-skb or userspace.
    #[arg(long, default_value = "auto")]
    pub mode: String,
    /// Stop after printing this many complete matrices (default: run until Ctrl-C).
    #[arg(long)]
    pub intervals: Option<u32>,
    /// With --intervals: fail unless every cell is present and loss shows on
    /// exactly the cells of the hosts given with --loss, in the agents'
    /// summaries and in the server's live matrix alike.
    #[arg(long)]
    pub check: bool,
    /// Where the live matrix page is served on this machine (relayed to the
    /// server in the hub namespace); another free port if this one is taken.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub ui: std::net::SocketAddr,
    /// Probe cycles per second (each cycle: one probe from each of 4 source
    /// ports to every host). Default: 10, lowered for many hosts so that the
    /// whole demo sends at most 10,000 probes/s (1.0 with --hosts 50).
    #[arg(long)]
    pub cps: Option<f64>,
}

/// Total probe rate the default `--cps` keeps the demo under: every host
/// probes every host from 4 ports, so hosts² × 4 × cps probes/s.
const MAX_DEMO_PROBES_PER_S: f64 = 10_000.0;

impl Options {
    /// The probe rate the demo's server hands out.
    pub fn cycles_per_second(&self) -> f64 {
        self.cps.unwrap_or_else(|| {
            let n = self.hosts.max(1) as f64;
            let cps = MAX_DEMO_PROBES_PER_S / (n * n * 4.0);
            (cps * 10.0).floor().clamp(1.0, 100.0) / 10.0
        })
    }
}

fn parse_loss(s: &str) -> Result<(String, u8), String> {
    let (host, pct) = s
        .split_once('=')
        .ok_or("expected HOST=PERCENT, e.g. h2=30")?;
    let pct: u8 = pct
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("bad percentage in {s:?}"))?;
    if pct == 0 || pct > 100 {
        return Err(format!("percentage must be 1..=100 in {s:?}"));
    }
    Ok((host.to_owned(), pct))
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.hosts < 2 || opts.hosts > 50 {
        bail!("--hosts must be between 2 and 50");
    }
    if opts.check && opts.intervals.is_none() {
        bail!("--check needs --intervals");
    }
    if opts.cps.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        bail!("--cps must be a positive number");
    }
    if !cmd::is_root() {
        bail!("the demo creates network namespaces: run it as root");
    }
    prereqs::ensure(prereqs::DEMO_PACKAGES)?;
    for (host, _) in &opts.loss {
        if !(1..=opts.hosts).any(|i| format!("h{i}") == *host) {
            bail!("--loss names {host}, but the hosts are h1..h{}", opts.hosts);
        }
    }
    let object = build_ebpf::build_release()?;
    eprintln!("XDP object: {}", object.display());
    cmd::run(
        std::process::Command::new("cargo")
            .current_dir(cmd::workspace_root())
            .args([
                "build",
                "--quiet",
                "--package",
                "llama-agent",
                "--package",
                "llama-server",
            ]),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;

    let mut topo = Topology::create(opts)?;
    // Before observe() moves this thread into the hub namespace.
    let ui = forward::start(
        opts.ui,
        topology::HUB,
        SocketAddr::from((hub_address(), 5000)),
    )?;
    println!(
        "live matrix: http://{}/?group=demo  (from another machine: ssh -L {}:{} this-host)",
        ui.local,
        ui.local.port(),
        ui.local
    );
    let result = check_page(ui.local).and_then(|()| observe(opts, &mut topo, &stop));
    drop(ui);
    eprintln!("stopping: agents, server, namespaces");
    drop(topo);
    result
}

/// The printed URL must answer with the page (from the host's namespace).
fn check_page(at: SocketAddr) -> Result<()> {
    crate::cmd::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let page = client
        .get(format!("http://{at}/"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .map_err(|e| {
            anyhow::anyhow!("the live matrix page at http://{at}/ does not answer: {e}")
        })?;
    if !page.contains("/ui/matrix.js") {
        bail!("http://{at}/ is not the live matrix page");
    }
    Ok(())
}

/// Prints the matrix every interval until Ctrl-C or `--intervals`.
fn observe(opts: &Options, topo: &mut Topology, stop: &AtomicBool) -> Result<()> {
    let names: Vec<String> = topo.hosts().map(|h| h.name.clone()).collect();
    let by_ip: BTreeMap<Ipv4Addr, String> = topo.hosts().map(|h| (h.ip, h.name.clone())).collect();
    let lossy: BTreeMap<String, u8> = opts.loss.iter().cloned().collect();
    let client = topo.hub_http_client()?;
    let started = Instant::now();
    // Agents need a registration, a config poll and one full interval before
    // the first complete matrix; allow several intervals of slack.
    let warmup_limit = Duration::from_secs(30 + 6 * opts.interval);
    let mut complete = 0u32;
    let mut last_printed = None;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        sleep_until_next_interval(opts.interval, stop);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        topo.check_processes()?;
        let matrix = Matrix::fetch(
            &client,
            topo.hosts().map(|h| (h.name.as_str(), h.ip)),
            &by_ip,
        );
        if last_printed.as_ref() == Some(&matrix) {
            continue; // no new summarization interval published yet
        }
        if matrix == Matrix::default() {
            println!(
                "waiting for the agents' first summaries ({}s)…",
                started.elapsed().as_secs()
            );
        } else {
            println!("{}", matrix.render(&names, &lossy, opts.interval));
        }
        let is_complete = matrix.is_complete(&names);
        last_printed = Some(matrix.clone());
        if !is_complete {
            if complete == 0 && started.elapsed() > warmup_limit {
                bail!(
                    "no complete matrix after {:?}; agent logs are in {}",
                    warmup_limit,
                    topo.log_dir().display()
                );
            }
            continue;
        }
        complete += 1;
        if opts.check {
            // The same verdict from the server's own collection, which the
            // page shows (it scrapes shortly after each boundary).
            let served = Matrix::fetch_server(&client, &names);
            let verdict = matrix
                .check(&names, &lossy)
                .map_err(|e| format!("agents' summaries: {e}"))
                .and_then(|()| {
                    served
                        .check(&names, &lossy)
                        .map_err(|e| format!("server's /api/v1/matrix: {e}"))
                });
            match verdict {
                Ok(()) => println!(
                    "demo check: interval {complete}: ok (agents and server's live matrix)"
                ),
                Err(e) => {
                    println!("demo check: interval {complete}: FAILED: {e}");
                    failures.push(e);
                }
            }
        }
        if opts.intervals.is_some_and(|n| complete >= n) {
            break;
        }
    }
    if opts.check {
        let total = complete as usize;
        println!(
            "demo: {} passed, {} failed",
            total - failures.len(),
            failures.len()
        );
        if !failures.is_empty() || complete < opts.intervals.unwrap_or(0) {
            bail!("demo check failed: {}", failures.join("; "));
        }
    }
    Ok(())
}

/// Sleeps until 2 s after the next multiple of `interval` on the wall clock:
/// agents publish summaries aligned to it, the margin lets them finish.
fn sleep_until_next_interval(interval: u64, stop: &AtomicBool) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let period = Duration::from_secs(interval.max(1));
    let into = Duration::from_nanos((now.as_nanos() % period.as_nanos()) as u64);
    let wait = period - into + Duration::from_secs(2);
    let until = Instant::now() + wait;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn hub_address() -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 0, 1)
}

pub(crate) fn host_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 0, 10 + index as u8)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: Options,
    }

    #[test]
    fn the_default_rate_keeps_the_demo_under_its_probe_budget() {
        let rate = |args: &[&str]| {
            let cli = Cli::parse_from(std::iter::once("demo").chain(args.iter().copied()));
            cli.demo.cycles_per_second()
        };
        assert_eq!(rate(&[]), 10.0, "4 hosts: the dense rate");
        assert_eq!(
            rate(&["--hosts", "50"]),
            1.0,
            "50 x 50 x 4 x 1.0 = 10,000 probes/s"
        );
        assert_eq!(rate(&["--hosts", "20"]), 6.2);
        assert_eq!(rate(&["--hosts", "50", "--cps", "0.5"]), 0.5);
    }
}
