//! `cargo xtask test`: everything a fresh machine needs, then every test.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{build_ebpf, cmd, demo, dist, fmt, image, prereqs, test_vm};

#[derive(Args, Debug)]
pub struct Options {
    /// Extra arguments passed to `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    prereqs::ensure(prereqs::TEST_PACKAGES)?;
    if cmd::is_root() {
        // qemu's system emulators: the guests below and the test of a
        // hung guest in the suite.
        test_vm::ensure_packages()?;
    }
    let object = build_ebpf::build_release()?;
    eprintln!("XDP object: {}", object.display());

    fmt::check()?;

    if cmd::output(Command::new("cargo").args(["clippy", "--version"])).is_none() {
        cmd::run(Command::new("rustup").args(["component", "add", "clippy"]))?;
    }
    cmd::run(
        Command::new("cargo")
            .current_dir(cmd::workspace_root())
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "llama-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
    )?;
    build_ebpf::clippy()?;

    // The shipped artefacts, which the qemu-user, container and deployment
    // tests run: static binaries for every architecture, then the images.
    let started = std::time::Instant::now();
    let binaries = dist::build(&dist::Arch::ALL)?;
    eprintln!("dist: {:.0?}", started.elapsed());
    if cmd::is_root() {
        let started = std::time::Instant::now();
        image::build(&binaries)?;
        eprintln!("image: {:.0?}", started.elapsed());
    }

    let mut test = Command::new("cargo");
    test.current_dir(cmd::workspace_root()).args([
        "test",
        "--workspace",
        "--exclude",
        "llama-ebpf",
    ]);
    // Privileged suites must run, not skip, when driven from here as root.
    if cmd::is_root() {
        test.env("LLAMA_REQUIRE_PRIVILEGED", "1");
    }
    test.args(&opts.cargo_args);
    cmd::run(&mut test)?;

    if !opts.cargo_args.is_empty() {
        return Ok(()); // a filtered run: the caller wants just those tests
    }
    // The reflector on Debian's x86_64 and arm64 kernels and a real NIC
    // driver (virtio_net), in qemu guests.
    if cmd::is_root() {
        let started = std::time::Instant::now();
        eprintln!("+ cargo xtask test-vm --arch all");
        test_vm::run(&test_vm::Options::all())?;
        eprintln!("test-vm: {:.0?}", started.elapsed());
    } else if llama_testkit::privileged_required() {
        anyhow::bail!("test-vm needs root (CI=true forbids skipping it)");
    } else {
        eprintln!("SKIPPED test-vm: it needs root");
    }
    // The README's main command, end to end: two intervals with loss on one
    // host, and the matrix must show it on exactly that host's cells.
    if cmd::is_root() {
        eprintln!("+ cargo xtask demo --hosts 4 --interval 5 --intervals 2 --loss h2=30 --check");
        demo::run(&demo::Options {
            hosts: 4,
            interval: 5,
            loss: vec![("h2".to_owned(), 30)],
            mode: "auto".to_owned(),
            intervals: Some(2),
            check: true,
            // Any free port: the check fetches the page through it.
            ui: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            cps: None,
        })?;
    } else {
        assert_demo_can_be_skipped()?;
    }
    Ok(())
}

fn assert_demo_can_be_skipped() -> Result<()> {
    if llama_testkit::privileged_required() {
        anyhow::bail!("the demo check needs root (CI=true forbids skipping it)");
    }
    eprintln!("SKIPPED the demo check: it needs root");
    Ok(())
}
