//! What several test modules share: the Grafana dashboards' queries
//! ([`dashboards`]), the dist binaries' `--help` ([`help`]), HTTP from a
//! test namespace ([`http`]), containers ([`podman`]), and the repository's
//! files.

pub mod dashboards;
pub mod help;
pub mod http;
pub mod podman;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The bound on each wait for emulated or containerised processes:
/// qemu-user is slow and the machine is shared.
pub const WAIT: Duration = Duration::from_secs(90);

/// How often those waits check: each check runs a command or asks an
/// emulated server.
pub const EVERY: Duration = Duration::from_millis(250);

/// The repository's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A file of the repository, as text.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Whether `program --version` runs; otherwise reports that `test` cannot
/// run (`install` says how to get it), which fails under CI.
pub fn tool_available(test: &str, program: &str, install: &str) -> bool {
    if std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    llama_testkit::cannot_run(test, &format!("{program} is not installed ({install})"))
}
