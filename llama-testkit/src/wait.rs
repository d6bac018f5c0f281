//! Bounded waiting: poll a condition until it holds, failing the test with
//! a message naming what was awaited once a generous timeout has passed.
//! The machine running the tests is shared and noisy, so timeouts are
//! bounds on a hang, never assertions about speed.
//!
//! Checks run every 50 ms; the `_every` and `_explained` variants take the
//! period, for checks that cost something themselves (a browser round trip,
//! a `podman` command).

use std::{
    fmt::Display,
    future::Future,
    time::{Duration, Instant},
};

/// The usual bound: long enough for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` every `every` until it returns `Some` (that value) or
/// `timeout` passes (`None`).
fn poll<T>(timeout: Duration, every: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Calls `probe` until it returns `Some`, and returns that value; panics
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_within(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// [`wait_for`] checking every `every`, whose panic adds what `explain`
/// returns then (the logs of the processes awaited, say).
pub fn wait_for_explained<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    probe: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    poll(timeout, every, probe).unwrap_or_else(|| {
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            explain()
        )
    })
}

/// Calls `probe` until it returns `Some` (that value) or `timeout` passes
/// (`None`): for tests that assert something about the timeout case.
pub fn wait_for_within<T>(timeout: Duration, probe: impl FnMut() -> Option<T>) -> Option<T> {
    poll(timeout, POLL, probe)
}

/// Waits until `cond` holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()));
}

/// Awaits `check()` every `every` until it yields `Ok` (that value) or
/// `timeout` passes (the last `Err`).
async fn poll_async<T, E, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let not_yet = match check().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(not_yet);
        }
        tokio::time::sleep(every).await;
    }
}

/// [`wait_for`] for async code: awaits `check()` until it yields `Some`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(what, timeout, POLL, check).await
}

/// [`eventually`] checking every `every`.
pub async fn eventually_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let check = || {
        let pending = check();
        async move { pending.await.ok_or(()) }
    };
    poll_async(timeout, every, check)
        .await
        .unwrap_or_else(|()| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// [`eventually_every`] for checks that say why they are not satisfied
/// yet: `check()` yields `Ok(value)` or `Err(reason)`, and the panic after
/// `timeout` quotes the last reason.
pub async fn eventually_ok<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    check: F,
) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    poll_async(timeout, every, check)
        .await
        .unwrap_or_else(|why| panic!("timed out after {timeout:?} waiting for {what}: {why}"))
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

    #[test]
    #[should_panic(expected = "waiting for a log line\nthe logs so far")]
    fn explains_a_timeout() {
        wait_for_explained(
            "a log line",
            Duration::from_millis(100),
            Duration::from_millis(10),
            || None::<()>,
            || "the logs so far".to_owned(),
        );
    }

    #[tokio::test]
    async fn awaits_the_first_ok() {
        let mut n = 0;
        let got = eventually_ok("the third call", WAIT, POLL, || {
            n += 1;
            std::future::ready(if n == 3 { Ok(n) } else { Err(n) })
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a good answer: still 7 wrong cells")]
    async fn quotes_the_last_reason_at_the_timeout() {
        eventually_ok(
            "a good answer",
            Duration::from_millis(100),
            Duration::from_millis(10),
            || std::future::ready(Err::<(), _>("still 7 wrong cells")),
        )
        .await;
    }
}
