//! Waiting for the collector's publications, bounded in time.
#![allow(dead_code)]

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use llama_agent::collector::{
    Collector,
    summary::{PathSummary, Published},
};

/// The next publication after the one ending at `after` (seconds), waiting
/// at most `timeout`.
pub fn next_publication(c: &Collector, after: u64, timeout: Duration) -> Arc<Published> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = c.published();
        if p.interval_end > after {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no publication after {after} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The summary of path `dst` in `p`, if any.
pub fn path<'a>(p: &'a Published, dst: &str) -> Option<&'a PathSummary> {
    let dst: IpAddr = dst.parse().expect("address literal");
    p.paths.iter().find(|s| s.dst_ip == dst)
}

/// Total (sent, lost) over `p` for `dst`.
pub fn counts(p: &Published, dst: &str) -> (u64, u64) {
    path(p, dst).map_or((0, 0), |s| (s.sent, s.lost))
}
