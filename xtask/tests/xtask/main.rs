//! xtask's integration tests: what `cargo xtask dist` and `cargo xtask
//! image` ship, run as users run it (dist binaries under qemu-user,
//! images under podman), and the deployment files checked against it
//! (systemd units, compose and Kubernetes manifests, Grafana dashboards),
//! and how `cargo xtask test-vm` ends when a guest hangs or is interrupted.
//! One test binary (one link, one copy of the helpers) with a module per
//! topic; tests whose artefacts or tools are missing skip themselves, and
//! fail instead under CI.
//!
//! Run one topic with `cargo test -p xtask --test xtask <module>::`.

mod support;

mod container;
mod dashboards;
mod dist_qemu;
mod manifests;
mod systemd_units;
mod test_vm;
