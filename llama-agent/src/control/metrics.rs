//! Prometheus metrics of the control loop, exposed beside the collector's and
//! the reflector's on the agent's `/metrics`.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Which loop a backoff gauge belongs to.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Loop {
    Register,
    Poll,
}

impl EncodeLabelValue for Loop {
    // Hand-written: the derive would print `Register`, and label values are
    // conventionally lower case.
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Self::Register => "register",
            Self::Poll => "poll",
        })
    }
}

/// Label set of the backoff gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabel {
    pub r#loop: Loop,
}

/// The control loop's counters and gauges. Cheap to clone: every clone
/// shares the same values (prometheus-client metrics are `Arc`s inside).
#[derive(Debug, Clone, Default)]
pub struct ControlMetrics {
    pub registrations_ok: Counter,
    pub registrations_failed: Counter,
    pub config_fetches_ok: Counter,
    pub config_fetches_failed: Counter,
    pub config_changes_applied: Counter,
    pub config_rejected: Counter,
    /// The delay the loop is currently waiting because of failures (0 when healthy).
    pub current_backoff_seconds: Family<LoopLabel, Gauge<f64, AtomicU64>>,
    /// 1 when the last request to the server succeeded, else 0.
    pub server_reachable: Gauge,
    /// Position in `--server` of the server in use (0 = the first, preferred).
    pub active_server: Gauge,
    /// Moves from one server to another (failovers and returns).
    pub server_switches: Counter,
}

impl ControlMetrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register every metric into `registry` under the `llama_agent_control_`
    /// prefix (counters get the usual `_total` suffix on exposition).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("llama_agent_control");
        r.register(
            "registrations_ok",
            "Registrations the server accepted",
            self.registrations_ok.clone(),
        );
        r.register(
            "registrations_failed",
            "Registrations that failed (server down, slow or answering errors)",
            self.registrations_failed.clone(),
        );
        r.register(
            "config_fetches_ok",
            "Collector configs fetched from the server",
            self.config_fetches_ok.clone(),
        );
        r.register(
            "config_fetches_failed",
            "Collector config fetches that failed",
            self.config_fetches_failed.clone(),
        );
        r.register(
            "config_changes_applied",
            "Changed collector configs applied (persisted or fetched)",
            self.config_changes_applied.clone(),
        );
        r.register(
            "config_rejected",
            "Collector configs the collector refused (the previous one stays)",
            self.config_rejected.clone(),
        );
        r.register(
            "current_backoff_seconds",
            "Retry delay the loop is waiting after failures; 0 when healthy",
            self.current_backoff_seconds.clone(),
        );
        r.register(
            "server_reachable",
            "1 when the last request to the server succeeded, else 0",
            self.server_reachable.clone(),
        );
        r.register(
            "active_server",
            "Position in the --server list of the server in use (0 = the first, preferred one)",
            self.active_server.clone(),
        );
        r.register(
            "server_switches",
            "Moves from one server of the --server list to another (failovers and returns to the first)",
            self.server_switches.clone(),
        );
    }

    /// Set the backoff gauge of one loop.
    pub fn set_backoff(&self, kind: Loop, delay: Duration) {
        self.current_backoff_seconds
            .get_or_create(&LoopLabel { r#loop: kind })
            .set(delay.as_secs_f64());
    }

    /// The backoff gauge of one loop.
    pub fn backoff(&self, kind: Loop) -> f64 {
        self.current_backoff_seconds
            .get_or_create(&LoopLabel { r#loop: kind })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = ControlMetrics::new();
        m.registrations_ok.inc();
        m.set_backoff(Loop::Poll, Duration::from_millis(1500));
        m.server_reachable.set(1);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "llama_agent_control_registrations_ok_total 1",
            "llama_agent_control_registrations_failed_total 0",
            "llama_agent_control_config_changes_applied_total 0",
            "llama_agent_control_current_backoff_seconds{loop=\"poll\"} 1.5",
            "llama_agent_control_server_reachable 1",
            "llama_agent_control_active_server 0",
            "llama_agent_control_server_switches_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.backoff(Loop::Poll), 1.5);
    }
}
