//! Slow and idle clients over real sockets: connections that send half a
//! request line (or nothing) are closed after the header read timeout,
//! others are served meanwhile, shutdown does not wait for them, and a
//! server under a small file-descriptor limit keeps serving behind its
//! connection limit, saying so once.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use llama_server::{
    Settings,
    server::Server,
    settings::{ListenerSettings, listen_addrs},
    state::AppState,
};
use llama_testkit::{ChildGuard, WAIT, eventually, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_llama-server");

/// Reads from `s` until the peer closes it; `false` if it is still open
/// after `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset by the server: closed too.
            Err(_) => return true,
        }
    }
    false
}

async fn start(header_read_timeout: Duration) -> Server {
    Server::start(AppState::new(Settings {
        listen: listen_addrs(&["127.0.0.1".into()], 0).unwrap(),
        collect: false,
        listener: ListenerSettings {
            header_read_timeout,
            ..ListenerSettings::default()
        },
        ..Settings::default()
    }))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_while_others_are_served() {
    let server = start(Duration::from_secs(1)).await;
    let addr = server.addrs[0];
    // 30 connections stuck in a request line, 30 that send nothing.
    let mut slow: Vec<TcpStream> = (0..60)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /api/v1/interval HTT").unwrap();
            }
            s
        })
        .collect();
    // Others are served meanwhile.
    let interval = crate::support::get(format!("http://{addr}/api/v1/interval"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(interval, "10");
    // A keep-alive connection that got its answer and then stays idle.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /api/v1/interval HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    slow.push(idle);
    let all = tokio::task::spawn_blocking(move || {
        slow.iter_mut()
            .map(|s| closed_within(s, WAIT))
            .filter(|closed| !closed)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(all, 0, "{all} connections still open after {WAIT:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_idle_clients() {
    // A timeout longer than the test: only shutdown can close them.
    let server = start(Duration::from_secs(3600)).await;
    let addr = server.addrs[0];
    let mut conns = vec![TcpStream::connect(addr).unwrap()];
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(b"GET /api/v1/interval HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    conns.push(kept);
    // Both reached the server before it is told to stop.
    let body = crate::support::get(format!("http://{addr}/api/v1/interval"))
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown waited for idle connections");
    let open = tokio::task::spawn_blocking(move || {
        conns
            .iter_mut()
            .map(|s| closed_within(s, WAIT))
            .filter(|closed| !closed)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(open, 0);
}

/// The server binary under `ulimit -n 64`, logging to `log`.
fn spawn_with_fd_limit(port: u16, log: &std::path::Path, args: &[&str]) -> ChildGuard {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(BIN)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--collect", "false"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    ChildGuard::new(cmd.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_connection_limit_keeps_the_server_serving() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let _server = spawn_with_fd_limit(
        port,
        &log,
        &["--max-connections", "16", "--header-read-timeout", "1"],
    );
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/api/v1/interval");
    eventually("the server to come up", WAIT, || async {
        crate::support::get(&url).await.ok()
    })
    .await;
    // More idle connections than the process has descriptors.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // A client queued behind them is served once the slots free up.
    let client =
        crate::support::client(reqwest::Client::builder().timeout(Duration::from_secs(60)));
    let r = client
        .get(&url)
        .send()
        .await
        .expect("served despite 100 idle connections");
    assert_eq!(r.text().await.unwrap(), "10");
    drop(idle);
    let text = std::fs::read_to_string(&log).unwrap();
    let hits = text.matches("connection limit reached").count();
    assert_eq!(hits, 1, "one line for the limit:\n{text}");
    assert!(!text.contains("accepting connections failed"), "{text}");
}
