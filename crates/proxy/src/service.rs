//! One client connection's request handling: route, gate, forward, stream back, splice hijacks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::task::AbortHandle;

use crate::api::{ApiRange, ApiView};
use crate::audit::{Audit, AuditGuard, Counted, Deferred, Peer};
use crate::engine::{self, EngineConn, Slot};
use crate::error::docker_error;
use crate::info;
use crate::metrics::RouteKind;
use crate::police::{self, Forwarded, Policed};
use crate::route::{self, Kind, Routed};
use crate::server::Shared;
use crate::settings::{Scope, Settings};

/// Bodies on both sides.
/// (A concrete error type: with `Box<dyn Error>` rustc cannot prove the connection future `Send`.)
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// A body error of the client or of hyper, as a body error.
pub(crate) fn body_error(e: hyper::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// A `/version` or `/info` answer is read whole to rewrite it.
const MAX_REWRITTEN_BODY: usize = 1024 * 1024;

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The state of one client connection: its peer and its own upstream connection, reused across
/// keep-alive requests and closed when the client goes away (so dockerd cancels what it was doing).
pub(crate) struct Conn {
    shared: Arc<Shared>,
    /// The peer's part of every audit record.
    peer: Arc<str>,
    /// The project its client certificate names (OU), looked up in the settings per request.
    project: Option<Arc<str>>,
    engine: Slot,
    /// Tasks driving engine connections handed over to a hijack.
    drivers: std::sync::Mutex<Vec<AbortHandle>>,
    /// Audit records of ended exchanges, written after the connection's next flush.
    deferred: Arc<Deferred>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for driver in self
            .drivers
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            driver.abort();
        }
    }
}

impl Conn {
    pub(crate) fn new(shared: Arc<Shared>, peer: Peer, deferred: Arc<Deferred>) -> Self {
        Conn {
            shared,
            peer: peer.json_fields(),
            project: peer.project.as_deref().map(Arc::from),
            engine: Slot::default(),
            drivers: std::sync::Mutex::new(Vec::new()),
            deferred,
        }
    }

