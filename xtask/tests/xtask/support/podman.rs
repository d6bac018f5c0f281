//! Containers started by a test with the images of `cargo xtask image`,
//! removed on drop, and the check that those images exist.

use std::{
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
};

use llama_testkit::{cannot_run, dist};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A detached container; `podman rm -f` on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `podman run -d --name <unique> <args…>`; panics if podman refuses.
    pub fn run(label: &str, args: &[&str]) -> Self {
        Self::start(&["run", "-d"], label, args)
    }

    /// `podman create --name <unique> <args…>`: a container that does not
    /// run, to copy files out of; panics if podman refuses.
    pub fn create(label: &str, args: &[&str]) -> Self {
        Self::start(&["create"], label, args)
    }

    fn start(command: &[&str], label: &str, args: &[&str]) -> Self {
        let name = format!(
            "llama-t{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = dist::podman()
            .args(command)
            .args(["--name", &name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman");
        assert!(
            out.status.success(),
            "podman {command:?} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    /// stdout and stderr of the container so far.
    pub fn logs(&self) -> String {
        let out = dist::podman()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Whether the container's process is still running.
    pub fn running(&self) -> bool {
        dist::podman()
            .args(["inspect", "--format", "{{.State.Running}}", &self.name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = dist::podman()
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `images` exist in podman's storage (and podman runs). When not,
/// prints why and returns `false`; under CI, where `cargo xtask test`
/// builds them first, it panics instead.
pub fn images_available(test: &str, images: &[String]) -> bool {
    let missing: Vec<&String> = images
        .iter()
        .filter(|i| {
            !dist::podman()
                .args(["image", "exists", i])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    missing.is_empty()
        || cannot_run(
            test,
            &format!(
                "missing images {missing:?}; run `cargo xtask image` (`cargo xtask test` does)"
            ),
        )
}
