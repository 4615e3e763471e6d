//! Inspection of certificates and chains: what they say, whether they chain, what is wrong.

use std::fmt::Write as _;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::ca::normalize_dns_name;
use crate::error::{Error, Result};
use crate::key::{PrivateKey, describe_parsed_spki, is_encrypted_key_pem};
use crate::lint::{Lint, LintCode};
use crate::pem::certificates_from_pem;

/// Leaves expiring within this many days get an [`LintCode::ExpiringSoon`] warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How deep [`verify_chain`] looks for an issuer before giving up.
const MAX_CHAIN_DEPTH: u32 = 8;

/// What one certificate says, in the terms an admin compares.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CertInfo {
    /// Subject distinguished name (`CN=…, O=…`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// IP address subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    /// Other subjectAltNames (e-mail, URI, …) as `type:value`.
    pub other_names: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whole days from the inspection time until `not_after` (negative once expired).
    pub days_left: i64,
    /// Key type and size (`ECDSA P-256`, `RSA 2048`).
    pub key: String,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// The basicConstraints path length limit, if any.
    pub path_len: Option<u32>,
    /// keyUsage bits by RFC 5280 name.
    pub key_usage: Vec<String>,
    /// extendedKeyUsage purposes (`serverAuth`, `clientAuth`, or the OID).
    pub extended_key_usage: Vec<String>,
    /// subjectKeyIdentifier, colon-separated hex.
    pub subject_key_id: Option<String>,
    /// authorityKeyIdentifier key id, colon-separated hex.
    pub authority_key_id: Option<String>,
    /// Whether subject and issuer are the same name.
    pub self_issued: bool,
    /// SHA-256 fingerprint of the DER certificate, colon-separated upper-case hex.
    pub sha256: String,
    /// SHA-1 fingerprint (the "thumbprint" vSphere shows), colon-separated upper-case hex.
    pub sha1: String,
}

/// The outcome of a chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ChainCheck {
    /// Whether the chain verified.
    pub trusted: bool,
    /// Subjects from the leaf up to the trusted CA, when it verified.
    pub path: Vec<String>,
    /// Why it did not verify.
    pub error: Option<String>,
}

/// Everything [`inspect_pem`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Inspection {
    /// The certificates, leaf first, in file order.
    pub certificates: Vec<CertInfo>,
    /// Chain verification against the given CAs, when CAs were given.
    pub chain: Option<ChainCheck>,
    /// Problems found, each with a fix.
    pub lints: Vec<Lint>,
}

impl Inspection {
    /// Whether any lint is an error (the certificate will be rejected by clients).
    pub fn has_errors(&self) -> bool {
        self.lints.iter().any(Lint::is_error)
    }
}

/// What to check a certificate against.
#[derive(Debug, Clone)]
pub struct InspectOptions<'a> {
    /// The host name or IP address clients will dial; the leaf needs a SAN for it.
    pub host: Option<&'a str>,
    /// Trusted CA certificates to verify the chain against; empty skips chain verification.
    pub roots: &'a [CertificateDer<'a>],
    /// The PEM private key that belongs to the leaf, to check that they match.
    pub key_pem: Option<&'a [u8]>,
    /// The time to judge validity at.
    pub now: OffsetDateTime,
}

impl Default for InspectOptions<'_> {
    fn default() -> Self {
        Self {
            host: None,
            roots: &[],
            key_pem: None,
            now: OffsetDateTime::now_utc(),
        }
    }
}

/// Inspects a PEM certificate or chain (leaf first): describes each certificate, verifies the
/// chain against `opts.roots`, and lints.
///
/// `source_name` names the input in errors and lints. Fails only when the input holds no
/// parseable certificate; everything wrong with a parseable one is a [`Lint`].
pub fn inspect_pem(pem: &[u8], source_name: &str, opts: &InspectOptions<'_>) -> Result<Inspection> {
    let ders = certificates_from_pem(pem, source_name)?;
    inspect_der_chain(&ders, source_name, opts)
}

