//! `vch-admin inspect`: text and JSON reports, exit codes on lint errors, and the live
//! `--connect` check against a real dockerd.

use std::path::Path;

use super::create::{create, inspect_json, openssl, run, run_ok, tls_dockerd};
use super::update::{deployed, update};

fn lint_codes(json: &serde_json::Value) -> Vec<String> {
    json["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["lints"].as_array().unwrap().iter())
        .map(|l| l["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_fresh_vch_inspects_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(
        tmp.path(),
        "clean",
        &["--no-registry-probe", "--wr", "registry.example.com"],
    );
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["errors"], false);
    assert_eq!(json["host"], "127.0.0.1");
    assert_eq!(json["config"]["tls"]["mode"], "tlsverify");
    assert_eq!(
        json["config"]["registry"]["whitelist"][0],
        "registry.example.com"
    );
    let roles: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["ca", "server", "client"]);
    assert!(lint_codes(&json).is_empty(), "{json:#}");
    for f in json["files"].as_array().unwrap() {
        assert_eq!(f["chain"]["trusted"], true, "{f:#}");
    }

    // The fingerprints are openssl's.
    let server = &json["files"][1]["certificates"][0];
    let sha256 = openssl(
        &dir,
        &[
            "x509",
            "-in",
            "server-cert.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert_eq!(
        sha256.trim(),
        format!("sha256 Fingerprint={}", server["sha256"].as_str().unwrap())
    );
    let sha1 = openssl(
        &dir,
        &[
            "x509",
            "-in",
            "server-cert.pem",
            "-noout",
            "-fingerprint",
            "-sha1",
        ],
    );
    assert_eq!(
        sha1.trim(),
        format!("sha1 Fingerprint={}", server["sha1"].as_str().unwrap())
    );

    let text = run_ok(&["inspect", dir.to_str().unwrap()]);
    for want in [
        "VCH clean",
        "tls mode:    tlsverify",
        "SHA-1:",
        "chain:       trusted",
        "result: ok",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[test]
fn a_mismatched_key_is_an_error_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "mm", &[]);
    std::fs::copy(dir.join("key.pem"), dir.join("server-key.pem")).unwrap();
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 1);
    assert_eq!(json["errors"], true);
    assert_eq!(lint_codes(&json), ["key-mismatch"]);
    let text = String::from_utf8(run(&["inspect", dir.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("error[key-mismatch]"), "{text}");
    assert!(text.contains("fix: pair the certificate"), "{text}");
}

#[test]
fn a_host_missing_from_the_sans_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "san", &["--tls-cname", "vch.example"]);
    let (code, _) = inspect_json(&dir, &[]);
    assert_eq!(code, 0);
    let (code, json) = inspect_json(&dir, &["--host", "elsewhere.example"]);
    assert_eq!(code, 1);
    assert_eq!(lint_codes(&json), ["no-san-for-host"]);
}

/// An expired certificate made by `openssl ca` with explicit dates, from the VCH's own CA.
fn expired_server_cert(dir: &Path) {
    let work = dir.join("openssl-ca");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("index.txt"), "").unwrap();
    std::fs::write(
        work.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copy\n\
         [p]\ncommonName = supplied\n[ext]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n\
         authorityKeyIdentifier = keyid\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    std::fs::write(work.join("serial"), "1000\n").unwrap();
    openssl(
        &work,
        &[
            "req",
            "-new",
            "-key",
            "../server-key.pem",
            "-subj",
            "/CN=localhost",
            "-out",
            "s.csr",
        ],
    );
    openssl(
        &work,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-extensions",
            "ext",
            "-cert",
            "../ca.pem",
            "-keyfile",
            "../ca-key.pem",
            "-in",
            "s.csr",
            "-out",
            "../server-cert.pem",
            "-notext",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
        ],
    );
}

#[test]
fn an_expired_certificate_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "old", &[]);
    expired_server_cert(&dir);
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 1, "{json:#}");
    let codes = lint_codes(&json);
    assert!(codes.contains(&"expired".to_owned()), "{codes:?}");
    assert!(
        codes.contains(&"untrusted".to_owned()),
        "an expired leaf does not verify: {codes:?}"
    );
    // openssl agrees it does not verify.
    assert!(!super::create::openssl_verifies(
        &dir.join("ca.pem"),
        &dir.join("server-cert.pem")
    ));
}

