//! The reflector's counters as Prometheus metrics: `llama_reflector_packets`
//! by path (`xdp` or `userspace`) and counter, and the number of interfaces
//! where XDP is attached.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Outcome, Reflector};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
    counter: String,
}

/// The reflector's counters as of now, in a registry of their own (they are
/// totals read from the kernel map and the userspace threads, not events
/// this process counts as they happen, so a fresh registry is built for
/// each scrape).
pub fn registry(reflector: &Reflector) -> Registry {
    let mut registry = Registry::with_prefix("llama_reflector");
    let family = Family::<PathLabel, Counter>::default();
    if let Some(counters) = reflector.xdp_counters() {
        for (counter, value) in counters {
            family
                .get_or_create(&PathLabel {
                    path: "xdp",
                    counter: counter.name().to_owned(),
                })
                .inc_by(value);
        }
    }
    for (name, value) in reflector.userspace_stats().named() {
        family
            .get_or_create(&PathLabel {
                path: "userspace",
                counter: name.to_owned(),
            })
            .inc_by(value);
    }
    registry.register(
        "packets",
        "Reflector counters by path (xdp or userspace)",
        family,
    );
    let xdp_interfaces = Gauge::<i64>::default();
    xdp_interfaces.set(
        reflector
            .outcomes()
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Xdp(_)))
            .count() as i64,
    );
    registry.register(
        "xdp_interfaces",
        "Interfaces where the XDP program is attached",
        xdp_interfaces,
    );
    registry
}
