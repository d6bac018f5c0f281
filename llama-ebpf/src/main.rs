//! The llama XDP reflector: answers canonical LLAMA probes inside the driver.
//!
//! parse (Ethernet, up to two VLAN tags, IPv4 or IPv6, UDP to the configured
//! port) -> validate (canonical probe prefix, unicast, allowlist, loop
//! guards, rate) -> rewrite in place (swap MACs, addresses, ports; TOS := probe's tos byte;
//! TTL := 64; IPv4 header checksum updated incrementally) -> XDP_TX.
//!
//! Everything else addressed to the probe port (other encodings, fragments,
//! IPv6 extension headers, group addresses) goes up with XDP_PASS, where the
//! userspace reflector judges it; other traffic is passed untouched and
//! uncounted. Every path returns its [`Reason`] with the action; [`log`]
//! logs it (`--ebpf-log`) only when the config asks for it, rate-limited:
//! one aya-log call costs microseconds, so with logging off none runs.
//!
//! Loop guards (docs/probe.md): a reflector's answer is itself a canonical
//! probe addressed to whatever the request named as its source, so one probe
//! with a forged source (another reflector's address and port) would make
//! two reflectors answer each other forever. Two rules stop that: (a) a
//! probe *from* our own probe port is dropped — every reflector answers from
//! its probe port, so that is a reflector's reply, never a collector's probe
//! (this alone ends the same-port loop at the first hop); (b) the table
//! [`RECENT`] remembers the probes answered lately by source, signature and
//! `sent` bytes, and each is answered at most `answers_per_probe` times — a
//! collector sends every probe once with fresh random signature bytes, while
//! a looping datagram comes back unchanged (this ends loops between
//! reflectors on different ports, and with any other UDP echo service).
//! The table is a direct-mapped array indexed by a seeded hash, not a
//! kernel LRU hash: every answered probe is a new entry, and an LRU hash
//! insert that evicts costs hundreds of ns (docs/benchmarks/reflector.md),
//! an array slot a few.
#![no_std]
#![no_main]
// Inline asm for the BPF atomic compare-and-swap (see `cmpxchg`).
#![feature(asm_experimental_arch)]

mod csum;
mod headers;
mod log;

use core::mem;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use headers::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, UdpHdr,
    VlanHdr, is_ipv6_extension,
};
use llama_common::{
    ALLOWLIST_MAX_ENTRIES, AllowValue, Counter, DEFAULT_RECENT_PROBES, REPLY_TTL, RateState,
    RecentSlot, ReflectorConfig,
    probe::{CANONICAL_PREFIX, CANONICAL_TOS_OFFSET, CANONICAL_TOS_TAG, SIGNATURE_LEN},
    ratelimit, recent_hash, recent_identity,
};
use log::Reason;

// Map names must equal the llama_common::*_MAP constants the loader uses.
#[map(name = "LLAMA_CONFIG")]
static CONFIG: Array<ReflectorConfig> = Array::with_max_entries(1, 0);

#[map(name = "LLAMA_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "LLAMA_ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], AllowValue> = LpmTrie::with_max_entries(ALLOWLIST_MAX_ENTRIES, 0);

#[map(name = "LLAMA_ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], AllowValue> =
    LpmTrie::with_max_entries(ALLOWLIST_MAX_ENTRIES, 0);

#[map(name = "LLAMA_RATE")]
static RATE: Array<RateState> = Array::with_max_entries(1, 0);

/// Probes answered lately and how often (the repeat guard), one slot per
/// hash of the identity. One table shared by all CPUs, so a loop is caught
/// whichever queue its datagrams land on; the loader sizes it
/// (`--recent-probes`, a power of two) and sets the config's mask and seed.
#[map(name = "LLAMA_RECENT")]
static RECENT: Array<RecentSlot> = Array::with_max_entries(DEFAULT_RECENT_PROBES, 0);

