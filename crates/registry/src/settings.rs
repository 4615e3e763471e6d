//! Per-registry connection settings: trust, client certificate, insecure modes, timeouts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};
use crate::proxy::ProxyConfig;

/// Default bound on TCP connect plus TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on the wait for a response's headers (bodies stream without a bound).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the system CA bundle may live (the list Go's `crypto/x509` probes on Linux); the
/// first one that exists is used. `SSL_CERT_FILE` takes precedence.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// When plain HTTP may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlainHttp {
    /// HTTPS only (the default).
    #[default]
    Never,
    /// HTTPS first; plain HTTP when the TLS connection fails (Docker's insecure registries).
    Fallback,
    /// Plain HTTP only.
    Only,
}

/// Compiled settings for one registry host: cheap to clone, immutable.
///
/// | builder calls                               | scheme tried      | certificate check      |
/// |---------------------------------------------|-------------------|------------------------|
/// | none                                        | https             | system roots + CAs     |
/// | `dangerous().skip_verification()`           | https             | none                   |
/// | `dangerous().plain_http(Fallback)`          | https, then http  | system roots + CAs     |
/// | both                                        | https, then http  | none (Docker insecure) |
/// | `dangerous().plain_http(Only)`              | http              | n/a                    |
#[derive(Clone, Debug)]
pub struct HostSettings {
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) plain_http: PlainHttp,
    pub(crate) skip_verification: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) proxy: Arc<ProxyConfig>,
    /// For `https://` proxies: system roots plus the proxy CA files.
    pub(crate) proxy_tls: Option<Arc<ClientConfig>>,
}

impl HostSettings {
    /// A builder; `host` (`name[:port]`) selects the `certs.d` subdirectory and names errors.
    pub fn builder(host: impl Into<String>) -> HostSettingsBuilder {
        HostSettingsBuilder {
            host: host.into(),
            ca_files: Vec::new(),
            certs_d: Vec::new(),
            client: None,
            system_roots: true,
            skip_verification: false,
            plain_http: PlainHttp::Never,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            proxy: None,
        }
    }

    /// Default settings: HTTPS verified against the system roots.
    ///
    /// # Errors
    /// When the crypto provider cannot be set up (never in practice).
    pub fn secure(host: impl Into<String>) -> Result<Self> {
        Self::builder(host).build()
    }

    /// When plain HTTP may be used.
    #[must_use]
    pub fn plain_http(&self) -> PlainHttp {
        self.plain_http
    }

    /// Whether certificate verification is off.
    #[must_use]
    pub fn skips_verification(&self) -> bool {
        self.skip_verification
    }

    /// The proxies requests use.
    #[must_use]
    pub fn proxy(&self) -> &ProxyConfig {
        &self.proxy
    }
}

/// Collects and validates [`HostSettings`]; [`HostSettingsBuilder::build`] is the only
/// fallible step.
#[derive(Clone, Debug)]
#[must_use]
pub struct HostSettingsBuilder {
    host: String,
    ca_files: Vec<PathBuf>,
    certs_d: Vec<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    system_roots: bool,
    skip_verification: bool,
    plain_http: PlainHttp,
    connect_timeout: Duration,
    request_timeout: Duration,
    proxy: Option<ProxyConfig>,
}

impl HostSettingsBuilder {
    /// Trusts the CA certificates in this PEM file too.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Reads Docker's `certs.d` layout under `root` (e.g. `/etc/docker/certs.d`): in
    /// `root/<host[:port]>/`, every `*.crt` is a trusted CA and a `*.cert` with its `*.key` is
    /// the client certificate. A missing host directory is not an error.
    pub fn certs_d(mut self, root: impl Into<PathBuf>) -> Self {
        self.certs_d.push(root.into());
        self
    }

    /// Presents this client certificate chain and key (PEM files).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// Whether the system CA bundle is trusted (default true).
    pub fn system_roots(mut self, on: bool) -> Self {
        self.system_roots = on;
        self
    }

    /// Bound on TCP connect plus TLS handshake (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on the wait for response headers (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The proxies to use (default: [`ProxyConfig::from_env`], read by [`build`](Self::build);
    /// [`ProxyConfig::none`] for direct connections).
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The options that weaken security.
    pub fn dangerous(self) -> DangerousHostSettingsBuilder {
        DangerousHostSettingsBuilder(self)
    }

