//! The state every handler and background task shares.

use std::sync::Arc;

use crate::{
    history::History,
    metrics::Metrics,
    registry::{MemoryStore, Store},
    settings::Settings,
};

/// Shared, cheaply cloned state.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over the in-memory store.
    pub fn new(settings: Settings) -> Self {
        let store = Arc::new(MemoryStore::new(settings.limits.max_entries));
        Self::with_store(settings, store)
    }

    pub fn with_store(settings: Settings, store: Arc<dyn Store>) -> Self {
        let metrics = Metrics::new();
        let history = History::new(&settings.history_limits(), metrics.history.clone());
        AppState {
            store,
            settings: Arc::new(settings),
            metrics: Arc::new(metrics),
            history: Arc::new(history),
        }
    }
}
