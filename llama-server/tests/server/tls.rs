//! HTTPS with certificates made in the test (a private CA): the real
//! `llama-server --tls-cert/--tls-key` and the real `llama-agent --server
//! https://… --ca-cert`, a wrong CA, the certificate reloaded on SIGHUP
//! while an open connection keeps working, and the handshake bounded by the
//! header read timeout.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use llama_testkit::{ChildGuard, Signal, WAIT, eventually, free_port, until, workspace_binary};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{io::AsyncReadExt, net::TcpStream};

use crate::support::{assert_contains, pki::Ca};

const BIN: &str = env!("CARGO_BIN_EXE_llama-server");

/// A TLS server and where it logs.
struct TlsServer {
    child: ChildGuard,
    port: u16,
    log: PathBuf,
}

impl TlsServer {
    /// With the files given by flags.
    fn start(dir: &Path, cert: &Path, key: &Path, extra: &[&str]) -> TlsServer {
        let mut args = vec!["--tls-cert", cert.to_str().unwrap()];
        args.extend(["--tls-key", key.to_str().unwrap()]);
        args.extend(extra);
        Self::spawn(dir, &args, &[])
    }

    /// With the files given by `LLAMA_TLS_CERT` and `LLAMA_TLS_KEY`.
    fn start_by_env(dir: &Path, cert: &Path, key: &Path) -> TlsServer {
        let env = [("LLAMA_TLS_CERT", cert), ("LLAMA_TLS_KEY", key)];
        Self::spawn(dir, &[], &env)
    }

    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> TlsServer {
        let port = free_port();
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .env_clear()
            .envs(env.iter().copied())
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["--collect", "false"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        TlsServer {
            child: ChildGuard::new(child),
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTPS client trusting only `ca`.
fn client(ca: &Path) -> reqwest::Client {
    llama_server::tls::client_tls(reqwest::Client::builder(), Some(ca), "test CA")
        .unwrap()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn wait_up(server: &TlsServer, ca: &Path) {
    let url = format!("{}/api/v1/interval", server.url());
    let client = client(ca);
    eventually("the TLS server to answer", WAIT, || async {
        client.get(&url).send().await.ok()
    })
    .await;
}

/// One HTTP/1.1 connection over TLS, trusting `ca_pem`: the request sender
/// and the certificate the server presented.
async fn connect(
    port: u16,
    ca_pem: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    Vec<u8>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, presented)
}

async fn interval(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> String {
    let request = hyper::Request::get("/api/v1/interval")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The real agent against `server`, trusting `ca` (given by `--ca-cert`, or
/// by `LLAMA_CA_CERT` when `ca_by_env`); logs into `dir`.
fn start_agent(
    server: &TlsServer,
    ca: &Path,
    ca_by_env: bool,
    dir: &Path,
    group: &str,
) -> (ChildGuard, PathBuf) {
    let log = dir.join(format!("agent-{group}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let state = dir.join(format!("state-{group}"));
    std::fs::create_dir_all(&state).unwrap();
    let mut command = Command::new(workspace_binary("llama-agent"));
    command
        .env_clear()
        .args(["run", "--server", &server.url(), "--group", group]);
    if ca_by_env {
        command.env("LLAMA_CA_CERT", ca);
    } else {
        command.arg("--ca-cert").arg(ca);
    }
    let child = command
        .args(["--port", &free_port().to_string(), "--mode", "userspace"])
        .args(["--api-bind", "127.0.0.1:0", "-i", "127.0.0.1"])
        .args(["--register-interval", "200ms", "--poll-interval", "200ms"])
        .args(["--keepalive", "5", "--probe-shortname", group])
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (ChildGuard::new(child), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_and_polls_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("llama test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.leaf(1, "llama server").write(dir.path());
    let server = TlsServer::start(dir.path(), &cert, &key, &[]);
    wait_up(&server, &ca_file).await;
    assert_contains(&server.log(), &["https"]);

    let (_agent, _) = start_agent(&server, &ca_file, false, dir.path(), "tls");
    // Registered: the server lists the agent…
    let list = format!("{}/api/v1/list/tls", server.url());
    let client = client(&ca_file);
    eventually("the agent's registration over HTTPS", WAIT, || async {
        let text = client.get(&list).send().await.ok()?.text().await.ok()?;
        text.contains("\"tls\"").then_some(())
    })
    .await;
    // …and the config poll succeeded: the agent persisted the config.
    let persisted = dir.path().join("state-tls").join("config-tls.yaml");
    until("the config fetched over HTTPS", WAIT, || {
        persisted.is_file()
    })
    .await;

    // An agent trusting another CA refuses the server, and says why.
    let other = Ca::new("some other CA");
    let other_file = other.write(dir.path(), "other-ca.pem");
    let (_stranger, log) = start_agent(&server, &other_file, true, dir.path(), "stranger");
    until("the certificate error in the agent's log", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("UnknownIssuer"))
    })
    .await;
    assert_contains(
        &std::fs::read_to_string(&log).unwrap(),
        &[
            "TLS with the server failed",
            "invalid peer certificate",
            "--ca-cert",
        ],
    );
    let text = client
        .get(list.replace("/tls", "/stranger"))
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 404, "the stranger never registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_open_connections_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("llama test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let first = ca.leaf(1, "llama server one");
    let (cert, key) = first.write(dir.path());
    let mut server = TlsServer::start_by_env(dir.path(), &cert, &key);
    wait_up(&server, &ca_file).await;

    let (mut open, presented) = connect(server.port, &ca.pem()).await;
    assert_eq!(presented, first.der, "the first certificate");
    assert_eq!(interval(&mut open).await, "10");

    // A new certificate (serial 2, another subject) in the same files.
    let second = ca.leaf(2, "llama server two");
    second.write(dir.path());
    server.child.signal(Signal::SIGHUP).unwrap();
    let ca_pem = ca.pem();
    eventually(
        "new connections to get the new certificate",
        WAIT,
        || async {
            let (_, presented) = connect(server.port, &ca_pem).await;
            (presented == second.der).then_some(())
        },
    )
    .await;
    assert_contains(&server.log(), &["TLS certificate and key reloaded"]);
    // The connection opened before the reload still answers.
    assert_eq!(interval(&mut open).await, "10");

    // A broken file: logged, and the server keeps the last good certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.child.signal(Signal::SIGHUP).unwrap();
    until("the failed reload in the log", WAIT, || {
        server.log().contains("TLS reload failed")
    })
    .await;
    let (mut again, presented) = connect(server.port, &ca.pem()).await;
    assert_eq!(presented, second.der, "still the second certificate");
    assert_eq!(interval(&mut again).await, "10");
    assert!(
        server.child.child().try_wait().unwrap().is_none(),
        "SIGHUP must not end the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_cannot_hold_the_only_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("llama test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.leaf(1, "llama server").write(dir.path());
    let server = TlsServer::start(
        dir.path(),
        &cert,
        &key,
        &["--max-connections", "1", "--header-read-timeout", "1"],
    );
    wait_up(&server, &ca_file).await;
    // Connects and never starts a handshake: it takes the only slot…
    let mut stalled = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // …until the handshake timeout closes it; then the next client is served.
    let url = format!("{}/api/v1/interval", server.url());
    let answer = client(&ca_file).get(&url).send().await.expect("served");
    assert_eq!(answer.text().await.unwrap(), "10");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stalled.read(&mut buf))
        .await
        .expect("the stalled connection is closed");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );
}

#[test]
fn bad_certificate_files_fail_at_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("llama test CA");
    let (cert, _) = ca.leaf(1, "one").write(dir.path());
    // The key of another certificate.
    let other = ca.leaf(2, "two");
    let wrong_key = dir.path().join("wrong-key.pem");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let missing = dir.path().join("missing.pem");
    for (key, needle) in [(&wrong_key, "does not match"), (&missing, "missing.pem")] {
        let out = Command::new(BIN)
            .env_clear()
            .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_contains(&text, &["--tls-key", needle]);
    }
    // A certificate without a key (from flags, environment and file alike)
    // is refused too.
    let out = Command::new(BIN)
        .env_clear()
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .arg("--tls-cert")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        &["--tls-cert and --tls-key", "go together"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_names_the_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("llama test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.leaf(1, "llama server").write(dir.path());
    let port = free_port();
    let (_config_dir, config) = crate::support::config_file(&format!(
        "host: 127.0.0.1\nport: {port}\ncollect: false\ntls_cert: {}\ntls_key: {}\n",
        cert.display(),
        key.display()
    ));
    let _server = ChildGuard::new(
        Command::new(BIN)
            .env_clear()
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://localhost:{port}/api/v1/interval");
    let client = client(&ca_file);
    let answer = eventually("the server to answer over HTTPS", WAIT, || async {
        client.get(&url).send().await.ok()
    })
    .await;
    assert_eq!(answer.text().await.unwrap(), "10");
    // A plain-HTTP request to it is not served.
    let plain = crate::support::get(format!("http://127.0.0.1:{port}/api/v1/interval")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
