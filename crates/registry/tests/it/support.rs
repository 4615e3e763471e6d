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
use vch_registry::{Client, Credentials, HostSettings, PlainHttp};
use vch_testbed::{Registry, TokenAuth};

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

pub(crate) fn tls_registry(pki: &Pki) -> Registry {
    Registry::builder()
        .tls(pki.cert(), pki.key())
        .start()
        .unwrap()
}

/// A client for a plain-HTTP testbed registry.
pub(crate) fn plain_client(reg: &Registry) -> Client {
    let settings = HostSettings::builder(reg.addr())
        .dangerous()
        .plain_http(PlainHttp::Only)
        .build()
        .unwrap();
    Client::builder(reg.addr())
        .settings(settings)
        .build()
        .unwrap()
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

/// A forward HTTP proxy: `CONNECT host:port` tunnels and absolute-form requests
/// (`GET http://host:port/…`), spliced to the target after the first request head. Names in
/// `names` resolve to 127.0.0.1 here, so a client that reaches such a name did so through
/// the proxy (it cannot resolve it itself). Only loopback targets are dialled.
pub(crate) struct TestProxy {
    pub(crate) addr: std::net::SocketAddr,
    /// First request line of every connection (`CONNECT reg.test:5000`, `GET http://…`).
    pub(crate) log: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TestProxy {
    /// `credentials`: when given, a request without them is answered 407.
    pub(crate) fn start(names: &[&str], credentials: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let names: Arc<Vec<String>> = Arc::new(names.iter().map(|n| (*n).to_owned()).collect());
        let expected =
            credentials.map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
        let (stop2, log2) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (names, log, expected) = (names.clone(), log2.clone(), expected.clone());
                std::thread::spawn(move || {
                    let _ = proxy_conn(conn, &names, &log, expected.as_deref());
                });
            }
        });
        Self { addr, log, stop }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn proxy_conn(
    mut conn: TcpStream,
    names: &[String],
    log: &std::sync::Mutex<Vec<String>>,
    expected: Option<&str>,
) -> std::io::Result<()> {
    use std::io::Read;
    // Read the head byte by byte, so nothing after it is consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    let auth = text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_owned())
    });
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    log.lock().unwrap().push(format!("{method} {target}"));
    if let Some(want) = expected
        && auth.as_deref() != Some(want)
    {
        return conn.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let authority = if method == "CONNECT" {
        target.clone()
    } else {
        target
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_owned()
    };
    let (host, port) = authority.rsplit_once(':').unwrap_or((&authority, "80"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if names.iter().any(|n| n == host) {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_loopback() => ip,
            _ => {
                return conn.write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    };
    let upstream = TcpStream::connect((ip, port.parse::<u16>().unwrap_or(80)))?;
    if method == "CONNECT" {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        // Go's server (the registry) takes absolute-form targets as they are.
        (&upstream).write_all(&head)?;
    }
    let (mut c2, mut u2) = (conn.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let (mut u3, mut c3) = (upstream, conn);
    let _ = std::io::copy(&mut u3, &mut c3);
    let _ = c3.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}
