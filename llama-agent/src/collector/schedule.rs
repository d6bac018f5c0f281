//! Send pacing. A test's cycle (one probe to every target from every port)
//! lasts `1/cps` seconds, and its `targets × ports` probes are spread evenly
//! across it: probe `k` of the test is due at `start + k × cycle / slots`.
//! Deadlines are absolute, computed from the probe's index, so pacing never
//! drifts however late a wake-up is. Consecutive slots go to different
//! targets (target = k mod targets), so each target sees its probes evenly
//! spaced too, and each collector starts at a random phase in the cycle so a
//! fleet does not synchronise.

/// If the sender falls further behind than this (the machine stalled), it
/// skips the missed slots instead of bursting them out.
pub const MAX_LAG_NS: u64 = 20_000_000;

#[derive(Clone, Debug)]
pub struct Schedule {
    start_ns: u64,
    slot_ns: f64,
    slots_per_cycle: u64,
    targets: u64,
    next: u64,
}

/// Which probe a slot sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub port: usize,
    pub target: usize,
}

impl Schedule {
    /// A schedule for `ports × targets` probes per cycle at `cps` cycles per
    /// second, first slot at `now_ns + phase × cycle` (`phase` in [0, 1)).
    pub fn new(cps: f64, ports: usize, targets: usize, now_ns: u64, phase: f64) -> Self {
        let slots_per_cycle = (ports * targets).max(1) as u64;
        let cycle_ns = 1e9 / cps;
        Self {
            // Saturating: a tiny cps makes the cycle (and the phase) longer
            // than the clock's range; such a test simply never sends.
            start_ns: now_ns.saturating_add((phase.clamp(0.0, 1.0) * cycle_ns) as u64),
            slot_ns: cycle_ns / slots_per_cycle as f64,
            slots_per_cycle,
            targets: targets.max(1) as u64,
            next: 0,
        }
    }

    fn deadline_of(&self, k: u64) -> u64 {
        // Split into whole cycles and the slot within, so the float part
        // stays small and exact over months of running.
        let cycle = k / self.slots_per_cycle;
        let within = k % self.slots_per_cycle;
        let cycle_ns = self.slot_ns * self.slots_per_cycle as f64;
        self.start_ns
            .saturating_add((cycle as f64 * cycle_ns + within as f64 * self.slot_ns) as u64)
    }

    /// When the next probe is due.
    pub fn next_deadline(&self) -> u64 {
        self.deadline_of(self.next)
    }

    /// The next slot if it is due at `now_ns`, advancing past it. Returns
    /// the number of slots skipped first because the sender lagged more than
    /// [`MAX_LAG_NS`].
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(Slot, u64)> {
        let mut skipped = 0;
        if now_ns.saturating_sub(self.next_deadline()) > MAX_LAG_NS {
            // Jump to the first slot due at or after now.
            let behind = (now_ns - self.next_deadline()) as f64 / self.slot_ns;
            let jump = behind as u64;
            self.next += jump;
            skipped = jump;
            while self.next_deadline() < now_ns.saturating_sub(MAX_LAG_NS) {
                self.next += 1;
                skipped += 1;
            }
        }
        if self.next_deadline() > now_ns {
            return None;
        }
        let within = self.next % self.slots_per_cycle;
        let slot = Slot {
            port: (within / self.targets) as usize,
            target: (within % self.targets) as usize,
        };
        self.next += 1;
        Some((slot, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_evenly_spread_and_cover_every_pair_each_cycle() {
        // 4 cycles/s, 2 ports x 3 targets: a probe every 1/24 s.
        let mut s = Schedule::new(4.0, 2, 3, 1_000, 0.0);
        let mut seen = Vec::new();
        let mut last = None;
        for _ in 0..12 {
            let d = s.next_deadline();
            if let Some(l) = last {
                let gap: u64 = d - l;
                assert!((41_666_666..=41_666_667).contains(&gap), "gap {gap}");
            }
            last = Some(d);
            let (slot, skipped) = s.pop_due(d).expect("due at its deadline");
            assert_eq!(skipped, 0);
            seen.push((slot.port, slot.target));
        }
        let cycle: Vec<_> = seen[..6].to_vec();
        assert_eq!(cycle, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(&seen[6..], &cycle[..], "the next cycle repeats the order");
        // Exactly 4 cycles per second.
        assert_eq!(s.deadline_of(24) - s.deadline_of(0), 1_000_000_000);
    }

    #[test]
    fn nothing_is_due_early_and_phase_offsets_the_start() {
        let mut s = Schedule::new(1.0, 1, 1, 0, 0.25);
        assert_eq!(s.next_deadline(), 250_000_000);
        assert!(s.pop_due(249_999_999).is_none());
        assert!(s.pop_due(250_000_000).is_some());
    }

    #[test]
    fn a_vanishing_rate_never_sends_and_never_overflows() {
        let mut s = Schedule::new(1e-300, 4, 3, u64::MAX / 2, 0.9);
        assert_eq!(s.next_deadline(), u64::MAX);
        assert!(s.pop_due(u64::MAX - 1).is_none());
    }

    #[test]
    fn a_long_stall_skips_instead_of_bursting() {
        let mut s = Schedule::new(1000.0, 1, 1, 0, 0.0);
        let now = 5_000_000_000; // 5 s late: 5000 slots behind
        let (_, skipped) = s.pop_due(now).expect("due");
        assert!(skipped >= 4_800, "skipped {skipped}");
        let mut burst = 0;
        while s.pop_due(now).is_some() {
            burst += 1;
        }
        assert!(
            burst <= 101,
            "at most MAX_LAG worth of catch-up, got {burst}"
        );
    }
}