/// As [`inspect_pem`], from DER certificates (leaf first).
pub fn inspect_der_chain(
    ders: &[CertificateDer<'_>],
    source_name: &str,
    opts: &InspectOptions<'_>,
) -> Result<Inspection> {
    let parsed = parse_all(ders, source_name)?;
    let mut certificates = Vec::with_capacity(parsed.len());
    let mut lints = Vec::new();
    for (i, (der, x509)) in ders.iter().zip(&parsed).enumerate() {
        let info = describe(der, x509, opts.now);
        lint_certificate(x509, &info, i == 0, opts, &mut lints);
        certificates.push(info);
    }
    let leaf_subject = certificates
        .first()
        .map(|c| c.subject.clone())
        .unwrap_or_default();

    if let (Some(leaf), Some(key_pem)) = (parsed.first(), opts.key_pem) {
        lint_key(leaf, &leaf_subject, key_pem, source_name, &mut lints);
    }

    let chain = if opts.roots.is_empty() {
        None
    } else {
        Some(match verify_chain(ders, opts.roots, opts.now) {
            Ok(path) => ChainCheck {
                trusted: true,
                path,
                error: None,
            },
            Err(e) => {
                lints.push(Lint::new(
                    LintCode::Untrusted,
                    &leaf_subject,
                    format!("chain verification failed: {e}"),
                ));
                ChainCheck {
                    trusted: false,
                    path: Vec::new(),
                    error: Some(e.to_string()),
                }
            }
        })
    };
    Ok(Inspection {
        certificates,
        chain,
        lints,
    })
}

fn parse_all<'a>(
    ders: &'a [CertificateDer<'_>],
    source_name: &str,
) -> Result<Vec<X509Certificate<'a>>> {
    ders.iter()
        .enumerate()
        .map(|(index, der)| {
            X509Certificate::from_der(der)
                .map(|(_, x)| x)
                .map_err(|e| Error::Certificate {
                    source_name: source_name.to_owned(),
                    index,
                    reason: e.to_string(),
                })
        })
        .collect()
}

fn describe(der: &[u8], x509: &X509Certificate<'_>, now: OffsetDateTime) -> CertInfo {
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let mut other_names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => match ip_from_octets(bytes) {
                    Some(ip) => ip_addresses.push(ip),
                    None => other_names.push(format!("IP:{}", hex_colon(bytes))),
                },
                GeneralName::RFC822Name(m) => other_names.push(format!("email:{m}")),
                GeneralName::URI(u) => other_names.push(format!("URI:{u}")),
                other => other_names.push(format!("{other}")),
            }
        }
    }
    let not_before = x509.validity().not_before.to_datetime();
    let not_after = x509.validity().not_after.to_datetime();
    let (is_ca, path_len) = match x509.basic_constraints() {
        Ok(Some(bc)) => (bc.value.ca, bc.value.path_len_constraint),
        _ => (false, None),
    };
    let key_usage = match x509.key_usage() {
        Ok(Some(ku)) => key_usage_names(ku.value),
        _ => Vec::new(),
    };
    let extended_key_usage = match x509.extended_key_usage() {
        Ok(Some(eku)) => eku_names(eku.value),
        _ => Vec::new(),
    };
    let mut subject_key_id = None;
    let mut authority_key_id = None;
    for ext in x509.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(hex_colon(id.0)),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| hex_colon(id.0));
            }
            _ => {}
        }
    }
    CertInfo {
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        serial: hex_colon(x509.raw_serial()),
        dns_names,
        ip_addresses,
        other_names,
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        days_left: (not_after - now).whole_days(),
        key: describe_parsed_spki(x509.public_key()),
        is_ca,
        path_len,
        key_usage,
        extended_key_usage,
        subject_key_id,
        authority_key_id,
        self_issued: x509.subject().as_raw() == x509.issuer().as_raw(),
        sha256: hex_colon(&Sha256::digest(der)),
        sha1: hex_colon(&Sha1::digest(der)),
    }
}

