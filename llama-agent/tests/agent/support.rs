//! What several test modules share.
//!
//! - [`control_server`], [`control_agent`]: an in-test llama server and a
//!   control loop with a recording config sink.
//! - [`reflector`]: reflectors for the collector's tests to probe.
//! - [`publications`]: waiting for and reading the collector's summaries.
//! - [`client`], [`packets`], [`capture`]: a probe client that sees the
//!   replies' TOS and TTL, hand-built frames, and an AF_PACKET capture.
//! - [`xdp_ready`]: the check that skips XDP tests on agents built without
//!   the XDP object.

pub mod capture;
pub mod client;
pub mod control_agent;
pub mod control_server;
pub mod packets;
pub mod publications;
pub mod reflector;

/// Whether `test` can use the XDP program: privileged, and the agent was
/// built with the XDP object (`cargo xtask build-ebpf`, which
/// `cargo xtask test` runs first). Otherwise skips, or fails under CI.
pub fn xdp_ready(test: &str) -> bool {
    if !llama_testkit::privileged(test) {
        return false;
    }
    llama_agent::xdp::embedded_object().is_some()
        || llama_testkit::cannot_run(
            test,
            "the agent was built without the XDP object; run `cargo xtask build-ebpf` first",
        )
}
