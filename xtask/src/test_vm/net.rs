//! The link between host and guest: a tap device in a network namespace of
//! its own (deleted, tap included, when [`Link`] drops or on Ctrl-C), and
//! the fixed addresses on both ends.

use anyhow::{Context, Result};
use llama_testkit::NetNs;

pub const HOST_V4: &str = "10.77.0.1";
pub const GUEST_V4: &str = "10.77.0.2";
pub const HOST_V6: &str = "fd77::1";
pub const GUEST_V6: &str = "fd77::2";
/// The tap's name inside its namespace (unique there, so fixed).
pub const TAP: &str = "llamatap0";

/// A namespace owning the host end of a guest's network.
pub struct Link {
    pub ns: NetNs,
}

impl Link {
    pub fn new() -> Result<Self> {
        let ns = NetNs::new().context("create a network namespace")?;
        // Several queues: the guest's driver then gives XDP_TX a transmit
        // queue of its own per CPU (see `guest`), as on a real multi-queue
        // NIC, instead of sharing the stack's under a lock.
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "multi_queue"])
            .context("create the tap device")?;
        ns.add_addr(TAP, &format!("{HOST_V4}/24"))?;
        ns.add_addr(TAP, &format!("{HOST_V6}/64"))?;
        ns.ip(&["link", "set", TAP, "up"])?;
        // The guest's XDP program rewrites probes in place and sends them
        // back; a partial (offloaded) checksum from the host's stack would
        // come back wrong. Real NICs hand the driver complete checksums.
        let out = ns
            .exec("ethtool", &["-K", TAP, "tx", "off"])
            .context("run ethtool")?;
        if !out.status.success() {
            anyhow::bail!(
                "ethtool -K {TAP} tx off: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self { ns })
    }
}
