//! HTTP/1.1 over TCP or TLS with connection pooling: hyper-util's pooled client over a
//! connector of our own, so TLS trust is per registry and failures keep their cause.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::Error;
use crate::proxy::{ProxyConfig, ProxyUrl};
use crate::settings::HostSettings;

/// Errors that bodies we send may produce (a source blob failing its digest mid-stream).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type: bytes in memory or a stream from another registry.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Why the connector failed; found again in the client error's source chain.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Tcp(String),
    Tls(String),
    Proxy(String),
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(r) => write!(f, "tcp: {r}"),
            Self::Tls(r) => write!(f, "tls: {r}"),
            Self::Proxy(r) => write!(f, "proxy: {r}"),
            Self::Timeout => f.write_str("connect timed out"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The connection to the registry or to the proxy: TCP, or TLS to an `https://` proxy.
pub(crate) enum Base {
    Tcp(TcpStream),
    ProxyTls(Box<TlsStream<TcpStream>>),
}

/// A connection hyper speaks HTTP on.
pub(crate) enum Stream {
    Plain(Base),
    /// To an HTTP proxy, which takes absolute-form requests for plain-HTTP registries.
    Proxied(Base),
    /// TLS to the registry (through a `CONNECT` tunnel when proxied).
    Tls(Box<TlsStream<Base>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        // `proxy(true)` makes hyper-util send absolute-form request targets.
        Connected::new().proxy(matches!(self, Self::Proxied(_)))
    }
}

/// Forwards the tokio I/O traits to whichever variant is inside.
macro_rules! delegate_io {
    ($ty:ident { $($variant:ident),+ }) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                b: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_write(cx, b),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $(Self::$variant(s) => s.is_write_vectored(),)+
                }
            }
        }
    };
}

delegate_io!(Base { Tcp, ProxyTls });
delegate_io!(Stream {
    Plain,
    Proxied,
    Tls
});

/// Dials `http://` over TCP and `https://` over TLS with the host's configuration.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Option<Arc<ClientConfig>>,
    proxy_tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    proxy: Arc<ProxyConfig>,
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, ConnectError>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let proxy_tls = self.proxy_tls.clone();
        let timeout = self.timeout;
        let proxy = self.proxy.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, connect(uri, tls, proxy_tls, &proxy))
                .await
                .unwrap_or(Err(ConnectError::Timeout))
        })
    }
}

async fn connect(
    uri: Uri,
    tls: Option<Arc<ClientConfig>>,
    proxy_tls: Option<Arc<ClientConfig>>,
    proxy: &ProxyConfig,
) -> Result<TokioIo<Stream>, ConnectError> {
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::Tcp(format!("no host in {uri}")))?;
    // `[::1]` in a URI is `::1` to the resolver and to SNI.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let via = proxy.select(if https { "https" } else { "http" }, &host, Some(port));
    let tcp = match via {
        Some(p) => TcpStream::connect((p.host.as_str(), p.port))
            .await
            .map_err(|e| ConnectError::Proxy(format!("cannot connect to {p}: {e}")))?,
        None => TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ConnectError::Tcp(e.to_string()))?,
    };
    // Latency matters more than packet count for small registry requests.
    let _ = tcp.set_nodelay(true);
    let base = match via {
        Some(p) if p.tls => Base::ProxyTls(Box::new(proxy_handshake(tcp, p, proxy_tls).await?)),
        _ => Base::Tcp(tcp),
    };
    if !https {
        return Ok(TokioIo::new(if via.is_some() {
            Stream::Proxied(base)
        } else {
            Stream::Plain(base)
        }));
    }
    let base = match via {
        Some(p) => tunnel(base, p, &host, port).await?,
        None => base,
    };
    let config = tls.ok_or_else(|| ConnectError::Tls("tls is not configured".into()))?;
    let name = ServerName::try_from(host.clone())
        .map_err(|e| ConnectError::Tls(format!("bad server name {host:?}: {e}")))?;
    let stream = TlsConnector::from(config)
        .connect(name, base)
        .await
        .map_err(|e| ConnectError::Tls(tls_reason(&e)))?;
    Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
}

