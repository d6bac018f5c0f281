//! Bounded waiting: poll a condition until it holds, failing the test with
//! a message naming what was awaited once a generous timeout has passed.
//! The machine running the tests is shared and noisy, so timeouts are
//! bounds on a hang, never assertions about speed.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// The usual bound: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Some`, and returns that value; panics
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_within(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Calls `probe` until it returns `Some` (that value) or `timeout` passes
/// (`None`): for tests that assert something about the timeout case.
pub fn wait_for_within<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `cond` holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()));
}

/// [`wait_for`] for async code: awaits `check()` until it yields `Some`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for async code (the runtime keeps running meanwhile).
pub async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    eventually(what, timeout, || std::future::ready(cond().then_some(()))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let got = wait_for("the third call", WAIT, || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for something that never happens")]
    fn gives_up_at_the_timeout() {
        wait_until(
            "something that never happens",
            Duration::from_millis(100),
            || false,
        );
    }
}