#[test]
fn a_single_certificate_file_with_ca_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "f", &[]);
    let other = create(tmp.path(), "g", &[]);
    let p = |d: &Path, f: &str| d.join(f).to_str().unwrap().to_owned();
    let ok = run(&[
        "inspect",
        &p(&dir, "cert.pem"),
        "--ca",
        &p(&dir, "ca.pem"),
        "--key",
        &p(&dir, "key.pem"),
        "--json",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        json["files"][0]["certificates"][0]["extended_key_usage"][0],
        "clientAuth"
    );
    let bad = run(&[
        "inspect",
        &p(&dir, "cert.pem"),
        "--ca",
        &p(&other, "ca.pem"),
        "--json",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(lint_codes(&json), ["untrusted"]);
    let missing = run(&["inspect", &p(&dir, "nope.pem")]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn connect_performs_a_live_handshake_with_the_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "conn", &[]);
    let dockerd = tls_dockerd(&dir);
    let addr = dockerd.tcp_addr().unwrap().to_string();

    let (code, json) = inspect_json(&dir, &["--connect", &addr]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["connect"]["ok"], true);
    assert_eq!(
        json["connect"]["handshake"]["ping_status"],
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        json["connect"]["handshake"]["server_subject"],
        "CN=localhost"
    );
    let text = run_ok(&["inspect", dir.to_str().unwrap(), "--connect", &addr]);
    assert!(text.contains(&format!("connect {addr}: ok")), "{text}");

    // Another VCH's client trio (and CA) is refused by this dockerd.
    let other = create(tmp.path(), "other", &[]);
    let (code, json) = inspect_json(&other, &["--connect", &addr]);
    assert_eq!(code, 1);
    assert_eq!(json["connect"]["ok"], false);
    assert!(
        json["connect"]["error"]
            .as_str()
            .unwrap()
            .contains("TLS connection"),
        "{json:#}"
    );

    // The right CA but the client certificate of another CA: dockerd refuses the session.
    std::fs::copy(dir.join("ca.pem"), other.join("ca.pem")).unwrap();
    let (code, json) = inspect_json(&other, &["--connect", &addr]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["connect"]["ok"], false);
}

#[test]
fn inspect_shows_the_push_list_and_the_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(
        tmp.path(),
        "audit",
        &[
            "--no-tls",
            "--no-registry-probe",
            "--wr",
            "*.example.com",
            "--push-registry",
            "push.example.com",
            "--policy-mode",
            "audit",
        ],
    );
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{json:#}");
    let registry = &json["config"]["registry"];
    assert_eq!(registry["push"], serde_json::json!(["push.example.com"]));
    assert_eq!(registry["mode"], "audit");
    assert!(registry.get("narrowed").is_none(), "{json:#}");
    let in_force = &json["registry_in_force"];
    assert_eq!(in_force["whitelist"], serde_json::json!(["*.example.com"]));
    assert_eq!(in_force["push"], serde_json::json!(["push.example.com"]));
    assert_eq!(in_force["mode"], "audit");
    assert_eq!(in_force["narrowed"], false);
    let text = run_ok(&["inspect", dir.to_str().unwrap()]);
    for want in [
        "  push:        push.example.com\n",
        "  policy mode: audit (denials are logged, not enforced)\n",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("narrowed"), "{text}");

    // Without a push list, JSON says null: the whitelist decides pushes.
    let dir = create(tmp.path(), "plain", &["--no-tls", "--no-registry-probe"]);
    let (_, json) = inspect_json(&dir, &[]);
    assert_eq!(json["registry_in_force"]["push"], serde_json::Value::Null);
    assert_eq!(json["registry_in_force"]["mode"], "enforce");
    let text = run_ok(&["inspect", dir.to_str().unwrap()]);
    assert!(
        text.contains("  push:        as the whitelist (no push list)\n"),
        "{text}"
    );
}

#[test]
fn inspect_shows_the_narrowed_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    assert!(
        update(&dir, &["--wr", "a.example.com", "--no-push"])
            .status
            .success()
    );
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{json:#}");
    let narrowed = &json["config"]["registry"]["narrowed"];
    assert_eq!(narrowed["whitelist"], serde_json::json!(["a.example.com"]));
    assert_eq!(narrowed["push"], serde_json::json!([]), "{json:#}");
    let in_force = &json["registry_in_force"];
    assert_eq!(in_force["whitelist"], serde_json::json!(["a.example.com"]));
    assert_eq!(in_force["push"], serde_json::json!([]));
    assert_eq!(in_force["narrowed"], true);
    let text = run_ok(&["inspect", dir.to_str().unwrap()]);
    for want in [
        "  whitelist:   *.example.com, 10.0.0.0/8\n",
        "  push:        *.push.example.com\n",
        "  narrowed by `vch-admin update`",
        "    whitelist: a.example.com\n",
        "    push:      none (every push is refused)\n",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// `vch-admin inspect DIR | head -1`: the reader leaves early; vch-admin leaves quietly with
/// SIGPIPE's status instead of panicking about a broken pipe.
#[test]
fn a_closed_stdout_ends_inspect_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(
        tmp.path(),
        "piped",
        &["--no-registry-probe", "--wr", "registry.example.com"],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vch-admin"))
        .arg("inspect")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
