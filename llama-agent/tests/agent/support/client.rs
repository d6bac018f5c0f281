//! A test client for the reflector: [`llama_testkit::ReplySocket`] (replies
//! with the TOS / traffic class and TTL / hop limit they arrived with) with
//! the tests' conventions: a failure to send or receive fails the test.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use llama_testkit::{Reply, ReplySocket};

pub struct Client {
    socket: ReplySocket,
}

impl Client {
    /// Binds `addr` (port 0 for any) and asks for TOS/TTL of arriving datagrams.
    pub fn bind(addr: SocketAddr) -> Self {
        let socket = ReplySocket::bind(addr).expect("bind client, ask for the TOS and TTL");
        Self { socket }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    pub fn send(&self, payload: &[u8], to: SocketAddr) {
        self.socket.send_to(payload, to).expect("send");
    }

    /// The next datagram within `timeout`, or `None`.
    pub fn recv(&self, timeout: Duration) -> Option<Reply> {
        self.socket
            .recv_before(Instant::now() + timeout)
            .expect("receive")
    }

    /// Collects replies until `quiet` passes without one or `max` passes.
    pub fn drain(&self, quiet: Duration, max: Duration) -> Vec<Reply> {
        let end = Instant::now() + max;
        let mut out = Vec::new();
        while Instant::now() < end {
            match self.recv(quiet) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }
}
