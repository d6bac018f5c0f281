//! Types shared by the XDP reflector (`llama-ebpf`, kernel side) and the agent
//! (userspace side). Everything here is `#[repr(C)]` and `Copy` so that both
//! sides agree on the byte layout of BPF map keys and values.
#![no_std]

pub mod probe;

/// Default UDP port of LLAMA probes (DESIGN.md A1).
pub const DEFAULT_PROBE_PORT: u16 = 8100;

/// Name of the XDP program inside the object, as the loader looks it up.
pub const XDP_PROGRAM_NAME: &str = "llama_reflect";

/// Name of the single-entry array map holding [`ReflectorConfig`].
pub const CONFIG_MAP: &str = "LLAMA_CONFIG";
/// Name of the per-CPU array map of counters indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "LLAMA_COUNTERS";

/// Run-time settings of the XDP reflector. The agent writes it into slot 0 of
/// [`CONFIG_MAP`]; the program reads it for every packet, so changing the port
/// does not need a reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReflectorConfig {
    /// UDP destination port of probes, host byte order. 0 means "reflect nothing"
    /// (the program passes everything up), which is also what an unset map gives.
    pub port: u16,
    /// Bit flags, see `FLAG_*`.
    pub flags: u16,
    pub _reserved: u32,
}

impl ReflectorConfig {
    pub const fn new(port: u16) -> Self {
        Self {
            port,
            flags: 0,
            _reserved: 0,
        }
    }
}

/// Counters kept per CPU by the XDP program. The discriminant is the index in
/// [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Probe answered with XDP_TX.
    Reflected = 0,
    /// Addressed to the probe port but not the canonical probe prefix.
    PassNotCanonical = 1,
    /// IPv6 with extension headers before UDP.
    PassIpv6ExtHeaders = 2,
    /// IPv4 fragment (first or later).
    PassFragment = 3,
    /// Malformed or truncated headers on the way to the UDP payload.
    PassMalformed = 4,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 5] = [
        Counter::Reflected,
        Counter::PassNotCanonical,
        Counter::PassIpv6ExtHeaders,
        Counter::PassFragment,
        Counter::PassMalformed,
    ];
    /// Number of slots the counters map must have.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable snake_case name, used as a Prometheus label value.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Reflected => "reflected",
            Counter::PassNotCanonical => "pass_not_canonical",
            Counter::PassIpv6ExtHeaders => "pass_ipv6_ext_headers",
            Counter::PassFragment => "pass_fragment",
            Counter::PassMalformed => "pass_malformed",
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: ReflectorConfig is repr(C), Copy, and has no padding holes (u16+u16+u32).
unsafe impl aya::Pod for ReflectorConfig {}
