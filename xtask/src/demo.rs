//! `cargo xtask demo`: a server and N agents in network namespaces on one
//! machine, printing the group's live loss/latency matrix every interval.
//!
//! Topology (all inside namespaces this command creates, named `llama-demo-*`
//! so they are easy to inspect with `ip netns exec`):
//!
//! ```text
//!   llama-demo-hub:  br0 10.201.0.1/24, llama-server on 10.201.0.1:5000
//!     ├── h1 ── eth0 in llama-demo-h1 (10.201.0.11), llama-agent
//!     ├── h2 ── eth0 in llama-demo-h2 (10.201.0.12), llama-agent
//!     └── …
//! ```
//!
//! `--loss h2=30` drops 30 % of the UDP packets that enter the bridge from
//! h2's port (nftables, bridge family, in the hub). Dropping on the bridge
//! rather than on h2's own input hook matters: a probe that the XDP reflector
//! answers never reaches netfilter on h2. So every cell in h2's row (h2's
//! probes) and column (h2's replies) shows about 30 % loss, and no other.
//!
//! Ctrl-C (or the end of `--intervals`) stops the processes and removes every
//! namespace and link. A run killed with SIGKILL leaves them behind; the next
//! run removes them first, and the agents die with the demo (PDEATHSIG).

mod matrix;
mod topology;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
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
    /// exactly the cells of the hosts given with --loss.
    #[arg(long)]
    pub check: bool,
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
    if !cmd::is_root() {
        bail!("the demo creates network namespaces: run it as root");
    }
    prereqs::ensure(prereqs::DEMO_PACKAGES)?;
    for (host, _) in &opts.loss {
        if !(1..=opts.hosts).any(|i| format!("h{i}") == *host) {
            bail!("--loss names {host}, but the hosts are h1..h{}", opts.hosts);
        }
    }
    let object = build_ebpf::build(&build_ebpf::Options { release: true })?;
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
    let result = observe(opts, &mut topo, &stop);
    eprintln!("stopping: agents, server, namespaces");
    drop(topo);
    result
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
            match matrix.check(&names, &lossy) {
                Ok(()) => println!("demo check: interval {complete}: ok"),
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
