//! Starting a reflector for the collector's tests, in ONE place.
//!
//! The real reflector (`llama-agent reflect --mode userspace|xdp|xdp-skb
//! --interface IF --port N`) is built on another branch. Until the merge,
//! [`start_reflector`] runs a small UDP echo written here for every mode: it
//! answers each datagram that `llama_common::probe::parse` accepts with the
//! identical payload, from the probed port, with the IP TOS / traffic class
//! set from the probe's tos byte. The merge switches this function to
//! spawning `env!("CARGO_BIN_EXE_llama-agent") reflect --mode <mode>
//! --interface <iface> --port <port>` inside `ns` (via `ns.spawn`), keeping
//! the signature, so the tests then run against the real XDP and userspace
//! reflectors unchanged.
#![allow(dead_code)]

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use llama_testkit::NetNs;

/// Which reflector a test wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Userspace,
    Xdp,
}

/// A running reflector; stopped when dropped.
pub struct Guard {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Datagrams answered (echo only).
    pub answered: Arc<AtomicU64>,
    /// The bound addresses (with their ports).
    pub addrs: Vec<SocketAddr>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts a reflector in `ns` answering UDP `port` on every address the
/// namespace has (`iface` is where the XDP reflector attaches). The echo
/// binds each address separately so that, like the real reflectors, it
/// answers from the address that was probed.
pub fn start_reflector(ns: &NetNs, mode: Mode, iface: &str, port: u16) -> Guard {
    let _ = (mode, iface);
    let listing = ns
        .ip_output(&["-o", "addr", "show"])
        .expect("list addresses");
    let addrs: Vec<IpAddr> = listing
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(2);
            match w.next() {
                Some("inet") | Some("inet6") => w.next()?.split('/').next()?.parse().ok(),
                _ => None,
            }
        })
        .filter(|ip: &IpAddr| !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let bound: Vec<SocketAddr> = addrs.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
    for ip in addrs {
        let (stop, answered) = (stop.clone(), answered.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        threads.push(ns.spawn_thread(move || {
            let sock = match bind(SocketAddr::new(ip, port)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            echo(&sock, ip.is_ipv6(), &stop, &answered);
        }));
        ready_rx
            .recv()
            .expect("echo thread")
            .unwrap_or_else(|e| panic!("bind echo on {ip}: {e}"));
    }
    Guard {
        stop,
        threads,
        answered,
        addrs: bound,
    }
}

/// Starts the echo in the current namespace on `addrs` (loopback tests;
/// port 0 binds an ephemeral port, see [`Guard::addrs`]).
pub fn start_local_echo(addrs: &[SocketAddr]) -> Guard {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let mut bound = Vec::new();
    for &addr in addrs {
        let sock = bind(addr).expect("bind echo socket");
        bound.push(sock.local_addr().expect("bound address"));
        let (stop, answered) = (stop.clone(), answered.clone());
        threads.push(std::thread::spawn(move || {
            echo(&sock, addr.is_ipv6(), &stop, &answered)
        }));
    }
    Guard {
        stop,
        threads,
        answered,
        addrs: bound,
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(sock)
}

fn set_tos(sock: &UdpSocket, v6: bool, tos: u8) {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    let v = libc::c_int::from(tos);
    // SAFETY: a live c_int of the size passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            4,
        );
    }
}

fn echo(sock: &UdpSocket, v6: bool, stop: &AtomicBool, answered: &AtomicU64) {
    let mut buf = vec![0u8; 65536];
    let mut current_tos = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(probe) = llama_common::probe::parse(&buf[..n]) else {
            continue;
        };
        let tos = probe.tos();
        if current_tos != Some(tos) {
            set_tos(sock, v6, tos);
            current_tos = Some(tos);
        }
        if sock.send_to(&buf[..n], from).is_ok() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
