//! The llama XDP reflector: answers LLAMA probes inside the driver.
//!
//! This is the foundation version: it owns the maps the agent expects and
//! counts what it sees, and passes every packet up to the kernel stack, where
//! the userspace reflector answers. The in-kernel rewrite lands with the
//! reflector issue.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use llama_common::{Counter, ReflectorConfig};

#[map(name = "LLAMA_CONFIG")]
static CONFIG: Array<ReflectorConfig> = Array::with_max_entries(1, 0);

#[map(name = "LLAMA_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[xdp]
pub fn llama_reflect(ctx: XdpContext) -> u32 {
    try_llama_reflect(&ctx)
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn try_llama_reflect(ctx: &XdpContext) -> u32 {
    const ETH_HLEN: usize = 14;
    let _ = CONFIG.get(0);
    if ctx.data() + ETH_HLEN > ctx.data_end() {
        count(Counter::PassMalformed);
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