    /// Handles one request. Never fails: every problem is a Docker-style error response.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let settings = self.shared.settings();
        let api = self.shared.api(&settings).await;
        let audit = Audit::new(
            Arc::clone(&self.peer),
            req.method(),
            req.uri(),
            self.shared.metrics().cloned(),
        );
        let guard = AuditGuard::deferred(Arc::clone(&audit), Arc::clone(&self.deferred));
        let scope = settings.scope(self.project.as_ref());
        let (mut response, splice) = self.respond(&settings, &scope, &api, req, &audit).await;
        // Every answer says the ceiling: dockerd's (which name the daemon's own version) and the
        // endpoint's refusals and errors alike.
        response
            .headers_mut()
            .insert(API_VERSION_HEADER, api.header.clone());
        audit.set_status(response.status().as_u16());
        audit.count_answer();
        // The record is written once the end of the response is flushed to the client, or when
        // the hijacked stream closes.
        Ok(match splice {
            Some(splice) => {
                spawn_splice(splice, guard.immediate());
                response
            }
            None => response.map(|body| Counted::response(body, guard).boxed()),
        })
    }

    async fn respond(
        &self,
        settings: &Settings,
        scope: &Scope,
        api: &ApiView,
        mut req: Request<Incoming>,
        audit: &Arc<Audit>,
    ) -> (Response<Body>, Option<Splice>) {
        if let Some(upgrade) = req.headers().get(header::UPGRADE)
            && upgrade.as_bytes().eq_ignore_ascii_case(b"h2c")
        {
            let message = "HTTP/2 (h2c) is not supported: this endpoint speaks HTTP/1.1";
            return (docker_error(StatusCode::BAD_REQUEST, message), None);
        }
        if let Some(message) = ambiguous_framing(req.headers()) {
            return (docker_error(StatusCode::BAD_REQUEST, message), None);
        }
        let routed = match route::route_in(req.method(), req.uri().path(), api.range) {
            Ok(routed) => routed,
            Err(refusal) => {
                let status =
                    StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let message = refusal.message(req.method(), req.uri().path());
                discard(req.into_body());
                return (docker_error(status, &message), None);
            }
        };
        audit.set_version(routed.version);
        audit.set_route(RouteKind::of(routed.kind));

        let hijack = routed.kind == Kind::Hijack && req.headers().contains_key(header::UPGRADE);
        let client_upgrade = hijack.then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let mut late_denial = None;
        let body: Body = match routed.kind {
            Kind::Policed(gate) => {
                match police::police(settings, scope, gate, &routed, &parts, incoming, audit).await
                {
                    Policed::Refuse(refusal, unread) => {
                        if let Some(body) = unread {
                            discard(body);
                        }
                        return (refusal, None);
                    }
                    Policed::Forward(Forwarded::Read(bytes)) => {
                        Full::new(bytes).map_err(|never| match never {}).boxed()
                    }
                    Policed::Forward(Forwarded::Build(upload)) => {
                        late_denial = Some(upload.late);
                        upload.body
                    }
                    Policed::Forward(Forwarded::Stream(incoming)) => {
                        Counted::request(incoming, Arc::clone(audit))
                            .map_err(body_error)
                            .boxed()
                    }
                }
            }
            _ => Counted::request(incoming, Arc::clone(audit))
                .map_err(body_error)
                .boxed(),
        };
        let answer = self
            .forward(
                settings,
                scope,
                api,
                &routed,
                parts,
                body,
                client_upgrade,
                audit,
            )
            .await;
        // A build whose Dockerfile was replaced by a denied one after its upload was released:
        // the upload was broken off, and the denial is the answer.
        match late_denial.as_ref().and_then(|late| late.get()) {
            Some(message) => (docker_error(StatusCode::FORBIDDEN, message), None),
            None => answer,
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one exchange's parts, passed once"
    )]
    async fn forward(
        &self,
        settings: &Settings,
        scope: &Scope,
        api: &ApiView,
        routed: &Routed,
        parts: hyper::http::request::Parts,
        body: Body,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        audit: &Arc<Audit>,
    ) -> (Response<Body>, Option<Splice>) {
        // The client's request head is reused: only the hop-by-hop headers go, and unversioned
        // paths get the ceiling's prefix (they are served at the ceiling, never at the daemon's
        // newest, which the gate may not have been audited for).
        // `/_ping` is the exception: its answer is the same at every version but for the
        // `Api-Version` header, which is rewritten anyway, and dockerd answers the unversioned
        // path sooner (it skips its versioned route's pattern; about 4 µs a ping in the bench),
        // which every docker command starts with.
        let hyper::http::request::Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        let uri = if routed.versioned || routed.kind == Kind::Ping {
            uri
        } else {
            let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
            match Uri::try_from(format!("{}{path_and_query}", api.prefix)) {
                Ok(uri) => uri,
                Err(e) => {
                    let message = format!("cannot forward the request: {e}");
                    return (docker_error(StatusCode::BAD_REQUEST, &message), None);
                }
            }
        };
        let upgrade = client_upgrade
            .as_ref()
            .and_then(|_| headers.get(header::UPGRADE).cloned());
        strip_hop_by_hop(&mut headers, true);
        if let Some(upgrade) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, upgrade);
        }
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = method;
        *upstream_req.uri_mut() = uri;
        *upstream_req.headers_mut() = headers;

        let hijack = client_upgrade.is_some();
        let mut response = match self.send(settings, upstream_req, hijack).await {
            Ok(response) => response,
            Err(message) => return (docker_error(StatusCode::BAD_GATEWAY, &message), None),
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                let message = "the Docker engine switched protocols unasked";
                return (docker_error(StatusCode::BAD_GATEWAY, message), None);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let empty = http_body_util::Empty::new().map_err(|never| match never {});
            let mut reply = Response::new(empty.boxed());
            *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            copy_end_to_end(response.headers(), reply.headers_mut());
            if let Some(upgrade) = response.headers().get(header::UPGRADE) {
                let headers = reply.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(header::UPGRADE, upgrade.clone());
            }
            rewrite_builder_header(reply.headers_mut());
            let splice = Splice {
                client: client_upgrade,
                upstream: upstream_upgrade,
                audit: Arc::clone(audit),
            };
            return (reply, Some(splice));
        }

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        rewrite_builder_header(&mut parts.headers);
        if routed.kind == Kind::Version && parts.status.is_success() {
            return (rewrite_version(parts, body, api.range).await, None);
        }
        if routed.kind == Kind::Info && parts.status.is_success() {
            return (rewrite_info(settings, scope, parts, body).await, None);
        }
        (Response::from_parts(parts, body), None)
    }

    /// Sends on this client connection's engine connection, opening (or reopening) it as needed.
    /// A hijack goes through hyper's client on a new connection, which it hands over as the raw
    /// stream after the `101`.
    async fn send(
        &self,
        settings: &Settings,
        req: Request<Body>,
        hijack: bool,
    ) -> Result<Response<Body>, String> {
        let url = settings.upstream.url();
        if hijack {
            // On a connection of its own: it becomes the raw stream, and a kept one could have
            // gone stale, which only a retry would reveal.
            let stream = settings.upstream.connect().await.map_err(|e| {
                self.upstream_connect_error();
                format!("cannot reach the Docker engine at {url}: {e}")
            })?;
            return self.send_hijack(url, stream, req).await;
        }
        let kept = EngineConn::take(&self.engine, url);
        let (parts, body) = req.into_parts();
        // A body-less GET or HEAD on a kept connection that had gone stale is sent again, once:
        // dockerd never saw it.
        let retry =
            (parts.method == Method::GET || parts.method == Method::HEAD) && body.is_end_stream();
        let conn = match kept {
            Some(conn) => conn,
            None => match EngineConn::open(&settings.upstream).await {
                Ok(conn) => conn,
                Err(message) => {
                    self.upstream_connect_error();
                    // The engine may come back as another version: ask it again then.
                    self.shared.forget_engine_api();
                    return Err(message);
                }
            },
        };
        match engine::exchange(conn, &parts, body, Arc::clone(&self.engine)).await {
            Ok(response) => Ok(response),
            Err(failed) if failed.stale && retry => {
                tracing::debug!(error = %failed.message, "kept engine connection was stale");
                let conn = EngineConn::open(&settings.upstream)
                    .await
                    .inspect_err(|_| self.upstream_connect_error())?;
                engine::exchange(conn, &parts, Body::default(), Arc::clone(&self.engine))
                    .await
                    .map_err(|failed| failed.message)
            }
            Err(failed) => Err(failed.message),
        }
    }

    fn upstream_connect_error(&self) {
        if let Some(metrics) = self.shared.metrics() {
            metrics.upstream_connect_error();
        }
    }

    async fn send_hijack(
        &self,
        url: &str,
        stream: crate::io::Stream,
        req: Request<Body>,
    ) -> Result<Response<Body>, String> {
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("cannot talk to the Docker engine at {url}: {e}"))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        self.drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(driver.abort_handle());
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the Docker engine at {url} failed: {e}"))?;
        Ok(response.map(|body| body.map_err(body_error).boxed()))
    }
}

