//! `vch-admin client add|ls|revoke`: certificates for one project each, revocation refused at
//! the TLS handshake by a running `serve` after SIGHUP, and openssl agreeing on the CRL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vch_testbed::Dockerd;

use crate::serve::{Serving, docker_with_env, signal};

fn vch_admin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vch-admin create` a mutual-TLS VCH in `dir` listening on `listen`.
fn create(dir: &Path, docker_host: &str, listen: &str) {
    let out = vch_admin()
        .args(["create", "--name", "vch1", "--tls-cname", "127.0.0.1"])
        .args(["--no-registry-probe", "--docker-host", docker_host])
        .args(["--listen", listen, "--cert-path"])
        .arg(dir)
        .output()
        .unwrap();
    ok(&out);
}

fn client(args: &[&str], dir: &Path) -> Output {
    let (sub, rest) = args.split_first().unwrap();
    vch_admin()
        .args(["client", sub])
        .arg(dir)
        .args(rest)
        .output()
        .unwrap()
}

fn openssl_verify(dir: &Path, cert: &Path) -> Output {
    Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg("-CRLfile")
        .arg(dir.join("crl.pem"))
        .arg(cert)
        .output()
        .unwrap()
}

#[test]
fn a_revoked_client_is_refused_at_the_handshake_after_sighup_and_openssl_agrees() {
    let dockerd =
        Dockerd::start().expect("dockerd from the testbed must start (apt-get install docker.io)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vch1");
    let listen = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    create(&dir, &dockerd.host(), &listen);

    let stdout = ok(&client(&["add", "alice", "--project", "team-a"], &dir));
    assert!(stdout.contains("OU=team-a, CN=alice"), "{stdout}");
    ok(&client(&["add", "bob", "--project", "team-b"], &dir));
    let alice = dir.join("clients/alice");
    let bob = dir.join("clients/bob");
    for who in [&alice, &bob] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(who.join("key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(who.join("ca.pem").is_file() && who.join("cert.pem").is_file());
    }
    let env = std::fs::read_to_string(alice.join("alice.env")).unwrap();
    assert!(
        env.contains(&format!("DOCKER_HOST=tcp://{listen}")),
        "{env}"
    );
    assert!(
        env.contains(&format!("DOCKER_CERT_PATH={}", alice.display())),
        "{env}"
    );

    let mut child = vch_admin()
        .arg("serve")
        .arg(&dir)
        .arg("--audit-log")
        .arg(tmp.path().join("audit.jsonl"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serving = Serving(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(banner.contains(&listen), "{banner}");

    let config_dir = dockerd.docker_config_dir();
    let version = |who: &Path, name: &str| {
        docker_with_env(
            &who.join(format!("{name}.env")),
            config_dir,
            &["version", "--format", "{{.Server.APIVersion}}"],
        )
    };
    ok(&version(&alice, "alice"));
    ok(&version(&bob, "bob"));

    let stdout = ok(&client(&["revoke", "bob"], &dir));
    assert!(stdout.contains("Revoked client bob"), "{stdout}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&client(&["ls", "--json"], &dir))).unwrap();
    let revoked: Vec<(&str, Option<&str>, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["project"].as_str(),
                c["revoked"].as_bool().unwrap(),
            )
        })
        .collect();
    // `create`'s own client first.
    assert_eq!(
        revoked,
        [
            ("vch1-client", None, false),
            ("alice", Some("team-a"), false),
            ("bob", Some("team-b"), true)
        ]
    );

    // openssl reads the same CRL the same way.
    let out = openssl_verify(&dir, &bob.join("cert.pem"));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("certificate revoked"), "{text}");
    let out = openssl_verify(&dir, &alice.join("cert.pem"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Before the reload the running settings still accept bob: the CRL is read on SIGHUP.
    ok(&version(&bob, "bob"));
    signal(&serving.0, "-HUP");
    let started = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!line.contains("reload failed"), "{line}");
        if line.contains("reloaded") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no reload");
    }
    let out = version(&bob, "bob");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked certificate"), "{stderr}");
    // Same process, the other client: still served.
    ok(&version(&alice, "alice"));
}

#[test]
fn add_and_revoke_refuse_what_they_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vch1");
    create(&dir, "unix:///var/run/docker.sock", "127.0.0.1:2376");

    ok(&client(&["add", "alice"], &dir));
    // The same name again, while its certificate is valid.
    let out = client(&["add", "alice"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already has a valid certificate") && stderr.contains("--force"),
        "{stderr}"
    );
    // --force revokes the old certificate and issues a new one.
    let old = std::fs::read(dir.join("clients/alice/cert.pem")).unwrap();
    ok(&client(&["add", "alice", "--force"], &dir));
    assert_ne!(
        std::fs::read(dir.join("clients/alice/cert.pem")).unwrap(),
        old
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&client(&["ls", "--json"], &dir))).unwrap();
    // `create`'s own client first, then alice's old and new certificates.
    let revoked: Vec<(&str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["revoked"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        revoked,
        [("vch1-client", false), ("alice", true), ("alice", false)]
    );
    let out = openssl_verify(&dir, &dir.join("clients/alice/cert.pem"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Revoking by fingerprint, colons and upper case allowed.
    let sha = listed[2]["sha256"].as_str().unwrap().to_ascii_uppercase();
    let colons: Vec<&str> = (0..sha.len())
        .step_by(2)
        .map(|i| sha.get(i..i + 2).unwrap())
        .collect();
    ok(&client(&["revoke", &colons.join(":")], &dir));
    let out = openssl_verify(&dir, &dir.join("clients/alice/cert.pem"));
    assert!(!out.status.success());

    let out = client(&["revoke", "nobody"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no client \"nobody\""));

    let out = client(&["add", "bad/name"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid client name"));

    std::fs::remove_file(dir.join("ca-key.pem")).unwrap();
    let out = client(&["add", "carol"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ca-key.pem does not exist"), "{stderr}");
    assert!(!dir.join("clients/carol").exists());
}

/// The client certificate `create` makes is listed and can be revoked like the others.
#[test]
fn the_client_certificate_of_create_is_listed_and_revocable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vch1");
    create(&dir, "unix:///var/run/docker.sock", "127.0.0.1:0");
    let listed = ok(&client(&["ls", "--json"], &dir));
    let clients: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let first = &clients.as_array().expect("a list")[0];
    assert_eq!(first["name"], "vch1-client", "{listed}");
    assert_eq!(first["revoked"], false, "{listed}");
    assert!(openssl_verify_plain(&dir).status.success());

    ok(&client(&["revoke", "vch1-client"], &dir));
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&client(&["ls", "--json"], &dir))).unwrap();
    assert_eq!(listed[0]["revoked"], true, "{listed}");
    let verdict = openssl_verify(&dir, &dir.join("cert.pem"));
    assert!(!verdict.status.success());
    assert!(
        String::from_utf8_lossy(&verdict.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&verdict.stderr).contains("certificate revoked"),
        "{verdict:?}"
    );
}

/// `openssl verify` of the VCH's own client certificate, before any CRL exists.
fn openssl_verify_plain(dir: &Path) -> Output {
    Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap()
}