fn lint_certificate(
    x509: &X509Certificate<'_>,
    info: &CertInfo,
    is_leaf: bool,
    opts: &InspectOptions<'_>,
    lints: &mut Vec<Lint>,
) {
    let subject = info.subject.as_str();
    let not_before = x509.validity().not_before.to_datetime();
    let not_after = x509.validity().not_after.to_datetime();
    if opts.now > not_after {
        lints.push(Lint::new(
            LintCode::Expired,
            subject,
            format!(
                "expired on {} ({} days ago)",
                info.not_after, -info.days_left
            ),
        ));
    } else if opts.now < not_before {
        lints.push(Lint::new(
            LintCode::NotYetValid,
            subject,
            format!("not valid before {}", info.not_before),
        ));
    } else if info.days_left <= EXPIRY_WARNING_DAYS {
        lints.push(Lint::new(
            LintCode::ExpiringSoon,
            subject,
            format!("expires on {} (in {} days)", info.not_after, info.days_left),
        ));
    }

    let has_san =
        !(info.dns_names.is_empty() && info.ip_addresses.is_empty() && info.other_names.is_empty());
    if !info.is_ca && !has_san {
        lints.push(Lint::new(
            LintCode::CnOnly,
            subject,
            "names its identity only in the subject common name, with no subjectAltName; Go \
             (docker CLI, dockerd) and Python have ignored the common name since 2020"
                .to_owned(),
        ));
    }
    if info.is_ca && !info.extended_key_usage.is_empty() {
        lints.push(Lint::new(
            LintCode::CaWithEku,
            subject,
            format!(
                "is a CA carrying extendedKeyUsage {}; Go applies a CA's EKU to every certificate \
                 below it, so leaves with other purposes fail",
                info.extended_key_usage.join(", ")
            ),
        ));
    }
    if !info.is_ca && !info.self_issued && info.authority_key_id.is_none() {
        lints.push(Lint::new(
            LintCode::LeafMissingAki,
            subject,
            "has no authorityKeyIdentifier; verifiers must then find its issuer by name alone, \
             which breaks when a CA is renewed with the same name"
                .to_owned(),
        ));
    }
    if let (true, Some(host)) = (is_leaf, opts.host)
        && !info.is_ca
        && !covers_host(info, host)
    {
        lints.push(Lint::new(
            LintCode::NoSanForHost,
            subject,
            format!(
                "has no subjectAltName for {host}, the host clients dial (it names: {})",
                san_list(info)
            ),
        ));
    }
}

fn lint_key(
    leaf: &X509Certificate<'_>,
    subject: &str,
    key_pem: &[u8],
    source_name: &str,
    lints: &mut Vec<Lint>,
) {
    if is_encrypted_key_pem(key_pem) {
        lints.push(Lint::new(
            LintCode::EncryptedKey,
            subject,
            "its private key is encrypted, which dockerd, the docker CLI and this tool do not \
             support"
                .to_owned(),
        ));
        return;
    }
    let text = String::from_utf8_lossy(key_pem);
    match PrivateKey::from_pem(&text, &format!("key of {source_name}")) {
        Ok(key) => {
            if !spki_matches(leaf.public_key().raw, &key.public_key_info_der()) {
                lints.push(Lint::new(
                    LintCode::KeyMismatch,
                    subject,
                    format!(
                        "the private key ({}) is not the key of this certificate ({})",
                        key.description(),
                        describe_parsed_spki(leaf.public_key())
                    ),
                ));
            }
        }
        Err(e) => lints.push(Lint::new(
            LintCode::KeyMismatch,
            subject,
            format!("the private key cannot be used: {e}"),
        )),
    }
}

fn san_list(info: &CertInfo) -> String {
    let mut names: Vec<String> = info.dns_names.clone();
    names.extend(info.ip_addresses.iter().map(IpAddr::to_string));
    names.extend(info.other_names.iter().cloned());
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

/// Whether the certificate's subjectAltNames cover `host` the way Go and rustls match: an IP
/// only against IP SANs, a DNS name against DNS SANs case-insensitively, with a `*` wildcard
/// covering exactly one leftmost label. The common name is never consulted.
pub fn covers_host(info: &CertInfo, host: &str) -> bool {
    let host = host.trim();
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return info.ip_addresses.iter().any(|san| same_ip(*san, ip));
    }
    let Ok(host) = normalize_dns_name(host) else {
        return false;
    };
    info.dns_names.iter().any(|san| {
        let san = san.strip_suffix('.').unwrap_or(san).to_ascii_lowercase();
        if let Some(suffix) = san.strip_prefix("*.") {
            host.split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
        } else {
            san == host
        }
    })
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.to_canonical() == b.to_canonical()
}

/// Whether a certificate's raw `SubjectPublicKeyInfo` and a key's SPKI name the same key.
pub(crate) fn spki_matches(cert_spki_raw: &[u8], key_spki_der: &[u8]) -> bool {
    match (
        SubjectPublicKeyInfo::from_der(cert_spki_raw),
        SubjectPublicKeyInfo::from_der(key_spki_der),
    ) {
        (Ok((_, a)), Ok((_, b))) => {
            a.algorithm.algorithm == b.algorithm.algorithm
                && a.subject_public_key.data == b.subject_public_key.data
        }
        _ => false,
    }
}

