//! The in-memory store. One lock for the group map (taken for writing only to
//! add or drop a group) and one per group, so registrations of different
//! groups do not contend. The reaper scans a group in chunks under short read
//! locks, decides without any lock, then removes in small batches under short
//! write locks, re-checking that each doomed entry was not refreshed since it
//! was scanned: no lock is held for longer than one chunk, whatever the size.
//! It yields to other tasks after every [`SCAN_CHUNK`] entries of work, not
//! after every group, so a pass over many small groups also ends while a
//! flood of registrations keeps the runtime busy.
//!
//! Registrations are bounded by [`StoreLimits`]: entries in all, members per
//! group, groups; and a [`ShortnameRule`] says whether another id may take
//! over the `probe_shortname` of a live entry.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Instant, SystemTime},
};

use super::{Counts, Members, ReapReport, Store, StoreFuture};
use crate::{
    entry::{Entry, Id, Probe},
    error::Error,
};

/// Entries scanned per read lock.
const SCAN_CHUNK: usize = 1024;
/// Entries removed per write lock.
const REMOVE_BATCH: usize = 256;

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding a lock cannot leave these maps inconsistent
    // (every mutation is a single insert/remove), so poisoning is ignored.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// What a registration that names the `probe_shortname` of a live entry
/// with another id (address or port) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortnameRule {
    /// It is stored; the reaper keeps the most recently refreshed entry of
    /// the name (a probe that moved). For authenticated registrations.
    NewestWins,
    /// It is refused while the live entry keeps refreshing: without
    /// authentication anyone could otherwise evict a running probe.
    LiveKeeps,
}

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_entries: usize,
    pub max_group_members: usize,
    pub max_groups: usize,
    pub shortnames: ShortnameRule,
}

impl StoreLimits {
    /// `max_entries` in all, no other bound, newest wins.
    pub fn entries(max_entries: usize) -> Self {
        StoreLimits {
            max_entries,
            max_group_members: usize::MAX,
            max_groups: usize::MAX,
            shortnames: ShortnameRule::NewestWins,
        }
    }
}

#[derive(Default)]
struct GroupMembers {
    slots: Vec<Arc<Entry>>,
    index: HashMap<Id, usize>,
    /// The ids holding each `probe_shortname`.
    shortnames: HashMap<Box<str>, Vec<Id>>,
}

impl GroupMembers {
    fn name_added(&mut self, e: &Entry) {
        let short = e.probe.shortname();
        match self.shortnames.get_mut(short) {
            Some(ids) => ids.push(e.probe.id),
            None => {
                self.shortnames.insert(short.into(), vec![e.probe.id]);
            }
        }
    }

    fn name_removed(&mut self, e: &Entry) {
        let short = e.probe.shortname();
        if let Some(ids) = self.shortnames.get_mut(short) {
            ids.retain(|id| *id != e.probe.id);
            if ids.is_empty() {
                self.shortnames.remove(short);
            }
        }
    }

    fn push(&mut self, entry: Arc<Entry>) {
        self.name_added(&entry);
        self.index.insert(entry.probe.id, self.slots.len());
        self.slots.push(entry);
    }

    /// Replaces slot `i`, returning the old entry (to be freed unlocked).
    fn replace(&mut self, i: usize, entry: Arc<Entry>) -> Arc<Entry> {
        let renamed = self.slots[i].probe.shortname() != entry.probe.shortname();
        if renamed {
            let old = self.slots[i].clone();
            self.name_removed(&old);
            self.name_added(&entry);
        }
        std::mem::replace(&mut self.slots[i], entry)
    }

    /// Removes slot `i`, returning the entry so the caller can free it after
    /// releasing the lock.
    fn remove_at(&mut self, i: usize) -> Arc<Entry> {
        let removed = self.slots.swap_remove(i);
        self.index.remove(&removed.probe.id);
        self.name_removed(&removed);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.probe.id, i);
        }
        removed
    }

    /// A live entry with another id holding `probe`'s shortname. (Not only
    /// another IP address: a registration may name any `ip`, so "the same
    /// host on another port" would let anyone evict a probe.)
    fn live_holder(&self, probe: &Probe, now: SystemTime) -> Option<Id> {
        let ids = self.shortnames.get(probe.shortname())?;
        ids.iter()
            .filter(|id| **id != probe.id)
            .find(|id| {
                self.index
                    .get(id)
                    .is_some_and(|&i| !self.slots[i].expired(now))
            })
            .copied()
    }
}

#[derive(Default)]
struct Group {
    members: RwLock<GroupMembers>,
}

/// The registry in this process's memory.
pub struct MemoryStore {
    groups: RwLock<HashMap<Arc<str>, Arc<Group>>>,
    total: AtomicUsize,
    seq: AtomicU64,
    limits: StoreLimits,
    /// One reap at a time. (A deletion during a reap's scan can move an
    /// unscanned entry into the scanned part; it is then looked at by the
    /// next reap, which is harmless.)
    reaping: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.total.load(Ordering::Relaxed))
            .finish()
    }
}

