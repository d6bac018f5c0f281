//! RTT under CPU contention, with and without kernel send timestamps
//! (`--tx-timestamps on|off`), and what the timestamps cost per probe.
//!
//! One path: the collector probes one address across the veth pair, answered
//! by the XDP reflector in generic mode, while two busy-loop processes (one
//! per core of the test machine) compete for the CPUs. The phases alternate
//! `off`, `on`, `off`, `on` in the same run, so a change of machine load
//! between them shows as a spread within a mode. Each phase reads the RTT
//! quantiles of the last completed summary interval from `/influxdata`
//! (with the counts of replies timed by the kernel and by the fallback) and
//! the collector's CPU time over the window, divided by the probes resolved
//! in it.
//!
//! The busy loops are `timeout`-limited processes held by a guard that
//! kills them when the step ends, however it ends.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use llama_common::DEFAULT_PROBE_PORT;
use llama_testkit::{NetNs, TwoHosts, http_get_ok};

use super::{API, cpu_ticks, metrics, start_reflector};

/// Probes per second of the measured path (4 sockets × 1,250).
const RATE: u32 = 5_000;
const SOCKETS: u32 = 4;
/// Summary interval: the quantiles come from one completed interval.
const INTERVAL_S: u64 = 5;
const BUSY_LOOPS: usize = 2;

/// One phase.
#[derive(Debug)]
pub struct Phase {
    pub tx: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub tx_kernel: f64,
    pub tx_fallback: f64,
    /// Collector CPU per resolved probe, microseconds.
    pub cpu_us_per_probe: f64,
    pub probes: u64,
}

/// Busy-loop processes, killed on drop.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start(n: usize, limit: Duration) -> anyhow::Result<Self> {
        let mut loops = Self(Vec::with_capacity(n));
        for _ in 0..n {
            let child = Command::new("timeout")
                .arg(limit.as_secs().max(1).to_string())
                .args(["sh", "-c", "while :; do :; done"])
                .spawn()
                .context("start a busy loop (timeout, sh)")?;
            loops.0.push(child);
        }
        Ok(loops)
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // `timeout` forwards the signal to the loop it runs.
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

pub fn run(agent: &Path, quick: bool) -> anyhow::Result<Vec<Phase>> {
    let (warmup, window) = if quick {
        (Duration::from_secs(2), Duration::from_secs(2 * INTERVAL_S))
    } else {
        (Duration::from_secs(3), Duration::from_secs(4 * INTERVAL_S))
    };
    let mut phases = Vec::new();
    for tx in ["off", "on", "off", "on"] {
        let p = measure(agent, tx, warmup, window)?;
        println!(
            "contention, tx-timestamps {:>3}: RTT p50 {:.1} µs p99 {:.1} µs (kernel {} / fallback {}), \
             {:.2} µs CPU per probe",
            p.tx,
            p.p50_ms * 1e3,
            p.p99_ms * 1e3,
            p.tx_kernel,
            p.tx_fallback,
            p.cpu_us_per_probe
        );
        phases.push(p);
    }
    Ok(phases)
}