const ETH_HLEN: usize = mem::size_of::<EthHdr>();
const UDP_HLEN: usize = mem::size_of::<UdpHdr>();
/// Payload bytes the canonical check reads: up to and including the tos byte.
const PREFIX_LEN: usize = CANONICAL_TOS_OFFSET + 1;
/// Payload offset of the `sent` varint in a canonical probe (after its tag).
const SENT_OFFSET: usize = PREFIX_LEN + 1;
/// The signature's offset in the payload (after `0a 0a`).
const SIGNATURE_OFFSET: usize = 2;

#[xdp]
pub fn llama_reflect(ctx: XdpContext) -> u32 {
    // An unset or zero port (the map's initial state) reflects nothing.
    let Some(config) = CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let config = *config;
    if config.port == 0 {
        return xdp_action::XDP_PASS;
    }
    let (action, reason) = match try_llama_reflect(&ctx, &config) {
        Ok(verdict) => verdict,
        Err(()) => {
            count(Counter::PassMalformed);
            (xdp_action::XDP_PASS, Reason::Malformed)
        }
    };
    log::decision(&ctx, &config, reason);
    action
}

/// What the program does with a frame and why.
type Verdict = Result<(u32, Reason), ()>;

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; XDP runs with preemption off, so no other
        // writer touches this CPU's copy meanwhile.
        unsafe { *slot += 1 };
    }
}

/// The one bounds-checked way to reach packet bytes: a pointer to a `T` at
/// `offset`, or `Err` if the packet is too short.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

#[inline(always)]
fn try_llama_reflect(ctx: &XdpContext, config: &ReflectorConfig) -> Verdict {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY (all header dereferences below): ptr_at checked the bounds.
    let mut proto = u16::from_be(unsafe { (*eth).proto });
    let mut offset = ETH_HLEN;
    // Up to two tags (802.1ad outer + 802.1Q inner, or Q-in-Q); the MAC swap
    // leaves them in place, so the reply goes back on the same VLAN.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, offset)?;
        proto = u16::from_be(unsafe { (*vlan).proto });
        offset += mem::size_of::<VlanHdr>();
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let vlan: *const VlanHdr = ptr_at(ctx, offset)?;
            proto = u16::from_be(unsafe { (*vlan).proto });
            offset += mem::size_of::<VlanHdr>();
        }
    }
    match proto {
        ETH_P_IP => reflect_v4(ctx, config, eth, offset),
        ETH_P_IPV6 => reflect_v6(ctx, config, eth, offset),
        _ => Ok((xdp_action::XDP_PASS, Reason::NotIp)),
    }
}

