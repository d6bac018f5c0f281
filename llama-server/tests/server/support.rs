//! What several test modules share: the router driven in-process and HTTP
//! to a running server ([`app`]), agents serving `/influxdata` ([`agents`]),
//! a throwaway InfluxDB ([`influxd`]), config files and text checks.

pub mod agents;
pub mod app;
pub mod influxd;

use std::path::PathBuf;

/// A config file `config.yml` holding `text`, in a directory removed when
/// the returned guard drops.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yml");
    std::fs::write(&path, text).expect("write the config file");
    (dir, path)
}

/// Panics naming the first of `needles` that `text` lacks, and `text`.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
}
