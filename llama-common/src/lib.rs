//! Types shared by the XDP reflector (`llama-ebpf`, kernel side) and the agent
//! (userspace side). Everything here is `#[repr(C)]` and `Copy` so that both
//! sides agree on the byte layout of BPF map keys and values.
#![no_std]

pub mod probe;
pub mod ratelimit;

/// Default UDP port of LLAMA probes (docs/probe.md), and the agent's default
/// TCP port for its HTTP API (docs/agent-api.md).
pub const DEFAULT_PROBE_PORT: u16 = 8100;

/// TTL / hop limit of every reply, from either reflector (docs/probe.md);
/// collectors derive a path's hop count from it (`64 - received TTL`).
pub const REPLY_TTL: u8 = 64;

/// `Content-Type` of every `/metrics` answer, agent and server alike.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Name of the XDP program inside the object, as the loader looks it up.
pub const XDP_PROGRAM_NAME: &str = "llama_reflect";

/// Name of the single-entry array map holding [`ReflectorConfig`].
pub const CONFIG_MAP: &str = "LLAMA_CONFIG";
/// Name of the per-CPU array map of counters indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "LLAMA_COUNTERS";
/// Name of the per-CPU array holding each CPU's [`RateState`] for the
/// debug log's rate limit ([`ReflectorConfig::log_rate`]).
pub const LOG_RATE_MAP: &str = "LLAMA_LOG_RATE";
/// Name of aya-log's ring buffer in the object (records to userspace).
pub const LOG_RING_MAP: &str = "AYA_LOGS";
/// Name of the LPM trie of allowed IPv4 sources (key data: the address in
/// network byte order, `[u8; 4]`; value: [`AllowValue`]).
pub const ALLOW_V4_MAP: &str = "LLAMA_ALLOW_V4";
/// Name of the LPM trie of allowed IPv6 sources (key data: `[u8; 16]`).
pub const ALLOW_V6_MAP: &str = "LLAMA_ALLOW_V6";

/// Capacity of each allowlist trie (prefixes per address family).
pub const ALLOWLIST_MAX_ENTRIES: u32 = 16384;

/// Name of the array of recently answered probes ([`RecentSlot`]), the XDP
/// half of the repeat guard: a direct-mapped table indexed by
/// [`recent_hash`] of the probe's identity.
pub const RECENT_MAP: &str = "LLAMA_RECENT";
/// Default number of slots in the recently-answered-probes table, XDP and
/// userspace each. At the default `--max-pps` (10,000/s) it holds about the
/// last 1.6 s of answers; a reflection loop comes back within milliseconds,
/// so a flood of fresh probes at the full rate cannot push a looping probe
/// out before it returns. The loader sizes the kernel table
/// (`--recent-probes`, rounded up to a power of two).
pub const DEFAULT_RECENT_PROBES: u32 = 16384;
/// Default of how many times the same probe (same source address and port,
/// signature and `sent` bytes) is answered. A collector sends every probe
/// once with a fresh random signature, so a legitimate probe needs exactly
/// one answer; a second copy is a network duplicate or a reflection loop.
pub const DEFAULT_ANSWERS_PER_PROBE: u32 = 1;
/// Default reflector rate limit, probes/s (`--max-pps`), XDP and userspace
/// each. The server's default collector template sends 4 ports x 2.0 cycles/s
/// = 8 probes/s to each peer, so in a group of `n` agents every reflector
/// gets `8n` probes/s: 10,000 covers a group of 1,000 agents (8,000 probes/s)
/// with 25 % headroom, while bounding what a forged-source flood can make a
/// reflector send to a victim.
pub const DEFAULT_MAX_PPS: u32 = 10_000;

/// [`ReflectorConfig::flags`] bit: only sources found in the allowlist tries
/// are answered; the others are dropped (counted as
/// [`Counter::DropAllowlist`]). An enabled, empty allowlist answers nobody.
pub const FLAG_ALLOWLIST: u16 = 1 << 0;
/// [`ReflectorConfig::flags`] bit: the loop guards are OFF (probes from the
/// probe port and repeated probes are answered like any other). Only for
/// same-run benchmark baselines and tests; the agent never sets it.
pub const FLAG_NO_LOOP_GUARD: u16 = 1 << 1;