#[inline(always)]
fn reflect_v4(
    ctx: &XdpContext,
    config: &ReflectorConfig,
    eth: *mut EthHdr,
    offset: usize,
) -> Verdict {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, offset)?;
    let version_ihl = unsafe { (*ip).version_ihl };
    if unsafe { (*ip).protocol } != IPPROTO_UDP {
        return Ok((xdp_action::XDP_PASS, Reason::NotUdp));
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < mem::size_of::<Ipv4Hdr>() {
        return Err(());
    }
    // MF set or a non-zero offset: a fragment. Never touched (a later
    // fragment has no UDP header, a first one not the whole datagram).
    if u16::from_be(unsafe { (*ip).frag_off }) & 0x3fff != 0 {
        count(Counter::PassFragment);
        return Ok((xdp_action::XDP_PASS, Reason::Fragment));
    }
    let udp: *mut UdpHdr = ptr_at(ctx, offset + ihl)?;
    if u16::from_be(unsafe { (*udp).dest }) != config.port {
        return Ok((xdp_action::XDP_PASS, Reason::OtherPort));
    }
    let udp_len = usize::from(u16::from_be(unsafe { (*udp).len }));
    if usize::from(u16::from_be(unsafe { (*ip).tot_len })) < ihl + udp_len {
        return Err(());
    }
    let payload = offset + ihl + UDP_HLEN;
    let Some(prefix) = canonical(ctx, udp, udp_len, payload)? else {
        count(Counter::PassNotCanonical);
        return Ok((xdp_action::XDP_PASS, Reason::NotCanonical));
    };
    // SAFETY: `canonical` returned a checked pointer to PREFIX_LEN bytes.
    let tos = unsafe { (*prefix)[CANONICAL_TOS_OFFSET] };
    let (saddr, daddr) = unsafe { ((*ip).saddr, (*ip).daddr) };
    // SAFETY: `eth` came from ptr_at.
    if !unsafe { unicast_macs(eth) } || !unicast_v4(saddr) || !unicast_v4(daddr) {
        count(Counter::PassNotUnicast);
        return Ok((xdp_action::XDP_PASS, Reason::NotUnicast));
    }
    // SAFETY: [u16; 2] and [u8; 4] have the same size; any bytes are valid.
    let saddr_bytes = unsafe { mem::transmute::<[u16; 2], [u8; 4]>(saddr) };
    if config.allowlist_enabled() {
        let key = Key::new(32, saddr_bytes);
        if ALLOW_V4.get(&key).is_none() {
            count(Counter::DropAllowlist);
            return Ok((xdp_action::XDP_DROP, Reason::Allowlist));
        }
    }
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&saddr_bytes);
    let guard = match loop_guard(ctx, config, udp, udp_len, payload, prefix, addr) {
        Guard::Answer(slot) => slot,
        Guard::Drop(counter, reason) => {
            count(counter);
            return Ok((xdp_action::XDP_DROP, reason));
        }
    };
    if !rate_ok(config) {
        count(Counter::DropRateLimit);
        return Ok((xdp_action::XDP_DROP, Reason::RateLimit));
    }
    guard.record();
    unsafe {
        swap_macs(eth);
        (*ip).saddr = daddr;
        (*ip).daddr = saddr;
        swap_ports(udp);
        let old_word0 = u16::from_ne_bytes([version_ihl, (*ip).tos]);
        let old_word4 = u16::from_ne_bytes([(*ip).ttl, IPPROTO_UDP]);
        (*ip).tos = tos;
        (*ip).ttl = REPLY_TTL;
        (*ip).check = csum::replace2(
            (*ip).check,
            old_word0,
            u16::from_ne_bytes([version_ihl, tos]),
            old_word4,
            u16::from_ne_bytes([REPLY_TTL, IPPROTO_UDP]),
        );
    }
    // The UDP checksum needs nothing: swapping addresses and ports permutes
    // the words of its sum, and TOS/TTL are not in the pseudo-header. A zero
    // (absent) IPv4 UDP checksum thus stays zero.
    count(Counter::Reflected);
    Ok((xdp_action::XDP_TX, Reason::Reflected))
}

