//! Seeds for the `pem_inspect` fuzz target, replayed through its checks.
//!
//! `VCH_WRITE_SEEDS=1 cargo test -p vch-pki --test it fuzz_seeds` (re)writes
//! `fuzz/seeds/pem_inspect/`; every run replays the files there (so a minimised crash saved
//! there becomes a regression test) and freshly generated seeds with their mutations.

use std::path::PathBuf;

use vch_pki::{CaOptions, CertificateAuthority, KeyType, LeafOptions};

use super::pem_check::check;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/pem_inspect")
}

fn generated() -> Vec<(String, Vec<u8>)> {
    let mut ca_opts = CaOptions::new("Seed CA");
    ca_opts.organization = Some("vch".into());
    let ca = CertificateAuthority::generate(&ca_opts).unwrap();
    let server = ca
        .issue(&LeafOptions::server([
            "localhost",
            "127.0.0.1",
            "*.example.com",
        ]))
        .unwrap();
    let mut rsa = LeafOptions::client("rsa-client");
    rsa.key_type = KeyType::Rsa2048;
    let client = ca.issue(&rsa).unwrap();
    let chain = format!("{}{}", server.cert_pem(), ca.cert_pem());
    let der = server.cert_der().as_ref().to_vec();
    let mut seeds = vec![
        ("ca.pem".to_owned(), ca.cert_pem().into_bytes()),
        ("server-chain.pem".to_owned(), chain.clone().into_bytes()),
        ("client-rsa.pem".to_owned(), client.cert_pem().into_bytes()),
        (
            "key-pkcs8.pem".to_owned(),
            server.key().to_pem().as_bytes().to_vec(),
        ),
        (
            "cert-and-key.pem".to_owned(),
            format!("{}{}", server.cert_pem(), server.key().to_pem()).into_bytes(),
        ),
        ("server.der".to_owned(), der.clone()),
        ("truncated.der".to_owned(), der[..der.len() / 2].to_vec()),
        (
            "bad-base64.pem".to_owned(),
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        (
            "no-end.pem".to_owned(),
            b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec(),
        ),
        (
            "encrypted.pem".to_owned(),
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .to_vec(),
        ),
    ];
    // Single-byte mutations of a real certificate: each inside the DER, then re-armoured.
    for (i, pos) in [4usize, 20, 60, 150, der.len() - 10]
        .into_iter()
        .enumerate()
    {
        let mut m = der.clone();
        m[pos] ^= 0x5a;
        seeds.push((format!("mutated-{i}.der"), m.clone()));
        seeds.push((
            format!("mutated-{i}.pem"),
            vch_pki::der_to_pem(&m).into_bytes(),
        ));
    }
    seeds
}

#[test]
fn fuzz_seeds_replay_through_the_target_checks() {
    let seeds = generated();
    let dir = seed_dir();
    if std::env::var_os("VCH_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        eprintln!("seed {name}");
        check(bytes);
    }
    let mut replayed = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} files from {}", dir.display());
}