/// Whether the first certificate in `cert_pem` belongs to the private key in `key_pem`.
pub fn key_matches_certificate(cert_pem: &[u8], key_pem: &str, key_name: &str) -> Result<bool> {
    let ders = certificates_from_pem(cert_pem, "certificate")?;
    let parsed = parse_all(&ders[..1], "certificate")?;
    let key = PrivateKey::from_pem(key_pem, key_name)?;
    Ok(parsed
        .first()
        .is_some_and(|x| spki_matches(x.public_key().raw, &key.public_key_info_der())))
}

/// Verifies `chain` (leaf first, then intermediates in any order) against the trusted CA
/// certificates `roots` at time `now`, as `openssl verify -CAfile roots -untrusted rest leaf`
/// does without a purpose: signatures, validity of every certificate on the path, issuers being
/// CAs with keyCertSign, and path length limits. Returns the subjects on the path, leaf first.
///
/// A leaf that is itself one of the roots is trusted.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: OffsetDateTime,
) -> Result<Vec<String>> {
    let parsed_chain = parse_all(chain, "chain")?;
    let parsed_roots = parse_all(roots, "trusted CAs")?;
    let Some(leaf) = parsed_chain.first() else {
        return Err(Error::NoCertificate {
            source_name: "chain".to_owned(),
        });
    };
    let untrusted = |x: &X509Certificate<'_>, reason: String| Error::Untrusted {
        subject: x.subject().to_string(),
        reason,
    };
    check_time(leaf, now).map_err(|r| untrusted(leaf, r))?;
    let mut path = vec![leaf.subject().to_string()];
    if let Some(first) = chain.first()
        && roots.iter().any(|r| r.as_ref() == first.as_ref())
    {
        return Ok(path);
    }

    let mut current = leaf;
    // cas_below: how many CA certificates sit between `current`'s issuer and the leaf.
    for cas_below in 0..MAX_CHAIN_DEPTH {
        let issuer_raw = current.issuer().as_raw();
        let candidates = parsed_roots
            .iter()
            .map(|c| (c, true))
            .chain(parsed_chain.iter().skip(1).map(|c| (c, false)))
            .filter(|(c, _)| c.subject().as_raw() == issuer_raw);
        let mut named = false;
        let mut found = None;
        for (cand, is_root) in candidates {
            named = true;
            if current.verify_signature(Some(cand.public_key())).is_ok() {
                found = Some((cand, is_root));
                break;
            }
        }
        let Some((issuer, is_root)) = found else {
            return Err(untrusted(
                current,
                if named {
                    format!(
                        "its signature does not verify with the key of {}",
                        current.issuer()
                    )
                } else {
                    format!("its issuer {} is not a trusted CA", current.issuer())
                },
            ));
        };
        match issuer.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {
                if let Some(limit) = bc.value.path_len_constraint
                    && cas_below > limit
                {
                    return Err(untrusted(
                        current,
                        format!(
                            "the path length limit {limit} of {} is exceeded",
                            issuer.subject()
                        ),
                    ));
                }
            }
            _ => {
                return Err(untrusted(
                    current,
                    format!("its issuer {} is not a CA", issuer.subject()),
                ));
            }
        }
        if let Ok(Some(ku)) = issuer.key_usage()
            && !ku.value.key_cert_sign()
        {
            return Err(untrusted(
                current,
                format!(
                    "its issuer {} may not sign certificates (keyUsage)",
                    issuer.subject()
                ),
            ));
        }
        check_time(issuer, now).map_err(|r| untrusted(issuer, r))?;
        path.push(issuer.subject().to_string());
        if is_root {
            return Ok(path);
        }
        if std::ptr::eq(issuer, current) {
            break;
        }
        current = issuer;
    }
    Err(untrusted(
        leaf,
        "no path to a trusted CA within the chain given".to_owned(),
    ))
}

fn check_time(x: &X509Certificate<'_>, now: OffsetDateTime) -> std::result::Result<(), String> {
    let nb = x.validity().not_before.to_datetime();
    let na = x.validity().not_after.to_datetime();
    if now < nb {
        return Err(format!("it is not valid before {}", rfc3339(nb)));
    }
    if now > na {
        return Err(format!("it expired on {}", rfc3339(na)));
    }
    Ok(())
}