#[inline(always)]
fn reflect_v6(
    ctx: &XdpContext,
    config: &ReflectorConfig,
    eth: *mut EthHdr,
    offset: usize,
) -> Verdict {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, offset)?;
    let next = unsafe { (*ip).next_header };
    if next != IPPROTO_UDP {
        if is_ipv6_extension(next) {
            // UDP may follow; walking the chain is userspace's job.
            count(Counter::PassIpv6ExtHeaders);
            return Ok((xdp_action::XDP_PASS, Reason::Ipv6ExtHeaders));
        }
        return Ok((xdp_action::XDP_PASS, Reason::NotUdp));
    }
    let udp_offset = offset + mem::size_of::<Ipv6Hdr>();
    let udp: *mut UdpHdr = ptr_at(ctx, udp_offset)?;
    if u16::from_be(unsafe { (*udp).dest }) != config.port {
        return Ok((xdp_action::XDP_PASS, Reason::OtherPort));
    }
    let udp_len = usize::from(u16::from_be(unsafe { (*udp).len }));
    if usize::from(u16::from_be(unsafe { (*ip).payload_len })) < udp_len {
        return Err(());
    }
    let payload = udp_offset + UDP_HLEN;
    let Some(prefix) = canonical(ctx, udp, udp_len, payload)? else {
        count(Counter::PassNotCanonical);
        return Ok((xdp_action::XDP_PASS, Reason::NotCanonical));
    };
    // SAFETY: `canonical` returned a checked pointer to PREFIX_LEN bytes.
    let tos = unsafe { (*prefix)[CANONICAL_TOS_OFFSET] };
    let (saddr, daddr) = unsafe { ((*ip).saddr, (*ip).daddr) };
    // SAFETY: `eth` came from ptr_at.
    if !unsafe { unicast_macs(eth) } || !unicast_v6(&saddr) || !unicast_v6(&daddr) {
        count(Counter::PassNotUnicast);
        return Ok((xdp_action::XDP_PASS, Reason::NotUnicast));
    }
    // SAFETY: [u16; 8] and [u8; 16] have the same size; any bytes are valid.
    let addr = unsafe { mem::transmute::<[u16; 8], [u8; 16]>(saddr) };
    if config.allowlist_enabled() {
        let key = Key::new(128, addr);
        if ALLOW_V6.get(&key).is_none() {
            count(Counter::DropAllowlist);
            return Ok((xdp_action::XDP_DROP, Reason::Allowlist));
        }
    }
    let guard = match loop_guard(ctx, config, udp, udp_len, payload, prefix, addr) {
        Guard::Answer(slot) => slot,
        Guard::Drop(counter, reason) => {
            count(counter);
            return Ok((xdp_action::XDP_DROP, reason));
        }
    };
    if !rate_ok(config) {
        count(Counter::DropRateLimit);
        return Ok((xdp_action::XDP_DROP, Reason::RateLimit));
    }
    guard.record();
    unsafe {
        swap_macs(eth);
        (*ip).saddr = daddr;
        (*ip).daddr = saddr;
        swap_ports(udp);
        // Traffic class straddles the first two bytes: vvvv tttt | tttt ffff.
        let b0 = (*ip).vtc_flow[0];
        let b1 = (*ip).vtc_flow[1];
        (*ip).vtc_flow[0] = (b0 & 0xf0) | (tos >> 4);
        (*ip).vtc_flow[1] = (b1 & 0x0f) | (tos << 4);
        (*ip).hop_limit = REPLY_TTL;
    }
    // No header checksum in IPv6; the UDP checksum is unchanged (see v4).
    count(Counter::Reflected);
    Ok((xdp_action::XDP_TX, Reason::Reflected))
}

/// The canonical prefix `0a 0a <sig:10> 12 01 <tos>` at the start of the UDP
/// payload, as a checked pointer; `Ok(None)` for any other payload; `Err` if
/// the UDP length runs past the end of the frame (a truncated datagram is
/// never reflected: the reply would be as broken as the request).
#[inline(always)]
fn canonical(
    ctx: &XdpContext,
    udp: *const UdpHdr,
    udp_len: usize,
    payload: usize,
) -> Result<Option<*const [u8; PREFIX_LEN]>, ()> {
    // The prefix bounds check comes first: done after the length checks,
    // LLVM folds it into them, and the verifier cannot follow that.
    let prefix: Result<*mut [u8; PREFIX_LEN], ()> = ptr_at(ctx, payload);
    // Older verifiers (Debian 12's 6.1 kernel, checked by `cargo xtask
    // test-vm`) forget the bounds of a byte-swapped value, so `udp_len`
    // (from a big-endian u16) reaches them unbounded, and they refuse to add
    // it to a packet pointer. LLVM drops an explicit upper
    // bound check as redundant; `black_box` hides what LLVM knows, so the
    // check stays in the program for the verifier to learn from.
    let udp_len = core::hint::black_box(udp_len);
    if udp_len < UDP_HLEN
        || udp_len > usize::from(u16::MAX)
        || udp as usize + udp_len > ctx.data_end()
    {
        return Err(());
    }
    let Ok(p) = prefix else {
        return Ok(None);
    };
    if udp_len < UDP_HLEN + PREFIX_LEN {
        return Ok(None);
    }
    // SAFETY: ptr_at checked that PREFIX_LEN bytes are there.
    let b = unsafe { &*p };
    if b[0] == CANONICAL_PREFIX[0]
        && b[1] == CANONICAL_PREFIX[1]
        && b[12] == CANONICAL_TOS_TAG[0]
        && b[13] == CANONICAL_TOS_TAG[1]
    {
        Ok(Some(p.cast_const()))
    } else {
        Ok(None)
    }
}

