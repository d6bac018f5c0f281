//! Validation and resolution of a [`RawConfig`] into a [`CollectorConfig`]:
//! every name a test references must exist, every number must be in range,
//! every target must resolve. Everything defined is checked, used or not, so
//! a typo in an unused entry is caught before it is ever referenced.
//!
//! The agent's [`Limits`] are checked on the way, each before the thing it
//! bounds is allocated or resolved: port group counts before expansion,
//! target counts before any name is resolved, rates once tests are known.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs},
    time::Duration,
};

use super::{
    CollectorConfig, ConfigError, Format, Limits, PortInstance, PortSpec, Target, Test,
    limits::refused_target,
    raw::{RawConfig, RawPort, RawTarget, scalar_string},
};

/// `api.bind` when the file does not set one.
const DEFAULT_API_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5000);

/// Checks and resolves `raw`.
pub fn resolve(
    format: Format,
    raw: &RawConfig,
    limits: &Limits,
) -> Result<CollectorConfig, ConfigError> {
    let interval = raw.summarization.interval;
    if interval < 1 {
        return Err(ConfigError::BadInterval(interval));
    }
    let api_bind = parse_bind(&raw.api.bind)?;

    let mut ports = BTreeMap::new();
    for (name, p) in &raw.ports {
        ports.insert(name.as_str(), port_spec(name, p, limits)?);
    }
    let mut groups = BTreeMap::new();
    for (group, entries) in &raw.port_groups {
        // Counted before anything is expanded: a count of 10^12 must be an
        // error, not an allocation.
        let sockets: i128 = entries.iter().map(|e| i128::from(e.count.max(0))).sum();
        if sockets > limits.max_sockets as i128 {
            return Err(ConfigError::TooManySockets {
                group: group.clone(),
                count: sockets,
                max: limits.max_sockets,
            });
        }
        // Validated but not expanded: only the groups tests use are, once
        // their total is known to be within the limit (a thousand unused
        // groups of the maximum size must not cost a thousand expansions).
        let mut validated = Vec::with_capacity(entries.len());
        for e in entries {
            let spec = *ports
                .get(e.port.as_str())
                .ok_or_else(|| ConfigError::UnknownPort {
                    group: group.clone(),
                    name: e.port.clone(),
                })?;
            if e.count < 1 {
                return Err(ConfigError::BadCount {
                    group: group.clone(),
                    port: e.port.clone(),
                    count: e.count,
                });
            }
            // Within the socket limit (a usize) by the check above.
            validated.push((e.port.as_str(), spec, e.count as usize));
        }
        groups.insert(group.as_str(), (sockets as usize, validated));
    }
    let mut rates = BTreeMap::new();
    for (name, r) in &raw.rate_limits {
        if !(r.cps.is_finite() && r.cps > 0.0) {
            return Err(ConfigError::BadCps {
                name: name.clone(),
                cps: r.cps,
            });
        }
        rates.insert(name.as_str(), r.cps);
    }
    // Counted before any host name is resolved (each may be a DNS query).
    let defined: usize = raw.targets.values().map(Vec::len).sum();
    if defined > limits.max_targets {
        return Err(ConfigError::TooManyTargets {
            what: "targets".into(),
            count: defined,
            max: limits.max_targets,
        });
    }
    let mut target_sets = BTreeMap::new();
    for (name, set) in &raw.targets {
        if set.is_empty() {
            return Err(ConfigError::EmptyTargetSet { name: name.clone() });
        }
        let resolved = set
            .iter()
            .enumerate()
            .map(|(i, t)| target(&format!("targets.{name}[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        target_sets.insert(name.as_str(), resolved);
    }

    let mut tests = Vec::with_capacity(raw.tests.len().min(limits.max_targets));
    let (mut probed, mut sockets) = (0usize, 0usize);
    for (i, t) in raw.tests.iter().enumerate() {
        let targets =
            target_sets
                .get(t.targets.as_str())
                .ok_or_else(|| ConfigError::UnknownTargetSet {
                    test: i,
                    name: t.targets.clone(),
                })?;
        let (group_sockets, entries) =
            groups
                .get(t.port_group.as_str())
                .ok_or_else(|| ConfigError::UnknownPortGroup {
                    test: i,
                    name: t.port_group.clone(),
                })?;
        let cps =
            *rates
                .get(t.rate_limit.as_str())
                .ok_or_else(|| ConfigError::UnknownRateLimit {
                    test: i,
                    name: t.rate_limit.clone(),
                })?;
        // Totals over tests, checked before this test's lists are built.
        probed += targets.len();
        sockets += group_sockets;
        if probed > limits.max_targets {
            return Err(ConfigError::TooManyTargets {
                what: "tests (targets probed, summed over tests)".into(),
                count: probed,
                max: limits.max_targets,
            });
        }
        if sockets > limits.max_sockets {
            return Err(ConfigError::TooManyTestSockets {
                count: sockets,
                max: limits.max_sockets,
            });
        }
        let ports = expand(entries);
        check_families(i, &ports, targets)?;
        tests.push(Test {
            targets_name: t.targets.clone(),
            port_group: t.port_group.clone(),
            rate_limit: t.rate_limit.clone(),
            cps,
            ports,
            targets: targets.clone(),
        });
    }
    check_rates(&tests, limits)?;
    if tests.is_empty() {
        tracing::warn!("the configuration defines no tests: nothing will be probed");
    }
    Ok(CollectorConfig {
        format,
        interval: Duration::from_secs(interval as u64),
        handlers: raw.summarization.handlers,
        api_bind,
        tests,
    })
}

fn parse_bind(bind: &str) -> Result<SocketAddr, ConfigError> {
    let bind = bind.trim();
    if bind.is_empty() {
        return Ok(DEFAULT_API_BIND);
    }
    if let Ok(addr) = bind.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Go's ":5000" means every address.
    if let Some(Ok(port)) = bind.strip_prefix(':').map(str::parse::<u16>) {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    bind.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError::BadBind(bind.to_owned()))
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.parse().ok()
}

/// One socket per count of each entry of a port group.
fn expand(entries: &[(&str, PortSpec, usize)]) -> Vec<PortInstance> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.2).sum());
    for &(name, spec, count) in entries {
        for index in 0..count {
            out.push(PortInstance {
                name: name.to_owned(),
                // `count` is within the socket limit, far below u32::MAX.
                index: index as u32,
                spec,
            });
        }
    }
    out
}