enum Reason {
    Expired,
    Duplicate,
}

/// Bytes an entry holds, roughly: its structs, JSON and tags.
fn approx_size(e: &Entry) -> u64 {
    let tags: usize = e
        .probe
        .tags
        .iter()
        .map(|(k, v)| k.len() + v.len() + 32)
        .sum();
    (std::mem::size_of::<Entry>() + std::mem::size_of::<Probe>() + e.json().len() + tags + 64)
        as u64
}

impl MemoryStore {
    /// A store of at most `max_entries`, without other bounds.
    pub fn new(max_entries: usize) -> Self {
        Self::with_limits(StoreLimits::entries(max_entries))
    }

    pub fn with_limits(limits: StoreLimits) -> Self {
        MemoryStore {
            groups: RwLock::default(),
            total: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            limits,
            reaping: tokio::sync::Mutex::new(()),
        }
    }

    fn upsert(&self, group: &Group, probe: Probe, now: SystemTime) -> Result<Arc<Entry>, Error> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut m = write(&group.members);
        if self.limits.shortnames == ShortnameRule::LiveKeeps
            && let Some(holder) = m.live_holder(&probe, now)
        {
            return Err(Error::ShortnameTaken {
                shortname: probe.shortname().to_owned(),
                group: probe.group.to_string(),
                holder: holder.to_string(),
            });
        }
        if let Some(&i) = m.index.get(&probe.id) {
            let old = &m.slots[i].probe;
            // Keep the old probe (and its rendered target) when nothing changed.
            let probe = if old.same_data(&probe) {
                old.clone()
            } else {
                Arc::new(probe)
            };
            let entry = Arc::new(Entry::new(probe, now, seq));
            let old = m.replace(i, entry.clone());
            drop(m);
            // The replaced entry is freed outside the lock.
            drop(old);
            return Ok(entry);
        }
        if m.slots.len() >= self.limits.max_group_members {
            return Err(Error::GroupFull {
                group: probe.group.to_string(),
                max: self.limits.max_group_members,
            });
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.limits.max_entries {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Full {
                max: self.limits.max_entries,
            });
        }
        let entry = Arc::new(Entry::new(Arc::new(probe), now, seq));
        m.push(entry.clone());
        Ok(entry)
    }

    fn register_now(&self, probe: Probe, now: SystemTime) -> Result<Arc<Entry>, Error> {
        {
            // The map's read lock is held while the group is written, so the
            // reaper cannot drop the group between lookup and insert.
            let map = read(&self.groups);
            if let Some(g) = map.get(&*probe.group) {
                return self.upsert(g, probe, now);
            }
        }
        let mut map = write(&self.groups);
        if !map.contains_key(&*probe.group) && map.len() >= self.limits.max_groups {
            return Err(Error::TooManyGroups {
                max: self.limits.max_groups,
            });
        }
        let g = map.entry(probe.group.clone()).or_default().clone();
        let result = self.upsert(&g, probe, now);
        if result.is_err() && read(&g.members).slots.is_empty() {
            map.retain(|_, v| !Arc::ptr_eq(v, &g));
        }
        result
    }

    fn snapshot(group: &Group) -> Members {
        read(&group.members).slots.clone()
    }

    /// Drops the groups of `names` that are (still) empty, under one write
    /// lock of the map.
    fn drop_empty(&self, names: &[(Arc<str>, Arc<Group>)], report: Option<&mut ReapReport>) {
        if names.is_empty() {
            return;
        }
        let t = Instant::now();
        let mut dropped = 0;
        {
            let mut map = write(&self.groups);
            for (name, group) in names {
                // Registrations hold the map's read lock while inserting, so
                // the group is still empty if it is empty now.
                if read(&group.members).slots.is_empty()
                    && map.get(name).is_some_and(|g| Arc::ptr_eq(g, group))
                {
                    map.remove(name);
                    dropped += 1;
                }
            }
        }
        if let Some(report) = report {
            report.groups_removed += dropped;
            report.longest_lock = report.longest_lock.max(t.elapsed());
        }
    }

    fn remove_now(&self, id: Id) -> usize {
        let groups: Vec<(Arc<str>, Arc<Group>)> = read(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut removed = Vec::new();
        let mut emptied = Vec::new();
        for (name, group) in groups {
            let mut m = write(&group.members);
            if let Some(&i) = m.index.get(&id) {
                removed.push(m.remove_at(i));
                if m.slots.is_empty() {
                    drop(m);
                    emptied.push((name, group));
                }
            }
        }
        self.total.fetch_sub(removed.len(), Ordering::Relaxed);
        self.drop_empty(&emptied, None);
        removed.len()
    }

    async fn reap_group(
        &self,
        group: &Arc<Group>,
        now: SystemTime,
        report: &mut ReapReport,
        work: &mut Work,
    ) {
        let mut live: Vec<Arc<Entry>> = Vec::new();
        let mut doomed: Vec<(Id, u64, Reason)> = Vec::new();
        let mut start = 0;
        loop {
            let t = Instant::now();
            {
                let m = read(&group.members);
                let end = (start + SCAN_CHUNK).min(m.slots.len());
                if start >= end {
                    break;
                }
                for e in &m.slots[start..end] {
                    if e.expired(now) {
                        doomed.push((e.probe.id, e.seq, Reason::Expired));
                    } else {
                        report.approx_bytes += approx_size(e);
                        live.push(e.clone());
                    }
                }
                report.scanned += end - start;
                work.done(end - start);
                start = end;
            }
            report.longest_lock = report.longest_lock.max(t.elapsed());
            work.pause().await;
        }
        // Newest wins among live entries sharing a probe_shortname: O(n).
        let mut newest: HashMap<&str, &Arc<Entry>> = HashMap::with_capacity(live.len());
        for e in &live {
            let key = e.probe.shortname();
            match newest.get(key) {
                Some(cur) if (cur.last_seen, cur.seq) >= (e.last_seen, e.seq) => {
                    doomed.push((e.probe.id, e.seq, Reason::Duplicate));
                }
                Some(cur) => {
                    doomed.push((cur.probe.id, cur.seq, Reason::Duplicate));
                    newest.insert(key, e);
                }
                None => {
                    newest.insert(key, e);
                }
            }
        }
        drop(newest);
        drop(live);
        for batch in doomed.chunks(REMOVE_BATCH) {
            let t = Instant::now();
            let mut removed = 0;
            // Freed after the lock is released.
            let mut graveyard = Vec::with_capacity(batch.len());
            {
                let mut m = write(&group.members);
                for (id, seq, reason) in batch {
                    let Some(&i) = m.index.get(id) else { continue };
                    // Refreshed since the scan: it lives on.
                    if m.slots[i].seq != *seq {
                        continue;
                    }
                    graveyard.push(m.remove_at(i));
                    removed += 1;
                    match reason {
                        Reason::Expired => report.expired += 1,
                        Reason::Duplicate => report.duplicates += 1,
                    }
                }
            }
            report.longest_lock = report.longest_lock.max(t.elapsed());
            drop(graveyard);
            self.total.fetch_sub(removed, Ordering::Relaxed);
            // A removal under the write lock costs about what scanning a
            // few entries does.
            work.done(batch.len() * (SCAN_CHUNK / REMOVE_BATCH));
            work.pause().await;
        }
    }

    async fn reap_all(&self, now: SystemTime) -> ReapReport {
        let _one_at_a_time = self.reaping.lock().await;
        let started = Instant::now();
        let mut report = ReapReport::default();
        let groups: Vec<(Arc<str>, Arc<Group>)> = read(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut work = Work::default();
        let mut empty = Vec::new();
        for (name, group) in &groups {
            self.reap_group(group, now, &mut report, &mut work).await;
            // Every group costs something, even an empty one.
            work.done(1);
            if read(&group.members).slots.is_empty() {
                empty.push((name.clone(), group.clone()));
                if empty.len() >= REMOVE_BATCH {
                    self.drop_empty(&empty, Some(&mut report));
                    empty.clear();
                    work.done(SCAN_CHUNK);
                }
            }
            work.pause().await;
        }
        self.drop_empty(&empty, Some(&mut report));
        report.duration = started.elapsed();
        report
    }
}

/// Work a reap did since it last yielded to other tasks. Yielding after
/// every group made a pass over 100,000 one-entry groups wait 100,000 times
/// behind every task a registration flood keeps ready; yielding after a
/// fixed amount of work bounds the pauses by the registry's size instead.
#[derive(Default)]
struct Work(usize);

impl Work {
    fn done(&mut self, units: usize) {
        self.0 += units;
    }

    /// Yields once a chunk's worth of work has been done.
    async fn pause(&mut self) {
        if self.0 >= SCAN_CHUNK {
            self.0 = 0;
            tokio::task::yield_now().await;
        }
    }
}

impl Store for MemoryStore {
    fn register(&self, probe: Probe, now: SystemTime) -> StoreFuture<'_, Arc<Entry>> {
        let result = self.register_now(probe, now);
        Box::pin(std::future::ready(result))
    }

    fn remove(&self, id: Id) -> StoreFuture<'_, usize> {
        let removed = self.remove_now(id);
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn group<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Members>> {
        let g = read(&self.groups).get(name).cloned();
        Box::pin(std::future::ready(Ok(g.map(|g| Self::snapshot(&g)))))
    }

    fn groups(&self) -> StoreFuture<'_, Vec<(Arc<str>, Members)>> {
        let mut groups: Vec<(Arc<str>, Arc<Group>)> = read(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let out = groups
            .into_iter()
            .map(|(k, g)| (k, Self::snapshot(&g)))
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn counts(&self) -> StoreFuture<'_, Counts> {
        let counts = Counts {
            probes: self.total.load(Ordering::Relaxed),
            groups: read(&self.groups).len(),
        };
        Box::pin(std::future::ready(Ok(counts)))
    }

    fn reap(&self, now: SystemTime) -> StoreFuture<'_, ReapReport> {
        Box::pin(async move { Ok(self.reap_all(now).await) })
    }
}
