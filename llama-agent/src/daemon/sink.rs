//! The control loop's [`ConfigSink`] for the real agent: server configs go to
//! the collector (started on the first, swapped in place afterwards) and,
//! with `--allow peers`, to the reflector's allowlist.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
};

use tracing::{info, warn};

use crate::{
    collector::{Collector, Shared, txstamp::TxTimestamps},
    config::{CollectorConfig, Limits, LoadOptions},
    control::ConfigSink,
    reflector::{Reflector, allowlist},
};

pub struct CollectorSink {
    legacy_port: u16,
    allow_peers: bool,
    limits: Limits,
    collector: Mutex<Option<Collector>>,
    /// The state the API serves: a detached one until the collector runs.
    shared: RwLock<Arc<Shared>>,
    reflector: Arc<Mutex<Option<Reflector>>>,
    tx_timestamps: TxTimestamps,
}

impl CollectorSink {
    pub fn new(
        legacy_port: u16,
        allow_peers: bool,
        reflector: Arc<Mutex<Option<Reflector>>>,
        limits: Limits,
    ) -> Self {
        Self {
            legacy_port,
            allow_peers,
            limits,
            collector: Mutex::new(None),
            shared: RwLock::new(Shared::detached()),
            reflector,
            tx_timestamps: TxTimestamps::default(),
        }
    }

    /// The collector's `--tx-timestamps` (default on).
    pub fn with_tx_timestamps(mut self, tx: TxTimestamps) -> Self {
        self.tx_timestamps = tx;
        self
    }

    /// The collector state the API should serve now.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Stops the collector (no more probes); safe to call twice.
    pub fn shutdown(&self) {
        let taken = match self.collector.lock() {
            Ok(mut c) => c.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(c) = taken {
            c.shutdown();
            info!("collector stopped");
        }
    }

    fn follow_peers(&self, config: &CollectorConfig) {
        if !self.allow_peers {
            return;
        }
        let mut peers: Vec<IpAddr> = config
            .tests
            .iter()
            .flat_map(|t| &t.targets)
            .map(|t| t.addr.ip())
            .collect();
        peers.sort();
        peers.dedup();
        // Our own entry is served as loopback; loopback traffic never meets
        // XDP and the userspace reflector checks the same list, so keep it.
        let cidrs: Vec<_> = peers.iter().map(|&ip| allowlist::host(ip)).collect();
        let Ok(mut guard) = self.reflector.lock() else {
            return;
        };
        if let Some(reflector) = guard.as_mut() {
            match reflector.set_allowlist(Some(&cidrs)) {
                Ok(()) => info!(peers = cidrs.len(), "reflector allowlist follows the group"),
                Err(e) => warn!("updating the reflector allowlist failed: {e}"),
            }
        }
    }
}

impl ConfigSink for CollectorSink {
    fn apply(&self, yaml: &str) -> Result<(), String> {
        let config = CollectorConfig::from_yaml(
            yaml,
            &LoadOptions {
                legacy_port: self.legacy_port,
                limits: self.limits,
            },
        )
        .map_err(|e| e.to_string())?;
        let mut collector = self
            .collector
            .lock()
            .map_err(|_| "collector lock poisoned".to_owned())?;
        match collector.as_ref() {
            Some(running) => {
                let report = running
                    .swap_config(config.clone())
                    .map_err(|e| e.to_string())?;
                info!(?report, "collector config swapped in place");
            }
            None => {
                let started = Collector::start_with(config.clone(), self.tx_timestamps)
                    .map_err(|e| e.to_string())?;
                if let Ok(mut shared) = self.shared.write() {
                    *shared = started.shared();
                }
                info!("collector started");
                *collector = Some(started);
            }
        }
        drop(collector);
        self.follow_peers(&config);
        Ok(())
    }
}
