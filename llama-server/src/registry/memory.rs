//! The in-memory store. One lock for the group map (taken for writing only to
//! add or drop a group) and one per group, so registrations of different
//! groups do not contend. The reaper scans a group in chunks under short read
//! locks, decides without any lock, then removes in small batches under short
//! write locks, re-checking that each doomed entry was not refreshed since it
//! was scanned: no lock is held for longer than one chunk, whatever the size.

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

#[derive(Default)]
struct GroupMembers {
    slots: Vec<Arc<Entry>>,
    index: HashMap<Id, usize>,
}

impl GroupMembers {
    /// Removes slot `i`, returning the entry so the caller can free it after
    /// releasing the lock.
    fn remove_at(&mut self, i: usize) -> Arc<Entry> {
        let removed = self.slots.swap_remove(i);
        self.index.remove(&removed.probe.id);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.probe.id, i);
        }
        removed
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
    max_entries: usize,
    /// One reap at a time: the chunked scan relies on no other removals.
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
    pub fn new(max_entries: usize) -> Self {
        MemoryStore {
            groups: RwLock::default(),
            total: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            max_entries,
            reaping: tokio::sync::Mutex::new(()),
        }
    }

    fn upsert(&self, group: &Group, probe: Probe, now: SystemTime) -> Result<Arc<Entry>, Error> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut m = write(&group.members);
        if let Some(&i) = m.index.get(&probe.id) {
            let old = &m.slots[i].probe;
            // Keep the old probe (and its rendered target) when nothing changed.
            let probe = if old.same_data(&probe) {
                old.clone()
            } else {
                Arc::new(probe)
            };
            let entry = Arc::new(Entry::new(probe, now, seq));
            let old = std::mem::replace(&mut m.slots[i], entry.clone());
            drop(m);
            // The replaced entry is freed outside the lock.
            drop(old);
            return Ok(entry);
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_entries {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Full {
                max: self.max_entries,
            });
        }
        let entry = Arc::new(Entry::new(Arc::new(probe), now, seq));
        let i = m.slots.len();
        m.index.insert(entry.probe.id, i);
        m.slots.push(entry.clone());
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

    async fn reap_group(
        &self,
        name: &Arc<str>,
        group: &Arc<Group>,
        now: SystemTime,
        report: &mut ReapReport,
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
                start = end;
            }
            report.longest_lock = report.longest_lock.max(t.elapsed());
            tokio::task::yield_now().await;
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
            tokio::task::yield_now().await;
        }
        if read(&group.members).slots.is_empty() {
            let mut map = write(&self.groups);
            // Registrations hold the map's read lock while inserting, so the
            // group is still empty if it is empty now.
            if read(&group.members).slots.is_empty()
                && map.get(name).is_some_and(|g| Arc::ptr_eq(g, group))
            {
                map.remove(name);
                report.groups_removed += 1;
            }
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
        for (name, group) in &groups {
            self.reap_group(name, group, now, &mut report).await;
        }
        report.duration = started.elapsed();
        report
    }
}

impl Store for MemoryStore {
    fn register(&self, probe: Probe, now: SystemTime) -> StoreFuture<'_, Arc<Entry>> {
        let result = self.register_now(probe, now);
        Box::pin(std::future::ready(result))
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
