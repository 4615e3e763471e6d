//! Listeners, the accept loop, TLS handshakes, graceful shutdown and reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Notify, Semaphore, watch};

use crate::Error;
use crate::api::{ApiRange, ApiView, EngineApi, ProbeError, probe_engine};
use crate::audit::{Deferred, Peer};
use crate::io::{EmitAfterFlush, Stream};
use crate::metrics::Metrics;
use crate::route::ApiVersion;
use crate::service::Conn;
use crate::settings::Settings;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (TLS or plain, as the settings say).
    Tcp(SocketAddr),
    /// A unix socket path (never TLS: the file's permissions guard it). A stale socket file is
    /// replaced; one with a live server behind it is an error.
    Unix(PathBuf),
}

/// Limits and timeouts, fixed for the server's life.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time a client has to send a request's headers (slowloris). Default 30 s. Bodies and
    /// responses have no idle timeout: `logs -f`, `events` and attach may be quiet for hours.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes. Default 1 MiB, as the
    /// `X-Registry-Config` header of a build carries every registry credential; at least 8 KiB.
    pub max_header_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// Time a TLS client has to finish its handshake. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// On shutdown, how long open connections may take to finish. Default 30 s.
    pub shutdown_grace: Duration,
    /// Where requests, decisions, bytes, connections and hijacks are counted (served by
    /// [`crate::MetricsListener`]). Default `None`: nothing is counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 1024 * 1024,
            max_connections: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            metrics: None,
        }
    }
}

/// State shared by every connection: the current settings and the live-connection count.
pub(crate) struct Shared {
    settings: RwLock<Arc<Settings>>,
    /// The versions served, from the engine's `/version` (probed again after a reload or a
    /// failed connection to the engine).
    api: RwLock<Arc<ApiView>>,
    /// One probe at a time.
    probing: tokio::sync::Mutex<()>,
    live: AtomicUsize,
    drained: Notify,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    /// The metrics, when they are counted.
    pub(crate) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The versions served. While the engine's are not known, asks it first (a failure leaves
    /// the audited range, and the request then fails reaching the engine anyway).
    pub(crate) async fn api(&self, settings: &Settings) -> Arc<ApiView> {
        let view = self.current_api();
        if view.asked {
            return view;
        }
        let _one = self.probing.lock().await;
        let view = self.current_api();
        if view.asked {
            return view;
        }
        match probe_engine(&settings.upstream).await {
            Ok(engine) => self.set_api(Some(engine), settings.api_pin, true),
            Err(ProbeError::Unusable(e)) => {
                tracing::warn!(error = %e, "the engine's API versions are unknown: serving the audited range");
                self.set_api(None, settings.api_pin, true)
            }
            Err(ProbeError::Unreachable(e)) => {
                tracing::debug!(error = %e, "the engine's API versions are not known yet");
                view
            }
        }
    }