/// The loop guards' verdict on one probe.
enum Guard {
    /// Answer it, then [`Recent::record`] the answer.
    Answer(Recent),
    /// Drop it, counted under this counter, logged with this reason.
    Drop(Counter, Reason),
}

/// How to remember an answered probe in [`RECENT`].
enum Recent {
    /// Guards off (or no slot): nothing to remember.
    Off,
    /// First answer: the slot takes this fingerprint with one answer.
    New(*mut RecentSlot, u64),
    /// Answered before (fewer times than allowed): one more.
    Seen(*mut RecentSlot),
}

impl Recent {
    /// Notes one more answer. Plain stores, not atomics: two CPUs racing on
    /// one slot can at worst lose a count or a fingerprint, i.e. allow one
    /// extra answer, which still ends any loop.
    #[inline(always)]
    fn record(self) {
        match self {
            Recent::Off => {}
            // SAFETY: a value pointer from a successful lookup in this run.
            Recent::New(slot, fingerprint) => unsafe {
                (*slot).fingerprint = fingerprint;
                (*slot).answers = 1;
            },
            // SAFETY: as above.
            Recent::Seen(slot) => unsafe { (*slot).answers += 1 },
        }
    }
}

/// The loop guards (module docs): a probe from our own probe port is a
/// reflector's reply; a probe already answered `answers_per_probe` times is
/// coming round again. `addr` is the source address (IPv4 in the first four
/// bytes), `prefix` the canonical prefix at payload offset `payload`.
#[inline(always)]
fn loop_guard(
    ctx: &XdpContext,
    config: &ReflectorConfig,
    udp: *const UdpHdr,
    udp_len: usize,
    payload: usize,
    prefix: *const [u8; PREFIX_LEN],
    addr: [u8; 16],
) -> Guard {
    if !config.loop_guard_enabled() {
        return Guard::Answer(Recent::Off);
    }
    // SAFETY: `udp` came from ptr_at.
    let source = unsafe { (*udp).source };
    if u16::from_be(source) == config.port {
        return Guard::Drop(Counter::DropLoopPort, Reason::LoopPort);
    }
    // SAFETY: `prefix` holds PREFIX_LEN checked bytes, the signature among them.
    let p = unsafe { &*prefix };
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&p[SIGNATURE_OFFSET..SIGNATURE_OFFSET + SIGNATURE_LEN]);
    // The `sent` bytes when the datagram has them (every collector probe
    // does); zeros for a bare prefix.
    let mut sent = [0u8; 8];
    if udp_len >= UDP_HLEN + SENT_OFFSET + 8
        && let Ok(bytes) = ptr_at::<[u8; 8]>(ctx, payload + SENT_OFFSET)
    {
        // SAFETY: ptr_at checked the 8 bytes.
        sent = unsafe { *bytes };
    }
    let identity = recent_identity(&addr, source.to_ne_bytes(), &signature, &sent);
    let fingerprint = recent_hash(&identity, config.recent_seed);
    let index = fingerprint as u32 & config.recent_mask;
    // A mask larger than the table (a config written without the loader)
    // finds no slot: answer without remembering.
    let Some(slot) = RECENT.get_ptr_mut(index) else {
        return Guard::Answer(Recent::Off);
    };
    let limit = if config.answers_per_probe == 0 {
        1
    } else {
        config.answers_per_probe
    };
    // SAFETY: a value pointer from a successful lookup in this run.
    let (seen, answers) = unsafe { ((*slot).fingerprint == fingerprint, (*slot).answers) };
    if !seen {
        Guard::Answer(Recent::New(slot, fingerprint))
    } else if answers >= limit {
        Guard::Drop(Counter::DropRepeated, Reason::Repeated)
    } else {
        Guard::Answer(Recent::Seen(slot))
    }
}

