//! Waiting for the collector's publications, bounded in time.

use std::{net::IpAddr, sync::Arc, time::Duration};

use llama_agent::collector::{
    Collector,
    summary::{PathSummary, Published},
};

/// The next publication after the one ending at `after` (seconds), waiting
/// at most `timeout`.
pub fn next_publication(c: &Collector, after: u64, timeout: Duration) -> Arc<Published> {
    llama_testkit::wait_for(&format!("a publication after {after}"), timeout, || {
        let p = c.published();
        (p.interval_end > after).then_some(p)
    })
}

/// The summary of path `dst` in `p`, if any.
pub fn path<'a>(p: &'a Published, dst: &str) -> Option<&'a PathSummary> {
    let dst: IpAddr = dst.parse().expect("address literal");
    p.paths.iter().find(|s| s.dst_ip == dst)
}
