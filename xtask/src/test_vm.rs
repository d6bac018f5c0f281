//! `cargo xtask test-vm`: the XDP reflector on real kernels and a real NIC
//! driver. Boots Debian's own kernels (x86_64 and arm64) under qemu's
//! software emulation with a small initramfs (see [`initramfs`]), and
//! checks from the host, over a tap device, that the guest's agent reflects
//! probes on its virtio-net interface in each mode: XDP native (driver),
//! XDP generic, and the userspace fallback.
//!
//! - [`arch`]: per-architecture names, qemu machine, modules.
//! - [`debian`]: fetching and caching the kernel and busybox packages.
//! - [`initramfs`]: the guest's root file system and `/init`.
//! - [`modules`]: which kernel modules, in which order.
//! - [`net`]: the tap in a namespace of its own, addresses.
//! - [`guest`]: qemu, its console, bounded waits.
//! - [`probes`]: the host's probes and checks.
//! - [`collector`]: the real collector against the guest.
//! - [`testrun`]: the BPF_PROG_TEST_RUN table inside the aarch64 guest.

mod arch;
mod collector;
mod debian;
mod guest;
mod initramfs;
mod modules;
mod net;
mod probes;
mod testrun;

use std::{
    fs,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use arch::GuestArch;
use clap::Args;

use crate::{cmd, dist, prereqs};

/// What `test-vm` needs from apt, beyond the kernels it downloads itself.
pub const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("qemu-system-arm", "qemu-system-aarch64"),
    ("cpio", "cpio"),
    ("ethtool", "ethtool"),
    ("iproute2", "ip"),
];

/// Default bound on a guest's boot (qemu start to agent running), seconds.
const BOOT_TIMEOUT_S: u64 = 240;
/// Default probes per guest, address family and mode.
const PROBES: u64 = 60;

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Guest architecture: x86_64, aarch64 or all.
    #[arg(long, default_value = "all", value_parser = parse_arch)]
    pub arch: Archs,
    /// Longest a guest may take from qemu's start to its agent running
    /// (software emulation on a loaded host is slow; a hung guest fails
    /// after this).
    #[arg(long, env = "LLAMA_VM_BOOT_TIMEOUT", default_value_t = BOOT_TIMEOUT_S)]
    pub boot_timeout: u64,
    /// Probes sent to each guest per address family and mode.
    #[arg(long, env = "LLAMA_VM_PROBES", default_value_t = PROBES)]
    pub probes: u64,
    /// Boots one guest per architecture whose `/init` never starts the
    /// agent, with the dist binaries already built, and nothing else: the
    /// run must end within `--boot-timeout` with the console, leaving no
    /// qemu, tap or namespace behind (what the cleanup test drives).
    #[arg(long, hide = true)]
    pub hung_guest: bool,
}

