//! The reflector: answers LLAMA probes (docs/probe.md) on every interface,
//! in the kernel with the XDP program where it can attach and in userspace
//! everywhere else — loopback, unusual encodings and whatever XDP passes up.
//!
//! - [`decide`]: the per-datagram decision (pure, fuzzed).
//! - [`userspace`]: the batched userspace reflector, startable in-process.
//! - [`allowlist`], [`ratelimit`]: who is answered and how often.
//! - [`loopguard`]: no reflection loops (userspace half; the XDP program
//!   applies the same rules).
//! - [`attach`]: the `auto | xdp | xdp-skb | userspace` attach logic.
//! - [`interfaces`]: which interfaces carry the default routes.
//! - [`metrics`]: the counters of both paths for `/metrics`.
//! - [`flags`]: the reflector's flags, shared by `run` and `reflect`.
//! - [`cli`]: the `llama-agent reflect` subcommand.

pub mod allowlist;
pub mod attach;
pub mod cli;
pub mod decide;
pub mod drops;
pub mod flags;
pub mod interfaces;
pub mod loopguard;
pub mod metrics;
pub mod ratelimit;
pub mod userspace;

pub use allowlist::{AllowSpec, Allowlist};
pub use attach::{Mode, Outcome, Reflector, ReflectorSetup};
pub use userspace::{ReflectorHandle, ReflectorOptions, ReflectorStats, UserspaceReflector};
