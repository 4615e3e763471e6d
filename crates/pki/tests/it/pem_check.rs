//! The checks of the `pem_inspect` fuzz target (`fuzz/fuzz_targets/pem_inspect.rs` includes
//! this file), shared with the seed replay in `fuzz_seeds.rs`.

use vch_pki::{InspectOptions, Severity, certificates_from_pem, der_to_pem, inspect_pem};

/// Feeds `data` to the inspection path as PEM (also as the private key), then as DER wrapped in
/// PEM. Never panics on any input; what parses keeps its invariants and round-trips.
pub(crate) fn check(data: &[u8]) {
    let opts = InspectOptions {
        host: Some("localhost"),
        key_pem: Some(data),
        ..InspectOptions::default()
    };
    if let Ok(report) = inspect_pem(data, "fuzz", &opts) {
        assert!(!report.certificates.is_empty());
        for cert in &report.certificates {
            assert_eq!(cert.sha256.len(), 32 * 3 - 1);
            assert_eq!(cert.sha1.len(), 20 * 3 - 1);
        }
        let any_error = report.lints.iter().any(|l| l.severity == Severity::Error);
        assert_eq!(report.has_errors(), any_error);
    }
    if data.is_empty() {
        return;
    }
    let pem = der_to_pem(data);
    match certificates_from_pem(pem.as_bytes(), "fuzz") {
        Ok(certs) => {
            assert_eq!(certs.len(), 1);
            assert_eq!(certs[0].as_ref(), data, "PEM round trip changed the bytes");
        }
        Err(e) => panic!("our own PEM of {} bytes does not parse: {e}", data.len()),
    }
    if let Ok(report) = inspect_pem(pem.as_bytes(), "fuzz", &InspectOptions::default()) {
        assert_eq!(report.certificates.len(), 1);
    }
}
