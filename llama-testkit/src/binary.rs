//! The workspace's binaries for the tests of another package, whose
//! `CARGO_BIN_EXE_<name>` only names the package's own.

use std::{path::PathBuf, process::Command};

/// The binary of workspace package `package` (named as the package) in the
/// calling test's target directory (`target/<profile>/`, where a workspace
/// test run builds it), built with `cargo build --package` when missing
/// (a test run of one package alone).
pub fn workspace_binary(package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // Test binaries live in target/<profile>/deps/.
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = dir.join(package);
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--package", package])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {package} failed");
    }
    bin
}
