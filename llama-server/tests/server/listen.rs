//! The server over real sockets: several listen addresses, IPv4 and IPv6 on
//! one port, peers seen as they are, graceful shutdown; and the original's
//! config file.

use std::{net::SocketAddr, time::Duration};

use llama_server::{
    Settings,
    server::Server,
    settings::{FileConfig, listen_addrs},
    state::AppState,
};
use serde_json::json;

use crate::support::{
    app::{self, get_text},
    config_file,
};

async fn my_ip(addr: SocketAddr) -> String {
    let v: serde_json::Value = crate::support::get(format!("http://{addr}/api/v1/my_ip_address"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["ip"].as_str().unwrap().to_owned()
}

fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[tokio::test]
async fn listens_on_ipv4_and_ipv6_wildcards_on_one_port() {
    if !ipv6_available() {
        eprintln!("SKIPPED listens_on_ipv4_and_ipv6_wildcards_on_one_port: no IPv6 loopback");
        return;
    }
    // A port free for both families.
    let port = loop {
        let p = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if std::net::TcpListener::bind(("::", p)).is_ok() {
            break p;
        }
    };
    let listen = listen_addrs(&["0.0.0.0".into(), "::".into()], port).unwrap();
    let settings = Settings {
        listen,
        ..Settings::default()
    };
    let server = Server::start(AppState::new(settings)).await.unwrap();
    assert_eq!(server.addrs.len(), 2);
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    assert_eq!(my_ip(v4).await, "127.0.0.1");
    assert_eq!(my_ip(v6).await, "::1");
    let e = app::register_http(&format!("http://{v6}"), app::reg(8100, "six", json!({}))).await;
    assert_eq!(e["id"], "[::1]:8100");
    let cfg = get_text(format!("http://{v6}/api/v1/config/default?llamaport=8100")).await;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&cfg).unwrap();
    assert_eq!(doc["targets"]["default"][0]["ip"], "::1");
    assert_eq!(get_text(format!("http://{v4}/api/v1/scraper")).await, "::1");
    server.shutdown().await;
    // Stopped: nothing listens any more.
    let gone =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(v4)).await;
    assert!(matches!(gone, Ok(Err(_))), "still accepting after shutdown");
}

#[tokio::test]
async fn serves_on_several_addresses() {
    let mut hosts = vec!["127.0.0.1".to_owned(), "127.0.0.2".to_owned()];
    if ipv6_available() {
        hosts.push("::1".into());
    }
    let listen: Vec<SocketAddr> = listen_addrs(&hosts, 0).unwrap();
    let server = Server::start(AppState::new(Settings {
        listen,
        ..Settings::default()
    }))
    .await
    .unwrap();
    assert_eq!(server.addrs.len(), hosts.len());
    for addr in &server.addrs {
        // The source address is the kernel's choice: a loopback address
        // of the listener's family.
        let seen: std::net::IpAddr = my_ip(*addr).await.parse().unwrap();
        assert!(
            seen.is_loopback() && seen.is_ipv4() == addr.is_ipv4(),
            "{seen} via {addr}"
        );
    }
    server.shutdown().await;
}

#[test]
fn loads_the_original_config_file() {
    // The original server's config.yml.
    let (_dir, path) = config_file(
        "# Port webserver listens on.\nport: 80\nhost: 0.0.0.0\nkeepalive: 86400\ngroup: default\ninterval: 10\nverbose: False\n",
    );
    let f = FileConfig::load(&path).unwrap();
    assert_eq!(
        (f.port, f.keepalive, f.interval, f.verbose),
        (Some(80), Some(86400.0), Some(10), Some(false))
    );
    assert_eq!(f.group.as_deref(), Some("default"));
    // Ours: several hosts and limits.
    std::fs::write(
        &path,
        "host: [0.0.0.0, '::']\nlimits:\n  max_tags: 8\n  max_entries: 5\n",
    )
    .unwrap();
    let f = FileConfig::load(&path).unwrap();
    assert_eq!(f.host.unwrap().into_vec(), vec!["0.0.0.0", "::"]);
    let limits = f.limits.unwrap();
    assert_eq!(
        (limits.max_tags, limits.max_entries, limits.max_group_len),
        (8, 5, 64)
    );
    // Mistakes are reported with the file's name.
    std::fs::write(&path, "prot: 80\n").unwrap();
    let err = FileConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("config.yml") && err.contains("prot"), "{err}");
}
