//! The crate's error type.

use std::fmt;
use std::time::Duration;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One entry of a registry's JSON error body (`{"errors":[{"code":…,"message":…}]}`),
/// as the distribution spec defines it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct RegistryError {
    /// The code: `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `UNAUTHORIZED`, `DENIED`, `NAME_UNKNOWN`,
    /// `DIGEST_INVALID`, `TOOMANYREQUESTS`, …
    #[serde(default)]
    pub code: String,
    /// The registry's message.
    #[serde(default)]
    pub message: String,
}

/// The registry errors of a response, printed as `CODE: message; CODE: message`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryErrors(pub Vec<RegistryError>);

impl RegistryErrors {
    /// Whether any entry has this code.
    #[must_use]
    pub fn has(&self, code: &str) -> bool {
        self.0.iter().any(|e| e.code == code)
    }

    /// Parses a response body; a body that is not the spec's JSON gives no entries.
    #[must_use]
    pub fn from_body(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default)]
            errors: Vec<RegistryError>,
        }
        Self(
            serde_json::from_slice::<Body>(body)
                .map(|b| b.errors)
                .unwrap_or_default(),
        )
    }
}

impl fmt::Display for RegistryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.code, e.message)?;
        }
        Ok(())
    }
}

/// What to do about a registry answer, from its error codes and status.
fn advice(status: u16, errors: &RegistryErrors) -> &'static str {
    if errors.has("UNAUTHORIZED") || status == 401 {
        "log in first (regctl registry login HOST, or docker login)"
    } else if errors.has("DENIED") || status == 403 {
        "the credentials in use lack permission for this repository"
    } else if errors.has("MANIFEST_UNKNOWN") || errors.has("BLOB_UNKNOWN") {
        "check that the tag or digest exists (regctl tag ls REPO)"
    } else if errors.has("NAME_UNKNOWN") {
        "check the repository name (regctl repo ls HOST)"
    } else if errors.has("TOOMANYREQUESTS") || status == 429 {
        "the registry is rate limiting; retry later"
    } else if status == 407 {
        "the proxy wants credentials: put them in its URL (http://user:password@host:port)"
    } else if errors.has("UNSUPPORTED") || status == 405 {
        "the registry does not support this operation (deletes may be disabled)"
    } else if status >= 500 {
        "the registry failed; retry, or check its logs"
    } else {
        "see the registry's message"
    }
}

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate, key or CA file could not be used.
    #[error("{0}")]
    Pki(#[from] vch_pki::Error),

    /// A settings value is contradictory or a settings file is unusable.
    #[error("invalid settings for {host}: {reason}")]
    Settings {
        /// The registry host the settings are for.
        host: String,
        /// What is wrong.
        reason: String,
    },

    /// An image reference does not parse.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },

    /// A digest does not parse (`algorithm:hex`, sha256 or sha512).
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// Why it is invalid.
        reason: String,
    },

    /// No TCP connection could be made.
    #[error("cannot connect to {host}: {reason} (is the registry running and the port right?)")]
    Connect {
        /// `host:port` dialled.
        host: String,
        /// The system's reason.
        reason: String,
    },

    /// The TLS handshake failed, most often because the certificate is not trusted.
    #[error(
        "tls handshake with {host} failed: {reason}; trust its CA with --cacert FILE or \
         certs.d/{host}/ca.crt, or mark the registry insecure if you accept the risk"
    )]
    Tls {
        /// `host:port` dialled.
        host: String,
        /// rustls' reason.
        reason: String,
    },

    /// The registry speaks plain HTTP but the settings require TLS.
    #[error(
        "{host} answered plain http on a tls connection; set --tls disabled (or insecure) \
         for it if plain http is acceptable"
    )]
    PlainHttpRefused {
        /// `host:port` dialled.
        host: String,
    },

    /// The proxy could not be reached or refused to tunnel.
    #[error("through the proxy to {host}: {reason} (check HTTPS_PROXY, HTTP_PROXY and NO_PROXY)")]
    Proxy {
        /// `host:port` asked for.
        host: String,
        /// What failed, naming the proxy (never its credentials).
        reason: String,
    },

    /// No answer within the configured time.
    #[error("{method} {url} timed out after {after:?}")]
    Timeout {
        /// The HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// The limit that expired.
        after: Duration,
    },

    /// The exchange failed below the registry protocol (connection reset, malformed response).
    #[error("{method} {url}: {reason}")]
    Http {
        /// The HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },

    /// The registry answered with an error status.
    #[error("{method} {url}: status {status}{}{errors}; {}", if errors.0.is_empty() { "" } else { ": " }, advice(*status, errors))]
    Registry {
        /// The HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The error entries from the body.
        errors: RegistryErrors,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },

    /// The token server refused or answered nonsense.
    #[error("authentication at {realm} failed: {reason}")]
    Auth {
        /// The token endpoint (`realm`).
        realm: String,
        /// What failed.
        reason: String,
    },

    /// Credentials could not be read (Docker config file or credential helper).
    #[error("credentials for {host}: {reason}")]
    Credentials {
        /// The registry host.
        host: String,
        /// What failed.
        reason: String,
    },

    /// Content does not match its digest (or declared size).
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (`blob sha256:… from host/repo`).
        what: String,
        /// The digest expected.
        expected: String,
        /// What the content hashes (or measures) to.
        actual: String,
    },

    /// A manifest does not decode or has an unsupported type.
    #[error("manifest {reference}: {reason}")]
    Manifest {
        /// Which manifest.
        reference: String,
        /// What is wrong.
        reason: String,
    },

    /// An index has no manifest for the requested platform.
    #[error("no manifest for platform {platform} in {reference} (available: {available})")]
    NoPlatform {
        /// The platform asked for.
        platform: String,
        /// The index.
        reference: String,
        /// The platforms it offers, comma separated.
        available: String,
    },

    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The system error.
        source: std::io::Error,
    },

    /// A referrer manifest was deleted, but updating its subject's tag schema index failed,
    /// so the index still lists it ([`crate::Client::referrers_tag_remove`] repairs it).
    #[error(
        "{repository}@{digest} was deleted, but the referrers tag {tag} still lists it: {source}"
    )]
    StaleReferrersTag {
        /// The repository.
        repository: String,
        /// The deleted manifest.
        digest: String,
        /// The subject's tag schema tag (`sha256-<hex>`).
        tag: String,
        /// Why the update failed.
        source: Box<Error>,
    },

    /// A replication rules file is invalid; `item` names the rule or endpoint and the field.
    #[error("{file}: {item}: {reason}")]
    Rules {
        /// The rules file (or `<string>` when parsed from text).
        file: String,
        /// Where: `rule "name", field tags`, `endpoint "dc1", field url`, `[retry]`, ….
        item: String,
        /// What is wrong.
        reason: String,
    },

    /// The replication state file cannot be read, written or locked.
    #[error("replication state {path}: {reason}")]
    State {
        /// The state file.
        path: String,
        /// What failed.
        reason: String,
    },

    /// A replication job did not complete.
    #[error("rule {rule:?}, repository {repository}: {reason}")]
    Replication {
        /// The rule.
        rule: String,
        /// The source repository.
        repository: String,
        /// What failed (the last error).
        reason: String,
    },

    /// An internal invariant did not hold (a bug).
    #[error("internal error: {0}")]
    Unreachable(&'static str),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The HTTP status of a [`Error::Registry`] error.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Registry { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the registry's answer carries this error code (`MANIFEST_UNKNOWN`, …).
    #[must_use]
    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, Self::Registry { errors, .. } if errors.has(code))
    }

    /// Whether trying again may succeed: connection failures, timeouts, resets, 5xx and 429.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Http { .. } => true,
            Self::Registry { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The delay the registry asked for with `Retry-After`.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Registry { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_names_codes_and_advice() {
        let errors = RegistryErrors::from_body(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
        );
        let e = Error::Registry {
            method: "GET".into(),
            url: "https://r/v2/a/manifests/x".into(),
            status: 404,
            errors,
            retry_after: None,
        };
        assert!(e.has_code("MANIFEST_UNKNOWN"));
        let text = e.to_string();
        assert!(
            text.contains("status 404: MANIFEST_UNKNOWN: manifest unknown; check that the tag"),
            "{text}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn non_json_body_gives_no_entries() {
        assert!(RegistryErrors::from_body(b"<html>").0.is_empty());
    }

    #[test]
    fn tls_error_suggests_cacert_certs_d_and_insecure() {
        let e = Error::Tls {
            host: "reg:5000".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        };
        let text = e.to_string();
        for needle in ["reg:5000", "--cacert", "certs.d/reg:5000", "insecure"] {
            assert!(text.contains(needle), "{text}");
        }
    }
}