    /// Loads every file and compiles the settings.
    ///
    /// # Errors
    /// [`Error::Pki`] for an unreadable CA, certificate or key file (or a key that does not
    /// belong to its certificate); [`Error::Settings`] for a `certs.d` directory with a
    /// `.cert` and no matching `.key`, a client certificate with `plain_http(Only)`, an
    /// unusable proxy variable, or an unreadable proxy CA file.
    pub fn build(self) -> Result<HostSettings> {
        let proxy = Arc::new(match &self.proxy {
            Some(p) => p.clone(),
            None => ProxyConfig::from_env()?,
        });
        let settings_err = |reason: String| Error::Settings {
            host: self.host.clone(),
            reason,
        };
        let proxy_tls = if proxy.has_tls_proxy() {
            Some(proxy_tls_config(&proxy).map_err(settings_err)?)
        } else {
            None
        };
        let mut ca_files = self.ca_files.clone();
        let mut client = self.client.clone();
        for root in &self.certs_d {
            let dir = root.join(&self.host);
            let (cas, pair) = read_certs_d(&dir).map_err(settings_err)?;
            ca_files.extend(cas);
            if client.is_none() {
                client = pair;
            }
        }
        if self.plain_http == PlainHttp::Only {
            if client.is_some() {
                return Err(settings_err(
                    "a client certificate needs tls, but plain http only was chosen".into(),
                ));
            }
            return Ok(HostSettings {
                tls: None,
                plain_http: PlainHttp::Only,
                skip_verification: self.skip_verification,
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                proxy,
                proxy_tls,
            });
        }
        let provider = vch_pki::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| settings_err(e.to_string()))?;
        let builder = if self.skip_verification {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            if self.system_roots {
                roots.add_parsable_certificates(system_roots().iter().cloned());
            }
            for path in &ca_files {
                for cert in vch_pki::load_certificates(path)? {
                    roots.add(cert).map_err(|e| {
                        settings_err(format!("CA certificate in {}: {e}", path.display()))
                    })?;
                }
            }
            if roots.is_empty() {
                return Err(settings_err(
                    "no trusted CA: the system bundle was not found and no CA file given".into(),
                ));
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &client {
            Some((cert, key)) => {
                let chain = vch_pki::load_certificates(cert)?;
                let key_der = vch_pki::load_private_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    settings_err(format!(
                        "client certificate {} and key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HostSettings {
            tls: Some(Arc::new(config)),
            plain_http: self.plain_http,
            skip_verification: self.skip_verification,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            proxy,
            proxy_tls,
        })
    }
}

/// The TLS client configuration for `https://` proxies: the system bundle plus the proxy CA
/// files, no client certificate.
fn proxy_tls_config(proxy: &ProxyConfig) -> std::result::Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    for path in proxy.ca_files() {
        let certs = vch_pki::load_certificates(path)
            .map_err(|e| format!("proxy CA file {}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("proxy CA certificate in {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA to verify the https proxy with: the system bundle was not found and \
             {} is not set",
            crate::proxy::PROXY_CA_FILE_VAR
        ));
    }
    let mut config = ClientConfig::builder_with_provider(vch_pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The insecure options of a [`HostSettingsBuilder`], reached through
/// [`HostSettingsBuilder::dangerous`] so that they are never set by accident.
#[derive(Clone, Debug)]
#[must_use]
pub struct DangerousHostSettingsBuilder(HostSettingsBuilder);

impl DangerousHostSettingsBuilder {
    /// Accepts any server certificate (signatures are still checked, names and issuers not).
    pub fn skip_verification(mut self) -> Self {
        self.0.skip_verification = true;
        self
    }

    /// When plain HTTP may be used (default [`PlainHttp::Never`]).
    pub fn plain_http(mut self, plain: PlainHttp) -> Self {
        self.0.plain_http = plain;
        self
    }

    /// Docker's insecure registry: skip verification and fall back to plain HTTP.
    pub fn insecure(self) -> Self {
        self.skip_verification().plain_http(PlainHttp::Fallback)
    }

    /// Back to the safe options.
    pub fn safe(self) -> HostSettingsBuilder {
        self.0
    }

    /// As [`HostSettingsBuilder::build`].
    ///
    /// # Errors
    /// As [`HostSettingsBuilder::build`].
    pub fn build(self) -> Result<HostSettings> {
        self.0.build()
    }
}

/// Reads one `certs.d/<host>/` directory: CA files and the first client pair.
type CertsD = (Vec<PathBuf>, Option<(PathBuf, PathBuf)>);

fn read_certs_d(dir: &Path) -> std::result::Result<CertsD, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(format!("read {}: {e}", dir.display())),
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let mut cas = Vec::new();
    let mut pair = None;
    for path in &names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => cas.push(path.clone()),
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.exists() {
                    return Err(format!(
                        "client certificate {} has no matching {}",
                        path.display(),
                        key.display()
                    ));
                }
                if pair.is_none() {
                    pair = Some((path.clone(), key));
                } else {
                    tracing::warn!(cert = %path.display(), "certs.d has several client certificates; using the first");
                }
            }
            Some("key") if !path.with_extension("cert").exists() => {
                return Err(format!(
                    "missing client certificate {} for key {}",
                    path.with_extension("cert").display(),
                    path.display()
                ));
            }
            _ => {}
        }
    }
    Ok((cas, pair))
}

/// The system CA bundle, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
        for path in candidates {
            if path.is_file() {
                match vch_pki::load_certificates(&path) {
                    Ok(certs) => return certs,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unusable CA bundle")
                    }
                }
            }
        }
        tracing::warn!("no system CA bundle found; only configured CAs are trusted");
        Vec::new()
    })
}

/// Accepts every certificate but still checks handshake signatures, so the peer holds the
/// key of the certificate it presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_needs_key_for_cert() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("reg:5000");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("client.cert"), "x").unwrap();
        let err = HostSettings::builder("reg:5000")
            .certs_d(tmp.path())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no matching"), "{err}");
    }

    #[test]
    fn missing_certs_d_host_dir_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let s = HostSettings::builder("other:1")
            .certs_d(tmp.path())
            .system_roots(false)
            .dangerous()
            .skip_verification()
            .build()
            .unwrap();
        assert!(s.skips_verification());
    }

    #[test]
    fn plain_only_refuses_client_cert() {
        let err = HostSettings::builder("h")
            .client_cert("/c", "/k")
            .dangerous()
            .plain_http(PlainHttp::Only)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Settings { .. }), "{err}");
    }
}
