//! openssl-made CAs and keys load and issue; openssl and our chain checks agree; openssl-made
//! certificates trigger the lints they should.

use std::path::Path;
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use vch_pki::{
    CaOptions, CertificateAuthority, CertificateDer, Error, InspectOptions, LeafOptions, LintCode,
    PrivateKey, der_to_pem, inspect_pem, verify_chain,
};
use x509_parser::prelude::{FromDer, X509Certificate};

pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

/// A self-signed CA made by `openssl req -x509` with `key_args` generating the key file.
fn openssl_ca(dir: &Path, key_cmd: &[&str], subj: &str, extra: &[&str]) -> (String, String) {
    openssl(dir, key_cmd);
    let mut args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        "ca-key.pem",
        "-sha256",
        "-days",
        "30",
        "-subj",
        subj,
        "-out",
        "ca.pem",
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
    (read(dir, "ca.pem"), read(dir, "ca-key.pem"))
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn first_der(pem: &str) -> CertificateDer<'static> {
    vch_pki::certificates_from_pem(pem.as_bytes(), "t")
        .unwrap()
        .remove(0)
}

fn ski(x: &X509Certificate<'_>) -> Option<Vec<u8>> {
    x.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn aki(x: &X509Certificate<'_>) -> Option<Vec<u8>> {
    x.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

fn openssl_verify(
    dir: &Path,
    roots: &[&CertificateDer<'_>],
    chain: &[&CertificateDer<'_>],
) -> bool {
    let roots_pem: String = roots.iter().map(|c| der_to_pem(c)).collect();
    std::fs::write(dir.join("v-roots.pem"), roots_pem).unwrap();
    std::fs::write(dir.join("v-leaf.pem"), der_to_pem(chain[0])).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir)
        .args(["verify", "-CAfile", "v-roots.pem"]);
    if chain.len() > 1 {
        let inter: String = chain[1..].iter().map(|c| der_to_pem(c)).collect();
        std::fs::write(dir.join("v-inter.pem"), inter).unwrap();
        cmd.args(["-untrusted", "v-inter.pem"]);
    }
    cmd.arg("v-leaf.pem").output().unwrap().status.success()
}

#[test]
fn pkcs1_openssl_ca_issues_with_byte_identical_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca_pem, key_pem) = openssl_ca(
        dir,
        &["genrsa", "-traditional", "-out", "ca-key.pem", "2048"],
        "/C=US/ST=California/L=Palo Alto/O=Example, Inc./OU=Platform/CN=Example Root CA",
        &[],
    );
    assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let ca_der = first_der(&ca_pem);
    let ca_x = parse(&ca_der);
    // The subject really mixes string types (C is a PrintableString, the rest UTF8String), so
    // a re-encoding that normalised them would be caught.
    let tags: Vec<_> = ca_x
        .subject()
        .iter_attributes()
        .map(|a| a.attr_value().header.tag())
        .collect();
    assert!(
        tags.contains(&x509_parser::der_parser::asn1_rs::Tag::PrintableString),
        "{tags:?}"
    );
    assert!(
        tags.contains(&x509_parser::der_parser::asn1_rs::Tag::Utf8String),
        "{tags:?}"
    );

    let ca = CertificateAuthority::from_pem(&ca_pem, &key_pem).unwrap();
    for leaf in [
        ca.issue(&LeafOptions::server(["vch.example", "192.0.2.1"]))
            .unwrap(),
        ca.issue(&LeafOptions::client("admin")).unwrap(),
    ] {
        let x = parse(leaf.cert_der());
        assert_eq!(
            x.issuer().as_raw(),
            ca_x.subject().as_raw(),
            "issuer bytes differ"
        );
        assert_eq!(aki(&x), ski(&ca_x), "AKI must be the openssl CA's SKI");
        assert!(openssl_verify(dir, &[&ca_der], &[leaf.cert_der()]));
    }
}

#[test]
fn pkcs8_and_sec1_keys_load_and_issue() {
    let cases: &[&[&str]] = &[
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca-key.pem",
        ],
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "ca-key.pem",
        ],
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "ca-key.pem",
        ],
    ];
    let labels = ["EC PRIVATE KEY", "PRIVATE KEY", "PRIVATE KEY"];
    for (cmd, label) in cases.iter().zip(labels) {
        let tmp = tempfile::tempdir().unwrap();
        let (ca_pem, key_pem) = openssl_ca(tmp.path(), cmd, "/O=Test/CN=Key Form CA", &[]);
        assert!(
            key_pem.starts_with(&format!("-----BEGIN {label}-----")),
            "{key_pem}"
        );
        let ca = CertificateAuthority::from_pem(&ca_pem, &key_pem).unwrap();
        let leaf = ca.issue(&LeafOptions::server(["localhost"])).unwrap();
        let ca_der = first_der(&ca_pem);
        assert!(
            openssl_verify(tmp.path(), &[&ca_der], &[leaf.cert_der()]),
            "{cmd:?}"
        );
        // A loaded key keeps its exact form.
        assert_eq!(ca.key().to_pem(), key_pem);
    }
}

