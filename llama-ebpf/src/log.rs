//! Debug logging of the program's decisions (`--ebpf-log`), free when off.
//!
//! The packet path only carries a [`Reason`] out (a register); the one
//! place that logs, [`decision`], first compares the reason's level with the
//! config's `log_level`, so with logging off no log code runs. Only when a
//! line is due does it take a token from this CPU's bucket (a GCRA per CPU
//! in [`LOG_RATE`], `log_rate` lines per second; over the limit the line is
//! counted as `LogSuppressed` instead), re-read the addresses and ports from
//! the frame and write the record to aya-log's ring buffer. One line costs
//! microseconds, hence off by default and rate-limited.
//!
//! Built without the `log` feature (the benchmark's baseline object) the
//! whole thing compiles to nothing.

#[cfg(not(feature = "log"))]
use aya_ebpf::programs::XdpContext;
use llama_common::ReflectorConfig;
#[cfg(feature = "log")]
use {
    crate::{
        ETH_HLEN, count,
        headers::{
            ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr,
            UdpHdr, VlanHdr,
        },
        ptr_at,
    },
    aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray, programs::XdpContext},
    aya_log_ebpf::macro_support::Level,
    core::mem,
    llama_common::{Counter, RateState, ratelimit},
};

/// Each CPU's log bucket (the map name is `llama_common::LOG_RATE_MAP`).
#[cfg(feature = "log")]
#[map(name = "LLAMA_LOG_RATE")]
static LOG_RATE: PerCpuArray<RateState> = PerCpuArray::with_max_entries(1, 0);

/// What the program did with a frame, and why.
#[derive(Clone, Copy)]
pub enum Reason {
    Reflected,
    NotIp,
    NotUdp,
    OtherPort,
    NotCanonical,
    Fragment,
    Ipv6ExtHeaders,
    NotUnicast,
    Malformed,
    Allowlist,
    LoopPort,
    Repeated,
    RateLimit,
}

#[cfg(feature = "log")]
impl Reason {
    /// Drops at info; reflected probes and probe-port traffic passed up at
    /// debug; traffic that is none of the reflector's business at trace.
    #[inline(always)]
    fn level(self) -> Level {
        match self {
            Reason::Allowlist | Reason::LoopPort | Reason::Repeated | Reason::RateLimit => {
                Level::Info
            }
            Reason::Reflected
            | Reason::NotCanonical
            | Reason::Fragment
            | Reason::Ipv6ExtHeaders
            | Reason::NotUnicast
            | Reason::Malformed => Level::Debug,
            Reason::NotIp | Reason::NotUdp | Reason::OtherPort => Level::Trace,
        }
    }

    #[inline(always)]
    fn text(self) -> &'static str {
        match self {
            Reason::Reflected => "reflected probe",
            Reason::NotIp => "pass: not IP",
            Reason::NotUdp => "pass: not UDP",
            Reason::OtherPort => "pass: not the probe port",
            Reason::NotCanonical => "pass to userspace: not a canonical probe",
            Reason::Fragment => "pass to userspace: IPv4 fragment",
            Reason::Ipv6ExtHeaders => "pass to userspace: IPv6 extension headers",
            Reason::NotUnicast => "pass to userspace: not unicast",
            Reason::Malformed => "pass: malformed or truncated",
            Reason::Allowlist => "drop: source not in the allowlist",
            Reason::LoopPort => "drop: sent from the probe port (loop guard)",
            Reason::Repeated => "drop: probe answered before (loop guard)",
            Reason::RateLimit => "drop: rate limit (--max-pps)",
        }
    }
}

/// Logs `reason` for the frame in `ctx` if the config's level asks for it
/// and this CPU's bucket has a token.
#[inline(always)]
pub fn decision(ctx: &XdpContext, config: &ReflectorConfig, reason: Reason) {
    #[cfg(feature = "log")]
    if config.log_level >= reason.level() as u8 {
        write(ctx, config, reason);
    }
    #[cfg(not(feature = "log"))]
    let _ = (ctx, config, reason);
}

