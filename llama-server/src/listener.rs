//! The HTTP listener: accepts TCP connections and serves HTTP/1.1 on them
//! with two limits that keep slow or idle clients from starving the rest.
//!
//! - A **header read timeout**: a client must send a request's headers
//!   within it, and an idle keep-alive connection is closed when no request
//!   starts within it. A connection that sends half a request line and then
//!   nothing is closed, instead of holding a file descriptor for ever.
//! - A **connection limit** shared by every listen address: at the limit the
//!   loop stops accepting, so new connections wait in the kernel's backlog
//!   (they are served as soon as others close or time out) instead of the
//!   process running out of file descriptors, where accepting fails for
//!   everyone. Hitting the limit logs one line (then at most one a minute).
//!
//! With TLS (`--tls-cert`), the handshake runs in the connection's own task
//! and must finish within the header read timeout too, so a client that
//! opens a connection and never completes a handshake holds its slot no
//! longer than one that never sends headers.
//!
//! Stopping (the `stop` signal) ends accepting, asks every connection to
//! finish its request in flight and close, and waits for them.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo, http::Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};

use crate::{settings::ListenerSettings, throttle::Throttle, tls::ServerTls};

/// How long accepting pauses after an error that is not one connection's
/// (out of file descriptors, out of memory).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connection slots of one server, shared by its listeners.
#[derive(Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    full_log: Throttle,
    error_log: Throttle,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
            full_log: Throttle::default(),
            error_log: Throttle::default(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// A free slot, waiting for one when all are taken.
    async fn slot(&self) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return slot;
        }
        if self.full_log.ready() {
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached: new connections wait until others close or time out (logged at most once a minute)"
            );
        }
        match self.slots.clone().acquire_owned().await {
            Ok(slot) => slot,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`
/// turns true, then waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limit: Arc<ConnectionLimit>,
    settings: ListenerSettings,
    tls: Option<ServerTls>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        // Take a slot first: at the limit, connections stay in the backlog.
        let slot = tokio::select! {
            slot = limit.slot() => slot,
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if limit.error_log.ready() {
                    tracing::error!(%e, "accepting connections failed; retrying (logged at most once a minute)");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            tls.clone(),
            settings.header_read_timeout,
            stop.clone(),
            slot,
        ));
        // Collect finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection, holding `slot` until it closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<ServerTls>,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    // Small answers must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    match tls {
        None => http(stream, peer, app, header_read_timeout, stop).await,
        Some(tls) => {
            let handshake = tokio::time::timeout(header_read_timeout, tls_accept(&tls, stream));
            let stream = tokio::select! {
                r = handshake => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match stream {
                Ok(Ok(stream)) => http(stream, peer, app, header_read_timeout, stop).await,
                // Scanners and clients that distrust the certificate fail
                // here routinely.
                Ok(Err(e)) => tracing::debug!(%peer, %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
    drop(slot);
}

#[cfg(feature = "tls")]
async fn tls_accept(
    tls: &ServerTls,
    stream: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tls.acceptor().accept(stream).await
}

#[cfg(not(feature = "tls"))]
async fn tls_accept(_tls: &ServerTls, _stream: TcpStream) -> io::Result<TcpStream> {
    Err(io::Error::other("no TLS support in this build"))
}

/// Serves HTTP/1.1 on one (plain or TLS) stream.
async fn http<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = async move {
        // The guard `wait_for` returns must not live across an await.
        let _ = stop.wait_for(|s| *s).await.map(|_| ());
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and clients that vanish are routine.
        tracing::debug!(%peer, %e, "connection ended with an error");
    }
}
