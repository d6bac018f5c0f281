//! Source allowlists: which hosts the reflector answers when `--allow` is
//! given, so it cannot be used to bounce traffic at arbitrary addresses.
//!
//! Prefixes are [`ipnet::IpNet`]s kept in one canonical form: host bits
//! cleared, and an IPv4-mapped IPv6 prefix (`::ffff:10.0.0.0/104`) stored as
//! the IPv4 prefix it covers, because sources are compared as IPv4 once a
//! dual-stack socket has unmapped them.

use std::{net::IpAddr, str::FromStr};

use ipnet::{IpNet, Ipv4Net};

/// A malformed prefix in `--allow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address prefix {0:?}: expected an address or address/length (e.g. 10.0.0.0/8, fd00::/16)"
)]
pub struct ParsePrefixError(pub String);

/// Length of the `::ffff:0:0/96` prefix that IPv4-mapped addresses share.
const MAPPED_PREFIX_LEN: u8 = 96;

/// `net` in canonical form: host bits cleared, IPv4-mapped IPv6 as IPv4.
pub fn canonical(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= MAPPED_PREFIX_LEN
        && let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - MAPPED_PREFIX_LEN)
    {
        return IpNet::V4(mapped.trunc());
    }
    net
}

/// The prefix holding only `ip`.
pub fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip.to_canonical())
}

/// Parses `addr/len`, or a bare address as a host prefix, into canonical form.
pub fn parse_prefix(text: &str) -> Result<IpNet, ParsePrefixError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .map(canonical)
        .or_else(|_| text.parse::<IpAddr>().map(host))
        .map_err(|_| ParsePrefixError(text.to_owned()))
}

/// The set of allowed source prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    prefixes: Vec<IpNet>,
}

impl Allowlist {
    pub fn new(prefixes: Vec<IpNet>) -> Self {
        let mut prefixes: Vec<IpNet> = prefixes.into_iter().map(canonical).collect();
        prefixes.sort();
        prefixes.dedup();
        Self { prefixes }
    }

    /// Linear scan: allowlists are a group's members, tens to hundreds of
    /// entries, and the scan touches one cache line per few entries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.prefixes.iter().any(|p| p.contains(&ip))
    }

    pub fn prefixes(&self) -> &[IpNet] {
        &self.prefixes
    }
}

/// What `--allow` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowSpec {
    /// Everyone (the default).
    Anyone,
    /// The members of the agent's group, as the server lists them. Until the
    /// first membership arrives nobody is answered (fail closed).
    Peers,
    /// A static list of prefixes.
    Static(Vec<IpNet>),
}

impl FromStr for AllowSpec {
    type Err = ParsePrefixError;

    /// `any` = [`AllowSpec::Anyone`]; `peers`, both in any letter case; or
    /// `CIDR,CIDR,...` with at least one prefix, where a bare address is a
    /// host. The error names the item that is none of these.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("any") {
            return Ok(Self::Anyone);
        }
        if s.eq_ignore_ascii_case("peers") {
            return Ok(Self::Peers);
        }
        let prefixes = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(parse_prefix)
            .collect::<Result<Vec<_>, _>>()?;
        if prefixes.is_empty() {
            return Err(ParsePrefixError(String::new()));
        }
        Ok(Self::Static(prefixes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    fn one(s: &str) -> Allowlist {
        Allowlist::new(vec![parse_prefix(s).expect("valid")])
    }

    #[test]
    fn parses_and_matches_prefixes() {
        let c = parse_prefix("10.1.2.3/16").expect("valid");
        assert_eq!(c.to_string(), "10.1.0.0/16");
        let c = one("10.1.2.3/16");
        assert!(c.contains(ip("10.1.255.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "v4-mapped counts as v4");
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("fd00::1")));
        let h = parse_prefix("fd00::1").expect("valid");
        assert_eq!(h.prefix_len(), 128);
        let h = one("fd00::1");
        assert!(h.contains(ip("fd00::1")) && !h.contains(ip("fd00::2")));
        assert!(one("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert_eq!(
            parse_prefix("::ffff:10.0.0.0/104").expect("valid"),
            parse_prefix("10.0.0.0/8").expect("valid"),
            "a mapped prefix is the IPv4 prefix it covers"
        );
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "nonsense",
            "10.0.0.0/",
            "/8",
            "1.2.3.4/x",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_spec_forms() {
        assert_eq!("any".parse(), Ok(AllowSpec::Anyone));
        assert_eq!("peers".parse(), Ok(AllowSpec::Peers));
        assert_eq!(" Peers ".parse(), Ok(AllowSpec::Peers));
        let spec: AllowSpec = "10.0.0.0/8, fd00::/16".parse().expect("valid");
        let AllowSpec::Static(list) = spec else {
            panic!("static list expected")
        };
        let allow = Allowlist::new(list);
        assert!(allow.contains(ip("10.9.9.9")) && allow.contains(ip("fd00::9")));
        assert!(!allow.contains(ip("192.0.2.1")));
        assert!("10.0.0.0/8,garbage".parse::<AllowSpec>().is_err());
        assert!(" , ".parse::<AllowSpec>().is_err(), "no prefix at all");
    }
}