/// The whole configuration's probe rate, and each address's.
fn check_rates(tests: &[Test], limits: &Limits) -> Result<(), ConfigError> {
    let mut total = 0f64;
    let mut per_address: HashMap<IpAddr, f64> = HashMap::new();
    for t in tests {
        let per_target = t.cps * t.ports.len() as f64;
        total += per_target * t.targets.len() as f64;
        for target in &t.targets {
            *per_address.entry(target.addr.ip()).or_default() += per_target;
        }
    }
    // A NaN (not reachable with cps checked above, but cheap) is refused too.
    if total.is_nan() || total > limits.max_probe_rate {
        return Err(ConfigError::ProbeRateTooHigh {
            rate: total,
            max: limits.max_probe_rate,
        });
    }
    let worst = per_address.into_iter().max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((target, rate)) = worst
        && (rate.is_nan() || rate > limits.max_target_rate)
    {
        return Err(ConfigError::TargetRateTooHigh {
            target,
            rate,
            max: limits.max_target_rate,
        });
    }
    Ok(())
}

fn port_spec(name: &str, p: &RawPort, limits: &Limits) -> Result<PortSpec, ConfigError> {
    let context = format!("ports.{name}");
    // The original passed "ip:port" to Go's ListenUDP, where an empty ip
    // means every address.
    let ip = if p.ip.trim().is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        parse_ip(&p.ip).ok_or_else(|| ConfigError::BadIp {
            context: context.clone(),
            value: p.ip.clone(),
        })?
    };
    let port = u16::try_from(p.port).map_err(|_| ConfigError::BadPort {
        context: context.clone(),
        value: p.port,
        range: "0..=65535 (0 = ephemeral)",
    })?;
    let tos = u8::try_from(p.tos).map_err(|_| ConfigError::BadTos {
        name: name.to_owned(),
        tos: p.tos,
    })?;
    if p.timeout <= 0 {
        return Err(ConfigError::BadTimeout {
            name: name.to_owned(),
            timeout: p.timeout,
        });
    }
    if u128::from(p.timeout.unsigned_abs()) > limits.max_timeout.as_millis() {
        return Err(ConfigError::TimeoutTooLong {
            name: name.to_owned(),
            timeout: p.timeout,
            max: limits.max_timeout.as_millis(),
        });
    }
    Ok(PortSpec {
        ip,
        port,
        tos,
        timeout: Duration::from_millis(p.timeout as u64),
    })
}

fn target(context: &str, t: &RawTarget) -> Result<Target, ConfigError> {
    let port = u16::try_from(t.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ConfigError::BadPort {
            context: context.to_owned(),
            value: t.port,
            range: "1..=65535",
        })?;
    let host = t.ip.trim();
    if host.is_empty() {
        return Err(ConfigError::BadIp {
            context: context.to_owned(),
            value: t.ip.clone(),
        });
    }
    let addr = match parse_ip(host) {
        Some(ip) => SocketAddr::new(ip, port),
        None => resolve_host(context, host, port)?,
    };
    if let Some(what) = refused_target(addr.ip()) {
        return Err(ConfigError::RefusedTarget {
            context: context.to_owned(),
            addr: addr.ip(),
            what,
        });
    }
    let mut tags = BTreeMap::new();
    for (k, v) in &t.tags {
        let v = scalar_string(v).ok_or_else(|| ConfigError::BadTag {
            context: context.to_owned(),
            tag: k.clone(),
        })?;
        tags.insert(k.clone(), v);
    }
    Ok(Target {
        host: host.to_owned(),
        addr,
        tags,
    })
}

fn resolve_host(context: &str, host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    // A host name must look like one: anything else is a malformed address,
    // which deserves that error rather than a resolver failure.
    let looks_like_name = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && host.chars().any(|c| c.is_ascii_alphabetic());
    if !looks_like_name {
        return Err(ConfigError::BadIp {
            context: context.to_owned(),
            value: host.to_owned(),
        });
    }
    let err = |reason: String| ConfigError::Resolve {
        context: context.to_owned(),
        host: host.to_owned(),
        reason,
    };
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no addresses".to_owned()))
}

/// A socket bound to a specific address can only reach targets of its own
/// family; wildcard sockets are dual-stack and reach both.
fn check_families(
    test: usize,
    ports: &[PortInstance],
    targets: &[Target],
) -> Result<(), ConfigError> {
    for p in ports {
        if p.spec.ip.is_unspecified() {
            continue;
        }
        for t in targets {
            if p.spec.ip.is_ipv4() != t.addr.is_ipv4() {
                return Err(ConfigError::FamilyMismatch {
                    test,
                    port: p.name.clone(),
                    bind: p.spec.ip,
                    family: if t.addr.is_ipv4() { "IPv4" } else { "IPv6" },
                    target: t.addr,
                });
            }
        }
    }
    Ok(())
}
