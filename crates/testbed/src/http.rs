//! A small blocking HTTP/1.1 client for tests: one connection per request, over TCP, TLS
//! (rustls) or a unix socket. Enough to probe daemons and drive the Registry API; not a
//! general-purpose client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};

/// Default socket connect/read/write timeout, so a wedged daemon fails a test instead of
/// hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest status line or header line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A response, read completely.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8 text.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
enum Transport {
    /// `http://` over TCP; `https://` URLs are refused.
    Plain,
    /// `http://` over TCP and `https://` with this configuration.
    Tls(Arc<rustls::ClientConfig>),
    /// Every request goes to this unix socket, whatever the URL's host.
    Unix(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain => f.write_str("Plain"),
            Self::Tls(_) => f.write_str("Tls"),
            Self::Unix(p) => f.debug_tuple("Unix").field(p).finish(),
        }
    }
}

/// A minimal HTTP/1.1 client (`Connection: close`, `Content-Length` or chunked bodies).
///
/// ```no_run
/// # fn main() -> vch_testbed::Result<()> {
/// let client = vch_testbed::HttpClient::plain();
/// let resp = client.get("http://127.0.0.1:5000/v2/")?;
/// assert_eq!(resp.status, 200);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HttpClient {
    transport: Transport,
    authorization: Option<String>,
    timeout: Duration,
}

impl HttpClient {
    /// Plain HTTP over TCP.
    #[must_use]
    pub fn plain() -> Self {
        Self {
            transport: Transport::Plain,
            authorization: None,
            timeout: IO_TIMEOUT,
        }
    }

    /// HTTP over a unix socket (such as dockerd's); URLs are still written `http://host/path`
    /// and the host only fills the `Host` header.
    #[must_use]
    pub fn unix(socket: &Path) -> Self {
        Self {
            transport: Transport::Unix(socket.to_owned()),
            authorization: None,
            timeout: IO_TIMEOUT,
        }
    }

    /// HTTPS trusting only the CA certificates in the PEM file `ca` (plain `http://` works too).
    ///
    /// # Errors
    /// When the file cannot be read or holds no usable certificate.
    pub fn tls(ca: &Path) -> Result<Self> {
        Self::tls_with(Some(ca), None)
    }

    /// HTTPS trusting `ca` and presenting a client certificate (mutual TLS, as dockerd's
    /// `--tlsverify` wants).
    ///
    /// # Errors
    /// When a file cannot be read or parsed.
    pub fn tls_client_auth(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        Self::tls_with(Some(ca), Some((cert, key)))
    }

    /// HTTPS that accepts any server certificate. For readiness probes of servers whose trust
    /// the test checks elsewhere; never for asserting anything about TLS.
    #[must_use]
    pub fn tls_without_verification() -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(NoVerification(provider.clone()));
        // Building from the default provider's own protocol versions cannot fail.
        let config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
            Err(_) => return Self::plain(),
        };
        Self {
            transport: Transport::Tls(Arc::new(config)),
            authorization: None,
            timeout: IO_TIMEOUT,
        }
    }

    fn tls_with(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = ca {
            let what = || ca.display().to_string();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| Error::Tls {
                    what: what(),
                    reason: e.to_string(),
                })?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls {
                    what: what(),
                    reason: e.to_string(),
                })?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Tls {
                    what: what(),
                    reason: "no usable CA certificate".to_owned(),
                });
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls {
                what: "protocol versions".to_owned(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(Iterator::collect)
                    .map_err(|e| Error::Tls {
                        what: cert.display().to_string(),
                        reason: e.to_string(),
                    })?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Tls {
                    what: key.display().to_string(),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Tls {
                        what: cert.display().to_string(),
                        reason: e.to_string(),
                    })?
            }
        };
        Ok(Self {
            transport: Transport::Tls(Arc::new(config)),
            authorization: None,
            timeout: IO_TIMEOUT,
        })
    }

    /// Connect, read and write timeout of each socket operation (default 60 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends HTTP basic credentials with every request.
    #[must_use]
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        let token = base64(format!("{user}:{password}").as_bytes());
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    /// `GET url`.
    ///
    /// # Errors
    /// On a bad URL, a connection or protocol failure. Any status is a successful response.
    pub fn get(&self, url: &str) -> Result<Response> {
        self.request("GET", url, &[], &[])
    }

    /// Sends one request and reads the whole response.
    ///
    /// `Content-Length` is always sent for requests with a body and for `POST`/`PUT`/`PATCH`.
    ///
    /// # Errors
    /// On a bad URL, a connection or protocol failure. Any status is a successful response.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let parsed = Url::parse(url).map_err(|r| Error::http(method, url, r))?;
        let fail = |what: &str, e: std::io::Error| Error::http(method, url, format!("{what}: {e}"));
        let mut stream = self.connect(&parsed).map_err(|e| match e {
            ConnectError::Io(e) => fail("connect", e),
            ConnectError::Other(r) => Error::http(method, url, r),
        })?;

        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: vch-testbed\r\n",
            parsed.path_and_query, parsed.authority
        );
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if let Some(auth) = &self.authorization {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        for (name, value) in headers {
            if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
                return Err(Error::http(method, url, format!("bad header {name:?}")));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.flush())
            .map_err(|e| fail("send", e))?;

        let mut reader = BufReader::new(stream);
        read_response(&mut reader, method == "HEAD").map_err(|e| fail("read response", e))
    }

    fn connect(&self, url: &Url) -> std::result::Result<Box<dyn ReadWrite>, ConnectError> {
        if let Transport::Unix(path) = &self.transport {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            return Ok(Box::new(s));
        }
        let tcp = connect_tcp(&url.host, url.port, self.timeout)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        tcp.set_nodelay(true)?;
        if !url.https {
            return Ok(Box::new(tcp));
        }
        let Transport::Tls(config) = &self.transport else {
            return Err(ConnectError::Other(
                "https URL with a plain client (use HttpClient::tls)".to_owned(),
            ));
        };
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| ConnectError::Other(format!("server name {}: {e}", url.host)))?;
        let conn = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| ConnectError::Other(format!("tls: {e}")))?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }
}

