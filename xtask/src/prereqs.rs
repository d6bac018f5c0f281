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
    ensure_aligned(packages, &[])
}

/// An installed package that must have the same version as another one
/// about to be installed: `(installed, follows)`.
pub type Alignment<'a> = (&'a str, &'a str);

/// Like [`ensure`], and when an install is needed, each `(installed,
/// follows)` pair whose `installed` package has another version than the
/// candidate of `follows` is moved to that candidate in the same apt call
/// (downgrading if need be). Some images carry a backported qemu-utils
/// that Breaks Debian's own qemu-system-common; nothing depends on it, so
/// aligning it is the least intrusive way to get the emulators.
pub fn ensure_aligned(packages: &[(&str, &str)], align: &[Alignment]) -> Result<()> {
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
    let pins: Vec<String> = align
        .iter()
        .filter_map(|&(installed, follows)| {
            let have = installed_version(installed)?;
            let want = candidate_version(follows)?;
            (have != want).then(|| {
                eprintln!("{installed} {have} is installed; {follows} needs {want}: aligning it");
                format!("{installed}={want}")
            })
        })
        .collect();
    if !pins.is_empty() {
        install.arg("--allow-downgrades").args(&pins);
    }
    cmd::run(&mut install)?;
    Ok(())
}

/// The version of an installed package, if it is installed.
fn installed_version(package: &str) -> Option<String> {
    let out = cmd::output(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${db:Status-Status} ${Version}",
        package,
    ]))?;
    parse_installed(&out)
}

fn parse_installed(dpkg_query: &str) -> Option<String> {
    let version = dpkg_query.trim().strip_prefix("installed ")?.trim();
    (!version.is_empty()).then(|| version.to_owned())
}

/// The version apt would install for a package.
fn candidate_version(package: &str) -> Option<String> {
    let out = cmd::output(Command::new("apt-cache").args(["policy", package]))?;
    parse_candidate(&out)
}

fn parse_candidate(policy: &str) -> Option<String> {
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))?
        .trim();
    (!version.is_empty() && version != "(none)").then(|| version.to_owned())
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

#[cfg(test)]
mod tests {
    use super::{parse_candidate, parse_installed};

    #[test]
    fn reads_installed_and_candidate_versions() {
        assert_eq!(
            parse_installed("installed 1:10.0.2+ds-2+deb13u1~bpo12+1"),
            Some("1:10.0.2+ds-2+deb13u1~bpo12+1".to_owned())
        );
        assert_eq!(parse_installed("config-files 1:7.2"), None);
        assert_eq!(parse_installed("not-installed "), None);
        let policy = "qemu-system-common:\n  Installed: (none)\n  Candidate: 1:7.2+dfsg-7+deb12u18+b3\n  Version table:\n";
        assert_eq!(
            parse_candidate(policy),
            Some("1:7.2+dfsg-7+deb12u18+b3".to_owned())
        );
        assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
        assert_eq!(parse_candidate(""), None);
    }
}