/// Default of `--ebpf-log-rate`: debug log lines per second and CPU. One
/// aya-log line costs the program microseconds and the agent a formatted
/// log line, so a flood of datagrams must not turn into a flood of lines:
/// 100 lines/s is plenty to watch decisions by eye and caps what a flood
/// can write per CPU to the log.
pub const DEFAULT_EBPF_LOG_RATE: u32 = 100;

/// How much the XDP program logs about its decisions (`--ebpf-log`); the
/// discriminant is aya-log's level number, 0 is off.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Nothing: no log code runs for any packet (the default).
    #[default]
    Off = 0,
    Error = 1,
    Warn = 2,
    /// Drops: allowlist, rate limit, loop guards.
    Info = 3,
    /// Plus every reflected probe and everything to the probe port passed up
    /// to userspace (not canonical, fragment, IPv6 extension headers, not
    /// unicast, malformed).
    Debug = 4,
    /// Plus UDP to other ports and other IP traffic passed untouched.
    Trace = 5,
}

impl LogLevel {
    /// Every level, quietest first.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Off,
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The flag spelling.
    pub const fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Value stored in the allowlist tries. Only presence matters; the byte is
/// kept so the value is never zero-sized.
pub type AllowValue = u8;

/// Run-time settings of the XDP reflector. The agent writes it into slot 0 of
/// [`CONFIG_MAP`]; the program reads it for every packet, so changing the
/// port, the allowlist switch or the rate does not need a reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReflectorConfig {
    /// UDP destination port of probes, host byte order. 0 means "reflect nothing"
    /// (the program passes everything up), which is also what an unset map gives.
    pub port: u16,
    /// Bit flags, see `FLAG_*`.
    pub flags: u16,
    /// Token-bucket rate for reflected probes (all CPUs together); 0 = no limit.
    pub max_pps: u32,
    /// Bucket depth in probes (how many may arrive back to back); values below
    /// 1 count as 1. Only meaningful with `max_pps > 0`.
    pub burst: u32,
    /// How many times the same probe is answered (the repeat guard, see
    /// [`RecentSlot`]); values below 1 count as 1.
    pub answers_per_probe: u32,
    /// Slots in [`RECENT_MAP`] minus one (the table size is a power of two);
    /// the loader sets it to match the map it created.
    pub recent_mask: u32,
    /// Seed of [`recent_hash`], random per load, so nobody outside can aim
    /// probes at the slot of a looping one.
    pub recent_seed: u32,
    /// Debug log level, a [`LogLevel`] discriminant (0 = off). The program
    /// tests it before any log code, so with 0 no packet pays for logging.
    pub log_level: u8,
    /// Explicit padding (always zero) so the layout has no holes.
    pub _reserved: [u8; 3],
    /// Debug log lines per second and CPU; a line over the limit is counted
    /// as [`Counter::LogSuppressed`] instead. 0 counts as 1.
    pub log_rate: u32,
}

impl ReflectorConfig {
    /// Reflect on `port`, no allowlist, no rate limit, loop guards on with
    /// [`DEFAULT_ANSWERS_PER_PROBE`].
    pub const fn new(port: u16) -> Self {
        Self {
            port,
            flags: 0,
            max_pps: 0,
            burst: 0,
            answers_per_probe: DEFAULT_ANSWERS_PER_PROBE,
            recent_mask: DEFAULT_RECENT_PROBES - 1,
            recent_seed: 0,
            log_level: LogLevel::Off as u8,
            _reserved: [0; 3],
            log_rate: DEFAULT_EBPF_LOG_RATE,
        }
    }

