//! The registry: groups of entries keyed by id, behind the [`Store`] trait so
//! a shared store (several servers) can replace the in-memory one. Methods
//! return boxed futures because a shared store does I/O; the memory store
//! answers at once.

mod memory;
mod redis;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
pub use memory::{MemoryStore, ShortnameRule, StoreLimits};
pub use redis::{RedisOptions, RedisStore};

use crate::{
    entry::{Entry, Id, Probe},
    error::Error,
};

/// A store operation's future.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// A group's entries, in registration order.
pub type Members = Vec<Arc<Entry>>;

/// Sizes of the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub probes: usize,
    pub groups: usize,
}

/// What one reap did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReapReport {
    /// Entries looked at.
    pub scanned: usize,
    /// Entries removed because their keepalive ran out.
    pub expired: usize,
    /// Entries removed because a newer entry of their group has the same
    /// `probe_shortname`.
    pub duplicates: usize,
    /// Groups removed because they became empty.
    pub groups_removed: usize,
    /// Wall time of the reap (including the pauses between batches).
    pub duration: Duration,
    /// The longest time the reap held a lock that registrations need.
    pub longest_lock: Duration,
    /// Rough memory held by the entries that remain (their JSON and
    /// structs), the original's `database_size_bytes`.
    pub approx_bytes: u64,
}

/// Where registrations live.
pub trait Store: Send + Sync + 'static {
    /// Inserts or refreshes the probe's entry (id `ip:port` within its group)
    /// and returns the stored entry.
    fn register(&self, probe: Probe, now: SystemTime) -> StoreFuture<'_, Arc<Entry>>;

    /// Removes the entry `id` from every group holding it; the number of
    /// entries removed (0: unknown id).
    fn remove(&self, id: Id) -> StoreFuture<'_, usize>;

    /// The members of one group, or `None` for an unknown group.
    fn group<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Members>>;

    /// Every group and its members, groups sorted by name.
    fn groups(&self) -> StoreFuture<'_, Vec<(Arc<str>, Members)>>;

    /// Numbers of entries and groups.
    fn counts(&self) -> StoreFuture<'_, Counts>;

    /// Removes entries older than their keepalive and all but the most
    /// recently refreshed entry among those of a group sharing a
    /// `probe_shortname`, then drops empty groups. Must not block
    /// registrations for more than a few milliseconds at a time, and must
    /// finish while registrations keep arriving.
    fn reap(&self, now: SystemTime) -> StoreFuture<'_, ReapReport>;

    /// Takes or keeps the lease `name` for `holder` for `ttl`: `true` when
    /// `holder` holds it. Work that one server of several sharing the store
    /// must do alone (scraping) runs only under its lease. A store private
    /// to one server grants every lease.
    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let _ = (name, holder, ttl);
        Box::pin(std::future::ready(Ok(true)))
    }
}
