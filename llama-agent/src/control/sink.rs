//! The boundary between the control loop and the collector/reflector.

use tracing::info;

/// Receives the collector configs the control loop obtains (persisted at
/// start-up, fetched from the server, or a standalone file).
///
/// Called only when the text changed; never concurrently. `apply` runs on a
/// blocking thread, so it may take its time swapping sockets.
pub trait ConfigSink: Send + Sync + 'static {
    /// Apply a collector config (the YAML text the server served, DESIGN A2).
    /// Err = the text was rejected (kept: the previous config stays in force).
    fn apply(&self, yaml: &str) -> Result<(), String>;
}

/// Placeholder sink until the collector is wired in: checks that the text is
/// YAML and logs what would be applied. The agent's final wiring replaces it
/// with the collector (which parses DESIGN A2 properly and swaps targets).
#[derive(Debug, Default)]
pub struct LoggingSink;

impl ConfigSink for LoggingSink {
    fn apply(&self, yaml: &str) -> Result<(), String> {
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
        let mapping = value.as_mapping().ok_or("not a YAML mapping")?;
        let keys: Vec<&str> = mapping.keys().filter_map(|k| k.as_str()).collect();
        let targets = mapping
            .get("targets")
            .and_then(|t| t.as_mapping())
            .map(|t| {
                t.values()
                    .filter_map(|v| v.as_sequence())
                    .map(Vec::len)
                    .sum::<usize>()
            });
        info!(
            bytes = yaml.len(),
            keys = %keys.join(","),
            targets = targets.unwrap_or(mapping.len()),
            "collector config would be applied (logging sink: no collector wired)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_sink_accepts_yaml_maps_and_refuses_the_rest() {
        let s = LoggingSink;
        assert!(
            s.apply("targets:\n  g: [{ip: 10.0.0.1, port: 8100}]\n")
                .is_ok()
        );
        assert!(s.apply("10.0.0.1: {name: a}\n").is_ok());
        assert!(s.apply("- just\n- a list\n").is_err());
        assert!(s.apply("a: [unclosed\n").is_err());
    }
}
