//! HTTP requests from inside a test namespace (llama-testkit's client run
//! on a thread in the namespace), to `ip:port` addresses as the tests
//! write them.

use llama_testkit::{NetNs, http_request};

/// Status and body of one response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// One request to `addr` (`ip:port`) from inside `ns`, with `json` as its
/// body; `None` when the connection fails or the answer is not HTTP.
pub fn request(
    ns: &NetNs,
    method: &str,
    addr: &str,
    path: &str,
    json: Option<&str>,
) -> Option<Response> {
    let addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr} is not ip:port: {e}"));
    ns.run(|| http_request(addr, method, path, json))
        .map(|(status, body)| Response { status, body })
}

/// `GET` that only counts a 200.
pub fn get(ns: &NetNs, addr: &str, path: &str) -> Option<String> {
    request(ns, "GET", addr, path, None)
        .filter(|r| r.status == 200)
        .map(|r| r.body)
}
