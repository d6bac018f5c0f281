//! The registry of measured paths: one [`PathAcc`] per (src_ip, dst_ip),
//! addressed by a small integer id that in-flight probes carry instead of
//! the key, so booking a result is an index, not a hash lookup.
//!
//! A path stays while the configuration probes it or while any in-flight
//! probe refers to it; after a reconfiguration removes it, it is published
//! one last time and then freed, so churn in the target list cannot leak.

use std::collections::{HashMap, HashSet};

use super::{
    metrics::TargetLabels,
    summary::{PathAcc, PathKey, PathSummary, Tags},
};

#[derive(Debug, Default)]
pub struct Paths {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    index: HashMap<PathKey, u32>,
}

#[derive(Debug)]
struct Slot {
    acc: PathAcc,
    /// In-flight probe records referring to this path.
    refs: u32,
    /// Whether the current configuration probes this path.
    in_config: bool,
}

impl Paths {
    /// The id of `key`, created if new; `tags` replace the path's tags.
    pub fn upsert(&mut self, key: PathKey, tags: Tags) -> u32 {
        if let Some(&id) = self.index.get(&key) {
            let slot = self.slots[id as usize]
                .as_mut()
                .expect("indexed path slot is live");
            slot.acc.tags = tags;
            slot.in_config = true;
            return id;
        }
        let slot = Slot {
            acc: PathAcc::new(key, tags),
            refs: 0,
            in_config: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, id);
        id
    }

    /// Marks every path as not configured (before a new configuration
    /// upserts the ones it keeps).
    pub fn unmark_all(&mut self) {
        for slot in self.slots.iter_mut().flatten() {
            slot.in_config = false;
        }
    }

    pub fn acc(&mut self, id: u32) -> &mut PathAcc {
        &mut self.slots[id as usize]
            .as_mut()
            .expect("path id of a live record")
            .acc
    }

    pub fn acquire(&mut self, id: u32) {
        if let Some(s) = self.slots[id as usize].as_mut() {
            s.refs += 1;
        }
    }

    pub fn release(&mut self, id: u32) {
        if let Some(s) = self.slots[id as usize].as_mut() {
            s.refs = s.refs.saturating_sub(1);
        }
    }

    /// Number of live paths.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Closes the interval: the summary of every path with activity, sorted
    /// by path; frees unconfigured paths nothing refers to any more (the
    /// tables shrink when many were freed). Returns the summaries and how
    /// many paths were freed.
    pub fn publish(&mut self) -> (Vec<PathSummary>, usize) {
        let mut freed = 0;
        let mut out = Vec::with_capacity(self.index.len());
        for id in 0..self.slots.len() {
            let Some(slot) = self.slots[id].as_mut() else {
                continue;
            };
            if let Some(s) = slot.acc.take() {
                out.push(s);
            }
            if !slot.in_config && slot.refs == 0 {
                let key = slot.acc.key;
                self.slots[id] = None;
                self.index.remove(&key);
                self.free.push(id as u32);
                freed += 1;
            }
        }
        if freed > 0 {
            self.shrink();
        }
        out.sort_by_key(|s| (s.src_ip, s.dst_ip));
        (out, freed)
    }

    /// The Prometheus labels of every live path.
    pub fn labels(&self) -> HashSet<TargetLabels> {
        self.slots
            .iter()
            .flatten()
            .map(|s| TargetLabels::new(s.acc.key.src, s.acc.key.dst, &s.acc.tags))
            .collect()
    }

    /// Drops trailing free slots and excess capacity (ids stay valid: only
    /// free slots past the last live one go).
    fn shrink(&mut self) {
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        let len = self.slots.len() as u32;
        self.free.retain(|&id| id < len);
        if self.slots.capacity() > 2 * self.slots.len() + 64 {
            self.slots.shrink_to_fit();
            self.free.shrink_to_fit();
            self.index.shrink_to_fit();
        }
    }
}
