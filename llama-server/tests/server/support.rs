//! What several test modules share: the router driven in-process and HTTP
//! to a running server ([`app`]), agents serving `/influxdata` ([`agents`]),
//! a throwaway InfluxDB ([`influxd`]), config files and text checks.

pub mod agents;
pub mod app;
pub mod influxd;
pub mod pki;
pub mod redis;

use std::path::PathBuf;

/// An HTTP client for the tests. The TLS build's reqwest has no crypto
/// provider of its own (rustls with ring is set up by the server's
/// `tls::client_tls`), so every client is built through it.
pub fn client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    llama_server::tls::client_tls(builder, None, "test client")
        .expect("TLS client setup")
        .build()
        .expect("HTTP client")
}

/// [`client`] with reqwest's defaults.
pub fn http() -> reqwest::Client {
    client(reqwest::Client::builder())
}

/// `reqwest::get` through [`http`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

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