impl Options {
    /// Every architecture, the defaults: what `cargo xtask test` runs.
    pub fn all() -> Self {
        Self {
            arch: Archs(GuestArch::ALL.to_vec()),
            boot_timeout: BOOT_TIMEOUT_S,
            probes: PROBES,
            hung_guest: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Archs(Vec<GuestArch>);

fn parse_arch(s: &str) -> Result<Archs, String> {
    if s == "all" {
        return Ok(Archs(GuestArch::ALL.to_vec()));
    }
    GuestArch::from_name(s)
        .map(|a| Archs(vec![a]))
        .ok_or_else(|| format!("unknown arch `{s}`: x86_64, aarch64 or all"))
}

/// The reflector modes each guest runs, with the agent's `--mode` and the
/// line its log must show for `eth0`.
const MODES: [(&str, Option<&str>); 3] = [
    ("xdp", Some("eth0: xdp native")),
    ("xdp-skb", Some("eth0: xdp generic")),
    ("userspace", None),
];

/// Installs what the guests need from apt (see [`VM_PACKAGES`]).
pub fn ensure_packages() -> Result<()> {
    prereqs::ensure_aligned(VM_PACKAGES, &[("qemu-utils", "qemu-system-common")])
        .context("installing qemu")
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    if !cmd::is_root() {
        bail!("test-vm needs root (tap devices, network namespaces)");
    }
    ensure_packages()?;
    // The guests' agents, and the host's (x86_64) for the collector.
    let mut archs: Vec<dist::Arch> = opts.arch.0.iter().map(|a| a.dist()).collect();
    if !archs.contains(&dist::Arch::X86_64) {
        archs.push(dist::Arch::X86_64);
    }
    if opts.hung_guest {
        // Driven from a test while cargo may hold the build locks: use
        // what `dist` built, build nothing.
        for &arch in &archs {
            let agent = dist::artifacts(arch).agent;
            if !agent.is_file() {
                bail!(
                    "{} is missing: run `cargo xtask dist` first",
                    agent.display()
                );
            }
        }
    } else {
        dist::build(&archs)?;
    }
    for &arch in &opts.arch.0 {
        run_arch(arch, opts)?;
    }
    eprintln!("test-vm: all passed in {:.0?}", started.elapsed());
    Ok(())
}

fn run_arch(arch: GuestArch, opts: &Options) -> Result<()> {
    debian::ensure_architecture(arch.debian())?;
    let kernel_package = debian::resolve_meta(arch.kernel_meta(), arch.debian())?;
    let kernel = debian::fetch(&kernel_package, arch.debian())?;
    let busybox = debian::fetch("busybox-static", arch.debian())?;
    println!(
        "{arch}: kernel {} {}, busybox-static {}, {}",
        kernel.package,
        kernel.version,
        busybox.version,
        cmd::checked(std::process::Command::new(arch.qemu()).arg("--version"))?
            .lines()
            .next()
            .unwrap_or("qemu")
    );
    let agent = dist::artifacts(arch.dist()).agent;
    // The aarch64 guest also runs the exact-bytes table on the arm64 JIT.
    let tests = match arch {
        _ if opts.hung_guest => None,
        GuestArch::Aarch64 => Some(testrun::build(arch)?),
        GuestArch::X86_64 => None,
    };
    // The hung guest has its own files: a test may boot it while a real
    // run's console is being read.
    let work = cmd::target_dir().join("test-vm").join(if opts.hung_guest {
        format!("hung-{arch}")
    } else {
        arch.to_string()
    });
    fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let initramfs = initramfs::build(
        &initramfs::Parts {
            arch,
            kernel: &kernel,
            busybox: &busybox,
            agent: &agent,
            tests: tests.as_deref(),
        },
        &work,
    )?;
    let image = initramfs::kernel_image(&kernel)?;
    let modes: &[(&str, Option<&str>)] = if opts.hung_guest {
        &[(initramfs::HUNG_MODE, None)]
    } else {
        &MODES
    };
    for &(mode, attached) in modes {
        run_mode(arch, mode, attached, &image, &initramfs, &work, opts)
            .with_context(|| format!("{arch} guest, reflector mode {mode}"))?;
    }
    if tests.is_some() {
        run_testrun(arch, &image, &initramfs, &work, opts)
            .with_context(|| format!("{arch} guest, BPF_PROG_TEST_RUN table"))?;
    }
    Ok(())
}

fn run_testrun(
    arch: GuestArch,
    image: &std::path::Path,
    initramfs: &std::path::Path,
    work: &std::path::Path,
    opts: &Options,
) -> Result<()> {
    let link = net::Link::new()?;
    let mut guest = guest::Guest::start(
        &guest::Boot {
            arch,
            kernel: image,
            initramfs,
            mode: "testrun",
            console: work.join("console-testrun.log"),
        },
        &link,
    )?;
    let boot_timeout = Duration::from_secs(opts.boot_timeout);
    // The point is the JIT: the interpreter would pass the table too.
    let jit = guest.wait_for("llama-vm: bpf_jit_enable=", boot_timeout)?;
    if !jit.trim_end().ends_with("=1") {
        bail!(
            "the guest's BPF JIT is off: {}\n{}",
            jit.trim(),
            guest.tail()
        );
    }
    guest.wait_for("test result:", boot_timeout)?;
    let summary = testrun::check(&guest.console_text())
        .map_err(|e| anyhow::anyhow!("{e}\n{}", guest.tail()))?;
    println!(
        "{arch} testrun  : {} {summary} ({:.1?})",
        testrun::FILTER,
        guest.started.elapsed()
    );
    Ok(())
}

fn run_mode(
    arch: GuestArch,
    mode: &str,
    attached: Option<&str>,
    image: &std::path::Path,
    initramfs: &std::path::Path,
    work: &std::path::Path,
    opts: &Options,
) -> Result<()> {
    let link = net::Link::new()?;
    let console: PathBuf = work.join(format!("console-{mode}.log"));
    let mut guest = guest::Guest::start(
        &guest::Boot {
            arch,
            kernel: image,
            initramfs,
            mode,
            console,
        },
        &link,
    )?;
    let boot_timeout = Duration::from_secs(opts.boot_timeout);
    guest.wait_for("reflector running", boot_timeout)?;
    let booted = guest.started.elapsed();
    if let Some(line) = attached {
        guest.wait_for(line, Duration::from_secs(1))?;
    }
    if let Some(line) = guest
        .console_text()
        .lines()
        .find(|l| l.contains("locked tx mode"))
    {
        bail!(
            "XDP_TX has no queue of its own: {}\n{}",
            line.trim(),
            guest.tail()
        );
    }
    let (v4, v6): (IpAddr, IpAddr) = (net::GUEST_V4.parse()?, net::GUEST_V6.parse()?);
    let count = opts.probes;
    let (r4, r6, junk) = link.ns.run(|| -> Result<_> {
        let junk = probes::malformed(v4)? + probes::malformed(v6)?;
        let r4 = probes::reflect(v4, count)?;
        let r6 = probes::reflect(v6, count)?;
        Ok((r4, r6, junk))
    })?;
    let mut problems: Vec<String> = r4.problems.iter().chain(&r6.problems).cloned().collect();
    for (name, r) in [("IPv4", &r4), ("IPv6", &r6)] {
        if r.answered != r.sent {
            problems.push(format!(
                "{name}: {} of {} probes answered",
                r.answered, r.sent
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{}\n{}", problems.join("\n"), guest.tail());
    }
    // The guest's own count of what it reflected must match what was sent.
    let path = if mode == "userspace" {
        "userspace counters:"
    } else {
        "xdp counters:"
    };
    let expected = r4.sent + r6.sent;
    let reflected = reflected_reaches(&guest, path, expected);
    if reflected != Some(expected) {
        bail!(
            "the guest's {path} reflected={reflected:?}, the host sent {expected} probes\n{}",
            guest.tail()
        );
    }
    let counts = collector::run(&link, &dist::artifacts(dist::Arch::X86_64).agent, work)?;
    let wanted = expected + counts.sent;
    let reflected = reflected_reaches(&guest, path, wanted);
    if counts.sent == 0
        || counts.lost != 0
        || counts.late != 0
        || counts.duplicate != 0
        || reflected != Some(wanted)
    {
        bail!(
            "collector: {counts:?}; the guest's {path} reflected={reflected:?}, {wanted} expected\n{}",
            guest.tail()
        );
    }
    println!(
        "{arch} {mode:<9}: collector sent {} probes, {} replies, 0 lost/late/duplicate, guest agrees",
        counts.sent, counts.replies
    );
    println!(
        "{arch} {mode:<9}: agent up {:.1?} after qemu started; {} probes (IPv4+IPv6), 0 % loss, TOS/TTL 64 ok, guest reflected={expected}; {junk} malformed datagrams unanswered",
        booted, expected
    );
    drop(guest);
    drop(link);
    Ok(())
}

/// Waits (bounded) for the guest's logged `reflected` counter of `path`
/// to reach `wanted`; returns the last value seen. The agent logs its
/// counters every second (`--stats-interval 1`).
fn reflected_reaches(guest: &guest::Guest, path: &str, wanted: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = last_counter(&guest.console_text(), path, "reflected");
        if seen == Some(wanted) || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The value of `name=` in the last console line containing `prefix`.
fn last_counter(console: &str, prefix: &str, name: &str) -> Option<u64> {
    let line = console.lines().rev().find(|l| l.contains(prefix))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::last_counter;

    #[test]
    fn reads_the_last_counter_line() {
        let console = "x xdp counters: reflected=1 passed=3\n\
                       y xdp counters: reflected=12 passed=4\nother\n";
        assert_eq!(
            last_counter(console, "xdp counters:", "reflected"),
            Some(12)
        );
        assert_eq!(last_counter(console, "xdp counters:", "nothing"), None);
    }
}
