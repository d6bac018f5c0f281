//! The server's integration tests: one test binary (one link, one copy of
//! the helpers) with a module per topic. Tests that need `influxd` skip
//! themselves without it, and fail instead under CI.
//!
//! Run one topic with `cargo test -p llama-server --test server <module>::`.

mod support;

mod api;
mod binary;
mod guard;
mod influx_auth;
mod listen;
mod matrix_api;
mod registry;
mod render;
mod render_roundtrip;
mod replicas;
mod scraper;
mod slow_clients;
mod store_redis;
mod tls;
mod ui_browser;
