//! The state every handler and background task shares.

use std::sync::Arc;

use crate::{
    access::Access,
    budget::RenderBudget,
    history::History,
    metrics::Metrics,
    registry::{MemoryStore, RedisStore, ShortnameRule, Store, StoreLimits},
    settings::{Settings, StoreSettings},
};

/// Shared, cheaply cloned state.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    /// Who may register and delete.
    pub access: Arc<Access>,
    /// Bytes of configs and lists in flight.
    pub render_budget: Arc<RenderBudget>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The store bounds `settings` ask for. With a registration token every
/// registration is authenticated, so a probe that moved to a new address
/// takes its name over at once; without one, a live entry keeps its name.
pub fn store_limits(settings: &Settings) -> StoreLimits {
    let l = &settings.limits;
    StoreLimits {
        max_entries: l.max_entries,
        max_group_members: l.max_group_members,
        max_groups: l.max_groups,
        shortnames: if settings.registration_token.is_some() {
            ShortnameRule::NewestWins
        } else {
            ShortnameRule::LiveKeeps
        },
    }
}

impl AppState {
    /// State over the in-memory store.
    pub fn new(settings: Settings) -> Self {
        let store = Arc::new(MemoryStore::with_limits(store_limits(&settings)));
        Self::with_store(settings, store)
    }

    /// State over the store `settings` name. Errs on a Redis URL the
    /// client refuses (connecting happens later, on demand).
    pub fn from_settings(settings: Settings) -> Result<Self, crate::error::Error> {
        let store: Arc<dyn Store> = match &settings.store {
            StoreSettings::Memory => Arc::new(MemoryStore::with_limits(store_limits(&settings))),
            StoreSettings::Redis(options) => {
                Arc::new(RedisStore::new(options.clone(), store_limits(&settings))?)
            }
        };
        Ok(Self::with_store(settings, store))
    }

    pub fn with_store(settings: Settings, store: Arc<dyn Store>) -> Self {
        let metrics = Metrics::new();
        let history = History::new(&settings.history_limits(), metrics.history.clone());
        AppState {
            store,
            access: Arc::new(Access::new(&settings)),
            render_budget: Arc::new(RenderBudget::new(settings.limits.max_render_bytes)),
            settings: Arc::new(settings),
            metrics: Arc::new(metrics),
            history: Arc::new(history),
        }
    }
}
