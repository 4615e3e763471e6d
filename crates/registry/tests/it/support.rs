//! Shared test fixtures: registries from the testbed, a CA from vch-pki, and a token issuer
//! implementing Docker's token spec (signed JWTs with an `x5c` chain).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject;
use vch_pki::{CaOptions, CertificateAuthority, LeafOptions};
use vch_registry::{Client, Credentials, Digest, HostSettings, PlainHttp, Reference};
use vch_testbed::{HttpClient, PushedImage, RandomImage, Registry, TokenAuth};

/// A CA with a server certificate for 127.0.0.1/localhost, written to a temp dir.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: CertificateAuthority,
}

impl Pki {
    pub(crate) fn new() -> Self {
        Self::with_names(&["127.0.0.1", "localhost"])
    }

    /// A server certificate for these names and addresses.
    pub(crate) fn with_names(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate(&CaOptions::new("vch-registry test CA")).unwrap();
        let server = ca
            .issue(&LeafOptions::server(names.iter().copied()))
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server-cert.pem"), server.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), server.key().to_pem()).unwrap();
        Self { dir, ca }
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(crate) fn cert(&self) -> PathBuf {
        self.dir.path().join("server-cert.pem")
    }

    pub(crate) fn key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }
}

pub(crate) fn plain_registry() -> Registry {
    Registry::start().unwrap()
}

/// A plain-HTTP registry holding `image` (pushed over plain HTTP).
pub(crate) fn plain_registry_with(image: RandomImage) -> (Registry, PushedImage) {
    let reg = plain_registry();
    let pushed = image.push(&HttpClient::plain(), reg.url()).unwrap();
    (reg, pushed)
}

pub(crate) fn tls_registry(pki: &Pki) -> Registry {
    Registry::builder()
        .tls(pki.cert(), pki.key())
        .start()
        .unwrap()
}

/// Plain-HTTP-only settings for `host` (a testbed registry or a test server).
pub(crate) fn plain_settings(host: &str) -> HostSettings {
    HostSettings::builder(host)
        .dangerous()
        .plain_http(PlainHttp::Only)
        .build()
        .unwrap()
}

/// A plain-HTTP client for any `host:port` (test servers, relays).
pub(crate) fn plain_client_at(host: &str) -> Client {
    Client::builder(host)
        .settings(plain_settings(host))
        .build()
        .unwrap()
}

/// A client for a plain-HTTP testbed registry.
pub(crate) fn plain_client(reg: &Registry) -> Client {
    plain_client_at(&reg.addr())
}

/// `host/repository:tag` (or `@digest`) as a reference: `image_ref(&reg.addr(), "a/b:v1")`.
pub(crate) fn image_ref(host: &str, path: &str) -> Reference {
    Reference::parse(&format!("{host}/{path}")).unwrap()
}

/// Reads a blob back and checks it against its digest; its bytes.
pub(crate) async fn fetch_verified(client: &Client, repo: &str, digest: &str) -> bytes::Bytes {
    let digest = Digest::parse(digest).unwrap();
    let blob = client
        .blob_get(repo, &digest)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(digest.matches(&blob), "{repo}@{digest} does not match");
    blob
}

/// A client trusting the test CA.
pub(crate) fn tls_client(reg: &Registry, pki: &Pki, creds: Credentials) -> Client {
    let settings = HostSettings::builder(reg.addr())
        .ca_file(pki.ca_path())
        .build()
        .unwrap();
    Client::builder(reg.addr())
        .settings(settings)
        .credentials(creds)
        .build()
        .unwrap()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Docker's token server (distribution `docs/spec/auth/token.md`): `GET /token?service=…&
/// scope=…` with optional basic credentials answers `{"token":…,"expires_in":…}`, a JWT
/// signed ES256 by a key whose certificate (issued by the test CA) is in the `x5c` header.
/// Anonymous requests get `pull` only; the configured user gets every action asked for.
pub(crate) struct TokenIssuer {
    pub(crate) realm: String,
    pub(crate) service: String,
    pub(crate) issuer: String,
    pub(crate) bundle: PathBuf,
    pub(crate) issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl TokenIssuer {
    pub(crate) fn start(user: &str, password: &str, expires_in: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate(&CaOptions::new("token signing CA")).unwrap();
        let signer = ca.issue(&LeafOptions::client("token-signer")).unwrap();
        let bundle = dir.path().join("token-ca.pem");
        std::fs::write(&bundle, ca.cert_pem()).unwrap();
        let pkcs8 =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(signer.key().to_pem().as_bytes())
                .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.secret_pkcs8_der())
                .unwrap();
        let x5c = STANDARD.encode(signer.cert_der().as_ref());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let service = "vch-test-registry".to_owned();
        let issuer = "vch-test-issuer".to_owned();
        let ctx = Arc::new(IssuerCtx {
            key,
            x5c,
            service: service.clone(),
            issuer: issuer.clone(),
            basic: format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
            expires_in,
            issued: issued.clone(),
        });
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &ctx);
                });
            }
        });
        Self {
            realm: format!("http://{addr}/token"),
            service,
            issuer,
            bundle,
            issued,
            stop,
            addr,
            _dir: dir,
        }
    }

    pub(crate) fn auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm.clone(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            rootcertbundle: self.bundle.clone(),
        }
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

