//! The two clocks the collector reads. Probe send times and kernel receive
//! timestamps are CLOCK_REALTIME (what SO_TIMESTAMP* report and what the
//! wire format's `sent` means); pacing and timeouts run on CLOCK_MONOTONIC so
//! a wall-clock step cannot burst the sender or expire every probe at once.

/// Nanoseconds of `clock` (vDSO, no syscall).
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are
    // always supported on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    timespec_ns(&ts)
}

/// A timespec as nanoseconds (negative values clamp to 0).
pub fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec.max(0) as u64)
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

/// Monotonic nanoseconds since boot.
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}
