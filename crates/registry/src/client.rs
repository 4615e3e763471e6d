//! The registry client: scheme selection, authentication, retries, and the API calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{self, BlobStream};
use crate::challenge::{Challenge, parse_link_next, parse_www_authenticate};
use crate::credentials::Credentials;
use crate::error::{Error, RegistryErrors, Result};
use crate::manifest::{ACCEPT_ALL, Manifest};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API, Digest};
use crate::settings::{HostSettings, PlainHttp};
use crate::transport::{self, Transport};

/// Largest manifest accepted (the OCI distribution spec suggests registries accept 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;
/// Largest JSON document (tag list, token, error) accepted.
pub(crate) const MAX_JSON: usize = 16 << 20;
/// Default number of attempts for an idempotent request that fails retryably.
pub const DEFAULT_ATTEMPTS: u32 = 4;
/// First retry delay; doubles each attempt.
const BACKOFF: Duration = Duration::from_millis(200);
/// Longest `Retry-After` honoured; longer waits fail the request instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A token this close to expiry is refreshed before use.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// What the registry's `/v2/` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ping {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The status: 200, or 401 when authentication is required.
    pub status: u16,
    /// The `Docker-Distribution-API-Version` header (`registry/2.0`).
    pub api_version: Option<String>,
    /// The authentication schemes challenged with (`bearer`, `basic`).
    pub auth: Vec<String>,
}

/// One page of a listing, and where the next starts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page {
    /// The entries.
    pub items: Vec<String>,
    /// The `Link: <…>; rel="next"` target.
    pub next: Option<String>,
}

/// A manifest as fetched.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FetchedManifest {
    /// The media type (`Content-Type`).
    pub media_type: String,
    /// The digest of the bytes (verified against the registry's `Docker-Content-Digest`).
    pub digest: Digest,
    /// The bytes, exactly as served.
    pub bytes: Bytes,
}

impl FetchedManifest {
    /// Decodes the manifest.
    ///
    /// # Errors
    /// As [`Manifest::decode`].
    pub fn decode(&self) -> Result<Manifest> {
        Manifest::decode(&self.bytes, Some(&self.media_type))
    }
}

/// What a `HEAD` on a manifest tells.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManifestHead {
    /// The media type.
    pub media_type: String,
    /// The digest (`Docker-Content-Digest`).
    pub digest: Option<Digest>,
    /// The size (`Content-Length`).
    pub size: Option<u64>,
}

/// An upload session (the `Location` a registry gave).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSession {
    /// The repository.
    pub repository: String,
    /// The absolute upload URL.
    pub location: String,
    /// Bytes the registry has received (the next `Content-Range` start).
    pub offset: u64,
}

/// The outcome of a cross-repository mount request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mount {
    /// The blob is now in the target repository.
    Mounted,
    /// The registry could not mount and opened an upload session instead.
    Upload(UploadSession),
}

/// A request body: replayable bytes (retried, re-sent after authentication) or a one-shot
/// stream.
pub(crate) enum ReqBody {
    Bytes(Bytes),
    Stream(transport::Body),
}

#[derive(Default)]
struct AuthState {
    /// The registry challenged with Basic: send credentials on every request.
    basic: bool,
    /// The last Bearer challenge's realm and service.
    bearer: Option<(String, Option<String>)>,
    /// Tokens by scope set.
    tokens: HashMap<String, (String, Instant)>,
}

struct Inner {
    /// As the user names it (`docker.io`, `reg:5000`).
    host: String,
    /// What is dialled (`registry-1.docker.io` for Docker Hub).
    api_host: String,
    transport: Transport,
    credentials: Credentials,
    scheme: Mutex<Option<&'static str>>,
    auth: Mutex<AuthState>,
    attempts: u32,
}

/// A client for one registry: cheap to clone, shares its connection pool and token cache.
///
/// Requests that carry no streamed body are retried with exponential backoff on
/// connection errors, 429 and 5xx, honouring `Retry-After` (up to 60 s). A 401 is answered
/// once per request: Basic challenges with the credentials, Bearer challenges with a token
/// for the request's scopes (plus the scope the registry asked for), cached until it expires.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.inner.host)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Client`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    host: String,
    settings: Option<HostSettings>,
    credentials: Credentials,
    attempts: u32,
}