    /// The same settings logging decisions at `level` and up to `rate`
    /// lines per second and CPU.
    pub const fn with_log(mut self, level: LogLevel, rate: u32) -> Self {
        self.log_level = level as u8;
        self.log_rate = rate;
        self
    }

    /// The same settings answering each probe at most `n` times (below 1
    /// counts as 1).
    pub const fn with_answers_per_probe(mut self, n: u32) -> Self {
        self.answers_per_probe = n;
        self
    }

    /// The same settings with the loop guards on (the default) or off (for
    /// benchmark baselines only, see [`FLAG_NO_LOOP_GUARD`]).
    pub const fn with_loop_guard(mut self, enabled: bool) -> Self {
        if enabled {
            self.flags &= !FLAG_NO_LOOP_GUARD;
        } else {
            self.flags |= FLAG_NO_LOOP_GUARD;
        }
        self
    }

    /// Whether the loop guards are enforced.
    pub const fn loop_guard_enabled(&self) -> bool {
        self.flags & FLAG_NO_LOOP_GUARD == 0
    }

    /// The same settings with a rate limit of `max_pps` (0 = off) and the
    /// default burst, [`ratelimit::default_burst`].
    pub const fn with_max_pps(mut self, max_pps: u32) -> Self {
        self.max_pps = max_pps;
        self.burst = ratelimit::default_burst(max_pps);
        self
    }

    /// The same settings with the allowlist switched on or off.
    pub const fn with_allowlist(mut self, enabled: bool) -> Self {
        if enabled {
            self.flags |= FLAG_ALLOWLIST;
        } else {
            self.flags &= !FLAG_ALLOWLIST;
        }
        self
    }

    /// Whether the allowlist is enforced.
    pub const fn allowlist_enabled(&self) -> bool {
        self.flags & FLAG_ALLOWLIST != 0
    }
}

/// State of the global rate limiter: the GCRA "theoretical arrival time" in
/// `bpf_ktime_get_ns` nanoseconds (see [`ratelimit`]). Kept apart from
/// [`ReflectorConfig`] so that rewriting the config never races with the
/// program's compare-and-swap on the state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub tat_ns: u64,
}

/// 32-bit words of a probe's identity in the repeat guard.
pub const RECENT_WORDS: usize = 9;

/// A probe's identity for the repeat guard: who sent it and which probe it
/// was, as [`RECENT_WORDS`] words for [`recent_hash`]. A collector gives every probe 10 fresh random signature
/// bytes, so an identity seen again means the same datagram came back: a
/// network duplicate or, without this guard, a reflection loop between two
/// reflectors (or a reflector and any UDP echo service) started by one probe
/// with a forged source.
///
/// - `addr`: the source address, IPv4 in the first 4 bytes, the rest zero;
/// - `port`: the source UDP port as on the wire;
/// - `signature`: the canonical probe's signature bytes;
/// - `sent`: the first 8 bytes of its `sent` varint (payload offset 16),
///   zero when the probe is shorter: a collector that reused a signature
///   would still differ here, while a looping datagram carries the same
///   bytes every time round.
#[inline(always)]
pub fn recent_identity(
    addr: &[u8; 16],
    port: [u8; 2],
    signature: &[u8; probe::SIGNATURE_LEN],
    sent: &[u8; 8],
) -> [u32; RECENT_WORDS] {
    let w = |b: [u8; 4]| u32::from_ne_bytes(b);
    [
        w([addr[0], addr[1], addr[2], addr[3]]),
        w([addr[4], addr[5], addr[6], addr[7]]),
        w([addr[8], addr[9], addr[10], addr[11]]),
        w([addr[12], addr[13], addr[14], addr[15]]),
        w([port[0], port[1], signature[0], signature[1]]),
        w([signature[2], signature[3], signature[4], signature[5]]),
        w([signature[6], signature[7], signature[8], signature[9]]),
        w([sent[0], sent[1], sent[2], sent[3]]),
        w([sent[4], sent[5], sent[6], sent[7]]),
    ]
}

