//! The reaper task: every `reap_interval`, ask the store to drop expired and
//! duplicate entries and empty groups, and record what it did.

use std::time::SystemTime;

use tokio::sync::watch;

use crate::{registry::ReapReport, state::AppState};

/// Runs one reap now and records it.
pub async fn reap_once(state: &AppState) -> Option<ReapReport> {
    match state.store.reap(SystemTime::now()).await {
        Ok(report) => {
            state.metrics.record_reap(&report);
            let removed = report.expired + report.duplicates;
            if removed > 0 || report.groups_removed > 0 {
                tracing::info!(
                    expired = report.expired,
                    duplicates = report.duplicates,
                    groups_removed = report.groups_removed,
                    took_ms = report.duration.as_secs_f64() * 1e3,
                    "reaped"
                );
            } else {
                tracing::debug!(scanned = report.scanned, "reap: nothing to remove");
            }
            Some(report)
        }
        Err(e) => {
            tracing::warn!(%e, "reap failed");
            None
        }
    }
}

/// Reaps every `state.settings.reap_interval` until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(state.settings.reap_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; nothing can have expired yet.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        reap_once(&state).await;
    }
}
