//! Certificate authorities and the certificates they issue.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::error::{Error, Result};
use crate::key::{KeyType, PrivateKey};
use crate::pem::{certificates_from_pem, der_to_pem};

/// Default CA validity: 10 years.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default leaf validity: 825 days, the longest that Apple platforms accept for TLS server
/// certificates (and what browsers accepted until 2020).
pub const DEFAULT_LEAF_DAYS: u32 = 825;
/// How far `NotBefore` is backdated, so that a client whose clock is a little behind accepts a
/// certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::minutes(5);
const MAX_DAYS: u32 = 36_500;

/// What a new CA looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOptions {
    /// Subject common name.
    pub common_name: String,
    /// Subject organisation, if any.
    pub organization: Option<String>,
    /// Key type of the CA key.
    pub key_type: KeyType,
    /// Validity in days (default [`DEFAULT_CA_DAYS`]).
    pub days: u32,
}

impl CaOptions {
    /// Options for a CA named `common_name` with the defaults: ECDSA P-256, 10 years.
    pub fn new(common_name: impl Into<String>) -> Self {
        Self {
            common_name: common_name.into(),
            organization: None,
            key_type: KeyType::default(),
            days: DEFAULT_CA_DAYS,
        }
    }
}

/// The role a leaf certificate plays; it decides the profile (extensions) written.
///
/// | profile | basicConstraints | keyUsage | extendedKeyUsage |
/// |---|---|---|---|
/// | CA (see [`CertificateAuthority::generate`]) | CA, pathlen 0 | keyCertSign, cRLSign | none |
/// | [`Profile::Server`] | not a CA | digitalSignature (+ keyEncipherment for RSA) | serverAuth |
/// | [`Profile::Client`] | not a CA | digitalSignature | clientAuth |
///
/// Every certificate has a random 128-bit serial and a subjectKeyIdentifier; leaves carry an
/// authorityKeyIdentifier and at least one subjectAltName (no CN-only identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// A TLS server (dockerd, a registry, the VCH endpoint).
    Server,
    /// A TLS client (the docker CLI, a registry client).
    Client,
}

/// What a new leaf certificate looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafOptions {
    /// Server or client.
    pub profile: Profile,
    /// Subject common name (informational: clients match subjectAltNames).
    pub common_name: String,
    /// DNS names and IP addresses for the subjectAltName extension. An IP address always
    /// becomes an IP SAN, never a DNS SAN (Go and Python ignore IPs in DNS SANs). `[::1]` is
    /// accepted for IPv6. Server certificates need at least one.
    pub hosts: Vec<String>,
    /// Key type of the new key.
    pub key_type: KeyType,
    /// Validity in days (default [`DEFAULT_LEAF_DAYS`]).
    pub days: u32,
    /// A subject organizationalUnitName (OU) written before the common name, if any. A VCH
    /// puts a client's project here, so the certificate itself says which project it acts
    /// for and the endpoint needs no lookup table.
    pub organizational_unit: Option<String>,
}

impl LeafOptions {
    /// A server certificate for `hosts`; the common name is the first host.
    pub fn server(hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let hosts: Vec<String> = hosts.into_iter().map(Into::into).collect();
        Self {
            profile: Profile::Server,
            common_name: hosts.first().cloned().unwrap_or_default(),
            hosts,
            key_type: KeyType::default(),
            days: DEFAULT_LEAF_DAYS,
            organizational_unit: None,
        }
    }

    /// A client certificate named `name`; the name is also its DNS subjectAltName, so the
    /// identity is never CN-only.
    pub fn client(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            profile: Profile::Client,
            common_name: name.clone(),
            hosts: vec![name],
            key_type: KeyType::default(),
            days: DEFAULT_LEAF_DAYS,
            organizational_unit: None,
        }
    }
}

/// One entry of a certificate revocation list ([`CertificateAuthority::revocation_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked certificate's serial number, big-endian, without leading zero bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: std::time::SystemTime,
}

impl Revocation {
    /// An entry for the serial number in hex, with or without colons (as
    /// [`CertInfo::serial`](crate::CertInfo::serial) and openssl print it).
    pub fn from_serial_hex(serial: &str, revoked_at: std::time::SystemTime) -> Result<Self> {
        let bad = || Error::Serial {
            serial: serial.to_owned(),
        };
        let digits: String = serial.chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) {
            return Err(bad());
        }
        let mut bytes = digits
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<u8>>>()?;
        // DER prefixes a 0x00 to a serial whose top bit is set; the number is the same.
        let zeros = bytes.iter().take_while(|b| **b == 0).count();
        bytes.drain(..zeros.min(bytes.len().saturating_sub(1)));
        Ok(Self {
            serial: bytes,
            revoked_at,
        })
    }
}