/// Checks a bring-your-own server certificate: it belongs to the key, chains to `roots` when
/// any are given, and carries a subjectAltName for every host in `hosts`.
pub fn check_server_certificate(
    cert_pem: &[u8],
    key_pem: &str,
    key_name: &str,
    roots: &[CertificateDer<'_>],
    hosts: &[String],
) -> Result<()> {
    let ders = certificates_from_pem(cert_pem, "server certificate")?;
    let parsed = parse_all(&ders, "server certificate")?;
    let Some(leaf) = parsed.first() else {
        return Err(Error::Unreachable(
            "certificates_from_pem returns at least one",
        ));
    };
    let subject = leaf.subject().to_string();
    let key = PrivateKey::from_pem(key_pem, key_name)?;
    if !spki_matches(leaf.public_key().raw, &key.public_key_info_der()) {
        return Err(Error::KeyMismatch {
            certificate: subject,
            key: key_name.to_owned(),
        });
    }
    let now = OffsetDateTime::now_utc();
    if !roots.is_empty() {
        verify_chain(&ders, roots, now)?;
    }
    let info = describe(&ders[0], leaf, now);
    for host in hosts {
        if !covers_host(&info, host) {
            return Err(Error::MissingSan {
                subject: subject.clone(),
                host: host.clone(),
            });
        }
    }
    Ok(())
}

fn key_usage_names(ku: &x509_parser::extensions::KeyUsage) -> Vec<String> {
    let table: [(bool, &str); 9] = [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "contentCommitment"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ];
    table
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

fn eku_names(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let table = [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ];
    for (set, name) in table {
        if set {
            out.push(name.to_owned());
        }
    }
    out.extend(eku.other.iter().map(ToString::to_string));
    out
}

fn ip_from_octets(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

/// Colon-separated upper-case hex, as openssl prints fingerprints.
pub(crate) fn hex_colon(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
    use time::Duration;

    use super::*;
    use crate::ca::{CaOptions, CertificateAuthority, LeafOptions};
    use crate::key::KeyType;
    use crate::lint::Severity;
    use crate::pem::der_to_pem;

    fn ca(name: &str) -> CertificateAuthority {
        CertificateAuthority::generate(&CaOptions::new(name)).unwrap()
    }

    /// A server-like leaf from explicit parameters, so tests can break one thing at a time.
    fn params(hosts: &[&str]) -> CertificateParams {
        let mut p =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "leaf");
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(365);
        p
    }

    fn sign(ca: &CertificateAuthority, p: &CertificateParams) -> (String, PrivateKey) {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let der = ca.sign(p, &key, "test").unwrap();
        (der_to_pem(&der), key)
    }

    fn codes(pem: &str, opts: &InspectOptions<'_>) -> Vec<LintCode> {
        inspect_pem(pem.as_bytes(), "test", opts)
            .unwrap()
            .lints
            .iter()
            .map(|l| l.code)
            .collect()
    }

    #[test]
    fn a_good_chain_has_no_lints_and_full_details() {
        let ca = ca("Good CA");
        let leaf = ca
            .issue(&LeafOptions::server(["vch.example", "192.0.2.7"]))
            .unwrap();
        let roots = [ca.cert_der().clone()];
        let key_pem = leaf.key().to_pem().as_bytes();
        let opts = InspectOptions {
            host: Some("192.0.2.7"),
            roots: &roots,
            key_pem: Some(key_pem),
            ..InspectOptions::default()
        };
        let report = inspect_pem(leaf.cert_pem().as_bytes(), "server-cert.pem", &opts).unwrap();
        assert!(report.lints.is_empty(), "{:?}", report.lints);
        assert!(!report.has_errors());
        let chain = report.chain.unwrap();
        assert!(chain.trusted);
        assert_eq!(chain.path, ["CN=vch.example", "CN=Good CA"]);
        let info = &report.certificates[0];
        assert_eq!(info.subject, "CN=vch.example");
        assert_eq!(info.issuer, "CN=Good CA");
        assert_eq!(info.dns_names, ["vch.example"]);
        assert_eq!(info.ip_addresses, [IpAddr::from([192, 0, 2, 7])]);
        assert_eq!(info.key, "ECDSA P-256");
        assert_eq!(info.extended_key_usage, ["serverAuth"]);
        assert_eq!(info.key_usage, ["digitalSignature"]);
        assert!(!info.is_ca);
        assert!((823..=825).contains(&info.days_left), "{}", info.days_left);
        assert_eq!(info.sha256, hex_colon(&Sha256::digest(leaf.cert_der())));
        assert_eq!(info.sha256.len(), 32 * 3 - 1);
        assert_eq!(info.sha1.len(), 20 * 3 - 1);
        assert!(info.authority_key_id.is_some() && info.subject_key_id.is_some());

        let ca_info = &inspect_pem(
            ca.cert_pem().as_bytes(),
            "ca.pem",
            &InspectOptions::default(),
        )
        .unwrap()
        .certificates[0];
        assert!(ca_info.is_ca && ca_info.self_issued);
        assert_eq!(ca_info.path_len, Some(0));
        assert_eq!(ca_info.key_usage, ["keyCertSign", "cRLSign"]);
        assert_eq!(ca_info.subject_key_id, info.authority_key_id);
    }

    #[test]
    fn lint_expired() {
        let ca = ca("CA");
        let mut p = params(&["h.example"]);
        p.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        p.not_after = OffsetDateTime::now_utc() - Duration::days(2);
        let (pem, _) = sign(&ca, &p);
        let report = inspect_pem(pem.as_bytes(), "t", &InspectOptions::default()).unwrap();
        assert_eq!(report.lints.len(), 1);
        assert_eq!(report.lints[0].code, LintCode::Expired);
        assert!(report.has_errors());
        assert!(report.lints[0].message.contains("days ago"));
    }

    #[test]
    fn lint_not_yet_valid() {
        let ca = ca("CA");
        let mut p = params(&["h.example"]);
        p.not_before = OffsetDateTime::now_utc() + Duration::days(2);
        let (pem, _) = sign(&ca, &p);
        assert_eq!(
            codes(&pem, &InspectOptions::default()),
            [LintCode::NotYetValid]
        );
    }

    #[test]
    fn lint_expiring_soon_is_a_warning() {
        let ca = ca("CA");
        let mut p = params(&["h.example"]);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(10);
        let (pem, _) = sign(&ca, &p);
        let report = inspect_pem(pem.as_bytes(), "t", &InspectOptions::default()).unwrap();
        assert_eq!(report.lints[0].code, LintCode::ExpiringSoon);
        assert_eq!(report.lints[0].severity, Severity::Warning);
        assert!(!report.has_errors());
        // 31 days is not "soon".
        p.not_after = OffsetDateTime::now_utc() + Duration::days(31) + Duration::hours(1);
        let (pem, _) = sign(&ca, &p);
        assert!(codes(&pem, &InspectOptions::default()).is_empty());
    }

    #[test]
    fn lint_no_san_for_host() {
        let ca = ca("CA");
        let (pem, _) = sign(&ca, &params(&["a.example", "*.wild.example", "10.1.2.3"]));
        let with_host = |host| InspectOptions {
            host: Some(host),
            ..InspectOptions::default()
        };
        for covered in [
            "a.example",
            "A.Example.",
            "x.wild.example",
            "10.1.2.3",
            "::ffff:10.1.2.3",
        ] {
            assert!(codes(&pem, &with_host(covered)).is_empty(), "{covered}");
        }
        // A wildcard covers one label only; an IP never matches a DNS SAN and vice versa.
        for missing in [
            "b.example",
            "wild.example",
            "x.y.wild.example",
            "10.1.2.4",
            "[::1]",
        ] {
            assert_eq!(
                codes(&pem, &with_host(missing)),
                [LintCode::NoSanForHost],
                "{missing}"
            );
        }
        let (pem, _) = sign(&ca, &params(&["10.9.9.9"]));
        // An IP address written as an IP SAN covers that address.
        assert_eq!(codes(&pem, &with_host("10.9.9.9")), []);
    }

    #[test]
    fn lint_cn_only() {
        let ca = ca("CA");
        let (pem, _) = sign(&ca, &params(&[]));
        let opts = InspectOptions {
            host: Some("leaf"),
            ..InspectOptions::default()
        };
        assert_eq!(
            codes(&pem, &opts),
            [LintCode::CnOnly, LintCode::NoSanForHost]
        );
    }

    #[test]
    fn lint_ca_with_eku() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(100);
        let der = p.self_signed(key.pair()).unwrap();
        let pem = der_to_pem(der.der());
        let report = inspect_pem(pem.as_bytes(), "t", &InspectOptions::default()).unwrap();
        assert_eq!(report.lints.len(), 1);
        assert_eq!(report.lints[0].code, LintCode::CaWithEku);
        assert!(report.lints[0].message.contains("serverAuth"));
    }

    #[test]
    fn lint_leaf_missing_aki() {
        let ca = ca("CA");
        let mut p = params(&["h.example"]);
        p.use_authority_key_identifier_extension = false;
        let (pem, _) = sign(&ca, &p);
        assert_eq!(
            codes(&pem, &InspectOptions::default()),
            [LintCode::LeafMissingAki]
        );
    }

    #[test]
    fn lint_key_mismatch() {
        let ca = ca("CA");
        let (pem, _) = sign(&ca, &params(&["h.example"]));
        let other = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let opts = InspectOptions {
            key_pem: Some(other.to_pem().as_bytes()),
            ..InspectOptions::default()
        };
        assert_eq!(codes(&pem, &opts), [LintCode::KeyMismatch]);
        // RSA key against an ECDSA certificate: also a mismatch, described.
        let rsa = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        let opts = InspectOptions {
            key_pem: Some(rsa.to_pem().as_bytes()),
            ..InspectOptions::default()
        };
        let report = inspect_pem(pem.as_bytes(), "t", &opts).unwrap();
        assert!(
            report.lints[0].message.contains("RSA 2048"),
            "{}",
            report.lints[0].message
        );
    }

    #[test]
    fn lint_encrypted_key() {
        let ca = ca("CA");
        let (pem, _) = sign(&ca, &params(&["h.example"]));
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let opts = InspectOptions {
            key_pem: Some(enc),
            ..InspectOptions::default()
        };
        assert_eq!(codes(&pem, &opts), [LintCode::EncryptedKey]);
    }

    #[test]
    fn lint_untrusted() {
        let ca_a = ca("CA A");
        let ca_b = ca("CA B");
        let leaf = ca_a.issue(&LeafOptions::client("c")).unwrap();
        let roots = [ca_b.cert_der().clone()];
        let opts = InspectOptions {
            roots: &roots,
            ..InspectOptions::default()
        };
        let report = inspect_pem(leaf.cert_pem().as_bytes(), "t", &opts).unwrap();
        assert_eq!(report.lints.len(), 1);
        assert_eq!(report.lints[0].code, LintCode::Untrusted);
        let chain = report.chain.unwrap();
        assert!(!chain.trusted);
        assert!(chain.error.unwrap().contains("CN=CA A is not a trusted CA"));
    }

    #[test]
    fn same_name_other_key_fails_on_signature() {
        let real = ca("Same Name");
        let impostor = ca("Same Name");
        let leaf = real.issue(&LeafOptions::client("c")).unwrap();
        let err = verify_chain(
            &[leaf.cert_der().clone()],
            &[impostor.cert_der().clone()],
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("signature does not verify"),
            "{err}"
        );
        // With both, the right one is found.
        verify_chain(
            &[leaf.cert_der().clone()],
            &[impostor.cert_der().clone(), real.cert_der().clone()],
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    }

    #[test]
    fn byo_server_check() {
        let ca = ca("CA");
        let other = ca_named_other();
        let leaf = ca.issue(&LeafOptions::server(["vch.example"])).unwrap();
        let pem = leaf.cert_pem();
        let key = leaf.key().to_pem();
        let roots = [ca.cert_der().clone()];
        check_server_certificate(pem.as_bytes(), key, "k", &roots, &["vch.example".into()])
            .unwrap();
        let err =
            check_server_certificate(pem.as_bytes(), key, "k", &roots, &["other.example".into()])
                .unwrap_err();
        assert!(matches!(err, Error::MissingSan { ref host, .. } if host == "other.example"));
        let wrong_roots = [other.cert_der().clone()];
        let err =
            check_server_certificate(pem.as_bytes(), key, "k", &wrong_roots, &[]).unwrap_err();
        assert!(matches!(err, Error::Untrusted { .. }), "{err}");
        let other_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let err = check_server_certificate(pem.as_bytes(), other_key.to_pem(), "k", &roots, &[])
            .unwrap_err();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    }

    fn ca_named_other() -> CertificateAuthority {
        ca("Other CA")
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            inspect_pem(junk, "j", &InspectOptions::default()),
            Err(Error::Certificate { index: 0, .. })
        ));
    }
}
