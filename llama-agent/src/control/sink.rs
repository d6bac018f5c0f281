//! The boundary between the control loop and the collector/reflector; the
//! agent's implementation is `daemon::CollectorSink`.

/// Receives the collector configs the control loop obtains (persisted at
/// start-up, fetched from the server, or a standalone file).
///
/// Called only when the text changed; never concurrently. `apply` runs on a
/// blocking thread, so it may take its time swapping sockets.
pub trait ConfigSink: Send + Sync + 'static {
    /// Apply a collector config (the YAML text the server served, docs/collector-config.md).
    /// Err = the text was rejected (kept: the previous config stays in force).
    fn apply(&self, yaml: &str) -> Result<(), String>;
}
