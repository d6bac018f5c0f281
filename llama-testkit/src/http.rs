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

/// One HTTP/1.0 request (so the server closes the connection and never
/// chunks the body) from the calling thread's namespace, with `json` as a
/// JSON body: the status and body of the answer, or `None` when the server
/// cannot be reached or answers garbage. Connecting takes at most 2 s and
/// reading at most 10 s (servers under qemu-user are slow).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let content = json.map_or(String::new(), |body| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    });
    let body = json.unwrap_or("");
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{content}\r\n{body}");
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `GET path` ([`http_request`]): the status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, None)
}

/// [`http_get`] that only returns the body of a 200 answer.
pub fn http_get_ok(addr: SocketAddr, path: &str) -> Option<String> {
    http_get(addr, path).and_then(|(status, body)| (status == 200).then_some(body))
}
