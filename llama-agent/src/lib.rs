//! llama-agent: the per-host daemon. It reflects probes (in the kernel with
//! XDP where it can, in userspace otherwise), sends probes to its peers and
//! keeps its registration and target list in sync with the server.

pub mod api;
pub mod collector;
pub mod config;
pub mod control;
pub mod daemon;
pub mod duration;
pub mod net;
pub mod reflector;
pub mod settings;
pub mod tags;
pub mod xdp;
