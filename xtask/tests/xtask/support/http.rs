//! Plain HTTP/1.0 requests from inside a test namespace, and bounded waits.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use llama_testkit::NetNs;

/// Status and body of one response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request to `addr` (`ip:port`) from inside `ns`; `None` when the
/// connection fails or the answer is not HTTP. HTTP/1.0 so that the server
/// closes the connection and never chunks the body.
pub fn request(
    ns: &NetNs,
    method: &str,
    addr: &str,
    path: &str,
    json: Option<&str>,
) -> Option<Response> {
    ns.run(|| {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let body = json.unwrap_or("");
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
        if json.is_some() {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some(Response {
            status,
            body: body.to_owned(),
        })
    })
}

/// `GET` that only counts a 200.
pub fn get(ns: &NetNs, addr: &str, path: &str) -> Option<String> {
    request(ns, "GET", addr, path, None)
        .filter(|r| r.status == 200)
        .map(|r| r.body)
}

/// Calls `probe` until it returns `Some`, for at most `timeout`; panics
/// naming `what` (and the last `context()`) when time runs out.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
