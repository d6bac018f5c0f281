//! Config polling against an in-test server: change detection, rejection,
//! persistence, the server's view of our address, outages and shutdown.

use std::time::{Duration, Instant};

use llama_agent::control::StateFile;
use llama_testkit::{WAIT, until};

use crate::support::{
    control_agent::{Agent, config, dead_server_url},
    control_server::{Mode, TestServer},
};

const A: &str = "targets:\n  lab: [{ip: 10.0.0.1, port: 8100}]\n";
const B: &str = "targets:\n  lab: [{ip: 10.0.0.1, port: 8100}, {ip: 10.0.0.2, port: 8100}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_applied_once_and_an_unchanged_config_never_again() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(server.url(), Some(dir.path())));
    until("config A applied", WAIT, || agent.sink.applied() == [A]).await;
    let polls = server.config_requests().len();
    until("several more polls", WAIT, || {
        server.config_requests().len() >= polls + 4
    })
    .await;
    assert_eq!(
        agent.sink.offered(),
        1,
        "an unchanged config was offered again"
    );
    server.set_config("lab", B);
    until("config B applied", WAIT, || agent.sink.applied() == [A, B]).await;
    let polls = server.config_requests().len();
    until("several more polls", WAIT, || {
        server.config_requests().len() >= polls + 4
    })
    .await;
    assert_eq!(agent.sink.offered(), 2);
    assert_eq!(agent.metrics.config_changes_applied.get(), 2);
    // The server counts a request before the agent has read the answer:
    // the agent's own count may trail by the poll in flight.
    until("ten fetches counted", WAIT, || {
        agent.metrics.config_fetches_ok.get() >= 10
    })
    .await;
    agent.stop().await;
    // The last good config is persisted for the next start.
    let persisted = StateFile::new(dir.path(), "lab").load().unwrap();
    assert_eq!(persisted.as_deref(), Some(B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srcip_comes_from_my_ip_address_once_and_llamaport_is_sent() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let agent = Agent::start(config(server.url(), None));
    until("several polls", WAIT, || {
        server.config_requests().len() >= 4
    })
    .await;
    agent.stop().await;
    for (group, query) in server.config_requests() {
        assert_eq!(group, "lab");
        assert_eq!(query.get("llamaport").map(String::as_str), Some("8100"));
        assert_eq!(query.get("srcip").map(String::as_str), Some("127.0.0.1"));
    }
    assert_eq!(server.my_ip_requests(), 1, "the address is asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_ip_is_the_srcip_and_odd_group_names_are_encoded() {
    let server = TestServer::start().await;
    let group = "wan eu/1";
    server.set_config(group, A);
    let mut cfg = config(server.url(), None);
    cfg.group = group.into();
    cfg.ip = Some("192.0.2.9".parse().unwrap());
    let agent = Agent::start(cfg);
    until("config applied", WAIT, || agent.sink.applied() == [A]).await;
    agent.stop().await;
    let (got_group, query) = &server.config_requests()[0];
    assert_eq!(got_group, group);
    assert_eq!(query.get("srcip").map(String::as_str), Some("192.0.2.9"));
    assert_eq!(server.my_ip_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_config_keeps_the_previous_one_and_is_not_persisted() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(config(server.url(), Some(dir.path())));
    until("config A applied", WAIT, || agent.sink.applied() == [A]).await;
    server.set_config("lab", "REJECT me\n");
    until("rejection", WAIT, || {
        agent.metrics.config_rejected.get() == 1
    })
    .await;
    let polls = server.config_requests().len();
    until("several more polls", WAIT, || {
        server.config_requests().len() >= polls + 4
    })
    .await;
    // Offered once, not at every poll; A stays in force and on disk.
    assert_eq!(agent.metrics.config_rejected.get(), 1);
    assert_eq!(agent.sink.offered(), 2);
    assert_eq!(
        StateFile::new(dir.path(), "lab").load().unwrap().as_deref(),
        Some(A)
    );
    server.set_config("lab", B);
    until("config B applied", WAIT, || agent.sink.applied() == [A, B]).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_or_hanging_keeps_the_last_config_and_backs_off() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let agent = Agent::start(config(server.url(), None));
    until("config A applied", WAIT, || agent.sink.applied() == [A]).await;
    // Hanging: requests time out (500 ms); stopped: connections refused.
    server.set_mode(Mode::Hang);
    let failed = agent.metrics.config_fetches_failed.get();
    until("timeouts", WAIT, || {
        agent.metrics.config_fetches_failed.get() >= failed + 2
    })
    .await;
    server.stop().await;
    let failed = agent.metrics.config_fetches_failed.get();
    until("refusals", WAIT, || {
        agent.metrics.config_fetches_failed.get() >= failed + 5
    })
    .await;
    assert_eq!(
        agent.sink.offered(),
        1,
        "nothing may be re-applied during the outage"
    );
    assert!(
        agent
            .metrics
            .backoff(llama_agent::control::metrics::Loop::Poll)
            > 0.0
    );
    server.set_mode(Mode::Normal);
    server.set_config("lab", B);
    server.restart().await;
    until("config B after the outage", WAIT, || {
        agent.sink.applied() == [A, B]
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_server_down_applies_the_persisted_config() {
    let dir = tempfile::tempdir().unwrap();
    StateFile::new(dir.path(), "lab").store(A).unwrap();
    let agent = Agent::start(config(dead_server_url(), Some(dir.path())));
    until("persisted config applied", WAIT, || {
        agent.sink.applied() == [A]
    })
    .await;
    until("polls failing", WAIT, || {
        agent.metrics.config_fetches_failed.get() >= 3
    })
    .await;
    assert_eq!(agent.sink.offered(), 1);
    assert_eq!(agent.metrics.config_changes_applied.get(), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_first_fetch_after_a_restart_changes_nothing() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let dir = tempfile::tempdir().unwrap();
    StateFile::new(dir.path(), "lab").store(A).unwrap();
    let agent = Agent::start(config(server.url(), Some(dir.path())));
    until("several polls", WAIT, || {
        server.config_requests().len() >= 3
    })
    .await;
    assert_eq!(agent.sink.offered(), 1, "the persisted config, once");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_bootstraps_when_nothing_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    std::fs::write(&file, B).unwrap();
    let mut cfg = config(dead_server_url(), Some(&dir.path().join("state")));
    cfg.bootstrap_config = Some(file);
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let agent = Agent::start(cfg);
    until("bootstrap config applied", WAIT, || {
        agent.sink.applied() == [B]
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_even_with_a_request_in_flight() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let mut cfg = config(server.url(), None);
    cfg.request_timeout = Duration::from_secs(30); // a hang outlives shutdown
    cfg.shutdown_grace = Duration::from_millis(300);
    let agent = Agent::start(cfg);
    until("config applied", WAIT, || agent.sink.applied() == [A]).await;
    server.set_mode(Mode::Hang);
    let attempts = server.register_attempts() + server.config_requests().len();
    until("a request in flight", WAIT, || {
        server.register_attempts() + server.config_requests().len() > attempts
    })
    .await;
    let started = Instant::now();
    agent.stop().await;
    // Grace is 300 ms; 5 s is the agent's overall shutdown bound.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporaries_left_by_a_killed_write_are_removed_at_start() {
    let server = TestServer::start().await;
    server.set_config("lab", A);
    let dir = tempfile::tempdir().unwrap();
    // pid_max is at most 2^22: no process has this pid.
    let stale = dir.path().join("config-lab.yaml.tmp.2147483647");
    std::fs::write(&stale, vec![b'x'; 1 << 20]).unwrap();
    let agent = Agent::start(config(server.url(), Some(dir.path())));
    until("config A applied", WAIT, || agent.sink.applied() == [A]).await;
    agent.stop().await;
    assert!(!stale.exists(), "the stale temporary file is still there");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("config-lab.yaml")]);
}
