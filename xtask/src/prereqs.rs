//! Debian packages the tests and the demo need, installed when missing.

use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

/// Packages and the command each one provides (what we check for).
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("ethtool", "ethtool"),
    ("nftables", "nft"),
    ("bpftool", "bpftool"),
    ("influxdb", "influxd"),
    // The shared registry of several servers.
    ("redis-server", "redis-server"),
    // The dist binaries under emulation, the images, the unit checks.
    ("qemu-user", "qemu-aarch64"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("systemd", "systemd-analyze"),
    // The live matrix page's browser test.
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
];

/// What the demo needs.
pub const DEMO_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("ethtool", "ethtool"),
];

/// Installs every package whose command is missing. Needs root; without it,
/// says exactly what to install.
pub fn ensure(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, command)| !has_command(command))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing packages: {}; install them with `sudo apt-get install -y {}` or run as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("installing missing packages: {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    cmd::run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    cmd::run(&mut install)?;
    Ok(())
}

pub fn has_command(command: &str) -> bool {
    let mut check = Command::new(command);
    // Debian's bpftool is a wrapper that exists even when it cannot run for
    // this kernel; asking it for its version is the real check.
    check.arg(if command == "bpftool" {
        "version"
    } else {
        "--version"
    });
    if command == "bpftool" {
        return cmd::output(&mut check).is_some();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