    fn current_api(&self) -> Arc<ApiView> {
        Arc::clone(&self.api.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_api(
        &self,
        engine: Option<EngineApi>,
        pin: Option<ApiVersion>,
        asked: bool,
    ) -> Arc<ApiView> {
        let view = Arc::new(ApiView::new(ApiRange::new(engine, pin), engine, asked));
        if let Some(engine) = engine {
            tracing::info!(
                engine_max = %engine.max,
                engine_min = %engine.min,
                range = %view.range,
                "API versions served"
            );
        }
        *self.api.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&view);
        view
    }

    /// Forgets the engine's versions: the next request asks again (the engine may have been
    /// replaced by another version while it was unreachable).
    pub(crate) fn forget_engine_api(&self) {
        let pin = self.settings().api_pin;
        self.set_api(None, pin, false);
    }
}

/// Counts a connection as live until dropped.
struct LiveToken(Arc<Shared>);

impl LiveToken {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live.fetch_add(1, Ordering::SeqCst);
        if let Some(metrics) = &shared.metrics {
            metrics.connection_opened();
        }
        LiveToken(Arc::clone(shared))
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        if let Some(metrics) = &self.0.metrics {
            metrics.connection_closed();
        }
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Controls a running server: reload its settings, or shut it down.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl Handle {
    /// Replaces the settings; live connections are not dropped. The engine's API versions are
    /// asked again by the next request.
    pub fn reload(&self, settings: Settings) {
        let pin = settings.api_pin;
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        self.shared.set_api(None, pin, false);
        tracing::info!("settings reloaded");
    }

    /// The API versions served now, asking the engine if they are not known.
    pub async fn api_range(&self) -> ApiRange {
        let settings = self.shared.settings();
        self.shared.api(&settings).await.range
    }

    /// The engine's own API versions, when known.
    pub fn engine_api(&self) -> Option<EngineApi> {
        self.shared.current_api().engine
    }

    /// Stops accepting, lets open requests finish (up to the grace period), then returns from
    /// [`Server::run`].
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A bound endpoint; [`Server::run`] serves it.
pub struct Server {
    listeners: Vec<Bound>,
    shared: Arc<Shared>,
    options: Arc<Options>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl Server {
    /// Binds every listener; fails (before serving anything) if one cannot be bound.
    pub async fn bind(
        listen: &[Listen],
        settings: Settings,
        options: Options,
    ) -> Result<Server, Error> {
        let mut listeners = Vec::new();
        for l in listen {
            listeners.push(match l {
                Listen::Tcp(addr) => Bound::Tcp(TcpListener::bind(addr).await.map_err(
                    |source| Error::Bind {
                        addr: addr.to_string(),
                        source,
                    },
                )?),
                Listen::Unix(path) => {
                    if path.exists() {
                        if tokio::net::UnixStream::connect(path).await.is_ok() {
                            return Err(Error::Bind {
                                addr: path.display().to_string(),
                                source: std::io::Error::new(
                                    std::io::ErrorKind::AddrInUse,
                                    "a server is listening there",
                                ),
                            });
                        }
                        std::fs::remove_file(path).map_err(|source| Error::UnixSocket {
                            path: path.clone(),
                            source,
                        })?;
                    }
                    let listener = UnixListener::bind(path).map_err(|source| Error::Bind {
                        addr: path.display().to_string(),
                        source,
                    })?;
                    Bound::Unix(listener, path.clone())
                }
            });
        }
        let (shutdown, _) = watch::channel(false);
        let pin = settings.api_pin;
        let shared = Arc::new(Shared {
            settings: RwLock::new(Arc::new(settings)),
            api: RwLock::new(Arc::new(ApiView::new(
                ApiRange::new(None, pin),
                None,
                false,
            ))),
            probing: tokio::sync::Mutex::new(()),
            live: AtomicUsize::new(0),
            drained: Notify::new(),
            metrics: options.metrics.clone(),
        });
        // Ask the engine for its versions now, so the first client is served the right range;
        // an engine that does not answer yet is asked again by the first request.
        let settings = shared.settings();
        shared.api(&settings).await;
        Ok(Server {
            listeners,
            shared,
            options: Arc::new(Options {
                max_header_bytes: options.max_header_bytes.max(8192),
                ..options
            }),
            shutdown: Arc::new(shutdown),
        })
    }

    /// What the server listens on, for printing (`127.0.0.1:2376`, `/run/vch.sock`).
    pub fn local_addrs(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| match l {
                Bound::Tcp(t) => t
                    .local_addr()
                    .map_or_else(|e| e.to_string(), |a| a.to_string()),
                Bound::Unix(_, path) => path.display().to_string(),
            })
            .collect()
    }

    /// A handle to reload or stop the server.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
            shutdown: Arc::clone(&self.shutdown),
        }
    }

    /// Serves until [`Handle::shutdown`]; then stops accepting, asks every connection to finish its
    /// current request, and waits up to the grace period.
    pub async fn run(self) {
        let limit = Arc::new(Semaphore::new(self.options.max_connections.max(1)));
        // In a JoinSet, so that it stops with this future even if the caller drops it.
        let mut keeper = tokio::task::JoinSet::new();
        keeper.spawn(keep_timer_wheel_armed(
            (self.options.header_read_timeout / 2).max(Duration::from_millis(10)),
        ));
        let mut accept_loops = tokio::task::JoinSet::new();
        for listener in self.listeners {
            accept_loops.spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
                Arc::clone(&self.options),
                self.shutdown.subscribe(),
                Arc::clone(&limit),
            ));
        }
        while accept_loops.join_next().await.is_some() {}
        keeper.abort_all();
        // Every accept loop has stopped: drain.
        let drained = async {
            loop {
                let notified = self.shared.drained.notified();
                if self.shared.live.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(self.options.shutdown_grace, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                live = self.shared.live.load(Ordering::SeqCst),
                "shutdown grace period over; closing the remaining connections"
            );
        }
    }
}