/// Takes a token from this CPU's bucket (burst: a tenth of a second's worth,
/// like the reflector's own limit). Per CPU, so no atomics: XDP runs with
/// preemption off.
#[cfg(feature = "log")]
#[inline(always)]
fn admit(config: &ReflectorConfig) -> bool {
    let Some(state) = LOG_RATE.get_ptr_mut(0) else {
        return false;
    };
    let rate = if config.log_rate == 0 {
        1
    } else {
        config.log_rate
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot from a successful lookup in this run.
    let tat = unsafe { (*state).tat_ns };
    match ratelimit::admit(tat, now, rate, ratelimit::default_burst(rate)) {
        Some(next) => {
            // SAFETY: as above.
            unsafe { (*state).tat_ns = next };
            true
        }
        None => false,
    }
}

/// The addresses (IPv4 in the first four bytes) and ports as the frame has
/// them now.
#[cfg(feature = "log")]
struct Seen {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    /// `None` when the frame is not UDP (or a later fragment).
    ports: Option<(u16, u16)>,
}

#[cfg(feature = "log")]
#[inline(never)]
fn write(ctx: &XdpContext, config: &ReflectorConfig, reason: Reason) {
    if !admit(config) {
        count(Counter::LogSuppressed);
        return;
    }
    let level = reason.level();
    let what = reason.text();
    let Some(mut seen) = parse(ctx) else {
        aya_log_ebpf::log!(ctx, level, "xdp: {}", what);
        return;
    };
    // A reflected frame was rewritten in place: name it as it arrived.
    if matches!(reason, Reason::Reflected) {
        mem::swap(&mut seen.src, &mut seen.dst);
        seen.ports = seen.ports.map(|(s, d)| (d, s));
    }
    let Seen {
        v6,
        src,
        dst,
        ports,
    } = seen;
    let src4 = [src[0], src[1], src[2], src[3]];
    let dst4 = [dst[0], dst[1], dst[2], dst[3]];
    match (v6, ports) {
        (false, Some((sport, dport))) => aya_log_ebpf::log!(
            ctx,
            level,
            "xdp: {} {:i}:{} -> {:i}:{}",
            what,
            src4,
            sport,
            dst4,
            dport
        ),
        (true, Some((sport, dport))) => aya_log_ebpf::log!(
            ctx,
            level,
            "xdp: {} [{:i}]:{} -> [{:i}]:{}",
            what,
            src,
            sport,
            dst,
            dport
        ),
        (false, None) => aya_log_ebpf::log!(ctx, level, "xdp: {} {:i} -> {:i}", what, src4, dst4),
        (true, None) => aya_log_ebpf::log!(ctx, level, "xdp: {} {:i} -> {:i}", what, src, dst),
    }
}

/// Reads Ethernet (up to two VLAN tags), IPv4/IPv6 and, when present, the
/// UDP ports again; `None` when the frame is not IP or too short.
#[cfg(feature = "log")]
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Seen> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok()?;
    // SAFETY (all dereferences below): ptr_at checked the bounds.
    let mut proto = u16::from_be(unsafe { (*eth).proto });
    let mut offset = ETH_HLEN;
    for _ in 0..2 {
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let vlan: *const VlanHdr = ptr_at(ctx, offset).ok()?;
            proto = u16::from_be(unsafe { (*vlan).proto });
            offset += mem::size_of::<VlanHdr>();
        }
    }
    let mut seen = Seen {
        v6: false,
        src: [0; 16],
        dst: [0; 16],
        ports: None,
    };
    let udp_offset = match proto {
        ETH_P_IP => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, offset).ok()?;
            let (saddr, daddr) = unsafe { ((*ip).saddr, (*ip).daddr) };
            // SAFETY: [u16; 2] and [u8; 4] have the same size.
            let s = unsafe { mem::transmute::<[u16; 2], [u8; 4]>(saddr) };
            let d = unsafe { mem::transmute::<[u16; 2], [u8; 4]>(daddr) };
            seen.src[..4].copy_from_slice(&s);
            seen.dst[..4].copy_from_slice(&d);
            let ihl = usize::from(unsafe { (*ip).version_ihl } & 0x0f) * 4;
            let first = u16::from_be(unsafe { (*ip).frag_off }) & 0x1fff == 0;
            (unsafe { (*ip).protocol } == IPPROTO_UDP && first && ihl >= 20).then_some(offset + ihl)
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, offset).ok()?;
            seen.v6 = true;
            // SAFETY: [u16; 8] and [u8; 16] have the same size.
            seen.src = unsafe { mem::transmute::<[u16; 8], [u8; 16]>((*ip).saddr) };
            seen.dst = unsafe { mem::transmute::<[u16; 8], [u8; 16]>((*ip).daddr) };
            (unsafe { (*ip).next_header } == IPPROTO_UDP)
                .then_some(offset + mem::size_of::<Ipv6Hdr>())
        }
        _ => return None,
    };
    if let Some(at) = udp_offset
        && at <= 128
        && let Ok(udp) = ptr_at::<UdpHdr>(ctx, at)
    {
        seen.ports = Some(unsafe { (u16::from_be((*udp).source), u16::from_be((*udp).dest)) });
    }
    Some(seen)
}