/// A certificate issued here together with its new private key.
#[derive(Debug)]
pub struct IssuedCert {
    der: CertificateDer<'static>,
    key: PrivateKey,
}

impl IssuedCert {
    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        der_to_pem(&self.der)
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// A CA: its certificate and key, ready to issue.
///
/// Either generated here ([`CertificateAuthority::generate`]) or loaded from PEM written by
/// openssl, docker-machine or vic-machine ([`CertificateAuthority::from_pem`]). Every issued
/// certificate is checked to carry an issuer name equal to the CA subject byte for byte;
/// when rcgen cannot reproduce the name (repeated attribute types, multi-valued RDNs) issuing
/// fails with [`Error::IssuerName`] instead of writing a certificate that would not chain.
#[derive(Debug)]
pub struct CertificateAuthority {
    der: CertificateDer<'static>,
    key: PrivateKey,
    /// Issuer-side parameters (subject, key identifier method, key usages) for rcgen.
    issuer_params: CertificateParams,
    subject_raw: Vec<u8>,
    subject: String,
}

impl CertificateAuthority {
    /// Generates a new self-signed CA with the CA profile: basicConstraints CA with pathlen 0,
    /// keyUsage keyCertSign + cRLSign, no extendedKeyUsage.
    pub fn generate(opts: &CaOptions) -> Result<Self> {
        let key = PrivateKey::generate(opts.key_type)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(org) = &opts.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, opts.common_name.as_str());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, opts.days)?;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(key.pair())
            .map_err(|e| Error::generate(format!("CA {}", opts.common_name), e))?;
        Self::from_parts(cert.der().clone(), key)
    }

    /// Loads a CA from PEM: the first certificate in `cert_pem` and the key in `key_pem`
    /// (PKCS#1, PKCS#8 or SEC1).
    ///
    /// Refuses a certificate that is not a CA (basicConstraints), whose keyUsage lacks
    /// keyCertSign, that has expired, or whose public key is not the key's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        Self::from_pem_named(cert_pem, "CA certificate", key_pem, "CA key")
    }

    /// As [`from_pem`](Self::from_pem), naming the inputs (file names) in errors.
    pub fn from_pem_named(
        cert_pem: &str,
        cert_name: &str,
        key_pem: &str,
        key_name: &str,
    ) -> Result<Self> {
        let der = certificates_from_pem(cert_pem.as_bytes(), cert_name)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoCertificate {
                source_name: cert_name.to_owned(),
            })?;
        let key = PrivateKey::from_pem(key_pem, key_name)?;
        Self::from_parts(der, key).map_err(|e| match e {
            Error::KeyMismatch { .. } => Error::KeyMismatch {
                certificate: cert_name.to_owned(),
                key: key_name.to_owned(),
            },
            other => other,
        })
    }

    fn from_parts(der: CertificateDer<'static>, key: PrivateKey) -> Result<Self> {
        let (_, x509) = X509Certificate::from_der(&der).map_err(|e| Error::Certificate {
            source_name: "CA certificate".to_owned(),
            index: 0,
            reason: e.to_string(),
        })?;
        let subject = x509.subject().to_string();
        let not_a_ca = |reason: String| Error::NotACa {
            subject: subject.clone(),
            reason,
        };
        match x509.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(not_a_ca("basicConstraints does not say CA".to_owned())),
            Err(e) => return Err(not_a_ca(format!("bad basicConstraints: {e}"))),
        }
        match x509.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(not_a_ca("keyUsage lacks keyCertSign".to_owned()));
            }
            Ok(_) => {}
            Err(e) => return Err(not_a_ca(format!("bad keyUsage: {e}"))),
        }
        let not_after = x509.validity().not_after.to_datetime();
        if not_after < OffsetDateTime::now_utc() {
            return Err(not_a_ca(format!("it expired on {not_after}")));
        }
        if !crate::inspect::spki_matches(x509.public_key().raw, &key.public_key_info_der()) {
            return Err(Error::KeyMismatch {
                certificate: subject,
                key: "CA key".to_owned(),
            });
        }

        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = reproducible_name(x509.subject())?;
        issuer_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // The authorityKeyIdentifier of issued certificates must equal the CA's
        // subjectKeyIdentifier when it has one (RFC 5280 4.2.1.1); openssl CAs use SHA-1.
        if let Some(ski) = x509
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
        {
            issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        }
        let subject_raw = x509.subject().as_raw().to_vec();
        drop(x509);
        Ok(Self {
            der,
            key,
            issuer_params,
            subject_raw,
            subject,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        der_to_pem(&self.der)
    }

    /// The CA key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The CA subject as text (`CN=…, O=…`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Issues a leaf certificate with a new key, with the profile of `opts.profile`.
    pub fn issue(&self, opts: &LeafOptions) -> Result<IssuedCert> {
        let key = PrivateKey::generate(opts.key_type)?;
        let cert = self.issue_for_key(opts, &key)?;
        Ok(IssuedCert { der: cert, key })
    }

    /// Issues a leaf certificate for an existing key.
    pub fn issue_for_key(
        &self,
        opts: &LeafOptions,
        key: &PrivateKey,
    ) -> Result<CertificateDer<'static>> {
        if opts.hosts.is_empty() {
            return Err(Error::NoHosts);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(ou) = &opts.organizational_unit {
            if ou.trim().is_empty() {
                return Err(Error::InvalidSubject {
                    value: ou.clone(),
                    reason: "an organizational unit must not be empty",
                });
            }
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, ou.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, opts.common_name.as_str());
        params.subject_alt_names = opts
            .hosts
            .iter()
            .map(|h| san_for_host(h))
            .collect::<Result<_>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match opts.profile {
            Profile::Server => {
                // RSA key exchange (TLS 1.2 RSA suites) encrypts to the server key.
                if is_rsa(key) {
                    params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
                }
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Profile::Client => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        set_validity(&mut params, opts.days)?;
        params.serial_number = Some(random_serial()?);

        let der = self.sign(&params, key, &opts.common_name)?;
        tracing::debug!(subject = %opts.common_name, ca = %self.subject, "issued certificate");
        Ok(der)
    }

    /// A certificate revocation list (X.509 v2 CRL, PEM) signed by this CA, listing `revoked`.
    ///
    /// `thisUpdate` is now and `nextUpdate` `days` days later (openssl's `-crl_check` refuses
    /// an expired CRL; rustls uses it regardless unless told otherwise). The CRL number is the
    /// current Unix time in seconds, so a later list always has a higher number (RFC 5280
    /// 5.2.3) without keeping a counter. The authorityKeyIdentifier is the CA's
    /// subjectKeyIdentifier, as openssl matches it when looking up the CRL's issuer.
    pub fn revocation_list(&self, revoked: &[Revocation], days: u32) -> Result<String> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(Error::Validity { days });
        }
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .map_err(|_| Error::Unreachable("zero nanoseconds are in range"))?;
        let crl_number = u64::try_from(now.unix_timestamp())
            .map_err(|_| Error::Unreachable("the clock is after 1970"))?;
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let at = OffsetDateTime::from(r.revoked_at)
                    .replace_nanosecond(0)
                    .map_err(|_| Error::Unreachable("zero nanoseconds are in range"))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: at,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(i64::from(days)),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.issuer_params.key_identifier_method.clone(),
        };
        let issuer = Issuer::from_params(&self.issuer_params, self.key.pair());
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| Error::generate("certificate revocation list", e))?;
        tracing::debug!(ca = %self.subject, revoked = revoked.len(), "issued CRL");
        crl.pem()
            .map_err(|e| Error::generate("certificate revocation list", e))
    }

    /// Signs arbitrary parameters (tests use it to make deliberately bad certificates), with
    /// the byte-for-byte issuer check.
    pub(crate) fn sign(
        &self,
        params: &CertificateParams,
        key: &PrivateKey,
        what: &str,
    ) -> Result<CertificateDer<'static>> {
        let issuer = Issuer::from_params(&self.issuer_params, self.key.pair());
        let cert = params
            .signed_by(key.pair(), &issuer)
            .map_err(|e| Error::generate(format!("certificate for {what}"), e))?;
        let der = cert.der().clone();
        self.check_issuer(&der)?;
        Ok(der)
    }

    /// The last guard: the issued certificate's issuer must be the CA subject, byte for byte.
    fn check_issuer(&self, der: &[u8]) -> Result<()> {
        let (_, issued) = X509Certificate::from_der(der)
            .map_err(|_| Error::Unreachable("rcgen wrote a certificate x509-parser cannot read"))?;
        if issued.issuer().as_raw() != self.subject_raw.as_slice() {
            return Err(Error::IssuerName {
                subject: self.subject.clone(),
                reason: format!(
                    "rcgen re-encoded it as {}, which differs in its bytes",
                    issued.issuer()
                ),
            });
        }
        Ok(())
    }
}