#[test]
fn names_rcgen_cannot_reproduce_are_refused_not_reencoded() {
    for (subj, extra) in [
        ("/DC=com/DC=example/CN=AD Root", &[][..]),
        ("/O=Org/OU=a/OU=b/CN=Two OUs", &[][..]),
        ("/CN=Multi+O=Valued", &["-multivalue-rdn"][..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (ca_pem, key_pem) = openssl_ca(
            tmp.path(),
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca-key.pem",
            ],
            subj,
            extra,
        );
        let err = CertificateAuthority::from_pem(&ca_pem, &key_pem).unwrap_err();
        assert!(matches!(err, Error::IssuerName { .. }), "{subj}: {err}");
        assert!(err.to_string().contains("none was issued"), "{err}");
    }
}

#[test]
fn encrypted_keys_are_refused_and_linted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    openssl(
        dir,
        &[
            "genrsa",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            "pkcs8.pem",
            "2048",
        ],
    );
    openssl(
        dir,
        &[
            "genrsa",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            "legacy.pem",
            "2048",
        ],
    );
    assert!(read(dir, "pkcs8.pem").contains("ENCRYPTED PRIVATE KEY"));
    assert!(read(dir, "legacy.pem").contains("Proc-Type: 4,ENCRYPTED"));
    let ca = CertificateAuthority::generate(&CaOptions::new("CA")).unwrap();
    let leaf = ca.issue(&LeafOptions::server(["localhost"])).unwrap();
    for f in ["pkcs8.pem", "legacy.pem"] {
        let key = read(dir, f);
        assert!(
            matches!(
                PrivateKey::from_pem(&key, f),
                Err(Error::EncryptedKey { .. })
            ),
            "{f}"
        );
        let opts = InspectOptions {
            key_pem: Some(key.as_bytes()),
            ..InspectOptions::default()
        };
        let report = inspect_pem(leaf.cert_pem().as_bytes(), "t", &opts).unwrap();
        let codes: Vec<_> = report.lints.iter().map(|l| l.code).collect();
        assert_eq!(codes, [LintCode::EncryptedKey], "{f}");
        assert!(report.lints[0].fix.contains("openssl pkey"));
    }
}

#[test]
fn openssl_made_certificates_trigger_their_lints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A CA carrying an EKU.
    let (ca_pem, _) = openssl_ca(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca-key.pem",
        ],
        "/CN=EKU CA",
        &["-addext", "extendedKeyUsage=serverAuth", "-days", "400"],
    );
    let codes = |pem: &str, host: Option<&str>| -> Vec<LintCode> {
        let opts = InspectOptions {
            host,
            ..InspectOptions::default()
        };
        inspect_pem(pem.as_bytes(), "t", &opts)
            .unwrap()
            .lints
            .iter()
            .map(|l| l.code)
            .collect()
    };
    assert_eq!(codes(&ca_pem, None), [LintCode::CaWithEku]);
    // A v1 leaf (openssl x509 -req without extensions): CN only, no AKI, 30 days.
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf-key.pem",
            "-subj",
            "/CN=legacy.example",
            "-out",
            "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-days",
            "20",
            "-out",
            "leaf.pem",
        ],
    );
    let leaf = read(dir, "leaf.pem");
    assert_eq!(
        codes(&leaf, Some("legacy.example")),
        [
            LintCode::ExpiringSoon,
            LintCode::CnOnly,
            LintCode::LeafMissingAki,
            LintCode::NoSanForHost
        ]
    );
}

/// Builds certificates with rcgen directly, so each case can break one rule.
struct Maker {
    key: KeyPair,
    params: CertificateParams,
    der: CertificateDer<'static>,
}

