//! Makes the demo's server reachable from the host: a TCP listener in the
//! host's own network namespace whose connections are relayed to the server
//! inside the hub namespace (each relay thread enters the hub namespace
//! before connecting). A browser on the host, or an `ssh -L` tunnel to it,
//! opens the live matrix this way.

use std::{
    fs::File,
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

/// Connections relayed at once; more are closed at once (a browser opens
/// about six).
const MAX_CONNECTIONS: usize = 64;

/// A running relay; stops accepting when dropped.
pub struct Forward {
    pub local: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Listens on `listen` (falling back to a free port on the same address
/// when it is taken) and relays every connection to `target` inside the
/// network namespace `netns`. Call it from a thread still in the host's
/// namespace.
pub fn start(listen: SocketAddr, netns: &str, target: SocketAddr) -> Result<Forward> {
    let listener = TcpListener::bind(listen)
        .or_else(|_| TcpListener::bind(SocketAddr::new(listen.ip(), 0)))
        .with_context(|| format!("listen on {listen} for the live matrix"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let ns_path = format!("/var/run/netns/{netns}");
    let active = Arc::new(AtomicUsize::new(0));
    let stopped = stop.clone();
    thread::Builder::new()
        .name("demo-forward".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                            continue; // dropped: closes the connection
                        }
                        active.fetch_add(1, Ordering::Relaxed);
                        let (active, ns_path) = (active.clone(), ns_path.clone());
                        let _ = thread::Builder::new()
                            .name("demo-relay".into())
                            .spawn(move || {
                                if let Err(e) = relay(client, &ns_path, target) {
                                    eprintln!("live matrix relay: {e}");
                                }
                                active.fetch_sub(1, Ordering::Relaxed);
                            });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(Forward { local, stop })
}

/// Connects to `target` from inside the namespace at `ns_path` and copies
/// bytes both ways until either side closes.
fn relay(client: TcpStream, ns_path: &str, target: SocketAddr) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let ns = File::open(ns_path)?;
    // SAFETY: setns on this thread with a valid namespace fd; only this
    // thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let _ = io::copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}
