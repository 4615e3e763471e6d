//! PEM in and out, through rustls-pki-types (rustls-pemfile is unmaintained, RUSTSEC-2025-0134).

use std::fmt::Write as _;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// Every `CERTIFICATE` section of `pem`, in order. Other sections are skipped.
///
/// Errors on malformed PEM and when there is no certificate at all.
pub fn certificates_from_pem(
    pem: &[u8],
    source_name: &str,
) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            source_name: source_name.to_owned(),
        });
    }
    Ok(certs)
}

/// Encodes one DER certificate as PEM with 64-column lines, as openssl writes it.
pub fn der_to_pem(der: &[u8]) -> String {
    encode_pem("CERTIFICATE", der)
}

pub(crate) fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    let _ = writeln!(out, "-----BEGIN {label}-----");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let idx = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_the_parser() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = der_to_pem(&der);
            if len == 0 {
                continue;
            }
            let back = certificates_from_pem(pem.as_bytes(), "t").unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].as_ref(), der.as_slice());
            assert!(pem.lines().all(|l| l.len() <= 64));
        }
    }

    #[test]
    fn no_certificate_is_an_error() {
        assert!(matches!(
            certificates_from_pem(b"hello", "f.pem"),
            Err(Error::NoCertificate { source_name }) if source_name == "f.pem"
        ));
        assert!(matches!(
            certificates_from_pem(
                b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "f"
            ),
            Err(Error::Pem { .. })
        ));
    }
}