fn influx_fields(ns: &NetNs) -> Option<(f64, serde_json::Value)> {
    let api: SocketAddr = API.parse().ok()?;
    let body = ns.run(|| http_get_ok(api, "/influxdata"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let f = v.get(0)?.get("fields")?.clone();
    Some((f.get("sent")?.as_f64()?, f))
}

fn measure(
    agent: &Path,
    tx: &'static str,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Phase> {
    let hosts = TwoHosts::new()?;
    let _reflector = start_reflector(&hosts.right, &hosts.veth.b, DEFAULT_PROBE_PORT)?;
    let cps = f64::from(RATE / SOCKETS);
    let yaml = format!(
        "summarization: {{interval: {INTERVAL_S}}}\napi: {{bind: '{API}'}}\n\
         ports: {{p: {{ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}}}\n\
         port_groups: {{g: [{{port: p, count: {SOCKETS}}}]}}\n\
         rate_limits: {{r: {{cps: {cps}}}}}\n\
         tests: [{{targets: t, port_group: g, rate_limit: r}}]\n\
         targets: {{t: [{{ip: 10.200.0.2, port: {DEFAULT_PROBE_PORT}}}]}}\n"
    );
    let file = std::env::temp_dir().join(format!(
        "llama-bench-contention-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&file, yaml)?;
    let limit = RATE.to_string();
    let mut cmd = Command::new(agent);
    cmd.arg("collect")
        .arg("--config")
        .arg(&file)
        .args(["--max-probe-rate", &limit, "--max-target-rate", &limit])
        .args(["--tx-timestamps", tx])
        .env("RUST_LOG", "warn");
    let mut child = hosts.left.spawn(cmd)?;
    let pid = child.child().id();
    // Bounded by `timeout` as well as by the guard.
    let _busy = BusyLoops::start(BUSY_LOOPS, warmup + window + Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics(&hosts.left).is_none() {
        if Instant::now() > deadline {
            bail!("the collector's API never came up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(warmup);
    let (t0, m0) = (cpu_ticks(pid)?, metrics(&hosts.left).context("metrics")?);
    std::thread::sleep(window);
    let (t1, m1) = (cpu_ticks(pid)?, metrics(&hosts.left).context("metrics")?);
    let (_, f) = influx_fields(&hosts.left).context("a completed interval")?;
    drop(child);
    let _ = std::fs::remove_file(&file);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let d = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
    let probes =
        (d("llama_collector_probes_lost_total") + d("llama_collector_replies_total")) as u64;
    let cpu_s = (t1 - t0) as f64 / hz;
    let num = |k: &str| {
        f.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    Ok(Phase {
        tx,
        p50_ms: num("rtt_p50"),
        p99_ms: num("rtt_p99"),
        tx_kernel: num("tx_kernel"),
        tx_fallback: num("tx_fallback"),
        cpu_us_per_probe: if probes == 0 {
            f64::NAN
        } else {
            cpu_s * 1e6 / probes as f64
        },
        probes,
    })
}

fn mean(phases: &[Phase], tx: &str, f: impl Fn(&Phase) -> f64) -> f64 {
    let v: Vec<f64> = phases.iter().filter(|p| p.tx == tx).map(f).collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The section of `docs/benchmarks/collector.md`.
pub fn report(phases: &[Phase]) -> String {
    let mut rows = String::new();
    for p in phases {
        rows.push_str(&format!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {:.2} |\n",
            p.tx,
            p.p50_ms * 1e3,
            p.p99_ms * 1e3,
            p.tx_kernel,
            p.tx_fallback,
            p.probes,
            p.cpu_us_per_probe
        ));
    }
    let ratio = |f: fn(&Phase) -> f64| mean(phases, "on", f) / mean(phases, "off", f);
    format!(
        "\n## RTT under CPU contention: kernel send timestamps on and off\n\n\
         Generated by `xtask/src/bench/collector/contention.rs`, in the same run as the table above.\n\n\
         - One path: the collector probes 10.200.0.2 across the veth pair from {SOCKETS} sockets at\n  \
           {RATE} probes/s in total, answered by the XDP reflector (generic mode).\n\
         - {BUSY_LOOPS} busy-loop processes (`timeout … sh -c 'while :; do :; done'`, killed when the\n  \
           step ends) compete for the machine's two cores throughout.\n\
         - Phases alternate `--tx-timestamps off`, `on`, `off`, `on`, each a fresh collector and\n  \
           namespace pair; RTT p50/p99 are those of the last completed {INTERVAL_S} s summary\n  \
           interval (`/influxdata`, about {} replies), with its counts of replies timed by the\n  \
           kernel's send timestamp (`tx_kernel`) and by the clock read before `sendto`\n  \
           (`tx_fallback`).\n\
         - CPU per probe: the collector's utime + stime over the window (clock ticks) divided by\n  \
           the probes resolved in it (`probes_lost` + `replies`).\n\
         - On this path the reflection itself takes a few µs (generic XDP answers within the\n  \
           softirq the probe's transmission raises), so what the send timestamp removes (the time\n  \
           from the clock read to the device: the UDP/IP stack, netfilter, the qdisc, and any\n  \
           preemption in between) is a large share of the RTT. Across a real network the same\n  \
           microseconds are a small share of a larger RTT.\n\n\
         | tx-timestamps | RTT p50 µs | RTT p99 µs | tx_kernel | tx_fallback | probes in window | CPU µs per probe |\n\
         |---|---:|---:|---:|---:|---:|---:|\n{rows}\n\
         Ratios on / off (means of the phases of each mode): RTT p50 {:.2}, RTT p99 {:.2},\n\
         CPU per probe {:.2}.\n",
        u64::from(RATE) * INTERVAL_S,
        ratio(|p| p.p50_ms),
        ratio(|p| p.p99_ms),
        ratio(|p| p.cpu_us_per_probe),
    )
}