fn is_rsa(key: &PrivateKey) -> bool {
    key.description().starts_with("RSA")
}

/// Converts a parsed name into rcgen's form, refusing what rcgen would silently change.
fn reproducible_name(name: &X509Name<'_>) -> Result<DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let refuse = |reason: String| Error::IssuerName {
        subject: name.to_string(),
        reason,
    };
    let mut dn = DistinguishedName::new();
    let mut seen: Vec<DnType> = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<_> = rdn.iter().collect();
        let [attr] = attrs.as_slice() else {
            return Err(refuse(format!(
                "it has a relative distinguished name with {} attributes (rcgen writes one per RDN)",
                attrs.len()
            )));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| refuse(format!("attribute type {} is too large", attr.attr_type())))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if seen.contains(&ty) {
            return Err(refuse(format!(
                "attribute {} appears more than once (rcgen keeps one value per type)",
                attr.attr_type()
            )));
        }
        seen.push(ty.clone());
        let data = attr.attr_value().data;
        let text = || {
            std::str::from_utf8(data)
                .map_err(|_| refuse(format!("attribute {} is not valid text", attr.attr_type())))
        };
        let bad = |e: rcgen::Error| refuse(format!("attribute {}: {e}", attr.attr_type()));
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(bad)?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec()).map_err(bad)?,
            ),
            other => {
                return Err(refuse(format!(
                    "attribute {} has string type {other}, which rcgen cannot write",
                    attr.attr_type()
                )));
            }
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// The subjectAltName for one host: an IP SAN for anything that parses as an IP address
/// (brackets allowed for IPv6), a DNS SAN for a valid DNS name (lower-cased, trailing dot
/// removed; a leading `*.` wildcard allowed).
pub(crate) fn san_for_host(host: &str) -> Result<SanType> {
    let invalid = |reason| Error::InvalidHost {
        host: host.to_owned(),
        reason,
    };
    let trimmed = host.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = normalize_dns_name(trimmed).map_err(invalid)?;
    let ia5 = name
        .as_str()
        .try_into()
        .map_err(|_| invalid("not ASCII (use the punycode form)"))?;
    Ok(SanType::DnsName(ia5))
}

