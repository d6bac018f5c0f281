//! Small HTTP helpers for tests that talk to a server from a thread inside
//! a network namespace (where an async client would need a runtime of its
//! own), and free loopback ports.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago (bound,
/// then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// `GET path` over HTTP/1.0 from the calling thread's namespace: the status
/// and body, or `None` when the server cannot be reached or answers
/// garbage. Connecting and reading are bounded by a few seconds.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// [`http_get`] that only returns the body of a 200 answer.
pub fn http_get_ok(addr: SocketAddr, path: &str) -> Option<String> {
    http_get(addr, path).and_then(|(status, body)| (status == 200).then_some(body))
}
