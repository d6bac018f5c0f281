//! Helpers to run the control loop in tests: a recording sink, a config with
//! short intervals, polling for conditions.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use llama_agent::control::{self, ConfigSink, ControlConfig, ControlMetrics};
use tokio_util::sync::CancellationToken;

/// Records accepted configs; refuses any text containing `REJECT`.
#[derive(Debug, Default)]
pub struct RecordingSink {
    applied: Mutex<Vec<String>>,
    offered: Mutex<usize>,
}

impl RecordingSink {
    pub fn applied(&self) -> Vec<String> {
        self.applied.lock().unwrap().clone()
    }

    /// Every call to `apply`, accepted or not.
    pub fn offered(&self) -> usize {
        *self.offered.lock().unwrap()
    }
}

impl ConfigSink for RecordingSink {
    fn apply(&self, yaml: &str) -> Result<(), String> {
        *self.offered.lock().unwrap() += 1;
        if yaml.contains("REJECT") {
            return Err("test sink refuses REJECT".into());
        }
        self.applied.lock().unwrap().push(yaml.to_owned());
        Ok(())
    }
}

/// A config for tests: fast loops, short timeouts, small backoff.
pub fn config(server: reqwest::Url, state_dir: Option<&Path>) -> ControlConfig {
    ControlConfig {
        servers: vec![server],
        group: "lab".into(),
        port: 8100,
        ip: None,
        keepalive: Duration::from_secs(300),
        probe_name: "probe one".into(),
        probe_shortname: "p1".into(),
        tags: [("location".to_owned(), "Las Vegas".to_owned())].into(),
        register_interval: Duration::from_millis(200),
        poll_interval: Duration::from_millis(200),
        state_dir: state_dir.map(Path::to_owned),
        bootstrap_config: None,
        request_timeout: Duration::from_millis(500),
        backoff_base: Duration::from_millis(50),
        backoff_max: Some(Duration::from_millis(400)),
        shutdown_grace: Duration::from_millis(500),
        registration_token: None,
        deregister_timeout: Duration::from_millis(500),
        ca_cert: None,
    }
}

/// A running control loop.
pub struct Agent {
    pub sink: Arc<RecordingSink>,
    pub metrics: ControlMetrics,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), control::Error>>,
}

impl Agent {
    pub fn start(config: ControlConfig) -> Self {
        let sink = Arc::new(RecordingSink::default());
        let metrics = ControlMetrics::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(control::run(
            config,
            Arc::clone(&sink) as Arc<dyn ConfigSink>,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self {
            sink,
            metrics,
            shutdown,
            task,
        }
    }

    /// Cancel and wait for the loop to return (bounded).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("control loop did not stop")
            .unwrap()
            .unwrap();
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn dead_server_url() -> reqwest::Url {
    let port = llama_testkit::free_port();
    format!("http://127.0.0.1:{port}").parse().unwrap()
}
