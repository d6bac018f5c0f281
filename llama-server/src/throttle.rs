//! Log lines for limits that are hit over and over (a flood hits a limit
//! thousands of times a second): a [`Throttle`] lets one line through, then
//! at most one a minute.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long a throttled log line stays quiet after it was written.
pub const QUIET: Duration = Duration::from_secs(60);

/// Says when a throttled line may be written.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    /// True the first time and then at most once per [`QUIET`].
    pub fn ready(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.saturating_duration_since(at) < QUIET => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}