/// Lower-cases, strips one trailing dot and validates a DNS name (LDH labels of 1 to 63
/// characters, 253 in all, an optional leading `*` label).
pub(crate) fn normalize_dns_name(host: &str) -> std::result::Result<String, &'static str> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    if name.contains(':') {
        return Err("not a DNS name or IP address (a port does not belong in a certificate)");
    }
    for (i, label) in name.split('.').enumerate() {
        if label == "*" && i == 0 && name.len() > 2 {
            continue;
        }
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed in a label");
        }
    }
    Ok(name)
}

fn set_validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(Error::Validity { days });
    }
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|_| Error::Unreachable("zero nanoseconds are in range"))?;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    Ok(())
}

/// A random positive 128-bit serial number (RFC 5280 allows up to 20 octets; CA/B Forum wants
/// at least 64 random bits).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::Unreachable("the system random generator failed"))?;
    // A leading 0x00 would be dropped by DER and shorten the serial; force a non-zero byte.
    if let Some(first) = bytes.first_mut() {
        *first |= 0x01;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;

    use super::*;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    fn ski(x: &X509Certificate<'_>) -> Option<Vec<u8>> {
        x.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
    }

    fn aki(x: &X509Certificate<'_>) -> Option<Vec<u8>> {
        x.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
    }

    fn assert_backdated_and_lasts(x: &X509Certificate<'_>, days: i64) {
        let now = OffsetDateTime::now_utc();
        let nb = x.validity().not_before.to_datetime();
        let na = x.validity().not_after.to_datetime();
        let back = now - nb;
        assert!(
            back >= Duration::minutes(5) && back < Duration::minutes(6),
            "backdated by {back}"
        );
        let span = na - nb;
        assert_eq!(span, Duration::days(days) + BACKDATE);
    }

    fn assert_random_serial(x: &X509Certificate<'_>) {
        let serial = x.raw_serial();
        // 16 random bytes; a leading 0x00 appears only when the top bit is set.
        let significant = serial.strip_prefix(&[0u8][..]).unwrap_or(serial);
        assert_eq!(significant.len(), 16, "serial {serial:02x?}");
    }

    #[test]
    fn serials_parse_with_or_without_colons_and_a_der_zero() {
        let at = std::time::SystemTime::UNIX_EPOCH;
        let r = Revocation::from_serial_hex("00:8a:01", at).unwrap();
        assert_eq!(r.serial, vec![0x8a, 0x01]);
        assert_eq!(Revocation::from_serial_hex("8A01", at).unwrap(), r);
        assert_eq!(
            Revocation::from_serial_hex("00", at).unwrap().serial,
            vec![0]
        );
        for bad in ["", "8a0", "zz", "8a:0g"] {
            assert!(
                matches!(
                    Revocation::from_serial_hex(bad, at),
                    Err(Error::Serial { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_organizational_unit_is_refused() {
        let ca = CertificateAuthority::generate(&CaOptions::new("OU CA")).unwrap();
        let mut opts = LeafOptions::client("c");
        opts.organizational_unit = Some(" ".to_owned());
        assert!(matches!(ca.issue(&opts), Err(Error::InvalidSubject { .. })));
    }

    #[test]
    fn ca_profile() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let mut opts = CaOptions::new("test CA");
            opts.key_type = kt;
            opts.organization = Some("vch".into());
            let ca = CertificateAuthority::generate(&opts).unwrap();
            let x = parse(ca.cert_der());
            let bc = x.basic_constraints().unwrap().unwrap();
            assert!(bc.critical);
            assert!(bc.value.ca);
            assert_eq!(bc.value.path_len_constraint, Some(0));
            let ku = x.key_usage().unwrap().unwrap().value;
            assert!(ku.key_cert_sign() && ku.crl_sign());
            assert!(!ku.digital_signature() && !ku.key_encipherment());
            assert!(x.extended_key_usage().unwrap().is_none(), "a CA has no EKU");
            assert!(ski(&x).is_some());
            assert_eq!(x.subject().as_raw(), x.issuer().as_raw());
            assert_eq!(x.subject().to_string(), "O=vch, CN=test CA");
            assert_random_serial(&x);
            assert_backdated_and_lasts(&x, i64::from(DEFAULT_CA_DAYS));
            x.verify_signature(None).unwrap();
        }
    }

    #[test]
    fn server_profile_ecdsa_and_rsa() {
        let ca = CertificateAuthority::generate(&CaOptions::new("CA")).unwrap();
        let ca_x = parse(ca.cert_der());
        for (kt, encipher) in [(KeyType::EcdsaP256, false), (KeyType::Rsa2048, true)] {
            let mut opts =
                LeafOptions::server(["VCH.Example.com.", "10.0.0.1", "[::1]", "*.corp.example"]);
            opts.key_type = kt;
            opts.days = 90;
            let leaf = ca.issue(&opts).unwrap();
            let x = parse(leaf.cert_der());
            assert_eq!(x.issuer().as_raw(), ca_x.subject().as_raw());
            x.verify_signature(Some(ca_x.public_key())).unwrap();
            let eku = x.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && !eku.client_auth && !eku.any);
            assert!(eku.other.is_empty());
            let ku = x.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature());
            assert_eq!(ku.key_encipherment(), encipher, "{kt}");
            assert!(!ku.key_cert_sign());
            let bc = x.basic_constraints().unwrap().unwrap();
            assert!(!bc.value.ca);
            let sans = &x
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names;
            assert_eq!(
                sans,
                &vec![
                    GeneralName::DNSName("vch.example.com"),
                    GeneralName::IPAddress(&[10, 0, 0, 1]),
                    GeneralName::IPAddress(&std::net::Ipv6Addr::LOCALHOST.octets()),
                    GeneralName::DNSName("*.corp.example"),
                ]
            );
            assert!(ski(&x).is_some());
            assert_eq!(aki(&x), ski(&ca_x), "AKI names the CA's SKI");
            assert_random_serial(&x);
            assert_backdated_and_lasts(&x, 90);
            assert_eq!(
                leaf.key().description(),
                if encipher { "RSA 2048" } else { "ECDSA P-256" }
            );
        }
    }

    #[test]
    fn client_profile() {
        let ca = CertificateAuthority::generate(&CaOptions::new("CA")).unwrap();
        let leaf = ca.issue(&LeafOptions::client("docker-client")).unwrap();
        let x = parse(leaf.cert_der());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        let sans = &x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans, &vec![GeneralName::DNSName("docker-client")]);
        assert_eq!(x.subject().to_string(), "CN=docker-client");
        assert!(aki(&x).is_some());
        assert_backdated_and_lasts(&x, i64::from(DEFAULT_LEAF_DAYS));
    }

    #[test]
    fn serials_differ() {
        let ca = CertificateAuthority::generate(&CaOptions::new("CA")).unwrap();
        let a = ca.issue(&LeafOptions::client("a")).unwrap();
        let b = ca.issue(&LeafOptions::client("a")).unwrap();
        assert_ne!(
            parse(a.cert_der()).raw_serial(),
            parse(b.cert_der()).raw_serial()
        );
    }

    #[test]
    fn loaded_ca_issues_with_same_issuer_and_aki() {
        let ca = CertificateAuthority::generate(&CaOptions::new("Round Trip CA")).unwrap();
        let loaded = CertificateAuthority::from_pem(&ca.cert_pem(), ca.key().to_pem()).unwrap();
        let leaf = loaded.issue(&LeafOptions::server(["localhost"])).unwrap();
        let x = parse(leaf.cert_der());
        let ca_x = parse(ca.cert_der());
        assert_eq!(x.issuer().as_raw(), ca_x.subject().as_raw());
        assert_eq!(aki(&x), ski(&ca_x));
        x.verify_signature(Some(ca_x.public_key())).unwrap();
    }

    #[test]
    fn leaf_or_wrong_key_cannot_be_a_ca() {
        let ca = CertificateAuthority::generate(&CaOptions::new("CA")).unwrap();
        let leaf = ca.issue(&LeafOptions::server(["localhost"])).unwrap();
        let err =
            CertificateAuthority::from_pem(&leaf.cert_pem(), leaf.key().to_pem()).unwrap_err();
        assert!(matches!(err, Error::NotACa { .. }), "{err}");
        let other = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let err =
            CertificateAuthority::from_pem_named(&ca.cert_pem(), "ca.pem", other.to_pem(), "k.pem")
                .unwrap_err();
        assert!(
            matches!(&err, Error::KeyMismatch { certificate, key } if certificate == "ca.pem" && key == "k.pem"),
            "{err}"
        );
    }

    #[test]
    fn bad_options_are_refused() {
        let ca = CertificateAuthority::generate(&CaOptions::new("CA")).unwrap();
        let none: [&str; 0] = [];
        assert!(matches!(
            ca.issue(&LeafOptions::server(none)),
            Err(Error::NoHosts)
        ));
        for bad in [
            "",
            "host:2376",
            "-bad.example",
            "a..b",
            "sp ace",
            "*",
            "a.*.b",
        ] {
            assert!(
                matches!(
                    ca.issue(&LeafOptions::server([bad])),
                    Err(Error::InvalidHost { .. })
                ),
                "{bad:?} accepted"
            );
        }
        let mut opts = LeafOptions::server(["localhost"]);
        opts.days = 0;
        assert!(matches!(ca.issue(&opts), Err(Error::Validity { days: 0 })));
        let mut ca_opts = CaOptions::new("x");
        ca_opts.days = 40_000;
        assert!(matches!(
            CertificateAuthority::generate(&ca_opts),
            Err(Error::Validity { days: 40_000 })
        ));
    }

    #[test]
    fn simple_names_are_reproduced() {
        // Names rcgen cannot reproduce (repeated types, multi-valued RDNs) are tested with
        // openssl-made CAs in tests/it/openssl.rs.
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "x");
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let der = params.self_signed(key.pair()).unwrap();
        let x = parse(der.der());
        // A name that is fine round-trips.
        let dn = reproducible_name(x.subject()).unwrap();
        assert_eq!(
            dn.get(&DnType::CommonName),
            Some(&DnValue::Utf8String("x".into()))
        );
    }
}
