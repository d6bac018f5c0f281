//! Which of several servers sharing one store scrapes: the holder of the
//! store's `scraper` lease, so InfluxDB gets every point once. The lease
//! lasts 1.5 intervals and its holder renews it at the start of each round;
//! every server's rounds start at the same wall-clock boundaries, so a dead
//! holder's lease runs out before the second round after its last renewal,
//! when another server takes it. A server that cannot reach the store
//! keeps scraping only while the lease it last renewed would still hold,
//! so two servers never scrape the same round.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{metrics::Metrics, registry::Store};

/// The lease's name in the store.
const NAME: &str = "scraper";

/// State values for logging changes once.
const UNKNOWN: u8 = 0;
const HOLDING: u8 = 1;
const WAITING: u8 = 2;

/// This server's claim on the scraper lease.
pub struct ScrapeLease {
    store: Arc<dyn Store>,
    /// Unique per process: host name, pid and start time.
    holder: String,
    ttl: Duration,
    /// Until when the last successful renewal holds.
    held_until: Mutex<Option<Instant>>,
    state: AtomicU8,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ScrapeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeLease")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl ScrapeLease {
    /// A claim for rounds every `interval`.
    pub fn new(store: Arc<dyn Store>, interval: Duration, metrics: Arc<Metrics>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            store,
            holder: format!("{host}:{}:{started}", std::process::id()),
            ttl: interval.mul_f64(1.5),
            held_until: Mutex::new(None),
            state: AtomicU8::new(UNKNOWN),
            metrics,
        }
    }

    /// Whether this server scrapes the round starting now.
    pub async fn hold(&self) -> bool {
        let asked = Instant::now();
        let held = match self.store.lease(NAME, &self.holder, self.ttl).await {
            Ok(held) => {
                *self
                    .held_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = held.then(|| asked + self.ttl);
                held
            }
            Err(error) => {
                let until = *self
                    .held_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let held =
                    until.is_some_and(|until| Instant::now() + Duration::from_millis(100) < until);
                tracing::debug!(%error, held, "cannot renew the scraper lease");
                held
            }
        };
        self.metrics.scraper_leader.set(i64::from(held));
        let state = if held { HOLDING } else { WAITING };
        if self.state.swap(state, Ordering::Relaxed) != state {
            if held {
                tracing::info!(holder = %self.holder, "this server scrapes (it holds the scraper lease)");
            } else {
                tracing::info!(
                    "another server scrapes (it holds the scraper lease); this one waits"
                );
            }
        }
        held
    }
}
