//! Developer tasks for llama: `cargo xtask <task>`.
//!
//! - `build-ebpf`: install the eBPF toolchain if needed and build the XDP object.
//! - `test`: install prerequisites, build the XDP object, check formatting
//!   and lints, run every test (privileged network-namespace and XDP suites
//!   included).
//! - `fmt`: format every crate, imports included (nightly rustfmt).
//! - `bench <name>`: benchmarks with the baseline measured in the same run.
//! - `demo`: the multi-host demo in network namespaces.
//! - `dist`: static release binaries for x86_64, aarch64 and armv7.
//! - `image`: container images from those binaries (podman).
//! - `test-vm`: the reflector in Debian kernels under qemu (x86_64, aarch64).

mod bench;
mod build_ebpf;
mod cmd;
mod demo;
mod dist;
mod fmt;
mod image;
mod prereqs;
mod test;
mod test_vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "llama developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the eBPF build needs (nightly rust-src, bpf-linker) and
    /// build the XDP object; prints the object's path.
    BuildEbpf(build_ebpf::Options),
    /// Install prerequisites, build the XDP object and run every test.
    Test(test::Options),
    /// Format every crate: `cargo fmt`, then the import layout (one `use`
    /// per crate, grouped std / external / crate) with nightly rustfmt.
    Fmt,
    /// Benchmarks: `reflector`, `collector` or `server` (results and method
    /// go to docs/benchmarks/).
    Bench(bench::Options),
    /// A server and N agents in network namespaces, printing the live
    /// loss/latency matrix every interval (Ctrl-C cleans up).
    Demo(demo::Options),
    /// Static (musl) release binaries of llama-agent and llama-server for
    /// x86_64, aarch64 and armv7 under target/dist/, with SHA256SUMS.
    Dist(dist::Options),
    /// Container images (agent, server for amd64, arm64, arm/v7; InfluxDB)
    /// from the dist binaries, saved under target/dist/images/.
    Image(image::Options),
    /// Boot Debian's x86_64 and arm64 kernels under qemu and check the
    /// agent's reflector on their virtio-net interface (XDP native,
    /// generic, userspace) from the host over a tap device.
    TestVm(test_vm::Options),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf(opts) => {
            let object = build_ebpf::build(&opts)?;
            println!("{}", object.display());
            Ok(())
        }
        Task::Test(opts) => test::run(&opts),
        Task::Fmt => fmt::apply(),
        Task::Demo(opts) => demo::run(&opts),
        Task::Bench(opts) => bench::run(&opts),
        Task::Dist(opts) => dist::run(&opts),
        Task::Image(opts) => image::run(&opts),
        Task::TestVm(opts) => test_vm::run(&opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_ebpf(args: &[&str]) -> Result<build_ebpf::Options, clap::Error> {
        let argv = ["cargo xtask", "build-ebpf"].iter().chain(args);
        match Cli::try_parse_from(argv)?.task {
            Task::BuildEbpf(opts) => Ok(opts),
            _ => unreachable!("parsed as build-ebpf"),
        }
    }

    #[test]
    fn build_ebpf_builds_the_release_object_unless_asked_for_debug() {
        assert!(!build_ebpf(&[]).unwrap().debug, "release by default");
        assert!(
            !build_ebpf(&["--release"]).unwrap().debug,
            "--release accepted"
        );
        assert!(build_ebpf(&["--debug"]).unwrap().debug);
        assert!(
            build_ebpf(&["--debug", "--release"]).is_err(),
            "one profile"
        );
    }
}