/// Neither MAC is a group address (the I/G bit of the first octet): a probe
/// to broadcast/multicast must not be answered with a group source.
///
/// # Safety
///
/// `eth` must point to a whole [`EthHdr`] inside the packet, as [`ptr_at`]
/// returns it.
#[inline(always)]
unsafe fn unicast_macs(eth: *const EthHdr) -> bool {
    // SAFETY: the caller's guarantee.
    let (dst, src) = unsafe { ((*eth).dst[0], (*eth).src[0]) };
    (dst.to_ne_bytes()[0] | src.to_ne_bytes()[0]) & 0x01 == 0
}

/// Not 0.0.0.0, not multicast/reserved (224/3), not broadcast.
#[inline(always)]
fn unicast_v4(addr: [u16; 2]) -> bool {
    let first = addr[0].to_ne_bytes()[0];
    first != 0 && first < 224
}

/// Not `::` and not multicast (ff00::/8).
#[inline(always)]
fn unicast_v6(addr: &[u16; 8]) -> bool {
    let any = addr.iter().fold(0u16, |acc, w| acc | w);
    any != 0 && addr[0].to_ne_bytes()[0] != 0xff
}

/// Swaps the destination and source MAC addresses in place.
///
/// # Safety
///
/// `eth` must point to a whole [`EthHdr`] inside the packet, as
/// [`ptr_at`] returns it.
#[inline(always)]
#[expect(
    clippy::manual_swap,
    reason = "copies through the raw pointer: no reference into packet memory, and the loads and stores the verifier already accepts"
)]
unsafe fn swap_macs(eth: *mut EthHdr) {
    unsafe {
        let dst = (*eth).dst;
        (*eth).dst = (*eth).src;
        (*eth).src = dst;
    }
}

/// Swaps the source and destination UDP ports in place.
///
/// # Safety
///
/// `udp` must point to a whole [`UdpHdr`] inside the packet, as [`ptr_at`]
/// returns it.
#[inline(always)]
#[expect(
    clippy::manual_swap,
    reason = "copies through the raw pointer: no reference into packet memory, and the loads and stores the verifier already accepts"
)]
unsafe fn swap_ports(udp: *mut UdpHdr) {
    unsafe {
        let source = (*udp).source;
        (*udp).source = (*udp).dest;
        (*udp).dest = source;
    }
}

/// Takes a token from the global bucket, or reports that there is none.
/// Up to four compare-and-swap attempts: losing all four means other CPUs
/// are admitting probes at that very moment, so dropping this one errs on
/// the side of the limit.
#[inline(always)]
fn rate_ok(config: &ReflectorConfig) -> bool {
    if config.max_pps == 0 {
        return true;
    }
    let Some(state) = RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: map value pointer from a successful lookup, valid for the run.
    let tat_ptr = unsafe { &raw mut (*state).tat_ns };
    let now = unsafe { bpf_ktime_get_ns() };
    for _ in 0..4 {
        let tat = unsafe { core::ptr::read_volatile(tat_ptr) };
        let Some(next) = ratelimit::admit(tat, now, config.max_pps, config.burst) else {
            return false;
        };
        // SAFETY: `tat_ptr` is inside the map value looked up above.
        if unsafe { cmpxchg(tat_ptr, tat, next) } == tat {
            return true;
        }
    }
    false
}

/// BPF_ATOMIC | BPF_CMPXCHG on a map value (kernel >= 5.12): stores `new`
/// at `ptr` if it holds `expected`; returns the value it held. The bpfel
/// target has no CAS in `core::sync::atomic`, hence the asm.
///
/// # Safety
///
/// `ptr` must point to a `u64` inside a map value from a successful lookup
/// in this run of the program.
#[inline(always)]
unsafe fn cmpxchg(ptr: *mut u64, expected: u64, new: u64) -> u64 {
    let mut r0 = expected;
    // SAFETY: the caller's guarantee; the instruction is atomic.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({ptr} + 0, r0, {new})",
            ptr = in(reg) ptr,
            new = in(reg) new,
            inout("r0") r0,
            options(nostack),
        );
    }
    r0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
