//! Private keys: generation, loading (PKCS#1, PKCS#8, SEC1) and description.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, RsaKeySize};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

/// The key types this crate generates. ECDSA P-256 is the default: small, fast, and accepted by
/// every Docker and registry client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on NIST P-256, signing with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    EcdsaP384,
    /// RSA 2048-bit, PKCS#1 v1.5 signatures with SHA-256.
    Rsa2048,
    /// RSA 3072-bit, PKCS#1 v1.5 signatures with SHA-256.
    Rsa3072,
    /// RSA 4096-bit, PKCS#1 v1.5 signatures with SHA-256.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order of the `--key-type` documentation.
    pub const ALL: [KeyType; 5] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The canonical name (`ecdsa-p256`, `rsa-2048`, …), accepted back by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// Whether this is an RSA key type (server certificates then also get keyEncipherment).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = Error;

    /// Accepts the canonical names plus the common short forms `p256`, `p384`, `ecdsa`, `rsa`
    /// (2048), `rsa2048`, `rsa3072`, `rsa4096`, case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "ecdsa-p256" | "p256" | "p-256" | "ecdsa" | "ec" | "ecdsa-p-256" => KeyType::EcdsaP256,
            "ecdsa-p384" | "p384" | "p-384" | "ecdsa-p-384" => KeyType::EcdsaP384,
            "rsa-2048" | "rsa2048" | "rsa" => KeyType::Rsa2048,
            "rsa-3072" | "rsa3072" => KeyType::Rsa3072,
            "rsa-4096" | "rsa4096" => KeyType::Rsa4096,
            _ => {
                return Err(Error::UnknownKeyType { name: s.to_owned() });
            }
        })
    }
}

/// A private key with its signing algorithm.
///
/// Keys generated here serialise as PKCS#8 (`PRIVATE KEY`); keys loaded from PEM keep the exact
/// text they were loaded from, so copying a vic-machine or openssl key does not change its form.
pub struct PrivateKey {
    pair: KeyPair,
    pem: String,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.description())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a fresh key of the given type.
    pub fn generate(key_type: KeyType) -> Result<Self> {
        let what = || format!("{key_type} key");
        let pair = match key_type {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyType::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
        }
        .map_err(|e| Error::generate(what(), e))?;
        let pem = pair.serialize_pem();
        Ok(Self { pair, pem })
    }

    /// Loads the first private key in `pem`: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE
    /// KEY`) or SEC1 (`EC PRIVATE KEY`), as written by openssl, docker-machine and vic-machine.
    ///
    /// `source_name` names the input in errors. Encrypted keys (PKCS#8 `ENCRYPTED PRIVATE KEY`
    /// or the legacy `Proc-Type: 4,ENCRYPTED` header) are refused with [`Error::EncryptedKey`].
    pub fn from_pem(pem: &str, source_name: &str) -> Result<Self> {
        if is_encrypted_key_pem(pem.as_bytes()) {
            return Err(Error::EncryptedKey {
                source_name: source_name.to_owned(),
            });
        }
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => Error::NoKey {
                source_name: source_name.to_owned(),
            },
            other => Error::Pem {
                source_name: source_name.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let pair = KeyPair::try_from(&der).map_err(|e| Error::Key {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            pair,
            pem: pem.to_owned(),
        })
    }

    /// The key as PEM: PKCS#8 for generated keys, the original text for loaded ones.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// The DER `SubjectPublicKeyInfo` of the public half.
    pub fn public_key_info_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// A human description of the key, such as `ECDSA P-256` or `RSA 2048`.
    pub fn description(&self) -> String {
        describe_spki(&self.public_key_info_der())
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

/// Whether `pem` holds an encrypted private key in either PKCS#8 or legacy openssl form.
pub(crate) fn is_encrypted_key_pem(pem: &[u8]) -> bool {
    contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(pem, b"Proc-Type: 4,ENCRYPTED")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Describes a DER `SubjectPublicKeyInfo` as `ECDSA P-256`, `RSA 2048`, `Ed25519`, …
pub(crate) fn describe_spki(spki_der: &[u8]) -> String {
    match SubjectPublicKeyInfo::from_der(spki_der) {
        Ok((_, spki)) => describe_parsed_spki(&spki),
        Err(_) => "unparseable public key".to_owned(),
    }
}

/// Describes a parsed `SubjectPublicKeyInfo`.
pub(crate) fn describe_parsed_spki(spki: &SubjectPublicKeyInfo<'_>) -> String {
    use x509_parser::oid_registry as oids;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_SIG_ED25519 {
        return "Ed25519".to_owned();
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == oids::OID_EC_P256 => "ECDSA P-256".to_owned(),
                Some(c) if c == oids::OID_NIST_EC_P384 => "ECDSA P-384".to_owned(),
                Some(c) if c == oids::OID_NIST_EC_P521 => "ECDSA P-521".to_owned(),
                Some(c) => format!("ECDSA curve {c}"),
                None => format!("ECDSA ({} bits)", point.key_size()),
            }
        }
        Ok(PublicKey::DSA(_)) => "DSA".to_owned(),
        Ok(_) | Err(_) => format!("unknown key algorithm {alg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for kt in KeyType::ALL {
            assert_eq!(kt.name().parse::<KeyType>().unwrap(), kt);
        }
        assert_eq!("RSA".parse::<KeyType>().unwrap(), KeyType::Rsa2048);
        assert!(matches!(
            "dsa".parse::<KeyType>(),
            Err(Error::UnknownKeyType { name }) if name == "dsa"
        ));
    }

    #[test]
    fn generated_keys_describe_themselves() {
        let expect = [
            (KeyType::EcdsaP256, "ECDSA P-256"),
            (KeyType::EcdsaP384, "ECDSA P-384"),
            (KeyType::Rsa2048, "RSA 2048"),
            (KeyType::Rsa3072, "RSA 3072"),
            (KeyType::Rsa4096, "RSA 4096"),
        ];
        for (kt, want) in expect {
            let key = PrivateKey::generate(kt).unwrap();
            assert_eq!(key.description(), want);
            // The PEM form loads back to the same public key.
            let again = PrivateKey::from_pem(key.to_pem(), "test").unwrap();
            assert_eq!(again.public_key_info_der(), key.public_key_info_der());
        }
    }

    #[test]
    fn encrypted_keys_are_refused() {
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(pkcs8, "k.pem"),
            Err(Error::EncryptedKey { source_name }) if source_name == "k.pem"
        ));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(legacy, "k.pem"),
            Err(Error::EncryptedKey { .. })
        ));
    }

    #[test]
    fn missing_and_garbage_keys_are_errors() {
        assert!(matches!(
            PrivateKey::from_pem("nothing here", "x"),
            Err(Error::NoKey { .. })
        ));
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(junk, "x"),
            Err(Error::Key { .. })
        ));
    }
}
