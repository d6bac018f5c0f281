//! Source allowlists: which hosts the reflector answers when `--allow` is
//! given, so it cannot be used to bounce traffic at arbitrary addresses.

use std::{fmt, net::IpAddr, str::FromStr};

use super::decide::canonical;

/// An address prefix such as `10.0.0.0/8` or `fd00::/16`; a bare address is
/// a host prefix (/32, /128). Bits past the prefix length are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpCidr {
    addr: IpAddr,
    len: u8,
}

/// A malformed prefix in `--allow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address prefix {0:?}: expected an address or address/length (e.g. 10.0.0.0/8, fd00::/16)"
)]
pub struct ParseCidrError(String);

impl IpCidr {
    /// `addr/len`; `None` if `len` exceeds the address width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then(|| Self {
            addr: mask(addr, len),
            len,
        })
    }

    /// A single host.
    pub fn host(addr: IpAddr) -> Self {
        let addr = canonical(addr);
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for IpCidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCidrError(s.to_owned());
        let s = s.trim();
        match s.split_once('/') {
            None => s.parse().map(Self::host).map_err(|_| err()),
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| err())?;
                let len: u8 = l.parse().map_err(|_| err())?;
                Self::new(addr, len).ok_or_else(err)
            }
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The set of allowed source prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    prefixes: Vec<IpCidr>,
}

impl Allowlist {
    pub fn new(mut prefixes: Vec<IpCidr>) -> Self {
        prefixes.sort();
        prefixes.dedup();
        Self { prefixes }
    }

    /// Linear scan: allowlists are a group's members, tens to hundreds of
    /// entries, and the scan touches one cache line per few entries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.prefixes.iter().any(|p| p.contains(ip))
    }

    pub fn prefixes(&self) -> &[IpCidr] {
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
    Static(Vec<IpCidr>),
}

impl FromStr for AllowSpec {
    type Err = ParseCidrError;

    /// `""` or `any` = [`AllowSpec::Anyone`]; `peers`; or `CIDR,CIDR,...`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "any" => Ok(Self::Anyone),
            "peers" => Ok(Self::Peers),
            list => list
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Static),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn parses_and_matches_prefixes() {
        let c: IpCidr = "10.1.2.3/16".parse().expect("valid");
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains(ip("10.1.255.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "v4-mapped counts as v4");
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("fd00::1")));
        let h: IpCidr = "fd00::1".parse().expect("valid");
        assert_eq!(h.prefix_len(), 128);
        assert!(h.contains(ip("fd00::1")) && !h.contains(ip("fd00::2")));
        let all: IpCidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("192.0.2.1")));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "nonsense",
            "10.0.0.0/",
            "/8",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_spec_forms() {
        assert_eq!("".parse(), Ok(AllowSpec::Anyone));
        assert_eq!("peers".parse(), Ok(AllowSpec::Peers));
        let spec: AllowSpec = "10.0.0.0/8, fd00::/16".parse().expect("valid");
        let AllowSpec::Static(list) = spec else {
            panic!("static list expected")
        };
        let allow = Allowlist::new(list);
        assert!(allow.contains(ip("10.9.9.9")) && allow.contains(ip("fd00::9")));
        assert!(!allow.contains(ip("192.0.2.1")));
        assert!("10.0.0.0/8,garbage".parse::<AllowSpec>().is_err());
    }
}
