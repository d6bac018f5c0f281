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

use crate::{settings::ListenerSettings, throttle::Throttle};

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

/// Serves `app` on `listener` until `stop` turns true, then waits for the
/// open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limit: Arc<ConnectionLimit>,
    settings: ListenerSettings,
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
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    // Small answers must not wait for Nagle.
    let _ = stream.set_nodelay(true);
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
    drop(slot);
}