/// How much of a refused request's body is read and thrown away, and for how long at most.
const DISCARD_BYTES: u64 = 64 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(10);

/// Reads and throws away what is left of a refused request's body, so that the client reads the
/// refusal before the connection closes. Closing a socket with unread data in it makes the kernel
/// answer with a reset, which destroys the answer in flight: the docker CLI refused a
/// `docker load` or `docker plugin create` would report a broken pipe instead of the refusal.
/// Bounded in bytes and time; a client that stops sending when it reads the answer (Go's does)
/// ends it sooner.
pub(crate) fn discard(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let drain = async {
            let mut left = DISCARD_BYTES;
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}

/// Both halves of a hijacked connection, handed to the splice task once the 101 is sent.
pub(crate) struct Splice {
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    audit: Arc<Audit>,
}

/// Runs a splice: bytes both ways until both sides close; an EOF on one side becomes a write
/// shutdown on the other, so a client's stdin EOF (or TLS close_notify) reaches the container.
fn spawn_splice(splice: Splice, guard: AuditGuard) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(splice.client, splice.upstream);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let metrics = splice.audit.metrics();
                if let Some(metrics) = metrics {
                    metrics.hijack_started();
                }
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((to_engine, to_client)) => {
                        splice.audit.add_in(to_engine);
                        splice.audit.add_out(to_client);
                    }
                    Err(e) => tracing::debug!(error = %e, "hijacked stream ended with an error"),
                }
                if let Some(metrics) = metrics {
                    metrics.hijack_ended();
                }
            }
            (client, upstream) => {
                tracing::debug!(client = ?client.err(), upstream = ?upstream.err(), "upgrade failed");
            }
        }
        drop(guard);
    });
}

