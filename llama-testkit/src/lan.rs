//! A small LAN of namespaces: a hub namespace whose bridge holds the hub's
//! address, and host namespaces attached to the bridge by veths, each with
//! an address in the hub's /24. A server in the hub reaches every host and
//! the hosts reach each other through the bridge; everything is removed
//! when the [`Lan`] drops (removing a namespace removes its veths).

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
};

use crate::{NetNs, Veth};

/// The bridge's name inside the hub namespace.
pub const BRIDGE: &str = "br0";

/// The port of the server [`Lan::server_command`] runs in the hub.
pub const SERVER_PORT: u16 = 5000;

/// One host of a [`Lan`].
#[derive(Debug)]
pub struct LanHost {
    pub ns: NetNs,
    /// `veth.a` is the host's interface; `veth.b` is its port on the bridge,
    /// in the hub namespace.
    pub veth: Veth,
    pub ip: Ipv4Addr,
}

/// A hub and its hosts; see the module documentation.
#[derive(Debug)]
pub struct Lan {
    pub hub: NetNs,
    pub hub_ip: Ipv4Addr,
    /// Host `i` (1-based) is `hosts[i - 1]`, at [`Lan::host_ip`]`(hub_ip, i)`.
    pub hosts: Vec<LanHost>,
}

impl Lan {
    /// A hub at `hub_ip`/24 and `hosts` hosts (at most 244).
    pub fn new(hub_ip: Ipv4Addr, hosts: u8) -> io::Result<Self> {
        let hub = NetNs::new()?;
        hub.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        hub.add_addr(BRIDGE, &format!("{hub_ip}/24"))?;
        hub.ip(&["link", "set", BRIDGE, "up"])?;
        let hosts = (1..=hosts)
            .map(|i| {
                let ns = NetNs::new()?;
                let veth = Veth::new(&ns, &hub)?;
                let ip = Self::host_ip(hub_ip, i);
                ns.add_addr(&veth.a, &format!("{ip}/24"))?;
                hub.ip(&["link", "set", &veth.b, "master", BRIDGE])?;
                Ok(LanHost { ns, veth, ip })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { hub, hub_ip, hosts })
    }

    /// The address of host `i` (1-based, at most 244) of the LAN whose hub
    /// is `hub_ip`: `.10 + i` in the hub's /24, clear of the hub's `.1`.
    pub fn host_ip(hub_ip: Ipv4Addr, i: u8) -> Ipv4Addr {
        assert!((1..=244).contains(&i), "host {i}: a LAN numbers 1 to 244");
        let [a, b, c, _] = hub_ip.octets();
        Ipv4Addr::new(a, b, c, 10 + i)
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: u8) -> &LanHost {
        &self.hosts[usize::from(i) - 1]
    }

    /// Where the hub's server listens: the hub's address, [`SERVER_PORT`].
    pub fn server_addr(&self) -> SocketAddr {
        SocketAddr::from((self.hub_ip, SERVER_PORT))
    }

    /// `llama-server` (the binary at `server`) on [`Lan::server_addr`]
    /// with `config` (YAML, written to `dir/server.yaml`) and an interval
    /// of `interval` seconds, its output discarded: a command for
    /// [`NetNs::spawn`] on the hub.
    pub fn server_command(
        &self,
        server: &Path,
        dir: &Path,
        config: &str,
        interval: u64,
    ) -> io::Result<Command> {
        let file = dir.join("server.yaml");
        std::fs::write(&file, config)?;
        let mut cmd = Command::new(server);
        cmd.arg("--config").arg(file);
        cmd.args(["--host", &self.hub_ip.to_string()]);
        cmd.args(["--port", &SERVER_PORT.to_string()]);
        cmd.args(["--interval", &interval.to_string()]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileged;

    fn ping(from: &NetNs, to: Ipv4Addr) -> bool {
        from.exec("ping", &["-c", "1", "-W", "5", &to.to_string()])
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn hub_and_hosts_reach_each_other_through_the_bridge() {
        if !privileged("testkit::lan::hub_and_hosts_reach_each_other") {
            return;
        }
        let hub_ip = Ipv4Addr::new(10, 201, 0, 1);
        let lan = Lan::new(hub_ip, 2).expect("lan");
        assert_eq!(lan.host(2).ip, Ipv4Addr::new(10, 201, 0, 12));
        assert!(ping(&lan.host(1).ns, hub_ip), "host 1 -> hub");
        assert!(ping(&lan.host(1).ns, lan.host(2).ip), "host 1 -> host 2");
        assert!(ping(&lan.hub, lan.host(2).ip), "hub -> host 2");
        let port = lan.host(1).veth.b.clone();
        let link = lan.hub.ip_output(&["link", "show", &port]).expect("port");
        assert!(link.contains(&format!("master {BRIDGE}")), "{link}");
    }
}
