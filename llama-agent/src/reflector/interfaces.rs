//! Interface facts the attach logic needs: which interfaces carry the
//! default routes (the `--interface` default) and which driver an interface
//! has (native XDP on veth needs help from the peer, see [`attach`]).
//!
//! [`attach`]: super::attach

use std::{fs, io, os::fd::AsRawFd};

/// Interfaces of the IPv4 and IPv6 default routes, in table order, without
/// duplicates and without `lo` (where the kernel parks unreachable defaults).
pub fn default_route_interfaces() -> Vec<String> {
    let mut out = Vec::new();
    let v4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for iface in parse_route_v4(&v4).into_iter().chain(parse_route_v6(&v6)) {
        if iface != "lo" && !out.contains(&iface) {
            out.push(iface);
        }
    }
    out
}

/// `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`
/// in hex; a default route has destination and mask 0. Flag 0x1 = RTF_UP.
fn parse_route_v4(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let up = f.get(3).and_then(|x| u32::from_str_radix(x, 16).ok())? & 0x1 != 0;
            (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" && up)
                .then(|| f[0].to_owned())
        })
        .collect()
}

/// `/proc/net/ipv6_route`: `dest plen src splen nexthop metric refcnt use flags iface`;
/// a default route has an all-zero destination with prefix length 0 and is
/// not a reject route (flag 0x0200 = RTF_REJECT).
fn parse_route_v6(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            let default = f[0].bytes().all(|b| b == b'0') && f[1] == "00";
            (default && flags & 0x0200 == 0 && flags & 0x1 != 0).then(|| f[9].to_owned())
        })
        .collect()
}

/// The driver behind `iface` (ETHTOOL_GDRVINFO), e.g. `veth`, `virtio_net`.
pub fn driver(iface: &str) -> io::Result<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if iface.len() >= libc::IFNAMSIZ || iface.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: all-zero is valid for this plain C struct.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &raw mut info,
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    let socket =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a drvinfo
    // struct that lives across the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL as _, &raw mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_routes() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                  wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n";
        assert_eq!(parse_route_v4(v4), vec!["eth0", "wlan0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth1\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                  fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(parse_route_v6(v6), vec!["eth1"]);
        assert!(parse_route_v4("garbage\nmore garbage").is_empty());
    }
}
