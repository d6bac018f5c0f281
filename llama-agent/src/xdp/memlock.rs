//! RLIMIT_MEMLOCK for the XDP reflector's maps on kernels before 5.11.
//!
//! Until Linux 5.11 the memory of BPF maps and programs is charged to the
//! loading process's RLIMIT_MEMLOCK, whose usual default (64 KiB, or 8 MiB
//! under systemd) is too small for the reflector's maps: loading fails with
//! EPERM. From 5.11 on it is charged to the memory cgroup and the limit is
//! not consulted. So on older kernels, or when the version cannot be read,
//! the agent raises its own limit to unlimited before loading. That needs
//! CAP_SYS_RESOURCE or a hard limit that already allows it (systemd's
//! `LimitMEMLOCK=infinity`, `--ulimit memlock=-1` in a container).

use std::{io, sync::Once};

use tracing::{info, warn};

/// The first kernel that charges BPF memory to the memory cgroup.
const CGROUP_ACCOUNTING_SINCE: (u32, u32) = (5, 11);

/// What [`ensure_for_bpf`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel does not charge BPF memory to RLIMIT_MEMLOCK.
    NotNeeded,
    /// The limit was already unlimited.
    AlreadyUnlimited,
    /// The soft and hard limits were raised to unlimited.
    Raised,
}

/// Whether a kernel with this release string (`uname -r`, e.g.
/// `5.10.0-28-amd64`) charges BPF memory to RLIMIT_MEMLOCK. A release that
/// does not parse counts as old: raising the limit is harmless.
pub fn kernel_charges_memlock(release: &str) -> bool {
    let mut parts = release.trim().split(['.', '-', '+']);
    let number = |p: Option<&str>| p.and_then(|s| s.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) < CGROUP_ACCOUNTING_SINCE,
        _ => true,
    }
}

/// Raises RLIMIT_MEMLOCK to unlimited if the running kernel needs it.
pub fn ensure_for_bpf() -> io::Result<Outcome> {
    // An unreadable release (a restricted /proc) counts as old, see above.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !kernel_charges_memlock(&release) {
        return Ok(Outcome::NotNeeded);
    }
    raise_to_unlimited()
}

/// Sets the soft and hard RLIMIT_MEMLOCK of this process to unlimited.
pub fn raise_to_unlimited() -> io::Result<Outcome> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.rlim_cur == libc::RLIM_INFINITY {
        return Ok(Outcome::AlreadyUnlimited);
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Outcome::Raised)
}

/// [`ensure_for_bpf`] once per process, logging what it did.
pub fn ensure_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match ensure_for_bpf() {
        Ok(Outcome::Raised) => info!(
            "raised RLIMIT_MEMLOCK to unlimited: this kernel (< 5.11) charges BPF maps to it"
        ),
        Ok(_) => {}
        Err(e) => warn!(
            "cannot raise RLIMIT_MEMLOCK ({e}); on kernels before 5.11 loading the XDP program may fail: run with LimitMEMLOCK=infinity (systemd) or CAP_SYS_RESOURCE"
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_5_11_charge_memlock() {
        for old in [
            "4.19.0-26-amd64",
            "5.4.0",
            "5.10.0-28-arm64",
            "5.10",
            "4.9.253-tegra",
        ] {
            assert!(kernel_charges_memlock(old), "{old}");
        }
        for new in [
            "5.11.0",
            "5.15.0-91-generic",
            "6.1.0-47-cloud-amd64",
            "6.18.0",
            "10.0",
        ] {
            assert!(!kernel_charges_memlock(new), "{new}");
        }
        for garbage in ["", "linux", "5", "x.y", "\n"] {
            assert!(kernel_charges_memlock(garbage), "{garbage:?} counts as old");
        }
    }

    /// Whether this process holds CAP_SYS_RESOURCE (bit 24 of CapEff): root
    /// in a sandbox may not.
    fn has_cap_sys_resource() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .expect("CapEff in /proc/self/status");
        eff & (1 << 24) != 0
    }

    /// The raise itself, on this process: with CAP_SYS_RESOURCE it must
    /// succeed and leave the limit unlimited; without it (and a finite hard
    /// limit) the kernel refuses, and that must come back as EPERM.
    #[test]
    fn raise_sets_unlimited_or_reports_why_not() {
        match raise_to_unlimited() {
            Ok(_) => {
                let mut now = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: as in raise_to_unlimited.
                assert_eq!(
                    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut now) },
                    0
                );
                assert_eq!(now.rlim_cur, libc::RLIM_INFINITY);
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                assert!(!has_cap_sys_resource(), "CAP_SYS_RESOURCE may raise it");
            }
        }
    }
}