impl Maker {
    fn params(cn: &str, ca: Option<Option<u8>>, days_from: i64, days_to: i64) -> CertificateParams {
        let mut p = CertificateParams::new(vec!["leaf.example".to_owned()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        let now = OffsetDateTime::now_utc();
        p.not_before = now + Duration::days(days_from);
        p.not_after = now + Duration::days(days_to);
        p.use_authority_key_identifier_extension = true;
        match ca {
            Some(path_len) => {
                p.subject_alt_names.clear();
                p.is_ca = IsCa::Ca(match path_len {
                    Some(n) => BasicConstraints::Constrained(n),
                    None => BasicConstraints::Unconstrained,
                });
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            }
            None => {
                p.is_ca = IsCa::ExplicitNoCa;
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
        }
        p
    }

    fn root(params: CertificateParams) -> Self {
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        Self { key, params, der }
    }

    fn child(&self, params: CertificateParams) -> Self {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().clone();
        Self { key, params, der }
    }
}

#[test]
fn chain_verification_agrees_with_openssl_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = Maker::root(Maker::params("Root", Some(None), -1, 100));
    let other_root = Maker::root(Maker::params("Root", Some(None), -1, 100));
    let root_pl0 = Maker::root(Maker::params("Root PL0", Some(Some(0)), -1, 100));
    let expired_root = Maker::root(Maker::params("Old Root", Some(None), -100, -1));
    let mut no_certsign = Maker::params("No CertSign", Some(None), -1, 100);
    no_certsign.key_usages = vec![KeyUsagePurpose::CrlSign];
    let no_certsign = Maker::root(no_certsign);

    let leaf = root.child(Maker::params("leaf", None, -1, 50));
    let expired = root.child(Maker::params("expired", None, -10, -1));
    let future = root.child(Maker::params("future", None, 1, 10));
    let inter = root.child(Maker::params("Inter", Some(Some(0)), -1, 80));
    let inter_leaf = inter.child(Maker::params("inter leaf", None, -1, 50));
    let inter_pl0 = root_pl0.child(Maker::params("Inter PL0", Some(None), -1, 80));
    let inter_pl0_leaf = inter_pl0.child(Maker::params("too deep", None, -1, 50));
    let leaf_as_issuer = leaf.child(Maker::params("signed by a leaf", None, -1, 50));
    let from_no_certsign = no_certsign.child(Maker::params("from no certsign", None, -1, 50));
    let from_expired_root = expired_root.child(Maker::params("from old root", None, -1, 50));

    let cases: Vec<(
        &str,
        Vec<&CertificateDer<'_>>,
        Vec<&CertificateDer<'_>>,
        bool,
    )> = vec![
        ("valid leaf", vec![&root.der], vec![&leaf.der], true),
        ("the root itself", vec![&root.der], vec![&root.der], true),
        (
            "same name, other key",
            vec![&other_root.der],
            vec![&leaf.der],
            false,
        ),
        ("expired leaf", vec![&root.der], vec![&expired.der], false),
        (
            "not yet valid leaf",
            vec![&root.der],
            vec![&future.der],
            false,
        ),
        (
            "via intermediate",
            vec![&root.der],
            vec![&inter_leaf.der, &inter.der],
            true,
        ),
        (
            "intermediate missing",
            vec![&root.der],
            vec![&inter_leaf.der],
            false,
        ),
        (
            "path length exceeded",
            vec![&root_pl0.der],
            vec![&inter_pl0_leaf.der, &inter_pl0.der],
            false,
        ),
        (
            "issuer is not a CA",
            vec![&root.der],
            vec![&leaf_as_issuer.der, &leaf.der],
            false,
        ),
        (
            "CA without keyCertSign",
            vec![&no_certsign.der],
            vec![&from_no_certsign.der],
            false,
        ),
        (
            "expired root",
            vec![&expired_root.der],
            vec![&from_expired_root.der],
            false,
        ),
        (
            "two roots, right one second",
            vec![&other_root.der, &root.der],
            vec![&leaf.der],
            true,
        ),
    ];
    let now = OffsetDateTime::now_utc();
    for (name, roots, chain, want) in cases {
        let roots_owned: Vec<CertificateDer<'static>> =
            roots.iter().map(|c| (*c).clone()).collect();
        let chain_owned: Vec<CertificateDer<'static>> =
            chain.iter().map(|c| (*c).clone()).collect();
        let ours = verify_chain(&chain_owned, &roots_owned, now);
        let theirs = openssl_verify(dir, &roots, &chain);
        assert_eq!(theirs, want, "{name}: openssl verify said {theirs}");
        assert_eq!(ours.is_ok(), want, "{name}: ours said {ours:?}");
    }
}