/// Connects to the first address of `host:port` that answers, each try bounded by `timeout`.
fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address for {host}"),
        )
    }))
}

enum ConnectError {
    Io(std::io::Error),
    Other(String),
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed inside a line (or line too long)",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn read_response(r: &mut impl BufRead, head_request: bool) -> std::io::Result<Response> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("bad status line {status_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| invalid(format!("bad status code in {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status / 100 == 1 || status == 204 || status == 304 {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.body = read_chunked(r)?;
    } else if let Some(len) = response.header("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        r.take(len).read_to_end(&mut response.body)?;
        if response.body.len() as u64 != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("body ended after {} of {len} bytes", response.body.len()),
            ));
        }
    } else {
        r.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(body);
        }
        let before = body.len();
        r.take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunk",
            ));
        }
        if !read_line(r)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF".to_owned()));
        }
    }
}

/// The parts of an `http://` / `https://` URL the client needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    /// `host[:port]` as written (the `Host` header).
    pub(crate) authority: String,
    /// Host without brackets, for connecting and SNI.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, at least `/`.
    pub(crate) path_and_query: String,
}

impl Url {
    pub(crate) fn parse(url: &str) -> std::result::Result<Self, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!("not an http(s) URL: {url:?}"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("bad authority in {url:?}"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad IPv6 authority in {url:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port in {url:?}"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("bad authority in {url:?}")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| format!("bad port in {url:?}"))?,
                ),
                None => (authority.to_owned(), default_port),
            }
        };
        Ok(Self {
            https,
            authority: authority.to_owned(),
            host,
            port,
            path_and_query: path,
        })
    }

    /// `scheme://authority`.
    pub(crate) fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// Resolves a `Location` header against the URL of the request that returned it
/// (RFC 9110 §10.2.2: absolute, absolute-path or relative reference).
pub(crate) fn resolve_location(base: &str, location: &str) -> std::result::Result<String, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let base_url = Url::parse(base)?;
    if location.starts_with("//") {
        let scheme = if base_url.https { "https:" } else { "http:" };
        return Ok(format!("{scheme}{location}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{}{location}", base_url.origin()));
    }
    let path = base_url
        .path_and_query
        .split('?')
        .next()
        .unwrap_or("/")
        .to_owned();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{}{dir}{location}", base_url.origin()))
}

/// Standard base64 with padding (RFC 4648 §4), for basic auth.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Accepts any server certificate; signatures are still checked so the handshake is real.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn url_parsing() {
        let u = Url::parse("http://127.0.0.1:5000/v2/x/blobs/uploads/?a=b").unwrap();
        assert_eq!(
            u,
            Url {
                https: false,
                authority: "127.0.0.1:5000".into(),
                host: "127.0.0.1".into(),
                port: 5000,
                path_and_query: "/v2/x/blobs/uploads/?a=b".into(),
            }
        );
        let u = Url::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 8443, "/")
        );
        let u = Url::parse("https://reg.example.com?x").unwrap();
        assert_eq!((u.port, u.path_and_query.as_str()), (443, "/?x"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://h:notaport/").is_err());
        assert!(Url::parse("http:///x").is_err());
        assert!(Url::parse("http://user@h/").is_err());
    }

    #[test]
    fn location_resolution() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_location(base, "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s"
        );
        assert_eq!(
            resolve_location(base, "/v2/a/blobs/uploads/u1").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1"
        );
        assert_eq!(
            resolve_location(base, "u1?x=1").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?x=1"
        );
        assert_eq!(
            resolve_location("https://h/v2/", "//other:1/p").unwrap(),
            "https://other:1/p"
        );
    }

    #[test]
    fn response_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloEXTRA";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x")),
            (200, &b"hello"[..], Some("y"))
        );

        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nT: v\r\n\r\n";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!(r.text(), "hello world");

        let raw = b"HTTP/1.0 404 Not Found\r\n\r\nuntil eof";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "until eof"));

        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let r = read_response(&mut &raw[..], true).unwrap();
        assert!(r.body.is_empty());

        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(read_response(&mut &short[..], false).is_err());
        assert!(read_response(&mut &b"garbage\r\n\r\n"[..], false).is_err());
        assert!(read_response(&mut &b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"[..], false).is_err());
    }
}