/// The 64-bit fingerprint of an identity: a seeded multiply-xorshift mix of
/// its words (cheap in BPF: no loops the verifier has to walk, no helper
/// calls). Its low bits, masked with [`ReflectorConfig::recent_mask`], pick
/// the slot; the whole value (never 0, the empty slot's) is stored there.
#[inline(always)]
pub fn recent_hash(words: &[u32; RECENT_WORDS], seed: u32) -> u64 {
    let mut h = u64::from(seed) ^ 0x9e37_79b9_7f4a_7c15;
    let mut i = 0;
    while i < RECENT_WORDS {
        h = (h ^ u64::from(words[i])).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 32;
        i += 1;
    }
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 29;
    if h == 0 { 1 } else { h }
}

/// One slot of [`RECENT_MAP`]: the fingerprint of the probe answered last
/// in this slot and how many times. A new probe takes the slot of whatever
/// was there (a direct-mapped cache: one array lookup, no allocation, no
/// lock, unlike a kernel LRU hash whose insert with eviction costs hundreds
/// of ns; 16 bytes, so a slot is one cache line and the default table
/// 256 KiB). Only a matching 64-bit fingerprint drops a probe — another
/// probe matches with probability 2^-64, and the seed is random per load —
/// so a collision of slots never silences a legitimate probe; at worst it
/// makes the table forget a looping probe one round early, and the loop is
/// caught again on the next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentSlot {
    pub fingerprint: u64,
    pub answers: u32,
    pub _reserved: u32,
}

