//! Lints: what is wrong with a certificate, how bad it is, and how to fix it.

use std::fmt;

/// How bad a lint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum Severity {
    /// Works today but will break or is fragile.
    Warning,
    /// Clients reject it (or the files cannot be used) now.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// The problems [`inspect_pem`](crate::inspect_pem) looks for.
///
/// | code | severity | when |
/// |---|---|---|
/// | `expired` | error | now is after notAfter |
/// | `not-yet-valid` | error | now is before notBefore |
/// | `expiring-soon` | warning | notAfter is within 30 days |
/// | `no-san-for-host` | error | the leaf has no subjectAltName for the host clients dial |
/// | `cn-only` | error | a non-CA certificate without any subjectAltName |
/// | `ca-with-eku` | warning | a CA certificate carrying extendedKeyUsage |
/// | `leaf-missing-aki` | warning | a non-CA, non-self-issued certificate without authorityKeyIdentifier |
/// | `key-mismatch` | error | the private key given is not the certificate's (or is unusable) |
/// | `encrypted-key` | error | the private key given is encrypted (unsupported) |
/// | `untrusted` | error | the chain does not verify against the CA given |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum LintCode {
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate expires within [`EXPIRY_WARNING_DAYS`](crate::EXPIRY_WARNING_DAYS).
    ExpiringSoon,
    /// No subjectAltName covers the host clients dial.
    NoSanForHost,
    /// The identity is only in the common name.
    CnOnly,
    /// A CA carries extendedKeyUsage.
    CaWithEku,
    /// A leaf lacks authorityKeyIdentifier.
    LeafMissingAki,
    /// Key and certificate do not match.
    KeyMismatch,
    /// The key is encrypted.
    EncryptedKey,
    /// The chain does not verify.
    Untrusted,
}

impl LintCode {
    /// The stable kebab-case name used in text and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            LintCode::Expired => "expired",
            LintCode::NotYetValid => "not-yet-valid",
            LintCode::ExpiringSoon => "expiring-soon",
            LintCode::NoSanForHost => "no-san-for-host",
            LintCode::CnOnly => "cn-only",
            LintCode::CaWithEku => "ca-with-eku",
            LintCode::LeafMissingAki => "leaf-missing-aki",
            LintCode::KeyMismatch => "key-mismatch",
            LintCode::EncryptedKey => "encrypted-key",
            LintCode::Untrusted => "untrusted",
        }
    }

    /// How bad this problem is.
    pub fn severity(self) -> Severity {
        match self {
            LintCode::ExpiringSoon | LintCode::CaWithEku | LintCode::LeafMissingAki => {
                Severity::Warning
            }
            LintCode::Expired
            | LintCode::NotYetValid
            | LintCode::NoSanForHost
            | LintCode::CnOnly
            | LintCode::KeyMismatch
            | LintCode::EncryptedKey
            | LintCode::Untrusted => Severity::Error,
        }
    }

    /// What to do about it.
    pub fn fix(self) -> &'static str {
        match self {
            LintCode::Expired | LintCode::ExpiringSoon => {
                "issue a new certificate before clients reject it: `vch-admin create --force` \
                 rewrites a VCH's certificates, or reissue from your CA and replace the files"
            }
            LintCode::NotYetValid => {
                "check the clocks of this machine and of the machine that issued it (NTP); \
                 certificates issued here are backdated 5 minutes for small skews"
            }
            LintCode::NoSanForHost => {
                "reissue the server certificate with the host as a subjectAltName \
                 (`vch-admin create --tls-cname HOST`), or dial a name it already carries"
            }
            LintCode::CnOnly => {
                "reissue the certificate with subjectAltNames for every name and IP address \
                 clients use (`--tls-cname`)"
            }
            LintCode::CaWithEku => {
                "reissue the CA without extendedKeyUsage (`vch-admin create` does), then reissue \
                 the certificates below it"
            }
            LintCode::LeafMissingAki => {
                "reissue the certificate from a CA tool that writes authorityKeyIdentifier \
                 (vch-admin, or openssl with `authorityKeyIdentifier=keyid` in its extensions)"
            }
            LintCode::KeyMismatch => {
                "pair the certificate with the key it was issued for (compare `openssl x509 \
                 -noout -pubkey` with `openssl pkey -pubout`), or issue a new pair"
            }
            LintCode::EncryptedKey => {
                "decrypt the key (`openssl pkey -in KEY -out KEY.plain`), keep it mode 0600, \
                 and point the configuration at the decrypted file"
            }
            LintCode::Untrusted => {
                "use the CA that issued the certificate (or include the intermediates in the \
                 certificate file, leaf first), or reissue it from this CA"
            }
        }
    }
}

impl fmt::Display for LintCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem found in a certificate, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Lint {
    /// Which problem.
    pub code: LintCode,
    /// How bad ([`LintCode::severity`]).
    pub severity: Severity,
    /// The subject of the certificate it is about.
    pub subject: String,
    /// What exactly is wrong.
    pub message: String,
    /// What to do ([`LintCode::fix`]).
    pub fix: String,
}

impl Lint {
    pub(crate) fn new(code: LintCode, subject: &str, message: String) -> Self {
        Self {
            code,
            severity: code.severity(),
            subject: subject.to_owned(),
            message,
            fix: code.fix().to_owned(),
        }
    }

    /// Whether this lint is an [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}: {}; fix: {}",
            self.severity, self.code, self.subject, self.message, self.fix
        )
    }
}
