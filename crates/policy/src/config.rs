//! The `[registry]` section of a VCH configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::dns::ReverseDnsMode;
use crate::{Error, Policy, PolicyBuilder};

/// The registry policy as configured (TOML `[registry]` in `vch.toml`):
///
/// ```toml
/// [registry]
/// whitelist = ["10.2.40.40:443", "10.2.2.1/24", "*.example.com"]
/// insecure = ["192.168.100.207"]
/// ca = ["registry-ca.pem"]          # relative to the configuration file's directory
///
/// [registry.dns]
/// reverse = "confirmed"             # or "ptr-only", "off"
/// servers = ["127.0.0.1:53"]        # empty: the system resolver
/// timeout_ms = 2000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RegistryConfig {
    /// Whitelist entries (`--whitelist-registry`); none means whitelist mode off.
    pub whitelist: Vec<String>,
    /// Insecure-registry entries (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// PEM files of registry CAs (`--registry-ca`).
    pub ca: Vec<PathBuf>,
    /// Reverse-DNS settings.
    pub dns: DnsConfig,
}

/// Reverse-DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct DnsConfig {
    /// How IP-literal registries are checked against wildcards (default `confirmed`).
    pub reverse: ReverseDnsMode,
    /// Name servers (`IP:PORT`); empty means the system's.
    pub servers: Vec<SocketAddr>,
    /// Per-lookup timeout in milliseconds (default 2000).
    pub timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            reverse: ReverseDnsMode::default(),
            servers: Vec::new(),
            timeout_ms: 2000,
        }
    }
}

impl DnsConfig {
    /// The per-lookup timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl RegistryConfig {
    /// Validates the entries, reads the CA files (relative paths against `base_dir`) and compiles
    /// the policy.
    pub fn compile(&self, base_dir: &Path) -> Result<Policy, Error> {
        if self.dns.timeout_ms == 0 {
            return Err(Error::DnsConfig {
                reason: "timeout_ms must be greater than 0".to_owned(),
            });
        }
        let mut builder = PolicyBuilder::new();
        for entry in &self.whitelist {
            builder.whitelist(entry.as_str());
        }
        for entry in &self.insecure {
            builder.insecure(entry.as_str());
        }
        for path in &self.ca {
            builder.registry_cas(load_ca_file(&base_dir.join(path))?);
        }
        builder.reverse_dns(self.dns.reverse).build()
    }
}

/// Reads the PEM certificates of a registry CA file. At least one certificate is required, and
/// anything else in the file (keys, garbage) is refused rather than skipped.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::CaFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    parse_ca_pem(&bytes).map_err(|reason| Error::CaPem {
        path: path.to_owned(),
        reason,
    })
}

/// Parses PEM certificates; an error says what was found instead.
pub fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        match item {
            Ok(cert) => certs.push(cert),
            Err(e) => return Err(format!("malformed PEM: {e}")),
        }
    }
    #[cfg(feature = "tls")]
    for (i, cert) in certs.iter().enumerate() {
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| {
                format!(
                    "certificate {} is not a usable X.509 CA certificate: {e}",
                    i + 1
                )
            })?;
    }
    if certs.is_empty() {
        let text = String::from_utf8_lossy(pem);
        return Err(if text.contains("PRIVATE KEY-----") {
            "it holds a private key, not a certificate".to_owned()
        } else if text.contains("-----BEGIN") {
            "no CERTIFICATE block".to_owned()
        } else {
            "not PEM (expected -----BEGIN CERTIFICATE-----)".to_owned()
        });
    }
    Ok(certs)
}

#[cfg(feature = "tls")]
impl Policy {
    /// The registry CAs as a rustls root store. Add the system roots for secure registries, as
    /// Docker trusts both.
    pub fn registry_root_store(&self) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        // Every certificate was checked when the CA file was loaded.
        store.add_parsable_certificates(self.registry_cas().iter().cloned());
        store
    }
}
