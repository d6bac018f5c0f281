//! Agent-side bounds on what a collector configuration may ask for.
//!
//! The configuration comes from the server (or a file), and a server can be
//! wrong or hostile: without bounds one YAML document could make the agent
//! allocate hundreds of gigabytes (in-flight tables sized by rate × timeout),
//! flood one address with probes, or probe multicast groups. Every check
//! here runs while the configuration is resolved, before anything sized by
//! it is allocated (port groups are counted before they are expanded, target
//! sets before their names are resolved), and a configuration over any bound
//! is refused whole: the collector keeps the one in force.
//!
//! The defaults follow the server's default template, 4 ports × 2.0 cps =
//! 8 probes/s per target: [`DEFAULT_MAX_TARGETS`] targets at that rate is
//! exactly [`DEFAULT_MAX_PROBE_RATE`].

use std::{net::IpAddr, time::Duration};

/// Default of `--max-targets`: probed targets, summed over tests.
pub const DEFAULT_MAX_TARGETS: usize = 5_000;
/// Default of `--max-probe-rate`: probes per second over the whole
/// configuration (targets × count × cps, summed over tests). A full group
/// of [`DEFAULT_MAX_TARGETS`] at the server's default 8 probes/s per target.
pub const DEFAULT_MAX_PROBE_RATE: f64 = 40_000.0;
/// Default of `--max-target-rate`: probes per second to any one address.
/// 125 times the server's default of 8, so no sane configuration meets it,
/// while a server cannot point the whole budget at one victim.
pub const DEFAULT_MAX_TARGET_RATE: f64 = 1_000.0;
/// Default of `--max-sockets`: probe sockets (port group counts, summed
/// over tests). The server's template uses 4; each is a file descriptor.
pub const DEFAULT_MAX_SOCKETS: usize = 64;
/// Default of `--max-timeout`: the longest probe timeout. The original's
/// default is 1 s; records live for their timeout, so this bounds memory.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds a configuration must respect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_targets: usize,
    pub max_probe_rate: f64,
    pub max_target_rate: f64,
    pub max_sockets: usize,
    pub max_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_targets: DEFAULT_MAX_TARGETS,
            max_probe_rate: DEFAULT_MAX_PROBE_RATE,
            max_target_rate: DEFAULT_MAX_TARGET_RATE,
            max_sockets: DEFAULT_MAX_SOCKETS,
            max_timeout: DEFAULT_MAX_TIMEOUT,
        }
    }
}

/// Why an address cannot be a probe target, if it cannot: probes to it
/// would reach many hosts (multicast, broadcast) or none in particular
/// (unspecified).
pub fn refused_target(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Some("the broadcast address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_wide_addresses_are_refused_and_unicast_is_not() {
        for bad in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "::ffff:224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(refused_target(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for good in ["127.0.0.1", "10.0.0.255", "::1", "2001:db8::1"] {
            assert!(refused_target(good.parse().unwrap()).is_none(), "{good}");
        }
    }

    #[test]
    fn defaults_fit_a_full_group_at_the_server_template() {
        let l = Limits::default();
        assert_eq!(l.max_probe_rate, l.max_targets as f64 * 4.0 * 2.0);
    }
}
