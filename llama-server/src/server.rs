//! Running the server: bind every listen address (IPv4 and IPv6 side by
//! side), serve the router on them (`listener`: timeouts and a connection
//! limit), run the reaper and the scraper (into memory, and into InfluxDB
//! when one is configured); stop gracefully on SIGINT/SIGTERM.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    error::Error,
    listener::{self, ConnectionLimit},
    reaper, routes,
    scraper::{Scraper, TargetSource},
    settings::Settings,
    state::AppState,
    tls::ServerTls,
};

/// Binds `addr`. IPv6 sockets are IPv6-only when an IPv4 address is also
/// listened on, so `--host 0.0.0.0 --host ::` does not collide on the port.
pub fn bind(addr: SocketAddr, v6_only: bool) -> Result<TcpListener, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |e: std::io::Error| Error::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound addresses (with the real port when 0 was asked for).
    pub addrs: Vec<SocketAddr>,
    pub state: AppState,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds every address of `state.settings.listen` and starts serving.
    pub async fn start(state: AppState) -> Result<Server, Error> {
        let listen = &state.settings.listen;
        let v6_only = listen.iter().any(SocketAddr::is_ipv4);
        let mut listeners = Vec::new();
        for addr in listen {
            listeners.push(bind(*addr, v6_only)?);
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        let limit = Arc::new(ConnectionLimit::new(
            state.settings.listener.max_connections,
        ));
        let tls = match &state.settings.tls {
            Some(files) => {
                let tls = ServerTls::load(files)?;
                tasks.spawn(reload_on_sighup(tls.clone(), stopped.clone())?);
                Some(tls)
            }
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        for listener in listeners {
            let addr = listener.local_addr()?;
            addrs.push(addr);
            tasks.spawn(listener::serve(
                listener,
                routes::router(state.clone()),
                limit.clone(),
                state.settings.listener.clone(),
                tls.clone(),
                stopped.clone(),
            ));
            tracing::info!(%addr, scheme, "listening");
        }
        tasks.spawn(reaper::run(state.clone(), stopped.clone()));
        // Collection feeds the live matrix; InfluxDB is an optional second
        // output.
        let influx = state.settings.influx.as_ref();
        if !state.settings.collect {
            tracing::info!("collection off (--collect false): no agent is scraped");
            return Ok(Server {
                addrs,
                state,
                stop,
                tasks,
            });
        }
        let scraper = Scraper::new(
            TargetSource::Store(state.store.clone()),
            influx,
            state.settings.scrape.clone(),
            Duration::from_secs(state.settings.interval),
            state.metrics.clone(),
            state.history.clone(),
        )?
        .with_server_stats(state.store.clone())
        .with_lease(state.store.clone());
        match influx {
            Some(influx) => {
                tracing::info!(
                    url = influx.base_url(),
                    db = influx.name,
                    "collecting agents' summaries, also into InfluxDB"
                )
            }
            None => {
                tracing::info!("collecting agents' summaries (in memory; no InfluxDB configured)")
            }
        }
        tasks.spawn(scraper.run(stopped.clone()));
        Ok(Server {
            addrs,
            state,
            stop,
            tasks,
        })
    }

    /// Stops accepting, lets requests in flight finish, stops the tasks.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Reloads the listener's certificate and key on every SIGHUP until `stop`;
/// a bad new file is logged and the old certificate kept. The handler is
/// installed before this returns, so SIGHUP never kills a TLS server.
fn reload_on_sighup(
    tls: ServerTls,
    mut stop: watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                s = hup.recv() => if s.is_none() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => {
                    tracing::error!(%e, "SIGHUP: TLS reload failed; still serving the previous certificate")
                }
            }
        }
    })
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Serves until SIGINT/SIGTERM.
pub async fn serve(settings: Settings) -> Result<(), Error> {
    crate::settings::validate(&settings)?;
    match &settings.store {
        crate::settings::StoreSettings::Memory => tracing::info!("registry in memory"),
        crate::settings::StoreSettings::Redis(options) => {
            tracing::info!(
                ?options,
                "registry in Redis, shared with any server using it"
            )
        }
    }
    let server = Server::start(AppState::from_settings(settings)?).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Settings of `llama-server scrape`.
#[derive(Debug, Clone)]
pub struct ScrapeOnly {
    /// Base URL of the server whose `/api/v1/scraper` lists the agents.
    pub server: String,
    /// CA certificates (PEM) of an `https://` server.
    pub ca_cert: Option<std::path::PathBuf>,
    pub influx: crate::settings::InfluxSettings,
    pub interval: Duration,
    pub scrape: crate::settings::ScrapeSettings,
}

/// Runs the scraper alone until SIGINT/SIGTERM.
pub async fn scrape(cfg: ScrapeOnly) -> Result<(), Error> {
    let metrics = crate::metrics::Metrics::new();
    let history = std::sync::Arc::new(crate::history::History::new(
        &crate::history::HistoryLimits {
            window: crate::settings::HISTORY_WINDOW,
            interval: cfg.interval,
            max_bytes: cfg.scrape.history_max_bytes,
            max_paths: cfg.scrape.history_max_paths,
        },
        metrics.history.clone(),
    ));
    let metrics = std::sync::Arc::new(metrics);
    let source = TargetSource::server(&cfg.server, cfg.ca_cert.as_deref())?;
    let scraper = Scraper::new(
        source,
        Some(&cfg.influx),
        cfg.scrape,
        cfg.interval,
        metrics,
        history,
    )?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(scraper.run(stopped));
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = task.await;
    Ok(())
}
