//! The agent's integration tests: one test binary (one link, one copy of the
//! helpers) with a module per topic. Tests that need root, namespaces or the
//! XDP object skip themselves without them, and fail instead under CI (see
//! `llama_testkit::privileged`).
//!
//! Run one topic with `cargo test -p llama-agent --test agent <module>::`.

mod support;

mod agent_e2e;
mod collector_api;
mod collector_cli;
mod collector_hops;
mod collector_loss;
mod collector_netns;
mod collector_prometheus;
mod collector_swap;
mod collector_txstamp;
mod config_errors;
mod config_formats;
mod control_binary;
mod control_config;
mod control_failover;
mod control_guard;
mod control_registration;
mod control_settings;
mod reflector_cli;
mod reflector_ebpf_log;
mod reflector_loop;
mod reflector_netns;
mod reflector_probe_fuzz;
mod reflector_userspace;
mod reflector_xdp_testrun;
mod xdp_attach;