/// Keeps a timer in tokio's wheel that always expires before any header-read deadline.
///
/// hyper arms a header-read timer for every request and cancels it when the head is in; while the
/// request is with dockerd the wheel is then empty, the runtime parks without a deadline, and
/// arming the next request's timer has to wake the I/O driver (tokio `time::Handle::reregister`:
/// a write to its eventfd, and a turn of `epoll_wait` for it, on every request). With an earlier
/// timer always pending, a new header deadline is never the earliest and nothing is woken.
async fn keep_timer_wheel_armed(period: Duration) {
    loop {
        tokio::time::sleep(period).await;
    }
}

async fn accept_loop(
    listener: Bound,
    shared: Arc<Shared>,
    options: Arc<Options>,
    mut shutdown: watch::Receiver<bool>,
    limit: Arc<Semaphore>,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = accept(&listener) => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: log, back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let token = LiveToken::new(&shared);
        let (shared, options, shutdown) =
            (Arc::clone(&shared), Arc::clone(&options), shutdown.clone());
        tokio::spawn(async move {
            serve_connection(stream, addr, shared, &options, shutdown).await;
            drop((token, permit));
        });
    }
    if let Bound::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept(listener: &Bound) -> std::io::Result<(Stream, Option<SocketAddr>)> {
    match listener {
        Bound::Tcp(l) => {
            let (tcp, addr) = l.accept().await?;
            let _ = tcp.set_nodelay(true);
            Ok((Stream::Tcp(tcp), Some(addr)))
        }
        Bound::Unix(l, _) => {
            let (unix, _) = l.accept().await?;
            Ok((Stream::Unix(unix), None))
        }
    }
}

async fn serve_connection(
    stream: Stream,
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    options: &Options,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = shared.settings();
    let (stream, peer) = match (stream, &settings.tls) {
        (Stream::Tcp(tcp), Some(tls)) => match handshake(tcp, Arc::clone(tls), options).await {
            Some((tls, peer)) => (tls, Peer { addr, ..peer }),
            None => return,
        },
        (stream, _) => (
            stream,
            Peer {
                addr,
                ..Peer::default()
            },
        ),
    };
    drop(settings);
    let deferred = Arc::new(Deferred::default());
    let conn = Arc::new(Conn::new(shared, peer, Arc::clone(&deferred)));
    let service = service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move { conn.handle(req).await }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes);
    let served = http
        .serve_connection(TokioIo::new(EmitAfterFlush::new(stream, deferred)), service)
        .with_upgrades();
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        _ = shutdown.changed() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = ?addr, error = %e, "connection ended with an error");
    }
}

/// TLS handshake with a deadline. A plain-HTTP request on the TLS port gets the answer Go's server
/// gives, so the docker CLI's error names the problem.
async fn handshake(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    options: &Options,
) -> Option<(Stream, Peer)> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(options.tls_handshake_timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            let mut tcp = tcp;
            let _ = tcp
                .write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                .await;
            let _ = tcp.shutdown().await;
            return None;
        }
        Ok(Ok(_)) => {}
        _ => return None,
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(options.tls_handshake_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            return None;
        }
    };
    let mut peer = Peer::default();
    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        peer.fingerprint = Some(hex(&Sha256::digest(cert.as_ref())));
        if let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            peer.subject = Some(c.subject().to_string());
            peer.name = first_value(c.subject().iter_common_name());
            peer.project = first_value(c.subject().iter_organizational_unit());
        }
    }
    Some((Stream::ServerTls(Box::new(tls)), peer))
}

/// The first value of a subject attribute, as text.
fn first_value<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    values
        .next()
        .and_then(|v| v.as_str().ok())
        .map(str::to_owned)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