struct IssuerCtx {
    key: EcdsaKeyPair,
    x5c: String,
    service: String,
    issuer: String,
    basic: String,
    expires_in: u64,
    issued: Arc<AtomicUsize>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(conn: TcpStream, ctx: &IssuerCtx) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':')
            && n.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_owned());
        }
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("scope", v)) => scopes.push(percent_decode(v)),
            Some(("service", v)) => service = percent_decode(v),
            _ => {}
        }
    }
    let mut out = conn;
    let respond = |out: &mut TcpStream, status: &str, body: &str| {
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let user = match authorization.as_deref() {
        None => None,
        Some(a) if a == ctx.basic => Some("tester"),
        Some(_) => {
            return respond(
                &mut out,
                "401 Unauthorized",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
            );
        }
    };
    if service != ctx.service {
        return respond(
            &mut out,
            "400 Bad Request",
            r#"{"details":"wrong service"}"#,
        );
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| user.is_some() || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": t, "name": name, "actions": actions}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let n = ctx.issued.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [ctx.x5c]});
    let claims = serde_json::json!({
        "iss": ctx.issuer, "sub": user.unwrap_or(""), "aud": ctx.service,
        "exp": now + ctx.expires_in, "nbf": now - 10, "iat": now, "jti": format!("t{n}-{now}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = ctx
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": ctx.expires_in})
            .to_string();
    respond(&mut out, "200 OK", &body)
}

/// A deliberately broken registry: serves fixed manifests and blobs (one of them corrupted
/// by the test) over plain HTTP, one request per connection.
pub(crate) struct BrokenRegistry {
    pub(crate) addr: String,
    stop: Arc<AtomicBool>,
}

impl BrokenRegistry {
    /// `routes`: path → (content type, body). `GET`/`HEAD` on a listed path answer it with
    /// `Docker-Content-Digest` when the path ends in a digest; anything else is 404.
    pub(crate) fn start(routes: Vec<(String, String, Vec<u8>)>) -> Self {
        Self::start_flaky(routes, 0, "")
    }

    /// As [`BrokenRegistry::start`], but the first `failures` requests (other than `/v2/`)
    /// answer `status_line` (e.g. `503 Service Unavailable`) with `Retry-After: 1`.
    pub(crate) fn start_flaky(
        routes: Vec<(String, String, Vec<u8>)>,
        failures: usize,
        status_line: &str,
    ) -> Self {
        let failures = Arc::new(AtomicUsize::new(failures));
        let status_line = status_line.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let routes = routes.clone();
                let failures = failures.clone();
                let status_line = status_line.clone();
                std::thread::spawn(move || {
                    let _ = serve_fixed(conn, &routes, &failures, &status_line);
                });
            }
        });
        Self { addr, stop }
    }
}

impl Drop for BrokenRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve_fixed(
    conn: TcpStream,
    routes: &[(String, String, Vec<u8>)],
    failures: &AtomicUsize,
    status_line: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut out = conn;
    if path == "/v2/" {
        return out.write_all(b"HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    }
    if failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return out.write_all(
            format!("HTTP/1.1 {status_line}\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
    match routes.iter().find(|(p, _, _)| *p == path) {
        Some((_, ct, body)) => {
            let digest = path.rsplit('/').next().filter(|d| d.starts_with("sha256:"));
            let mut head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            if let Some(d) = digest {
                head.push_str(&format!("Docker-Content-Digest: {d}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            if method != "HEAD" {
                out.write_all(body)?;
            }
            Ok(())
        }
        None => out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 58\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"not here\"}]}\n"),
    }
}

/// A TCP relay in front of a registry that breaks one connection: the first whose
/// client-to-registry bytes pass `cut_after` is shut down both ways (a connection drop in
/// the middle of an upload). Counts every byte the client sends.
pub(crate) struct CuttingRelay {
    pub(crate) addr: String,
    pub(crate) client_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CuttingRelay {
    pub(crate) fn start(target: &str, cut_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let client_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (stop2, bytes2, cuts2) = (stop.clone(), client_bytes.clone(), cuts.clone());
        let target = target.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let (bytes, cuts) = (bytes2.clone(), cuts2.clone());
                std::thread::spawn(move || relay_conn(conn, upstream, cut_after, &bytes, &cuts));
            }
        });
        Self {
            addr,
            client_bytes,
            cuts,
            stop,
        }
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn relay_conn(
    client: TcpStream,
    upstream: TcpStream,
    cut_after: u64,
    total: &std::sync::atomic::AtomicU64,
    cuts: &AtomicUsize,
) {
    use std::io::Read;
    let (Ok(mut down_from), Ok(mut down_to)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut down_from, &mut down_to);
        let _ = down_to.shutdown(std::net::Shutdown::Write);
    });
    let (mut from, mut to) = (client, upstream);
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen += n as u64;
        total.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if seen > cut_after
            && cuts
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let _ = from.shutdown(std::net::Shutdown::Both);
            let _ = to.shutdown(std::net::Shutdown::Both);
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = down.join();
}

/// A registry that keeps upload offsets on the server (as registries with server-side upload
/// state do, unlike Distribution's signed `_state`) and breaks one upload on purpose: the first
/// blob `PUT` that has sent more than `cut_after` body bytes has its connection dropped, the
/// bytes received so far kept. `GET` on a session answers its `Range`; a closing `PUT` may
/// carry the final chunk with `Content-Range` (it must start where the session is). Blobs are
/// verified against `?digest=`. One request per connection.
pub(crate) struct UploadServer {
    pub(crate) addr: String,
    /// Blob body bytes received by every `PUT`.
    pub(crate) body_bytes: Arc<std::sync::atomic::AtomicU64>,
    state: Arc<UploadState>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct UploadState {
    uploads: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    blobs: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    manifests: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    next_id: AtomicUsize,
    cut: AtomicBool,
}

impl UploadServer {
    pub(crate) fn start(cut_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let body_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let state = Arc::new(UploadState::default());
        let (stop2, bytes2, state2) = (stop.clone(), body_bytes.clone(), state.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (bytes, state) = (bytes2.clone(), state2.clone());
                std::thread::spawn(move || {
                    let _ = serve_upload(conn, &state, &bytes, cut_after);
                });
            }
        });
        Self {
            addr,
            body_bytes,
            state,
            stop,
        }
    }

    /// The blob stored under `digest`.
    pub(crate) fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.state.blobs.lock().unwrap().get(digest).cloned()
    }

    /// Whether a manifest was pushed under `reference`.
    pub(crate) fn has_manifest(&self, reference: &str) -> bool {
        self.state.manifests.lock().unwrap().contains_key(reference)
    }
}

impl Drop for UploadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve_upload(
    conn: TcpStream,
    state: &UploadState,
    body_bytes: &std::sync::atomic::AtomicU64,
    cut_after: u64,
) -> std::io::Result<()> {
    use std::io::Read;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let len: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut out = conn;
    let respond = |out: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        out.write_all(
            format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )?;
        out.write_all(body)
    };
    let upload_id = path
        .split_once("/blobs/uploads/")
        .map(|(_, id)| id.to_owned())
        .filter(|id| !id.is_empty());
    match (method.as_str(), upload_id) {
        ("GET", _) if path == "/v2/" => respond(&mut out, "200 OK", "", b"{}"),
        ("POST", None) if path.ends_with("/blobs/uploads/") => {
            let id = format!("u{}", state.next_id.fetch_add(1, Ordering::SeqCst));
            state.uploads.lock().unwrap().insert(id.clone(), Vec::new());
            respond(
                &mut out,
                "202 Accepted",
                &format!("Location: {path}{id}\r\n"),
                b"",
            )
        }
        ("GET", Some(id)) => {
            let Some(n) = state.uploads.lock().unwrap().get(&id).map(Vec::len) else {
                return respond(
                    &mut out,
                    "404 Not Found",
                    "",
                    br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"gone"}]}"#,
                );
            };
            let range = if n == 0 {
                "0-0".to_owned()
            } else {
                format!("0-{}", n - 1)
            };
            respond(
                &mut out,
                "204 No Content",
                &format!("Location: {path}\r\nRange: {range}\r\n"),
                b"",
            )
        }
        ("PUT", Some(id)) => {
            let digest = query
                .split('&')
                .find_map(|p| p.strip_prefix("digest="))
                .unwrap_or_default()
                .replace("%3A", ":");
            let have = match state.uploads.lock().unwrap().get(&id) {
                Some(b) => b.len() as u64,
                None => return respond(&mut out, "404 Not Found", "", b""),
            };
            if let Some(r) = header("content-range") {
                let start: u64 = r
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                if start != have {
                    return respond(&mut out, "416 Range Not Satisfiable", "", b"");
                }
            }
            let mut left = len;
            let mut got = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Ok(());
                }
                left -= n as u64;
                got += n as u64;
                body_bytes.fetch_add(n as u64, Ordering::SeqCst);
                if let Some(b) = state.uploads.lock().unwrap().get_mut(&id) {
                    b.extend_from_slice(&buf[..n]);
                }
                if got > cut_after && !state.cut.swap(true, Ordering::SeqCst) {
                    // The deliberate failure: the connection drops mid-body.
                    let _ = out.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
            }
            let data = state
                .uploads
                .lock()
                .unwrap()
                .remove(&id)
                .unwrap_or_default();
            if crate::support::sha256(&data) != digest {
                return respond(
                    &mut out,
                    "400 Bad Request",
                    "",
                    br#"{"errors":[{"code":"DIGEST_INVALID","message":"digest"}]}"#,
                );
            }
            state.blobs.lock().unwrap().insert(digest.clone(), data);
            respond(
                &mut out,
                "201 Created",
                &format!("Docker-Content-Digest: {digest}\r\n"),
                b"",
            )
        }
        ("HEAD", None) if path.contains("/blobs/") => {
            let digest = path.rsplit('/').next().unwrap_or_default();
            match state.blobs.lock().unwrap().get(digest) {
                Some(b) => out.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                ),
                None => respond(&mut out, "404 Not Found", "", b""),
            }
        }
        ("PUT", None) if path.contains("/manifests/") => {
            let mut body = vec![0u8; usize::try_from(len).unwrap_or(0)];
            reader.read_exact(&mut body)?;
            let reference = path.rsplit('/').next().unwrap_or_default().to_owned();
            let digest = crate::support::sha256(&body);
            state.manifests.lock().unwrap().insert(reference, body);
            respond(
                &mut out,
                "201 Created",
                &format!("Docker-Content-Digest: {digest}\r\n"),
                b"",
            )
        }
        _ => respond(
            &mut out,
            "404 Not Found",
            "",
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#,
        ),
    }
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    vch_registry::Digest::sha256(data).to_string()
}

/// A TLS terminator (rustls) that relays the plaintext to `target`: in front of
/// [`TestProxy`] it makes an `https://` proxy. Counts completed handshakes.
pub(crate) struct TlsFront {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) handshakes: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TlsFront {
    pub(crate) fn start(pki: &Pki, target: std::net::SocketAddr) -> Self {
        let certs = vch_pki::load_certificates(&pki.cert()).unwrap();
        let key = vch_pki::load_private_key(&pki.key()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(vch_pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let conn = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok((conn, _)) => conn,
                            Err(_) => continue,
                        },
                    };
                    let (acceptor, counted) = (acceptor.clone(), counted.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(conn).await else {
                            return;
                        };
                        counted.fetch_add(1, Ordering::SeqCst);
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    });
                }
            });
        });
        Self {
            addr,
            handshakes,
            _stop: stop,
        }
    }

    /// `https://[user:password@]127.0.0.1:port`.
    pub(crate) fn url(&self, userinfo: &str) -> String {
        format!("https://{userinfo}{}", self.addr)
    }
}
