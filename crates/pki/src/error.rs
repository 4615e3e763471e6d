//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Every variant carries the input it is about (a file, a host, a subject), so a command line can
/// print one line that says what failed and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is not valid PEM (bad armour, bad base64).
    #[error("cannot read PEM from {source_name}: {reason}")]
    Pem {
        /// Where the PEM came from (a file name or a caller-given label).
        source_name: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// The input holds no `CERTIFICATE` section.
    #[error("no certificate found in {source_name}")]
    NoCertificate {
        /// Where the PEM came from.
        source_name: String,
    },
    /// The input holds no private key section.
    #[error("no private key found in {source_name}")]
    NoKey {
        /// Where the PEM came from.
        source_name: String,
    },
    /// A certificate could not be parsed as X.509.
    #[error("cannot parse certificate {index} in {source_name}: {reason}")]
    Certificate {
        /// Where the PEM came from.
        source_name: String,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// What the X.509 parser said.
        reason: String,
    },
    /// The private key is encrypted; this crate does not decrypt keys.
    #[error(
        "the private key in {source_name} is encrypted, which is not supported: decrypt it first \
         (`openssl pkey -in KEY -out KEY.plain`) and keep the result mode 0600"
    )]
    EncryptedKey {
        /// Where the key came from.
        source_name: String,
    },
    /// The private key could not be used (unknown algorithm, bad encoding, unsupported curve).
    #[error("unsupported or malformed private key in {source_name}: {reason}")]
    Key {
        /// Where the key came from.
        source_name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A certificate's public key is not the public half of the given private key.
    #[error("the certificate {certificate} does not match the private key {key}")]
    KeyMismatch {
        /// The certificate (subject or file name).
        certificate: String,
        /// The key (file name or label).
        key: String,
    },
    /// A certificate used as a CA is not a CA (no basicConstraints CA, or no keyCertSign).
    #[error("{subject} cannot issue certificates: {reason}")]
    NotACa {
        /// The subject of the would-be CA.
        subject: String,
        /// What is missing.
        reason: String,
    },
    /// The CA's subject cannot be re-encoded byte for byte as an issuer name.
    #[error(
        "cannot issue from CA {subject}: {reason}; certificates issued from it would carry a \
         different issuer name and fail chain building, so none was issued"
    )]
    IssuerName {
        /// The CA subject as text.
        subject: String,
        /// Why it cannot be reproduced.
        reason: String,
    },
    /// A subject attribute cannot be written.
    #[error("invalid subject attribute {value:?}: {reason}")]
    InvalidSubject {
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A serial number is not hex (`0a:1b:…` or `0a1b…`).
    #[error("invalid certificate serial number {serial:?}: expected hex bytes, colons allowed")]
    Serial {
        /// The serial as given.
        serial: String,
    },
    /// A file holds no `X509 CRL` section.
    #[error("no certificate revocation list found in {source_name}")]
    NoCrl {
        /// Where the PEM came from.
        source_name: String,
    },
    /// A host name or IP address is not usable as a subjectAltName.
    #[error("invalid host name {host:?}: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A server certificate was requested without any host to name in it.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoHosts,
    /// A validity period is out of range.
    #[error("invalid validity of {days} days: must be between 1 and 36500")]
    Validity {
        /// The number of days asked for.
        days: u32,
    },
    /// A key type name is not one this crate knows.
    #[error(
        "unknown key type {name:?}: use ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096"
    )]
    UnknownKeyType {
        /// The name as given.
        name: String,
    },
    /// A certificate chain does not verify against the trusted CA certificates.
    #[error("{subject} is not trusted: {reason}")]
    Untrusted {
        /// The subject of the certificate that failed.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A certificate lacks a subjectAltName for a host that clients will dial.
    #[error("{subject} has no subjectAltName for {host}; clients dialling {host} will reject it")]
    MissingSan {
        /// The certificate subject.
        subject: String,
        /// The host that is not covered.
        host: String,
    },
    /// A file that would be written already exists and overwriting was not asked for.
    #[error("{} already exists; pass --force to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A value cannot be written to an env file without quoting that one of its readers would
    /// misread.
    #[error(
        "{key}={value:?} cannot be written to an env file readable by sh, docker --env-file and \
         systemd alike (spaces, quotes or shell characters); choose a simpler path"
    )]
    EnvValue {
        /// The variable.
        key: &'static str,
        /// The offending value.
        value: String,
    },
    /// File system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed inside rcgen.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A TLS configuration could not be built.
    #[cfg(feature = "rustls")]
    #[error("cannot build the TLS configuration from {what}: {source}")]
    Tls {
        /// The files or role involved.
        what: String,
        /// The underlying error.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from the CA file.
    #[cfg(feature = "rustls")]
    #[error("cannot verify client certificates with CA {}: {reason}", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A live TLS check failed.
    #[cfg(feature = "connect")]
    #[error("TLS connection to {addr} failed: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What failed (connect, handshake, the server's alert).
        reason: String,
    },
    /// An internal invariant was broken; this is a bug.
    #[error("internal error: {0}")]
    Unreachable(&'static str),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn generate(what: impl Into<String>, source: rcgen::Error) -> Self {
        Self::Generate {
            what: what.into(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
