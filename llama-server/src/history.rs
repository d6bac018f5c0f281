//! The last hour of scraped summaries per path (source → destination), kept
//! in memory for the live matrix. Bounded twice: samples per path (the
//! window divided by the interval) and number of paths (new paths beyond
//! the limit are refused and counted until old ones age out).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
    time::Duration,
};

/// One summary of one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix seconds of the scrape.
    pub at: u64,
    /// Loss, percent.
    pub loss: f32,
    /// Mean RTT, milliseconds.
    pub rtt: f32,
    pub sent: f32,
    pub lost: f32,
}

/// A path: the agent's source address and the target's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub src: Box<str>,
    pub dst: Box<str>,
}

#[derive(Default)]
struct Inner {
    paths: HashMap<PathKey, VecDeque<Sample>>,
    refused: u64,
}

/// Summaries per path over a sliding window.
pub struct History {
    window: u64,
    max_samples: usize,
    max_paths: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("max_paths", &self.max_paths)
            .finish_non_exhaustive()
    }
}

impl History {
    /// `window` of history, samples arriving every `interval`.
    pub fn new(window: Duration, interval: Duration, max_paths: usize) -> Self {
        let per_path = window.as_secs_f64() / interval.as_secs_f64().max(1.0);
        History {
            window: window.as_secs(),
            max_samples: (per_path.ceil() as usize).clamp(1, 3600) + 1,
            max_paths,
            inner: Mutex::default(),
        }
    }

    /// The usual one: the last hour.
    pub fn last_hour(interval: Duration, max_paths: usize) -> Self {
        Self::new(Duration::from_secs(3600), interval, max_paths)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds samples; returns how many were refused (path limit).
    pub fn record(&self, samples: impl IntoIterator<Item = (PathKey, Sample)>) -> usize {
        let mut inner = self.lock();
        let mut refused = 0;
        for (key, sample) in samples {
            let at_limit = inner.paths.len() >= self.max_paths;
            let series = match inner.paths.get_mut(&key) {
                Some(s) => s,
                None if at_limit => {
                    refused += 1;
                    continue;
                }
                None => inner.paths.entry(key).or_default(),
            };
            if series.len() >= self.max_samples {
                series.pop_front();
            }
            series.push_back(sample);
        }
        inner.refused += refused as u64;
        refused
    }

    /// Drops samples older than the window before `now` and empty paths.
    pub fn prune(&self, now: u64) {
        let oldest = now.saturating_sub(self.window);
        let mut inner = self.lock();
        inner.paths.retain(|_, series| {
            while series.front().is_some_and(|s| s.at < oldest) {
                series.pop_front();
            }
            !series.is_empty()
        });
    }

    /// The samples of one path, oldest first.
    pub fn path(&self, src: &str, dst: &str) -> Vec<Sample> {
        let key = PathKey {
            src: src.into(),
            dst: dst.into(),
        };
        self.lock()
            .paths
            .get(&key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every path with its latest sample, sorted.
    pub fn latest(&self) -> Vec<(PathKey, Sample)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .paths
            .iter()
            .filter_map(|(k, s)| s.back().map(|last| (k.clone(), *last)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn path_count(&self) -> usize {
        self.lock().paths.len()
    }

    /// Samples refused since start because of the path limit.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str, d: &str) -> PathKey {
        PathKey {
            src: s.into(),
            dst: d.into(),
        }
    }

    fn sample(at: u64) -> Sample {
        Sample {
            at,
            loss: 0.0,
            rtt: 1.0,
            sent: 10.0,
            lost: 0.0,
        }
    }

    #[test]
    fn keeps_one_window_per_path() {
        let h = History::new(Duration::from_secs(100), Duration::from_secs(10), 10);
        for at in 0..50 {
            h.record([(key("a", "b"), sample(at * 10))]);
        }
        let s = h.path("a", "b");
        assert_eq!(s.len(), 11, "window/interval + 1 samples");
        assert_eq!(s.last().unwrap().at, 490);
        h.prune(490);
        assert!(h.path("a", "b").iter().all(|s| s.at >= 390));
        h.prune(10_000);
        assert_eq!(h.path_count(), 0);
    }

    #[test]
    fn refuses_paths_beyond_the_limit() {
        let h = History::new(Duration::from_secs(100), Duration::from_secs(10), 2);
        let refused = h.record([
            (key("a", "b"), sample(1)),
            (key("a", "c"), sample(1)),
            (key("a", "d"), sample(1)),
        ]);
        assert_eq!(refused, 1);
        assert_eq!(h.path_count(), 2);
        assert_eq!(h.refused(), 1);
        assert_eq!(
            h.record([(key("a", "b"), sample(2))]),
            0,
            "known paths still record"
        );
        assert_eq!(h.latest()[0].1.at, 2);
    }
}
