//! Keeps the process under test alone on its CPU: threaded NAPI on both
//! ends of the veth pair, their NAPI kthreads pinned to the other CPU, the
//! process under test pinned to [`MEASURED_CPU`]. Softirqs of other traffic
//! then stay off the measured CPU. The probes and replies themselves do not
//! go through NAPI: a veth hands a socket's small UDP datagrams to its peer
//! through the sending CPU's backlog (they are not GRO-eligible without
//! `rx-udp-gro-forwarding`), so their receive, the generic-XDP reflection
//! and the reply's delivery run in the softirq the send raises, charged to
//! the sender, the collector and the floor client alike. (With UDP GRO
//! forwarding on, the single NAPI thread drops a large share of the probes
//! at 100,000 probes/s on a 2-core VM.)

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use llama_testkit::NetNs;

/// CPU of the process under test (the collector or the floor client).
pub const MEASURED_CPU: usize = 0;
/// CPU of the NAPI kthreads, hence of the reflector.
pub const KERNEL_CPU: usize = 1;

/// Pins the calling thread to `cpu`.
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
    pin(0, cpu)
}

/// Pins thread or process `pid` (0: the caller) to `cpu`.
pub fn pin(pid: i32, cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set)
        .with_context(|| format!("pin {pid} to CPU {cpu}"))
}

/// Turns on threaded NAPI for `dev` in `ns` and pins its kthreads
/// (`napi/<dev>-<id>`) to [`KERNEL_CPU`]; returns how many it pinned.
pub fn threaded_napi(ns: &NetNs, dev: &str) -> anyhow::Result<usize> {
    // A veth has NAPI (hence NAPI threads) only with GRO on or a native XDP
    // program; without, `threaded` refuses with EIO.
    let out = ns.exec("ethtool", &["-K", dev, "gro", "on"])?;
    if !out.status.success() {
        bail!(
            "GRO on {dev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let out = ns.exec(
        "sh",
        &["-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")],
    )?;
    if !out.status.success() {
        bail!(
            "threaded NAPI on {dev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // A task's name holds 15 bytes: match the prefix that fits.
    let mut name = format!("napi/{dev}-");
    name.truncate(15);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pinned = 0;
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end().starts_with(&name) {
                pin(pid, KERNEL_CPU)?;
                pinned += 1;
            }
        }
        if pinned > 0 {
            return Ok(pinned);
        }
        if Instant::now() > deadline {
            bail!("no NAPI kthread named {name}* appeared for {dev}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