/// Counters kept per CPU by the XDP program. The discriminant is the index in
/// [`COUNTERS_MAP`]. Traffic that is not UDP to the probe port is never
/// counted: the pass-through path stays as short as possible.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Probe answered with XDP_TX.
    Reflected = 0,
    /// Addressed to the probe port but not the canonical probe prefix.
    PassNotCanonical = 1,
    /// IPv6 with extension headers before UDP.
    PassIpv6ExtHeaders = 2,
    /// IPv4 UDP fragment (first or later).
    PassFragment = 3,
    /// Malformed or truncated headers on the way to the UDP payload.
    PassMalformed = 4,
    /// A probe sent to or from a multicast/broadcast address: never answered
    /// from the fast path (the reply would have a group address as source).
    PassNotUnicast = 5,
    /// Probe dropped by the token bucket (`max_pps`).
    DropRateLimit = 6,
    /// Probe from a source outside the enabled allowlist, dropped.
    DropAllowlist = 7,
    /// Loop guard: a probe *from* the probe port, dropped. Every reflector
    /// answers from its probe port, so such a datagram is another
    /// reflector's reply with a forged origin, never a collector's probe.
    DropLoopPort = 8,
    /// Loop guard: a probe already answered `answers_per_probe` times (same
    /// source, signature and `sent`), dropped.
    DropRepeated = 9,
    /// A debug log line (`--ebpf-log`) not written because this CPU was over
    /// `--ebpf-log-rate`. Only counted while logging is on.
    LogSuppressed = 10,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 11] = [
        Counter::Reflected,
        Counter::PassNotCanonical,
        Counter::PassIpv6ExtHeaders,
        Counter::PassFragment,
        Counter::PassMalformed,
        Counter::PassNotUnicast,
        Counter::DropRateLimit,
        Counter::DropAllowlist,
        Counter::DropLoopPort,
        Counter::DropRepeated,
        Counter::LogSuppressed,
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
            Counter::PassNotUnicast => "pass_not_unicast",
            Counter::DropRateLimit => "drop_rate_limit",
            Counter::DropAllowlist => "drop_allowlist",
            Counter::DropLoopPort => "drop_loop_port",
            Counter::DropRepeated => "drop_repeated",
            Counter::LogSuppressed => "log_suppressed",
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: ReflectorConfig is repr(C), Copy, and has no padding holes
// (u16+u16+u32 x 5 + u8 + [u8; 3] + u32 = 32 bytes).
unsafe impl aya::Pod for ReflectorConfig {}

#[cfg(feature = "user")]
// SAFETY: repr(C), a single u64, no padding.
unsafe impl aya::Pod for RateState {}

#[cfg(feature = "user")]
// SAFETY: repr(C), u64 + u32 + u32, no padding.
unsafe impl aya::Pod for RecentSlot {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_value_layouts_are_stable() {
        assert_eq!(core::mem::size_of::<ReflectorConfig>(), 32);
        assert_eq!(core::mem::align_of::<ReflectorConfig>(), 4);
        assert_eq!(core::mem::offset_of!(ReflectorConfig, recent_seed), 20);
        assert_eq!(core::mem::offset_of!(ReflectorConfig, log_level), 24);
        assert_eq!(core::mem::offset_of!(ReflectorConfig, log_rate), 28);
        assert_eq!(core::mem::size_of::<RateState>(), 8);
        assert_eq!(core::mem::size_of::<RecentSlot>(), 16);
        assert!(DEFAULT_RECENT_PROBES.is_power_of_two());
    }

    #[test]
    fn counters_are_indexed_by_discriminant() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn identity_words_and_hash() {
        let addr = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let sig = *b"0123456789";
        let sent = [1, 2, 3, 4, 5, 6, 7, 8];
        let id = recent_identity(&addr, [0x1f, 0xa4], &sig, &sent);
        assert_eq!(id[0], u32::from_ne_bytes([10, 0, 0, 1]));
        assert_eq!(id[4], u32::from_ne_bytes([0x1f, 0xa4, b'0', b'1']));
        assert_eq!(id[8], u32::from_ne_bytes([5, 6, 7, 8]));
        // Every part of the identity moves the hash; so does the seed.
        let h = recent_hash(&id, 7);
        assert_ne!(h, 0, "never the empty slot's fingerprint");
        assert_eq!(h, recent_hash(&id, 7));
        assert_ne!(h, recent_hash(&id, 8));
        for i in 0..RECENT_WORDS {
            let mut other = id;
            other[i] ^= 1;
            assert_ne!(h, recent_hash(&other, 7), "word {i}");
        }
        // Spread: 4096 identities over 256 slots, no slot badly overloaded.
        let mut slots = [0u32; 256];
        for n in 0u32..4096 {
            let mut s = sig;
            s[..4].copy_from_slice(&n.to_be_bytes());
            let id = recent_identity(&addr, [0x9c, 0x40], &s, &sent);
            slots[(recent_hash(&id, 1) & 255) as usize] += 1;
        }
        assert!(slots.iter().all(|&n| (2..=40).contains(&n)), "{slots:?}");
    }

    #[test]
    fn config_builders() {
        let c = ReflectorConfig::new(9000)
            .with_allowlist(true)
            .with_max_pps(1000);
        assert!(c.allowlist_enabled());
        assert_eq!(c.max_pps, 1000);
        assert!(c.burst >= 1);
        assert!(!c.with_allowlist(false).allowlist_enabled());
        assert!(c.loop_guard_enabled(), "guards on by default");
        assert_eq!(c.answers_per_probe, DEFAULT_ANSWERS_PER_PROBE);
        let off = c.with_loop_guard(false);
        assert!(!off.loop_guard_enabled() && off.allowlist_enabled());
        assert!(off.with_loop_guard(true).loop_guard_enabled());
        assert_eq!(c.with_answers_per_probe(3).answers_per_probe, 3);
        assert_eq!(c.log_level, 0, "logging off by default");
        assert_eq!(c.log_rate, DEFAULT_EBPF_LOG_RATE);
        let logged = c.with_log(LogLevel::Debug, 7);
        assert_eq!((logged.log_level, logged.log_rate), (4, 7));
        assert_eq!(
            logged.with_allowlist(false).log_level,
            4,
            "kept by builders"
        );
    }

    #[test]
    fn log_levels_are_aya_log_numbers() {
        for (i, l) in LogLevel::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i, "{}", l.name());
        }
        assert!(LogLevel::Info < LogLevel::Debug);
    }
}
