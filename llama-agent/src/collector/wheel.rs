//! A hashed timing wheel: the collector's timeout structure.
//!
//! Every probe needs a timeout, and at 50,000 probes/s a timer (or task) per
//! probe would dominate the cost. The wheel is an array of buckets indexed by
//! deadline tick modulo its size; inserting is a push onto a bucket, and
//! advancing visits only the buckets whose ticks have passed. Deadlines
//! further away than one revolution simply stay in their bucket until their
//! round comes (the entry keeps its absolute tick). Buckets are `Vec`s that
//! keep their capacity, so once warmed up the hot path never allocates.

/// A timing wheel of `T` items keyed by a deadline in nanoseconds of some
/// monotonic clock.
#[derive(Debug)]
pub struct Wheel<T> {
    tick_ns: u64,
    buckets: Vec<Vec<(u64, T)>>,
    /// The last tick whose bucket has been processed.
    current: u64,
    len: usize,
}

impl<T: Copy> Wheel<T> {
    /// A wheel of `buckets` buckets of `tick_ns` each, starting at `now_ns`.
    pub fn new(tick_ns: u64, buckets: usize, now_ns: u64) -> Self {
        let tick_ns = tick_ns.max(1);
        let buckets = buckets.max(1);
        Self {
            tick_ns,
            buckets: (0..buckets).map(|_| Vec::new()).collect(),
            current: now_ns / tick_ns,
            len: 0,
        }
    }

    /// Items currently scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` for `deadline_ns`. A deadline in the past fires at
    /// the next [`advance`](Self::advance).
    pub fn insert(&mut self, deadline_ns: u64, item: T) {
        // Round up: an item must never fire before its deadline.
        let tick = deadline_ns.div_ceil(self.tick_ns).max(self.current + 1);
        let n = self.buckets.len() as u64;
        self.buckets[(tick % n) as usize].push((tick, item));
        self.len += 1;
    }

    /// Moves every item whose deadline is at or before `now_ns` into `out`
    /// (in no particular order).
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<T>) {
        let now = now_ns / self.tick_ns;
        if now <= self.current {
            return;
        }
        let n = self.buckets.len() as u64;
        // After a long sleep every bucket is due at most once.
        let steps = (now - self.current).min(n);
        for step in 1..=steps {
            let idx = ((self.current + step) % n) as usize;
            let bucket = &mut self.buckets[idx];
            let mut i = 0;
            while i < bucket.len() {
                if bucket[i].0 <= now {
                    out.push(bucket.swap_remove(i).1);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.current = now;
    }

    /// Rewrites every item through `f`, dropping those it maps to `None`;
    /// buckets are reallocated to their new size, so a wheel that once held
    /// many items gives that memory back.
    pub fn remap(&mut self, mut f: impl FnMut(T) -> Option<T>) {
        let mut len = 0;
        for bucket in &mut self.buckets {
            let kept: Vec<(u64, T)> = bucket
                .iter()
                .filter_map(|&(tick, item)| f(item).map(|item| (tick, item)))
                .collect();
            len += kept.len();
            *bucket = kept;
        }
        self.len = len;
    }

    /// Removes everything (after a reconfiguration that drops all probes).
    pub fn clear(&mut self) {
        for b in &mut self.buckets {
            b.clear();
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fires_at_not_before_deadline() {
        let mut w = Wheel::new(MS, 16, 0);
        w.insert(5 * MS, 'a');
        w.insert(5 * MS + 1, 'b');
        let mut out = Vec::new();
        w.advance(5 * MS - 1, &mut out);
        assert!(out.is_empty());
        w.advance(5 * MS, &mut out);
        assert_eq!(out, ['a']);
        w.advance(6 * MS, &mut out);
        assert_eq!(out, ['a', 'b']);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_one_revolution_wait_for_their_round() {
        let mut w = Wheel::new(MS, 8, 0);
        w.insert(3 * MS, 1);
        w.insert(11 * MS, 2); // same bucket as 3 ms, one revolution later
        w.insert(100 * MS, 3);
        let mut out = Vec::new();
        w.advance(3 * MS, &mut out);
        assert_eq!(out, [1]);
        out.clear();
        w.advance(10 * MS, &mut out);
        assert!(out.is_empty());
        w.advance(11 * MS, &mut out);
        assert_eq!(out, [2]);
        out.clear();
        // A long jump visits every bucket once and only fires due items.
        w.advance(99 * MS, &mut out);
        assert!(out.is_empty());
        w.advance(1000 * MS, &mut out);
        assert_eq!(out, [3]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_deadlines_fire_on_next_advance() {
        let mut w = Wheel::new(MS, 4, 50 * MS);
        w.insert(0, 'x');
        let mut out = Vec::new();
        w.advance(50 * MS, &mut out);
        assert!(out.is_empty(), "nothing fires without time passing");
        w.advance(51 * MS, &mut out);
        assert_eq!(out, ['x']);
    }

    #[test]
    fn remap_rewrites_and_drops_items_keeping_deadlines() {
        let mut w = Wheel::new(MS, 8, 0);
        for i in 0..6u32 {
            w.insert(u64::from(i + 1) * MS, i);
        }
        w.remap(|i| (i % 2 == 0).then_some(i + 100));
        assert_eq!(w.len(), 3);
        let mut out = Vec::new();
        w.advance(3 * MS, &mut out);
        assert_eq!(out, [100, 102]);
        w.advance(10 * MS, &mut out);
        assert_eq!(out, [100, 102, 104]);
    }

    #[test]
    fn many_items_all_fire_exactly_once() {
        let mut w = Wheel::new(MS, 64, 0);
        for i in 0..10_000u64 {
            w.insert(i * 37_000 % (500 * MS), i);
        }
        let mut out = Vec::new();
        let mut t = 0;
        while t <= 500 * MS {
            w.advance(t, &mut out);
            t += 3 * MS;
        }
        w.advance(501 * MS, &mut out);
        out.sort_unstable();
        assert_eq!(out, (0..10_000).collect::<Vec<_>>());
    }
}
