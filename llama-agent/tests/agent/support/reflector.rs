//! Starting a reflector for the collector's tests, in ONE place: the real
//! ones from `llama_agent::reflector`, started in-process inside the test's
//! namespace.
//!
//! [`Mode::Xdp`] runs the XDP program in generic (skb) mode on the given veth
//! (generic needs no preparation of the peer; native XDP_TX on veth needs a
//! program on the peer, which the reflector's own tests cover) plus the
//! userspace reflector for whatever XDP passes up — what the agent runs.
//! [`Mode::Userspace`] runs only the userspace reflector.

use std::net::{IpAddr, SocketAddr};

use llama_agent::reflector::{
    self, AllowSpec, Reflector, ReflectorHandle, ReflectorOptions, ReflectorSetup,
    UserspaceReflector,
};
use llama_common::Counter;
use llama_testkit::NetNs;

/// Which reflector a test wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Userspace,
    Xdp,
}

/// A running reflector; stopped (and XDP detached) when dropped.
pub struct Guard {
    reflector: Option<Reflector>,
    local: Option<ReflectorHandle>,
    /// The bound addresses (loopback echo only; empty otherwise).
    pub addrs: Vec<SocketAddr>,
}

impl Guard {
    /// Probes the XDP program answered in the kernel (0 without XDP).
    pub fn xdp_reflected(&self) -> u64 {
        self.reflector
            .as_ref()
            .and_then(Reflector::xdp_counters)
            .and_then(|c| c.into_iter().find(|(k, _)| *k == Counter::Reflected))
            .map_or(0, |(_, n)| n)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(r) = self.reflector.take() {
            r.shutdown();
        }
        if let Some(h) = self.local.take() {
            h.stop();
        }
    }
}

/// Starts a reflector in `ns` answering UDP `port` (`iface` is where the XDP
/// program attaches). Panics if the requested mode cannot start: a test that
/// asked for XDP must not silently get userspace.
pub fn start_reflector(ns: &NetNs, mode: Mode, iface: &str, port: u16) -> Guard {
    start_reflector_on(ns, mode, &[iface], port)
}

/// [`start_reflector`] with the XDP program on each of `ifaces`.
pub fn start_reflector_on(ns: &NetNs, mode: Mode, ifaces: &[&str], port: u16) -> Guard {
    let iface = ifaces.join(",");
    let setup = ReflectorSetup {
        mode: match mode {
            Mode::Xdp => reflector::Mode::XdpSkb,
            Mode::Userspace => reflector::Mode::Userspace,
        },
        interfaces: ifaces.iter().map(|i| (*i).to_owned()).collect(),
        port,
        max_pps: 0,
        allow: AllowSpec::Anyone,
        answers_per_probe: llama_common::DEFAULT_ANSWERS_PER_PROBE,
        recent_probes: llama_common::DEFAULT_RECENT_PROBES,
        ebpf_log: llama_common::LogLevel::Off,
        ebpf_log_rate: llama_common::DEFAULT_EBPF_LOG_RATE,
    };
    let reflector = ns
        .run(|| Reflector::start(&setup))
        .unwrap_or_else(|e| panic!("start the {mode:?} reflector on {iface}: {e}"));
    Guard {
        reflector: Some(reflector),
        local: None,
        addrs: Vec::new(),
    }
}

/// Starts the userspace reflector in the current namespace on `addrs` (all
/// with the same port; port 0 picks one, see [`Guard::addrs`]).
pub fn start_local_echo(addrs: &[SocketAddr]) -> Guard {
    let mut options = ReflectorOptions::new(addrs.first().map_or(0, SocketAddr::port));
    options.bind = addrs.iter().map(SocketAddr::ip).collect::<Vec<IpAddr>>();
    let handle = UserspaceReflector::spawn(options).expect("start the userspace reflector");
    let addrs = handle.local_addrs().to_vec();
    Guard {
        reflector: None,
        local: Some(handle),
        addrs,
    }
}
