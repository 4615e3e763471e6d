//! TLS: a registry with a certificate from our PKI, trusted via a CA file and via Docker's
//! certs.d layout; untrusted without; Docker's insecure mode; plain-HTTP fallback.

use vch_registry::{Client, Error, HostSettings, PlainHttp};

use crate::support::{Pki, plain_registry, runtime, tls_registry};

#[test]
fn tls_with_cacert_and_certs_d_and_refusal_without() {
    let pki = Pki::new();
    let reg = tls_registry(&pki);
    let rt = runtime();

    // --cacert.
    let s = HostSettings::builder(reg.addr())
        .ca_file(pki.ca_path())
        .build()
        .unwrap();
    let c = Client::builder(reg.addr()).settings(s).build().unwrap();
    let ping = rt.block_on(c.ping()).unwrap();
    assert_eq!((ping.scheme, ping.status), ("https", 200));

    // certs.d/<host:port>/ca.crt.
    let certs_d = tempfile::tempdir().unwrap();
    let host_dir = certs_d.path().join(reg.addr());
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::copy(pki.ca_path(), host_dir.join("ca.crt")).unwrap();
    let s = HostSettings::builder(reg.addr())
        .certs_d(certs_d.path())
        .build()
        .unwrap();
    let c = Client::builder(reg.addr()).settings(s).build().unwrap();
    assert_eq!(rt.block_on(c.ping()).unwrap().status, 200);

    // System roots only: refused, and the error says what to do.
    let c = Client::builder(reg.addr()).build().unwrap();
    let err = rt.block_on(c.ping()).unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&reg.addr()) && text.contains("--cacert") && text.contains("certs.d"),
        "{text}"
    );

    // Docker's insecure registry: verification off, still https.
    let s = HostSettings::builder(reg.addr())
        .dangerous()
        .insecure()
        .build()
        .unwrap();
    let c = Client::builder(reg.addr()).settings(s).build().unwrap();
    assert_eq!(rt.block_on(c.ping()).unwrap().scheme, "https");
}

#[test]
fn plain_http_only_when_allowed() {
    let reg = plain_registry();
    let rt = runtime();
    // Secure settings against a plain registry: refused with a hint.
    let c = Client::builder(reg.addr()).build().unwrap();
    let err = rt.block_on(c.ping()).unwrap_err();
    assert!(matches!(err, Error::PlainHttpRefused { .. }), "{err}");
    // Fallback: https first, then http.
    let s = HostSettings::builder(reg.addr())
        .dangerous()
        .plain_http(PlainHttp::Fallback)
        .build()
        .unwrap();
    let c = Client::builder(reg.addr()).settings(s).build().unwrap();
    assert_eq!(rt.block_on(c.ping()).unwrap().scheme, "http");
}

#[test]
fn client_certificate_from_certs_d_is_loaded() {
    // A .cert with its .key in certs.d becomes the client identity; a mismatched pair is
    // refused at build time naming the files.
    let pki = Pki::new();
    let client = pki
        .ca
        .issue(&vch_pki::LeafOptions::client("regctl"))
        .unwrap();
    let other = pki
        .ca
        .issue(&vch_pki::LeafOptions::client("other"))
        .unwrap();
    let certs_d = tempfile::tempdir().unwrap();
    let dir = certs_d.path().join("reg.example:5000");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(pki.ca_path(), dir.join("ca.crt")).unwrap();
    std::fs::write(dir.join("client.cert"), client.cert_pem()).unwrap();
    std::fs::write(dir.join("client.key"), client.key().to_pem()).unwrap();
    HostSettings::builder("reg.example:5000")
        .certs_d(certs_d.path())
        .build()
        .unwrap();
    std::fs::write(dir.join("client.key"), other.key().to_pem()).unwrap();
    let err = HostSettings::builder("reg.example:5000")
        .certs_d(certs_d.path())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("client.cert"), "{err}");
}
