//! The two clocks the collector reads. Probe send times and kernel receive
//! timestamps are CLOCK_REALTIME (what SO_TIMESTAMP* report and what the
//! wire format's `sent` means); pacing and timeouts run on CLOCK_MONOTONIC so
//! a wall-clock step cannot burst the sender or expire every probe at once.

use nix::time::{ClockId, clock_gettime};

use crate::net::timespec_ns;

/// Nanoseconds of `clock` (vDSO, no syscall). Both clocks are always
/// available on Linux; 0 stands for the impossible failure.
fn read(clock: ClockId) -> u64 {
    clock_gettime(clock).map_or(0, |ts| timespec_ns(ts.as_ref()))
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    read(ClockId::CLOCK_REALTIME)
}

/// Monotonic nanoseconds since boot.
pub fn monotonic_ns() -> u64 {
    read(ClockId::CLOCK_MONOTONIC)
}
