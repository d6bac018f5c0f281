//! Logging the reflector's drops: the XDP program only counts them (one log
//! call per packet would cost microseconds) and the userspace reflector
//! must not log per packet either (a flood would drown the log), so the
//! agent reads both paths' counters every few seconds and says when a limit
//! starts dropping probes — once, then at most once per [`RELOG_AFTER`]
//! with how many it dropped meanwhile.

use std::time::{Duration, Instant};

use tracing::warn;

/// How often the agent looks at the counters.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// A limit that keeps dropping is mentioned again after this long.
pub const RELOG_AFTER: Duration = Duration::from_secs(600);

const RATE: &str = "rate limit reached (--max-pps): probes dropped";
const ALLOW: &str = "probes from sources outside the allowlist dropped";
const LOOP_PORT: &str =
    "loop guard: probes sent from a reflector port dropped (another reflector's replies)";
const REPEATED: &str =
    "loop guard: probes answered --answers-per-probe times already dropped (a reflection loop)";
const LOG_SUPPRESSED: &str =
    "--ebpf-log: debug log lines suppressed in the kernel by --ebpf-log-rate";

/// The counters that mean "a probe was refused" (the XDP program's names,
/// then the userspace reflector's), and why; last, the debug log's lines
/// suppressed by its rate limit.
const DROPS: [(&str, &str); 9] = [
    ("drop_rate_limit", RATE),
    ("drop_allowlist", ALLOW),
    ("drop_loop_port", LOOP_PORT),
    ("drop_repeated", REPEATED),
    ("dropped_rate_limit", RATE),
    ("dropped_allowlist", ALLOW),
    ("dropped_loop_port", LOOP_PORT),
    ("dropped_repeated", REPEATED),
    ("log_suppressed", LOG_SUPPRESSED),
];

/// One drop counter's log state. Counting starts from zero: the agent
/// always loads the XDP program and starts the userspace reflector itself,
/// so every drop the counters hold happened since, including those before
/// the first look (a flood that starts with the agent is reported at the
/// first poll, not taken for a baseline).
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The counter's value when it was last logged (zero before that).
    logged_at_value: u64,
    last_log: Option<Instant>,
}

/// Remembers what was logged about each drop counter.
#[derive(Debug, Default)]
pub struct DropLog {
    seen: [Seen; DROPS.len()],
}

/// A line to log: the reason and how many probes were dropped since the
/// last line about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    pub counter: &'static str,
    pub reason: &'static str,
    pub dropped: u64,
}

impl DropLog {
    /// Compares `counters` (totals by counter name, from either path) with
    /// what was logged and returns the lines due at `now`.
    pub fn observe(&mut self, counters: &[(&str, u64)], now: Instant) -> Vec<DropReport> {
        let mut due = Vec::new();
        for (seen, (counter, reason)) in self.seen.iter_mut().zip(DROPS) {
            let Some(&(_, value)) = counters.iter().find(|(c, _)| *c == counter) else {
                continue;
            };
            let quiet = seen
                .last_log
                .is_none_or(|at| now.saturating_duration_since(at) >= RELOG_AFTER);
            if value > seen.logged_at_value && quiet {
                due.push(DropReport {
                    counter,
                    reason,
                    dropped: value - seen.logged_at_value,
                });
                seen.logged_at_value = value;
                seen.last_log = Some(now);
            }
        }
        due
    }

    /// [`DropLog::observe`], writing the lines as warnings.
    pub fn log(&mut self, counters: &[(&str, u64)], now: Instant) {
        for r in self.observe(counters, now) {
            let path = if r.counter.starts_with("dropped_") {
                "userspace reflector"
            } else {
                "xdp reflector"
            };
            warn!(
                counter = r.counter,
                dropped = r.dropped,
                "{path}: {}",
                r.reason
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use llama_common::Counter;

    use super::*;

    /// The XDP program's counters as the agent reads them, with two set.
    fn counters(rate: u64, repeated: u64) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let n = match c {
                    Counter::DropRateLimit => rate,
                    Counter::DropRepeated => repeated,
                    _ => 0,
                };
                (c.name(), n)
            })
            .collect()
    }

    #[test]
    fn a_limit_that_starts_dropping_is_logged_once_then_again_after_the_quiet_period() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        assert!(log.observe(&counters(0, 0), t0).is_empty(), "no drops");
        assert!(log.observe(&counters(0, 0), t0 + POLL_EVERY).is_empty());

        let first = log.observe(&counters(7, 0), t0 + 2 * POLL_EVERY);
        assert_eq!(
            first,
            [DropReport {
                counter: "drop_rate_limit",
                reason: DROPS[0].1,
                dropped: 7
            }]
        );
        // Still dropping: nothing more until RELOG_AFTER has passed.
        for i in 3..100 {
            let now = t0 + i * POLL_EVERY;
            if now < t0 + 2 * POLL_EVERY + RELOG_AFTER {
                assert!(log.observe(&counters(7 * i as u64, 0), now).is_empty());
            }
        }
        let later = log.observe(&counters(1_000, 0), t0 + 2 * POLL_EVERY + RELOG_AFTER);
        assert_eq!(later.len(), 1);
        assert_eq!(
            later[0].dropped,
            1_000 - 7,
            "counts what was dropped meanwhile"
        );
    }

    #[test]
    fn the_userspace_counters_are_watched_too() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        let stats = |n| [("received", 10 * n), ("dropped_loop_port", n)];
        log.observe(&stats(0), t0);
        let due = log.observe(&stats(3), t0 + POLL_EVERY);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].counter, due[0].dropped), ("dropped_loop_port", 3));
    }

    #[test]
    fn drops_before_the_first_look_are_reported_at_the_first_look() {
        let mut log = DropLog::default();
        let due = log.observe(&counters(12, 0), Instant::now());
        assert_eq!(
            due.iter()
                .map(|r| (r.counter, r.dropped))
                .collect::<Vec<_>>(),
            [("drop_rate_limit", 12)]
        );
    }

    #[test]
    fn each_reason_has_its_own_line_and_a_quiet_counter_says_nothing() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        let first = log.observe(&counters(5, 5), t0);
        assert_eq!(first.len(), 2);
        // Both were just logged: new drops wait for RELOG_AFTER.
        assert!(log.observe(&counters(6, 9), t0 + POLL_EVERY).is_empty());
        let due = log.observe(&counters(7, 9), t0 + RELOG_AFTER);
        let names: Vec<_> = due.iter().map(|r| (r.counter, r.dropped)).collect();
        assert_eq!(names, [("drop_rate_limit", 2), ("drop_repeated", 4)]);
        assert!(
            log.observe(&counters(6, 9), t0 + RELOG_AFTER * 2)
                .is_empty()
        );
    }
}