/// Framing hyper accepts but this endpoint refuses, so that no request can be read one way here
/// and another way by a peer (RFC 9112 §6.1, §6.3): a `Transfer-Encoding` other than one lone
/// `chunked` (hyper takes `gzip, chunked` and `chunked, chunked`). A `Content-Length` beside a
/// `Transfer-Encoding` never gets here: hyper drops it while parsing, reads the body by its
/// chunked framing (as Go's `net/http` in dockerd does) and closes the connection after the
/// answer, so nothing can follow it on the connection; it is refused here too should hyper ever
/// pass both.
fn ambiguous_framing(headers: &HeaderMap) -> Option<&'static str> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if codings.next().is_some()
        || !first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return Some("unsupported Transfer-Encoding: only a single `chunked` is accepted");
    }
    headers
        .contains_key(header::CONTENT_LENGTH)
        .then_some("a request cannot carry both Content-Length and Transfer-Encoding")
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name) && name != header::UPGRADE {
            to.append(name.clone(), value.clone());
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes the hop-by-hop headers (and `Upgrade`, for requests: it is set again only for a
/// hijack). Most heads have none, so one pass looks before any removal.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade_too: bool) {
    let found = headers
        .keys()
        .any(|name| is_hop_by_hop(name) || (upgrade_too && name == header::UPGRADE));
    if !found {
        return;
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade_too {
        headers.remove(header::UPGRADE);
    }
}

const API_VERSION_HEADER: HeaderName = HeaderName::from_static("api-version");
const BUILDER_VERSION_HEADER: HeaderName = HeaderName::from_static("builder-version");

/// The builder is the classic one (BuildKit's `/session` and `/grpc` are refused). The
/// `Api-Version` of every answer is set once, in [`Conn::handle`].
fn rewrite_builder_header(headers: &mut HeaderMap) {
    if let Some(builder) = headers.get_mut(BUILDER_VERSION_HEADER) {
        *builder = HeaderValue::from_static("1");
    }
}

/// Reads an engine answer that is rewritten.
async fn read_answer(body: Body, what: &str) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_REWRITTEN_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(docker_error(
            StatusCode::BAD_GATEWAY,
            &format!("the Docker engine's {what} answer is unreadable"),
        )),
    }
}

/// `GET /info` with the registry policy added, so `docker info` answers "where may I pull
/// from?" (see [`crate::info`]).
async fn rewrite_info(
    settings: &Settings,
    scope: &Scope,
    mut parts: hyper::http::response::Parts,
    body: Body,
) -> Response<Body> {
    let bytes = match read_answer(body, "/info").await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let rewritten = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) => {
            info::add_policy(&mut value, settings, scope);
            Bytes::from(value.to_string())
        }
        Err(_) => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        Full::new(rewritten).map_err(|never| match never {}).boxed(),
    )
}

/// `GET /version` with the range served: `ApiVersion` the ceiling, `MinAPIVersion` the floor, at
/// the top and in the engine component (docker-py reads the top; the CLI prints the component).
async fn rewrite_version(
    mut parts: hyper::http::response::Parts,
    body: Body,
    range: ApiRange,
) -> Response<Body> {
    let bytes = match read_answer(body, "/version").await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let rewritten = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut version) => {
            let (ceiling, floor) = (range.ceiling.to_string(), range.floor.to_string());
            if let Some(top) = version.as_object_mut() {
                top.insert("ApiVersion".into(), ceiling.clone().into());
                top.insert("MinAPIVersion".into(), floor.clone().into());
            }
            if let Some(components) = version.get_mut("Components").and_then(|c| c.as_array_mut()) {
                for component in components {
                    if component.get("Name").and_then(|n| n.as_str()) == Some("Engine")
                        && let Some(details) =
                            component.get_mut("Details").and_then(|d| d.as_object_mut())
                    {
                        details.insert("ApiVersion".into(), ceiling.clone().into());
                        details.insert("MinAPIVersion".into(), floor.clone().into());
                    }
                }
            }
            Bytes::from(version.to_string())
        }
        Err(_) => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        Full::new(rewritten).map_err(|never| match never {}).boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_framing_is_refused() {
        let framing = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_static(value));
            }
            ambiguous_framing(&headers).is_some()
        };
        assert!(!framing(&[("transfer-encoding", "chunked")]));
        assert!(!framing(&[("transfer-encoding", " Chunked ")]));
        assert!(!framing(&[("content-length", "5")]));
        assert!(!framing(&[]));
        assert!(framing(&[("transfer-encoding", "gzip, chunked")]));
        assert!(framing(&[("transfer-encoding", "chunked, chunked")]));
        assert!(framing(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked")
        ]));
        assert!(framing(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "5")
        ]));
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let names = |h: &HeaderMap| {
            let mut names: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
            names.sort();
            names
        };
        let mut response = headers.clone();
        strip_hop_by_hop(&mut response, false);
        assert_eq!(names(&response), ["content-type", "upgrade"]);
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(names(&headers), ["content-type"]);
        // Nothing to strip: nothing changes.
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(names(&headers), ["content-type"]);
    }
}
