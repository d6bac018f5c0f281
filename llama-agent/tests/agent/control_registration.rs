//! Registration against an in-test server: payload shape, cadence, backoff
//! while the server fails, and recovery.

use std::time::Duration;

use llama_agent::control::metrics::Loop;
use llama_testkit::{WAIT, until};
use serde_json::json;

use crate::support::{
    control_agent::{Agent, config},
    control_server::{Mode, TestServer},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_has_the_exact_shape_the_server_api_defines() {
    let server = TestServer::start().await;
    let mut cfg = config(server.url(), None);
    cfg.ip = Some("192.0.2.7".parse().unwrap());
    let agent = Agent::start(cfg);
    until("a registration", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    agent.stop().await;
    let body = &server.registrations()[0].1;
    assert_eq!(
        body,
        &json!({
            "port": 8100,
            "keepalive": 300,
            "group": "lab",
            "ip": "192.0.2.7",
            "tags": {
                "version": env!("CARGO_PKG_VERSION"),
                "probe_shortname": "p1",
                "probe_name": "probe one",
                "location": "Las Vegas",
            }
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_is_omitted_when_not_configured() {
    let server = TestServer::start().await;
    let agent = Agent::start(config(server.url(), None));
    until("a registration", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    agent.stop().await;
    let body = &server.registrations()[0].1;
    assert!(body.get("ip").is_none(), "{body}");
    assert_eq!(body["port"], 8100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_periodically_not_in_a_burst() {
    let server = TestServer::start().await;
    server.set_config("lab", "targets: {}\n");
    let agent = Agent::start(config(server.url(), None)); // every 200 ms ±10%
    until("5 registrations", WAIT, || {
        server.registrations().len() >= 5
    })
    .await;
    let ok = agent.metrics.registrations_ok.get();
    agent.stop().await;
    let times: Vec<_> = server.registrations().iter().map(|(t, _)| *t).collect();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        // A sleep never ends early: 180 ms minimum, minus request skew.
        assert!(
            gap >= Duration::from_millis(150),
            "registrations {gap:?} apart"
        );
    }
    assert!(ok >= 5, "metric registrations_ok = {ok}");
    assert_eq!(
        server.register_attempts(),
        server.registrations().len(),
        "a registration failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_back_off_with_jitter_then_recover() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Fail);
    let mut cfg = config(server.url(), None);
    cfg.register_interval = Duration::from_secs(30); // only failures retry quickly
    let agent = Agent::start(cfg);
    let mut backoffs = vec![];
    until("10 failed registrations", WAIT, || {
        let b = agent.metrics.backoff(Loop::Register);
        if b > 0.0 && backoffs.last() != Some(&b) {
            backoffs.push(b);
        }
        agent.metrics.registrations_failed.get() >= 10
    })
    .await;
    assert_eq!(agent.metrics.registrations_ok.get(), 0);
    assert_eq!(agent.metrics.server_reachable.get(), 0);
    // Every delay lies within [base, cap] and they are not all the same.
    assert!(
        backoffs.iter().all(|b| (0.05..=0.4).contains(b)),
        "{backoffs:?}"
    );
    assert!(
        backoffs.len() >= 3,
        "too few distinct backoffs seen: {backoffs:?}"
    );
    // Attempts are paced by the backoff, not a busy loop: in 1 s at most
    // 1 s / 50 ms (the smallest delay) + 1 attempts.
    let before = server.register_attempts();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = server.register_attempts() - before;
    assert!(during <= 21, "{during} attempts in 1 s");
    // Server fixed: registered again within the backoff bound (generous
    // timeout: the bound is 400 ms, we only check it happens while the
    // normal 30 s interval could not have fired).
    server.set_mode(Mode::Normal);
    until("registration after recovery", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    until("metrics after recovery", WAIT, || {
        agent.metrics.registrations_ok.get() >= 1
    })
    .await;
    assert_eq!(agent.metrics.backoff(Loop::Register), 0.0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_re_registers_within_the_backoff_bound() {
    let server = TestServer::start().await;
    server.set_config("lab", "targets: {}\n");
    let mut cfg = config(server.url(), None);
    cfg.register_interval = Duration::from_secs(30);
    let agent = Agent::start(cfg);
    until("first registration", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    until("config fetched", WAIT, || agent.sink.applied().len() == 1).await;
    server.stop().await;
    // Polls (every 200 ms) now fail; registration is idle for 30 s, so the
    // only way back is the poller noticing and the registration retrying.
    until("polls failing", WAIT, || {
        agent.metrics.config_fetches_failed.get() >= 3
    })
    .await;
    server.require_registration(true);
    server.restart().await;
    // The restarted server does not know the agent: its config request gets
    // 404, which makes the agent register at once, long before 30 s.
    until("re-registration after restart", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    let polls = server.config_requests().len();
    until("polls succeed after restart", WAIT, || {
        agent.metrics.backoff(Loop::Poll) == 0.0 && server.config_requests().len() > polls
    })
    .await;
    // The config did not change: nothing was re-applied.
    assert_eq!(agent.sink.offered(), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_with_every_registration_and_the_deregistration() {
    let server = TestServer::start().await;
    let mut cfg = config(server.url(), None);
    cfg.ip = Some("::1".parse().unwrap());
    cfg.registration_token = Some(llama_agent::control::Token::new("s3cret").unwrap());
    let agent = Agent::start(cfg);
    until("two registrations", WAIT, || {
        server.registrations().len() >= 2
    })
    .await;
    assert!(server.deletes().is_empty(), "no DELETE before shutdown");
    agent.stop().await;
    let auth = server.register_auth();
    assert!(!auth.is_empty());
    for a in auth {
        assert_eq!(a.as_deref(), Some("Bearer s3cret"));
    }
    // The id of the entry the server answered with, decoded from one path
    // segment (an IPv6 id has brackets and colons).
    assert_eq!(
        server.deletes(),
        [("[::1]:8100".to_owned(), Some("Bearer s3cret".to_owned()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_no_authorization_header_is_sent() {
    let server = TestServer::start().await;
    let agent = Agent::start(config(server.url(), None));
    until("a registration", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    agent.stop().await;
    assert!(server.register_auth().iter().all(Option::is_none));
    assert_eq!(server.deletes(), [("127.0.0.1:8100".to_owned(), None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_server_without_delete_and_a_hanging_one_do_not_hold_shutdown() {
    // 405: a server that predates deregistration.
    let server = TestServer::start().await;
    server.set_delete_status(405);
    let agent = Agent::start(config(server.url(), None));
    until("a registration", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    agent.stop().await;
    assert_eq!(server.deletes().len(), 1);

    // A server that never answers the DELETE: bounded by deregister_timeout.
    let server = TestServer::start().await;
    let mut cfg = config(server.url(), None);
    cfg.shutdown_grace = Duration::from_millis(200);
    cfg.deregister_timeout = Duration::from_millis(300);
    let agent = Agent::start(cfg);
    until("a registration", WAIT, || {
        !server.registrations().is_empty()
    })
    .await;
    server.set_mode(Mode::Hang);
    let started = std::time::Instant::now();
    agent.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!server.deletes().is_empty(), "the DELETE was attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_registered_sends_no_delete() {
    let server = TestServer::start().await;
    server.set_mode(Mode::Fail);
    let agent = Agent::start(config(server.url(), None));
    until("a failed registration", WAIT, || {
        server.register_attempts() >= 1
    })
    .await;
    agent.stop().await;
    assert!(server.deletes().is_empty());
}