/// TLS to an `https://` proxy, verified as [`ProxyConfig`] describes.
async fn proxy_handshake(
    tcp: TcpStream,
    proxy: &ProxyUrl,
    config: Option<Arc<ClientConfig>>,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let config =
        config.ok_or_else(|| ConnectError::Proxy(format!("{proxy}: tls is not configured")))?;
    let name = ServerName::try_from(proxy.host.clone())
        .map_err(|e| ConnectError::Proxy(format!("{proxy}: bad server name: {e}")))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            ConnectError::Proxy(format!(
                "{proxy}: tls handshake failed: {}; trust the proxy's CA with {}=FILE",
                tls_reason(&e),
                crate::proxy::PROXY_CA_FILE_VAR
            ))
        })
}

/// Longest CONNECT answer head read from a proxy.
const MAX_PROXY_HEAD: usize = 16 << 10;

/// Opens a tunnel through an HTTP proxy (`CONNECT host:port`, RFC 9110 §9.3.6).
async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<S, ConnectError> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(a) = &proxy.authorization {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    let fail = |what: String| ConnectError::Proxy(format!("{proxy}: CONNECT {authority}: {what}"));
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Byte by byte: whatever follows the answer's head belongs to the tunnel.
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err(fail("answer head too long".into()));
        }
        let n = tcp.read(&mut byte).await.map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            return Err(fail("the proxy closed the connection".into()));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default().trim().to_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(tcp),
        Some(407) => Err(fail(format!(
            "{status_line}: put credentials in the proxy URL (http://user:password@host:port)"
        ))),
        _ => Err(fail(format!("answered {status_line:?}"))),
    }
}

/// rustls' error inside an io error, or the io error itself.
fn tls_reason(e: &io::Error) -> String {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// A pooled HTTP/1.1 client for one registry host.
#[derive(Clone)]
pub(crate) struct Transport {
    client: Client<Connector, Body>,
    pub(crate) settings: HostSettings,
}

impl Transport {
    pub(crate) fn new(settings: HostSettings) -> Self {
        let connector = Connector {
            tls: settings.tls.clone(),
            proxy_tls: settings.proxy_tls.clone(),
            timeout: settings.connect_timeout,
            proxy: settings.proxy.clone(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self { client, settings }
    }

    /// Sends a request; the response headers must arrive within the request timeout.
    pub(crate) async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, Error> {
        // A plain-HTTP request through a proxy carries the proxy's credentials itself.
        if req.uri().scheme_str() == Some("http")
            && let Some(host) = req.uri().host()
            && let Some(p) = self
                .settings
                .proxy
                .select("http", host, req.uri().port_u16())
            && let Some(a) = &p.authorization
            && let Ok(v) = hyper::header::HeaderValue::from_str(a)
        {
            req.headers_mut()
                .insert(hyper::header::PROXY_AUTHORIZATION, v);
        }
        let method = req.method().to_string();
        let uri = req.uri().clone();
        let after = self.settings.request_timeout;
        let res = tokio::time::timeout(after, self.client.request(req)).await;
        match res {
            Err(_) => Err(Error::Timeout {
                method,
                url: uri.to_string(),
                after,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&method, &uri, &e)),
        }
    }
}

/// Turns a client error into ours, finding the connector's error in the source chain.
fn classify(method: &str, uri: &Uri, e: &hyper_util::client::legacy::Error) -> Error {
    let host = uri
        .authority()
        .map_or_else(|| uri.to_string(), ToString::to_string);
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Tcp(reason) => Error::Connect {
                    host,
                    reason: reason.clone(),
                },
                ConnectError::Tls(reason) if looks_like_plain_http(reason) => {
                    Error::PlainHttpRefused { host }
                }
                ConnectError::Tls(reason) => Error::Tls {
                    host,
                    reason: reason.clone(),
                },
                ConnectError::Proxy(reason) => Error::Proxy {
                    host,
                    reason: reason.clone(),
                },
                ConnectError::Timeout => Error::Connect {
                    host,
                    reason: "connect timed out".into(),
                },
            };
        }
        source = s.source();
    }
    let mut reason = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    Error::Http {
        method: method.to_owned(),
        url: uri.to_string(),
        reason,
    }
}

/// rustls reports an HTTP answer to a ClientHello as a corrupt message.
fn looks_like_plain_http(reason: &str) -> bool {
    reason.contains("InvalidContentType") || reason.contains("corrupt message")
}