impl ClientBuilder {
    /// Connection settings (default: [`HostSettings::secure`]).
    pub fn settings(mut self, settings: HostSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Credentials (default anonymous).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Attempts for retryable failures (default [`DEFAULT_ATTEMPTS`], at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Builds the client; no connection is made yet.
    ///
    /// # Errors
    /// As [`HostSettings::secure`] when no settings were given.
    pub fn build(self) -> Result<Client> {
        let settings = match self.settings {
            Some(s) => s,
            None => HostSettings::secure(&self.host)?,
        };
        let api_host = if self.host == DOCKER_HUB {
            DOCKER_HUB_API.to_owned()
        } else {
            self.host.clone()
        };
        let scheme = match settings.plain_http {
            PlainHttp::Only => Some("http"),
            PlainHttp::Never => Some("https"),
            PlainHttp::Fallback => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                host: self.host,
                api_host,
                transport: Transport::new(settings),
                credentials: self.credentials,
                scheme: Mutex::new(scheme),
                auth: Mutex::new(AuthState::default()),
                attempts: self.attempts,
            }),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain inserts).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn retry_after(resp: &Response<Incoming>) -> Option<Duration> {
    resp.headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

pub(crate) fn header_str(resp: &Response<Incoming>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Percent-encodes a query value (tags and digests only need `:` and `+` left alone, but
/// `last` may hold any repository name).
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A builder for the registry at `host` (`name[:port]`; `docker.io` for Docker Hub).
    pub fn builder(host: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            host: host.into(),
            settings: None,
            credentials: Credentials::Anonymous,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// The registry host as given.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Whether `other` talks to the same registry (so blobs can be mounted across).
    #[must_use]
    pub fn same_registry(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.api_host == other.inner.api_host
    }

    /// `scheme://host`, probing HTTPS then HTTP when plain HTTP is a fallback.
    async fn base(&self) -> Result<String> {
        let known = *lock(&self.inner.scheme);
        if let Some(s) = known {
            return Ok(format!("{s}://{}", self.inner.api_host));
        }
        let https = format!("https://{}", self.inner.api_host);
        let req = self.request(Method::GET, &format!("{https}/v2/"), None, body::empty())?;
        let scheme = match self.inner.transport.send(req).await {
            Ok(_) => "https",
            Err(
                e @ (Error::Connect { .. }
                | Error::Tls { .. }
                | Error::PlainHttpRefused { .. }
                | Error::Http { .. }),
            ) => {
                tracing::info!(host = %self.inner.host, error = %e, "https failed; using plain http as allowed");
                "http"
            }
            Err(e) => return Err(e),
        };
        *lock(&self.inner.scheme) = Some(scheme);
        Ok(format!("{scheme}://{}", self.inner.api_host))
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        auth: Option<&str>,
        body: transport::Body,
    ) -> Result<Request<transport::Body>> {
        let mut b = Request::builder().method(method.clone()).uri(url).header(
            header::USER_AGENT,
            concat!("vch-registry/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(body).map_err(|e| Error::Http {
            method: method.to_string(),
            url: url.to_owned(),
            reason: format!("cannot build the request: {e}"),
        })
    }

    /// The Authorization value to send for these scopes, from what is known.
    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let state = lock(&self.inner.auth);
        if state.basic {
            return self.inner.credentials.basic_header();
        }
        let key = scope_key(scopes);
        state
            .tokens
            .get(&key)
            .filter(|(_, use_until)| Instant::now() < *use_until)
            .map(|(t, _)| format!("Bearer {t}"))
    }

    /// Forgets the token for these scopes (it was refused).
    fn drop_token(&self, scopes: &[String]) {
        lock(&self.inner.auth).tokens.remove(&scope_key(scopes));
    }

    /// Answers a 401's challenges: remembers Basic, or fetches a Bearer token.
    async fn authenticate(&self, challenges: &[Challenge], scopes: &[String]) -> Result<bool> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer.param("realm").ok_or_else(|| Error::Auth {
                realm: self.inner.host.clone(),
                reason: "bearer challenge without realm".into(),
            })?;
            let service = bearer.param("service").map(str::to_owned);
            let mut all: Vec<String> = scopes.to_vec();
            if let Some(s) = bearer.param("scope") {
                for s in s.split(' ').filter(|s| !s.is_empty()) {
                    if !all.iter().any(|x| x == s) {
                        all.push(s.to_owned());
                    }
                }
            }
            let (token, expires) = self.fetch_token(realm, service.as_deref(), &all).await?;
            let mut state = lock(&self.inner.auth);
            state.bearer = Some((realm.to_owned(), service));
            state.tokens.insert(scope_key(scopes), (token, expires));
            return Ok(true);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if self.inner.credentials.basic_header().is_none() {
                return Ok(false);
            }
            lock(&self.inner.auth).basic = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Docker's token flow: `GET realm?service=…&scope=…` with basic credentials, or the
    /// OAuth2 refresh-token grant (`POST`) with an identity token.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Instant)> {
        let fail = |reason: String| Error::Auth {
            realm: realm.to_owned(),
            reason,
        };
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", query_escape(s)));
        }
        for s in scopes {
            query.push(format!("scope={}", query_escape(s)));
        }
        let req = match &self.inner.credentials {
            Credentials::IdentityToken(refresh) => {
                let mut form = query.clone();
                form.push("grant_type=refresh_token".into());
                form.push(format!("refresh_token={}", query_escape(refresh)));
                form.push("client_id=regctl".into());
                let mut req =
                    self.request(Method::POST, realm, None, body::full(form.join("&")))?;
                req.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                req
            }
            creds => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{}", query.join("&"));
                self.request(
                    Method::GET,
                    &url,
                    creds.basic_header().as_deref(),
                    body::empty(),
                )?
            }
        };
        let started = Instant::now();
        let resp = self.inner.transport.send(req).await?;
        let status = resp.status();
        let bytes = body::collect(resp.into_body(), MAX_JSON, realm).await?;
        if !status.is_success() {
            let errors = RegistryErrors::from_body(&bytes);
            let detail = if errors.0.is_empty() {
                String::from_utf8_lossy(&bytes).chars().take(200).collect()
            } else {
                errors.to_string()
            };
            return Err(fail(format!("status {}: {detail}", status.as_u16())));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let a: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a token answer: {e}")))?;
        let token = if a.token.is_empty() {
            a.access_token
        } else {
            a.token
        };
        if token.is_empty() {
            return Err(fail("the answer holds no token".into()));
        }
        // Docker's token spec: 60 s when the server does not say.
        let ttl = Duration::from_secs(a.expires_in.unwrap_or(60).max(1));
        tracing::debug!(realm, ?scopes, ?ttl, "token issued");
        // Refresh a little before expiry (half the lifetime for very short-lived tokens), so a
        // token never expires between our check and the registry's.
        Ok((token, started + ttl - TOKEN_MARGIN.min(ttl / 2)))
    }

    /// Sends a request with authentication and retries; returns any status but an
    /// unanswerable 401.
    async fn execute(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: ReqBody,
        scopes: &[String],
    ) -> Result<Response<Incoming>> {
        let url = self.resolve(url).await?;
        let (replay, mut stream) = match body {
            ReqBody::Bytes(b) => (Some(b), None),
            ReqBody::Stream(s) => (None, Some(s)),
        };
        let mut attempt = 0;
        let mut answered_401 = false;
        loop {
            attempt += 1;
            let body = match (&replay, stream.take()) {
                (Some(b), _) => body::full(b.clone()),
                (None, Some(s)) => s,
                (None, None) => return Err(Error::Unreachable("a streamed body was sent twice")),
            };
            let mut req = self.request(
                method.clone(),
                &url,
                self.auth_header(scopes).as_deref(),
                body,
            )?;
            for (name, value) in headers {
                let v = HeaderValue::from_str(value).map_err(|_| Error::Http {
                    method: method.to_string(),
                    url: url.clone(),
                    reason: format!("invalid {name} header value {value:?}"),
                })?;
                req.headers_mut().insert(name.clone(), v);
            }
            let can_retry = replay.is_some() && attempt < self.inner.attempts;
            let resp = match self.inner.transport.send(req).await {
                Err(e) if e.is_retryable() && can_retry => {
                    let wait = BACKOFF * 2u32.pow(attempt - 1);
                    tracing::debug!(%method, %url, error = %e, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
                Ok(resp) => resp,
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered_401 {
                answered_401 = true;
                let challenges: Vec<Challenge> = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_www_authenticate)
                    .collect();
                // A token we sent was refused: expired early, or revoked.
                self.drop_token(scopes);
                if replay.is_some() && self.authenticate(&challenges, scopes).await? {
                    attempt -= 1;
                    continue;
                }
                return Err(self.status_error(&method, &url, resp).await);
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) && can_retry {
                let wait = retry_after(&resp).unwrap_or(BACKOFF * 2u32.pow(attempt - 1));
                if wait <= MAX_RETRY_AFTER {
                    tracing::debug!(%method, %url, %status, ?wait, "retrying");
                    drop(resp);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// An absolute URL for a path (`/v2/…`) or a `Location` (absolute or relative).
    async fn resolve(&self, url: &str) -> Result<String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url.to_owned())
        } else if url.starts_with('/') {
            Ok(format!("{}{url}", self.base().await?))
        } else {
            Err(Error::Http {
                method: String::new(),
                url: url.to_owned(),
                reason: "a relative location that is not absolute-path".into(),
            })
        }
    }

    /// A registry error from a response, reading its JSON error body.
    async fn status_error(&self, method: &Method, url: &str, resp: Response<Incoming>) -> Error {
        let status = resp.status().as_u16();
        let retry_after = retry_after(&resp);
        let errors = match body::collect(resp.into_body(), MAX_JSON, url).await {
            Ok(b) => RegistryErrors::from_body(&b),
            Err(_) => RegistryErrors::default(),
        };
        Error::Registry {
            method: method.to_string(),
            url: url.to_owned(),
            status,
            errors,
            retry_after,
        }
    }

    /// Sends, and turns any status but `ok` into an error.
    pub(crate) async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: ReqBody,
        scopes: &[String],
        ok: &[u16],
    ) -> Result<Response<Incoming>> {
        let resp = self
            .execute(method.clone(), url, headers, body, scopes)
            .await?;
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            let url = self.resolve(url).await.unwrap_or_else(|_| url.to_owned());
            Err(self.status_error(&method, &url, resp).await)
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        scopes: &[String],
    ) -> Result<(T, Option<String>)> {
        let resp = self
            .call(
                Method::GET,
                url,
                &[],
                ReqBody::Bytes(Bytes::new()),
                scopes,
                &[200],
            )
            .await?;
        let link = header_str(&resp, "link");
        let bytes = body::collect(resp.into_body(), MAX_JSON, url).await?;
        let v = serde_json::from_slice(&bytes).map_err(|e| Error::Http {
            method: "GET".into(),
            url: url.to_owned(),
            reason: format!("unexpected answer: {e}"),
        })?;
        Ok((v, link.as_deref().and_then(parse_link_next)))
    }

    // ---- the API ----

    /// `GET /v2/`: is this a registry, which scheme, does it want authentication.
    ///
    /// # Errors
    /// Connection and TLS errors; [`Error::Registry`] for a status other than 200 or 401.
    pub async fn ping(&self) -> Result<Ping> {
        let base = self.base().await?;
        let url = format!("{base}/v2/");
        let req = self.request(
            Method::GET,
            &url,
            self.auth_header(&[]).as_deref(),
            body::empty(),
        )?;
        let resp = self.inner.transport.send(req).await?;
        let status = resp.status().as_u16();
        if status != 200 && status != 401 {
            return Err(self.status_error(&Method::GET, &url, resp).await);
        }
        let auth = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .map(|c| c.scheme)
            .collect();
        Ok(Ping {
            scheme: if base.starts_with("https") {
                "https"
            } else {
                "http"
            },
            status,
            api_version: header_str(&resp, "docker-distribution-api-version"),
            auth,
        })
    }

    /// `GET /v2/` with authentication (as `docker login` checks credentials): Basic
    /// credentials are sent, or a token without scope is fetched with them.
    ///
    /// # Errors
    /// [`Error::Registry`] with status 401 or [`Error::Auth`] when the credentials are refused.
    pub async fn check_login(&self) -> Result<()> {
        self.call(
            Method::GET,
            "/v2/",
            &[],
            ReqBody::Bytes(Bytes::new()),
            &[],
            &[200],
        )
        .await?;
        Ok(())
    }

    /// One page of `/v2/_catalog`: `n` entries at most, after `last`; or the page at a
    /// `next` link from a previous page.
    ///
    /// # Errors
    /// [`Error::Registry`] (`UNAUTHORIZED`, `DENIED`, `UNSUPPORTED` where the catalog is off).
    pub async fn catalog_page(&self, n: Option<u32>, last: Option<&str>) -> Result<Page> {
        self.catalog_page_at(&list_url("/v2/_catalog", n, last))
            .await
    }

    async fn catalog_page_at(&self, url: &str) -> Result<Page> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let (c, next): (Catalog, _) = self
            .get_json(url, &["registry:catalog:*".to_owned()])
            .await?;
        Ok(Page {
            items: c.repositories.unwrap_or_default(),
            next,
        })
    }

    /// Every repository, following `Link` headers page by page (`n` per page).
    ///
    /// # Errors
    /// As [`Client::catalog_page`].
    pub async fn catalog(&self, n: Option<u32>) -> Result<Vec<String>> {
        let mut page = self.catalog_page(n, None).await?;
        let mut all = std::mem::take(&mut page.items);
        while let Some(next) = page.next.take() {
            page = self.catalog_page_at(&next).await?;
            all.append(&mut page.items);
        }
        Ok(all)
    }

    /// One page of `/v2/<repo>/tags/list`.
    ///
    /// # Errors
    /// [`Error::Registry`] with `NAME_UNKNOWN` for a missing repository.
    pub async fn tags_page(&self, repo: &str, n: Option<u32>, last: Option<&str>) -> Result<Page> {
        self.tags_page_at(repo, &list_url(&format!("/v2/{repo}/tags/list"), n, last))
            .await
    }

    async fn tags_page_at(&self, repo: &str, url: &str) -> Result<Page> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let (t, next): (Tags, _) = self.get_json(url, &[pull(repo)]).await?;
        Ok(Page {
            items: t.tags.unwrap_or_default(),
            next,
        })
    }

    /// Every tag of a repository, following `Link` headers.
    ///
    /// # Errors
    /// As [`Client::tags_page`].
    pub async fn tags(&self, repo: &str, n: Option<u32>) -> Result<Vec<String>> {
        let mut page = self.tags_page(repo, n, None).await?;
        let mut all = std::mem::take(&mut page.items);
        while let Some(next) = page.next.take() {
            page = self.tags_page_at(repo, &next).await?;
            all.append(&mut page.items);
        }
        Ok(all)
    }

    /// `GET` a manifest by tag or digest, accepting every type in [`ACCEPT_ALL`]; the bytes
    /// are checked against the digest asked for and the registry's `Docker-Content-Digest`.
    ///
    /// # Errors
    /// [`Error::Registry`] with `MANIFEST_UNKNOWN`; [`Error::DigestMismatch`].
    pub async fn manifest_get(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let url = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .call(
                Method::GET,
                &url,
                &[(header::ACCEPT, ACCEPT_ALL.to_owned())],
                ReqBody::Bytes(Bytes::new()),
                &[pull(repo)],
                &[200],
            )
            .await?;
        let media_type = header_str(&resp, "content-type")
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let announced = header_str(&resp, "docker-content-digest");
        let bytes = body::collect(resp.into_body(), MAX_MANIFEST, &url).await?;
        let what = format!("manifest {}/{repo}@{reference}", self.inner.host);
        // Check with the algorithm asked for (or announced), default sha256.
        let expected = if let Ok(d) = Digest::parse(reference) {
            Some(d)
        } else {
            announced.as_deref().map(Digest::parse).transpose()?
        };
        let digest = match expected {
            Some(d) => {
                if !d.matches(&bytes) {
                    let mut h = d.hasher();
                    h.update(&bytes);
                    return Err(Error::DigestMismatch {
                        what,
                        expected: d.to_string(),
                        actual: h.finish().to_string(),
                    });
                }
                d
            }
            None => Digest::sha256(&bytes),
        };
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            Manifest::decode(&bytes, None)
                .map(|m| m.media_type().to_owned())
                .unwrap_or(media_type)
        } else {
            media_type
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// `HEAD` a manifest: `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Registry`] for statuses other than 200 and 404.
    pub async fn manifest_head(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        let url = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .call(
                Method::HEAD,
                &url,
                &[(header::ACCEPT, ACCEPT_ALL.to_owned())],
                ReqBody::Bytes(Bytes::new()),
                &[pull(repo)],
                &[200, 404],
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(ManifestHead {
            media_type: header_str(&resp, "content-type").unwrap_or_default(),
            digest: header_str(&resp, "docker-content-digest")
                .as_deref()
                .map(Digest::parse)
                .transpose()?,
            size: header_str(&resp, "content-length").and_then(|v| v.parse().ok()),
        }))
    }

    /// `PUT` a manifest under a tag or its digest; returns its digest.
    ///
    /// A manifest with a `subject` (an OCI 1.1 referrer) is also added to the subject's tag
    /// schema index ([`Client::referrers_tag_add`]) when the registry did not confirm with
    /// `OCI-Subject` that it indexes referrers itself.
    ///
    /// # Errors
    /// [`Error::Registry`] with `MANIFEST_BLOB_UNKNOWN` when a referenced blob is missing,
    /// `MANIFEST_INVALID`, `DIGEST_INVALID`, …
    pub async fn manifest_put(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        let (digest, subject_indexed) = self
            .manifest_put_only(repo, reference, media_type, bytes.clone())
            .await?;
        if !subject_indexed
            && let Some((subject, referrer)) =
                crate::referrers::referrer_of(media_type, &digest, &bytes)
        {
            self.referrers_tag_add(repo, &subject, referrer).await?;
        }
        Ok(digest)
    }

    /// `PUT` a manifest; its digest, and whether the registry answered `OCI-Subject`.
    pub(crate) async fn manifest_put_only(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(Digest, bool)> {
        let computed = Digest::sha256(&bytes);
        let url = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .call(
                Method::PUT,
                &url,
                &[(header::CONTENT_TYPE, media_type.to_owned())],
                ReqBody::Bytes(bytes),
                &[push(repo)],
                &[201, 200],
            )
            .await?;
        if let Some(d) = header_str(&resp, "docker-content-digest")
            && d != computed.as_str()
            && Digest::parse(&d).is_ok_and(|d| d.algorithm() == "sha256")
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest pushed to {}/{repo}:{reference}", self.inner.host),
                expected: computed.to_string(),
                actual: d,
            });
        }
        let subject_indexed = resp.headers().contains_key("oci-subject");
        Ok((computed, subject_indexed))
    }

    /// `DELETE` a manifest by digest (or by tag where the registry supports it).
    ///
    /// Deleting by digest a manifest with a `subject` (an OCI 1.1 referrer) also takes it out
    /// of the subject's tag schema index when the registry has no referrers API (the spec's
    /// "Deleting Manifests"): the manifest is read first (a `GET`) to learn its subject, then
    /// deleted, then [`Client::referrers_tag_remove`] runs. The index is updated after the
    /// `DELETE`, so a refused delete (deletes disabled) leaves it intact; when the update
    /// fails, the manifest is gone and the index still lists it (the error says so; running
    /// [`Client::referrers_tag_remove`] again repairs it). A delete by tag removes a tag, not
    /// a manifest, and leaves the index alone.
    ///
    /// # Errors
    /// [`Error::Registry`] with `UNSUPPORTED` where deletes are disabled, `MANIFEST_UNKNOWN`;
    /// errors of reading the manifest and of the index update.
    pub async fn manifest_delete(&self, repo: &str, reference: &str) -> Result<()> {
        let referrer = match Digest::parse(reference) {
            Ok(digest) => match self.manifest_get(repo, reference).await {
                Ok(m) => crate::referrers::referrer_of(&m.media_type, &digest, &m.bytes)
                    .map(|(subject, _)| (subject, digest)),
                // The DELETE below answers for a manifest that is not there.
                Err(e) if e.status() == Some(404) => None,
                Err(e) => return Err(e),
            },
            Err(_) => None,
        };
        self.manifest_delete_only(repo, reference).await?;
        if let Some((subject, digest)) = referrer
            && !self.has_referrers_api(repo, &subject).await?
        {
            self.referrers_tag_remove(repo, &subject, &digest)
                .await
                .map_err(|e| Error::StaleReferrersTag {
                    repository: repo.to_owned(),
                    digest: digest.to_string(),
                    tag: subject.referrers_tag(),
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }

    /// Deletes a tag, leaving the manifest it named reachable by digest: `DELETE` by tag
    /// where the registry supports it; otherwise (Distribution 2.x answers `UNSUPPORTED`)
    /// the tag is pointed at a unique empty manifest, which is then deleted by digest, as
    /// regclient does.
    ///
    /// # Errors
    /// [`Error::Manifest`] when the tag does not exist; [`Error::Registry`] where deletes
    /// are disabled.
    pub async fn tag_delete(&self, repo: &str, tag: &str) -> Result<()> {
        match self.manifest_delete_only(repo, tag).await {
            Ok(()) => return Ok(()),
            Err(e) if e.has_code("UNSUPPORTED") || matches!(e.status(), Some(400 | 405)) => {}
            Err(e) => return Err(e),
        }
        // The tag must exist (otherwise this would create and delete a new one silently).
        if self.manifest_head(repo, tag).await?.is_none() {
            return Err(Error::Manifest {
                reference: format!("{repo}:{tag}"),
                reason: "manifest unknown".into(),
            });
        }
        let config = Bytes::from_static(b"{}");
        let config_digest = self.push_blob(repo, config).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dummy = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest.to_string(), "size": 2},
            "layers": [],
            "annotations": {"org.example.regctl.tag-delete": format!("{tag} {now}")},
        });
        let digest = self
            .manifest_put(
                repo,
                tag,
                crate::manifest::OCI_MANIFEST,
                Bytes::from(dummy.to_string()),
            )
            .await?;
        self.manifest_delete_only(repo, digest.as_str()).await
    }

    /// `DELETE` a manifest, nothing else.
    pub(crate) async fn manifest_delete_only(&self, repo: &str, reference: &str) -> Result<()> {
        let url = format!("/v2/{repo}/manifests/{reference}");
        self.call(
            Method::DELETE,
            &url,
            &[],
            ReqBody::Bytes(Bytes::new()),
            &[format!("repository:{repo}:delete")],
            &[202, 200, 204],
        )
        .await?;
        Ok(())
    }

    /// `HEAD` a blob: its size, or `None` when absent.
    ///
    /// # Errors
    /// [`Error::Registry`] for statuses other than 200 and 404.
    pub async fn blob_head(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let url = format!("/v2/{repo}/blobs/{digest}");
        let resp = self
            .call(
                Method::HEAD,
                &url,
                &[],
                ReqBody::Bytes(Bytes::new()),
                &[pull(repo)],
                &[200, 404],
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            header_str(&resp, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// `DELETE` a blob.
    ///
    /// # Errors
    /// [`Error::Registry`] with `BLOB_UNKNOWN`, or `UNSUPPORTED` where deletes are disabled.
    pub async fn blob_delete(&self, repo: &str, digest: &Digest) -> Result<()> {
        let url = format!("/v2/{repo}/blobs/{digest}");
        self.call(
            Method::DELETE,
            &url,
            &[],
            ReqBody::Bytes(Bytes::new()),
            &[format!("repository:{repo}:delete")],
            &[202, 200, 204],
        )
        .await?;
        Ok(())
    }

    /// `GET` a blob as a verified stream (redirects to storage are followed).
    ///
    /// # Errors
    /// [`Error::Registry`] with `BLOB_UNKNOWN`; the stream fails with
    /// [`Error::DigestMismatch`] at its end when the content is not what the digest says.
    pub async fn blob_get(&self, repo: &str, digest: &Digest) -> Result<BlobStream> {
        let url = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.blob_get_following(repo, &url, None).await?;
        let size = header_str(&resp, "content-length").and_then(|v| v.parse().ok());
        Ok(BlobStream::new(
            resp.into_body(),
            digest.clone(),
            size,
            format!("blob {digest} from {}/{repo}", self.inner.host),
        ))
    }

    /// The rest of a blob from byte `at`, verified: `GET` with `Range: bytes=from-`, where
    /// `hasher` holds the hash of bytes `0..from` (`from <= at`); bytes `from..at` are hashed
    /// but not yielded. A source that ignores the range (200) is read from 0 with a fresh
    /// hasher. The digest and `size` are checked at the end as for [`Client::blob_get`].
    pub(crate) async fn blob_get_resumed(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        (from, hasher): (u64, crate::reference::Hasher),
        at: u64,
    ) -> Result<BlobStream> {
        let url = format!("/v2/{repo}/blobs/{digest}");
        let what = format!("blob {digest} from {}/{repo}", self.inner.host);
        let resp = self
            .blob_get_following(repo, &url, Some(format!("bytes={from}-")))
            .await?;
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            let starts = header_str(&resp, "content-range").and_then(|r| {
                r.trim()
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok())
            });
            if starts != Some(from) {
                return Err(Error::Http {
                    method: "GET".into(),
                    url,
                    reason: format!("asked for bytes from {from}, got Content-Range {starts:?}"),
                });
            }
            return Ok(BlobStream::resumed(
                resp.into_body(),
                digest.clone(),
                size,
                from,
                hasher,
                at.saturating_sub(from),
                what,
            ));
        }
        Ok(BlobStream::resumed(
            resp.into_body(),
            digest.clone(),
            size,
            0,
            digest.hasher(),
            at,
            what,
        ))
    }

    /// `GET` a byte range of a blob (`Range: bytes=start-end`, inclusive); not verified.
    ///
    /// # Errors
    /// [`Error::Registry`] (416 for a range past the end).
    pub async fn blob_get_range(
        &self,
        repo: &str,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> Result<Bytes> {
        let url = format!("/v2/{repo}/blobs/{digest}");
        let range = format!("bytes={start}-{end}");
        let resp = self.blob_get_following(repo, &url, Some(range)).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(Error::Http {
                method: "GET".into(),
                url,
                reason: format!("range request answered {}, not 206", resp.status()),
            });
        }
        let limit = usize::try_from(end.saturating_sub(start) + 1).unwrap_or(usize::MAX);
        body::collect(resp.into_body(), limit, &url).await
    }

    async fn blob_get_following(
        &self,
        repo: &str,
        url: &str,
        range: Option<String>,
    ) -> Result<Response<Incoming>> {
        let mut headers = Vec::new();
        if let Some(r) = range {
            headers.push((header::RANGE, r));
        }
        let mut url = url.to_owned();
        for _ in 0..5 {
            let resp = self
                .call(
                    Method::GET,
                    &url,
                    &headers,
                    ReqBody::Bytes(Bytes::new()),
                    &[pull(repo)],
                    &[200, 206, 307, 302, 301, 303, 308],
                )
                .await?;
            if resp.status().is_redirection() {
                let location = header_str(&resp, "location").ok_or_else(|| Error::Http {
                    method: "GET".into(),
                    url: url.clone(),
                    reason: "redirect without Location".into(),
                })?;
                url = self.resolve(&location).await?;
                continue;
            }
            return Ok(resp);
        }
        Err(Error::Http {
            method: "GET".into(),
            url,
            reason: "too many redirects".into(),
        })
    }

    fn session(&self, repo: &str, resp: &Response<Incoming>, base: &str) -> Result<UploadSession> {
        let location = header_str(resp, "location").ok_or_else(|| Error::Http {
            method: "POST".into(),
            url: base.to_owned(),
            reason: "upload answer without Location".into(),
        })?;
        let location = if location.starts_with('/') {
            let origin = base
                .find("://")
                .and_then(|i| {
                    base.get(i + 3..)
                        .and_then(|r| r.find('/'))
                        .map(|j| i + 3 + j)
                })
                .and_then(|end| base.get(..end))
                .unwrap_or(base);
            format!("{origin}{location}")
        } else {
            location
        };
        // `Range: 0-N` names the last byte received. Distribution answers `0-0` for an empty
        // session too (it cannot say "nothing"), so `0-0` reads as offset 0: resuming a
        // one-byte upload re-sends that byte, which is harmless.
        let offset = header_str(resp, "range")
            .map(|r| r.trim().trim_start_matches("bytes=").to_owned())
            .filter(|r| r != "0-0")
            .and_then(|r| {
                r.rsplit('-')
                    .next()
                    .and_then(|e| e.trim().parse::<u64>().ok())
            })
            .map_or(0, |end| end + 1);
        Ok(UploadSession {
            repository: repo.to_owned(),
            location,
            offset,
        })
    }

    /// `POST /v2/<repo>/blobs/uploads/`: opens an upload session.
    ///
    /// # Errors
    /// [`Error::Registry`] (`DENIED`, `UNAUTHORIZED`).
    pub async fn upload_start(&self, repo: &str) -> Result<UploadSession> {
        let url = format!("/v2/{repo}/blobs/uploads/");
        let resp = self
            .call(
                Method::POST,
                &url,
                &[],
                ReqBody::Bytes(Bytes::new()),
                &[push(repo)],
                &[202],
            )
            .await?;
        let base = self.resolve(&url).await?;
        self.session(repo, &resp, &base)
    }

    /// `POST …?mount=<digest>&from=<repo>`: links a blob another repository of this registry
    /// has, or opens an upload session when the registry cannot.
    ///
    /// # Errors
    /// [`Error::Registry`].
    pub async fn mount(&self, repo: &str, from: &str, digest: &Digest) -> Result<Mount> {
        let url = format!(
            "/v2/{repo}/blobs/uploads/?mount={}&from={}",
            query_escape(digest.as_str()),
            query_escape(from)
        );
        let resp = self
            .call(
                Method::POST,
                &url,
                &[],
                ReqBody::Bytes(Bytes::new()),
                &[push(repo), pull(from)],
                &[201, 202],
            )
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        let base = self.resolve(&url).await?;
        Ok(Mount::Upload(self.session(repo, &resp, &base)?))
    }

    fn with_query(location: &str, query: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        format!("{location}{sep}{query}")
    }

    /// Finishes a session with the whole blob in one `PUT ?digest=` (the monolithic upload).
    ///
    /// # Errors
    /// [`Error::Registry`] with `DIGEST_INVALID` when the bytes do not match.
    pub async fn upload_put_bytes(
        &self,
        session: &UploadSession,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<()> {
        let url = Self::with_query(
            &session.location,
            &format!("digest={}", query_escape(digest.as_str())),
        );
        let len = bytes.len();
        self.call(
            Method::PUT,
            &url,
            &[
                (header::CONTENT_TYPE, "application/octet-stream".into()),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            ReqBody::Bytes(bytes),
            &[push(&session.repository)],
            &[201, 204],
        )
        .await?;
        Ok(())
    }

    /// Finishes a session by streaming a blob of `size` bytes in one `PUT ?digest=`
    /// (not retried here: a stream cannot be replayed).
    ///
    /// # Errors
    /// As [`Client::upload_put_bytes`]; the stream's own error when the source fails.
    pub async fn upload_put_stream(
        &self,
        session: &UploadSession,
        digest: &Digest,
        size: u64,
        stream: BlobStream,
    ) -> Result<()> {
        self.upload_put_stream_at(session, digest, 0, size, stream)
            .await
    }

    /// Finishes a session that holds the first `offset` bytes of a blob of `size` bytes by
    /// streaming the rest (`stream` yields bytes `offset..size`) in the closing `PUT ?digest=`
    /// (with `Content-Range: offset-(size-1)` when `offset` is not 0, the spec's final chunk).
    ///
    /// # Errors
    /// As [`Client::upload_put_stream`].
    pub async fn upload_put_stream_at(
        &self,
        session: &UploadSession,
        digest: &Digest,
        offset: u64,
        size: u64,
        stream: BlobStream,
    ) -> Result<()> {
        use http_body_util::BodyExt as _;
        let url = Self::with_query(
            &session.location,
            &format!("digest={}", query_escape(digest.as_str())),
        );
        let (tx, mut rx) = tokio::sync::oneshot::channel::<Error>();
        // Keep the source's verdict: hyper reports a failed body only as "body error".
        let tx = std::sync::Mutex::new(Some(tx));
        let body = stream
            .map_err(move |e| {
                if let Some(tx) = lock(&tx).take() {
                    let copy = match e.downcast_ref::<Error>() {
                        Some(Error::DigestMismatch {
                            what,
                            expected,
                            actual,
                        }) => Error::DigestMismatch {
                            what: what.clone(),
                            expected: expected.clone(),
                            actual: actual.clone(),
                        },
                        _ => Error::Http {
                            method: "GET".into(),
                            url: "source blob".into(),
                            reason: e.to_string(),
                        },
                    };
                    let _ = tx.send(copy);
                }
                e
            })
            .boxed();
        let mut headers = vec![
            (header::CONTENT_TYPE, "application/octet-stream".into()),
            (
                header::CONTENT_LENGTH,
                size.saturating_sub(offset).to_string(),
            ),
        ];
        if offset > 0 && offset < size {
            headers.push((header::CONTENT_RANGE, format!("{offset}-{}", size - 1)));
        }
        let res = self
            .call(
                Method::PUT,
                &url,
                &headers,
                ReqBody::Stream(body),
                &[push(&session.repository)],
                &[201, 204],
            )
            .await;
        match (res, rx.try_recv()) {
            (_, Ok(source_error)) => Err(source_error),
            (Ok(_), Err(_)) => Ok(()),
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// Sends one chunk (`PATCH` with `Content-Range: start-end`) at the session's offset;
    /// returns the session moved on.
    ///
    /// # Errors
    /// [`Error::Registry`] with status 416 when the offset is not where the registry is.
    pub async fn upload_chunk(
        &self,
        session: &UploadSession,
        chunk: Bytes,
    ) -> Result<UploadSession> {
        if chunk.is_empty() {
            return Ok(session.clone());
        }
        let start = session.offset;
        let end = start + chunk.len() as u64 - 1;
        let resp = self
            .call(
                Method::PATCH,
                &session.location,
                &[
                    (header::CONTENT_TYPE, "application/octet-stream".into()),
                    (header::CONTENT_RANGE, format!("{start}-{end}")),
                    (header::CONTENT_LENGTH, chunk.len().to_string()),
                ],
                ReqBody::Bytes(chunk),
                &[push(&session.repository)],
                &[202],
            )
            .await?;
        let mut next = self.session(&session.repository, &resp, &session.location)?;
        if header_str(&resp, "range").is_none() {
            next.offset = end + 1;
        }
        Ok(next)
    }

    /// `GET` the session: where the registry is (from its `Range` header), to resume.
    ///
    /// # Errors
    /// [`Error::Registry`] with `BLOB_UPLOAD_UNKNOWN` for a cancelled or expired session.
    pub async fn upload_status(&self, session: &UploadSession) -> Result<UploadSession> {
        let resp = self
            .call(
                Method::GET,
                &session.location,
                &[],
                ReqBody::Bytes(Bytes::new()),
                &[push(&session.repository)],
                &[204, 200],
            )
            .await?;
        self.session(&session.repository, &resp, &session.location)
    }

    /// Closes a chunked session: `PUT ?digest=` without body.
    ///
    /// # Errors
    /// [`Error::Registry`] with `DIGEST_INVALID` when the chunks do not add up to the digest.
    pub async fn upload_finish(&self, session: &UploadSession, digest: &Digest) -> Result<()> {
        self.upload_put_bytes(session, digest, Bytes::new()).await
    }

    /// `DELETE` the session (cancels the upload).
    ///
    /// # Errors
    /// [`Error::Registry`].
    pub async fn upload_cancel(&self, session: &UploadSession) -> Result<()> {
        self.call(
            Method::DELETE,
            &session.location,
            &[],
            ReqBody::Bytes(Bytes::new()),
            &[push(&session.repository)],
            &[204, 200],
        )
        .await?;
        Ok(())
    }

    /// Uploads bytes monolithically (`POST` then `PUT ?digest=`), skipping blobs already
    /// present (`HEAD` first).
    ///
    /// # Errors
    /// As [`Client::upload_put_bytes`].
    pub async fn push_blob(&self, repo: &str, bytes: Bytes) -> Result<Digest> {
        let digest = Digest::sha256(&bytes);
        if self.blob_head(repo, &digest).await?.is_some() {
            return Ok(digest);
        }
        let session = self.upload_start(repo).await?;
        self.upload_put_bytes(&session, &digest, bytes).await?;
        Ok(digest)
    }

    /// Uploads bytes in chunks of `chunk_size`, resuming from the registry's `Range` after a
    /// failed chunk (up to the client's attempts per chunk).
    ///
    /// # Errors
    /// The last chunk error when resuming does not help.
    pub async fn push_blob_chunked(
        &self,
        repo: &str,
        bytes: Bytes,
        chunk_size: usize,
    ) -> Result<Digest> {
        let digest = Digest::sha256(&bytes);
        let mut session = self.upload_start(repo).await?;
        let chunk_size = chunk_size.max(1);
        let mut failures = 0;
        while session.offset < bytes.len() as u64 {
            let start = usize::try_from(session.offset)
                .map_err(|_| Error::Unreachable("offset beyond memory"))?;
            let end = (start + chunk_size).min(bytes.len());
            match self.upload_chunk(&session, bytes.slice(start..end)).await {
                Ok(next) => session = next,
                Err(e) if failures + 1 < self.inner.attempts => {
                    failures += 1;
                    tracing::info!(error = %e, "chunk failed; resuming from the registry's range");
                    session = self.upload_status(&session).await?;
                }
                Err(e) => return Err(e),
            }
        }
        self.upload_finish(&session, &digest).await?;
        Ok(digest)
    }

    /// Forgets cached tokens (they are fetched again on the next 401).
    pub fn clear_tokens(&self) {
        lock(&self.inner.auth).tokens.clear();
    }

    /// A Base64 helper for callers that build `auth` entries (`user:password`).
    #[must_use]
    pub fn encode_auth(username: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    }
}

fn list_url(path: &str, n: Option<u32>, last: Option<&str>) -> String {
    let mut q = Vec::new();
    if let Some(n) = n {
        q.push(format!("n={n}"));
    }
    if let Some(l) = last {
        q.push(format!("last={}", query_escape(l)));
    }
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.join(" ")
}
