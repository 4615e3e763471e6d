//! `vch-admin create`: layouts, modes, refusals, bring-your-own certificates, and a real
//! dockerd + docker CLI using what it wrote.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vch_admin::config::VchConfig;
use vch_testbed::{Dockerd, DockerdTls};

/// The binary under test.
pub(crate) fn vch_admin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
}

/// Runs vch-admin and returns its output, whatever the exit code.
pub(crate) fn run(args: &[&str]) -> Output {
    vch_admin().args(args).output().unwrap()
}

/// Runs vch-admin, asserts success and returns stdout.
pub(crate) fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "vch-admin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `openssl ARGS` in `dir` and asserts success; returns stdout.
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

/// `openssl verify -CAfile ca cert` succeeded?
pub(crate) fn openssl_verifies(ca: &Path, cert: &Path) -> bool {
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

/// Creates a VCH named `name` in `parent/name` with extra flags; returns its directory.
pub(crate) fn create(parent: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let dir = parent.join(name);
    let mut args = vec![
        "create",
        "--name",
        name,
        "--cert-path",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_ok(&args);
    dir
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The inspection JSON of a VCH directory.
pub(crate) fn inspect_json(dir: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["inspect", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

#[test]
fn default_is_mutual_tls_with_the_vch_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vch1");
    let out = run_ok(&[
        "create",
        "--name",
        "vch1",
        "--cert-path",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(
        listing(&dir),
        [
            "ca-key.pem",
            "ca.pem",
            "cert.pem",
            "key.pem",
            "server-cert.pem",
            "server-key.pem",
            "vch.toml",
            "vch1.env"
        ]
    );
    for key in ["ca-key.pem", "key.pem", "server-key.pem"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.pem")), 0o644);

    let d = dir.display();
    assert!(
        out.contains(&format!(
            "docker -H tcp://127.0.0.1:2376 --tlsverify --tlscacert {d}/ca.pem --tlscert \
             {d}/cert.pem --tlskey {d}/key.pem info"
        )),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("vch1.env")).unwrap(),
        format!(
            "DOCKER_HOST=tcp://127.0.0.1:2376\nDOCKER_TLS_VERIFY=1\nDOCKER_CERT_PATH={d}\n\
             COMPOSE_TLS_VERSION=TLSv1_2\n"
        )
    );

    let (config, paths) = VchConfig::load(&dir).unwrap();
    assert_eq!(config.name, "vch1");
    assert_eq!(config.listen_addr().to_string(), "0.0.0.0:2376");
    assert_eq!(config.tls.mode, vch_pki::TlsMode::TlsVerify);
    assert_eq!(paths.ca, Some(dir.join("ca.pem")));
    assert_eq!(config.docker_host, "unix:///var/run/docker.sock");

    // openssl agrees the leaves chain to the CA.
    assert!(openssl_verifies(
        &dir.join("ca.pem"),
        &dir.join("server-cert.pem")
    ));
    assert!(openssl_verifies(&dir.join("ca.pem"), &dir.join("cert.pem")));
    let sans = openssl(
        &dir,
        &[
            "x509",
            "-in",
            "server-cert.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        sans.contains("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"),
        "{sans}"
    );
    let purpose = openssl(
        &dir,
        &[
            "x509",
            "-in",
            "cert.pem",
            "-noout",
            "-ext",
            "extendedKeyUsage",
        ],
    );
    assert!(
        purpose.contains("TLS Web Client Authentication"),
        "{purpose}"
    );
}

#[test]
fn no_tlsverify_and_no_tls_write_what_vic_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("st");
    let out = run_ok(&[
        "create",
        "--name",
        "st",
        "--cert-path",
        dir.to_str().unwrap(),
        "--no-tlsverify",
        "--tls-cname",
        "vch.example",
    ]);
    assert!(
        out.contains(&format!(
            "docker -H tcp://vch.example:2376 --tlsverify --tlscacert {}/ca.pem info",
            dir.display()
        )),
        "{out}"
    );
    assert_eq!(
        listing(&dir),
        [
            "ca-key.pem",
            "ca.pem",
            "server-cert.pem",
            "server-key.pem",
            "st.env",
            "vch.toml"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("st.env")).unwrap(),
        "DOCKER_HOST=tcp://vch.example:2376\n"
    );
    let (config, _) = VchConfig::load(&dir).unwrap();
    assert_eq!(config.tls.mode, vch_pki::TlsMode::Tls);

    let dir = create(tmp.path(), "plain", &["--no-tls"]);
    assert_eq!(listing(&dir), ["plain.env", "vch.toml"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("plain.env")).unwrap(),
        "DOCKER_HOST=tcp://127.0.0.1:2375\n"
    );
    let (config, paths) = VchConfig::load(&dir).unwrap();
    assert_eq!(config.listen_addr().to_string(), "0.0.0.0:2375");
    assert_eq!(paths.cert, None);
}

#[test]
fn existing_files_are_kept_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "v", &[]);
    let before = std::fs::read(dir.join("key.pem")).unwrap();
    let out = run(&[
        "create",
        "--name",
        "v",
        "--cert-path",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(std::fs::read(dir.join("key.pem")).unwrap(), before);

    run_ok(&[
        "create",
        "--name",
        "v",
        "--cert-path",
        dir.to_str().unwrap(),
        "--force",
    ]);
    assert_ne!(std::fs::read(dir.join("key.pem")).unwrap(), before);
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    assert_eq!(listing(&dir).len(), 8, "no temporaries or backups left");
}

#[test]
fn bad_input_fails_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    let d = dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--wr", "bad entry"], "invalid registry policy"),
        (
            &["--insecure-registry", "http://"],
            "invalid registry policy",
        ),
        (&["--rc", "/nonexistent/ca.pem"], "invalid registry policy"),
        (&["--tls-cname", "host:2376"], "invalid host name"),
        (&["--key-type", "dsa"], "unknown key type"),
        (&["--days", "0"], "invalid validity"),
        (
            &["--docker-host", "/var/run/docker.sock"],
            "invalid --docker-host",
        ),
        (&["--docker-host", "tcp://host"], "invalid --docker-host"),
        (&["--push-registry", "reg:99999"], "invalid registry policy"),
        (
            &["--no-push", "--push-registry", "reg.example.com"],
            "cannot be used with",
        ),
        (
            &["--policy-mode", "lenient"],
            "unknown policy mode `lenient`",
        ),
        (&["--api-version", "1.23"], "older than the oldest"),
        (&["--api-version", "2.0"], "invalid API version"),
        (&["--api-version", "abc"], "invalid API version"),
        (&["--api-version", "1.56"], "newer than the newest"),
        (&["--api-version", "1"], "invalid API version"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["create", "--name", "bad", "--cert-path", d];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!dir.exists(), "{extra:?} left {}", dir.display());
    }
    let out = run(&["create", "--name", "../x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn registry_policy_goes_into_vch_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let other = create(tmp.path(), "other", &[]);
    let ca = other.join("ca.pem");
    let dir = create(
        tmp.path(),
        "pol",
        &[
            "--no-registry-probe",
            "--wr",
            "registry.example.com",
            "--whitelist-registry",
            "10.0.0.0/8",
            "--dir",
            "10.1.1.1:5000",
            "--rc",
            ca.to_str().unwrap(),
            "--docker-host",
            "tcp://127.0.0.1:2375",
            "--listen",
            "127.0.0.1:12376",
        ],
    );
    let (config, _) = VchConfig::load(&dir).unwrap();
    assert_eq!(
        config.registry.whitelist,
        ["registry.example.com", "10.0.0.0/8"]
    );
    assert_eq!(config.registry.insecure, ["10.1.1.1:5000"]);
    assert_eq!(config.registry.ca, [ca]);
    assert_eq!(config.docker_host, "tcp://127.0.0.1:2375");
    assert_eq!(config.listen_addr().to_string(), "127.0.0.1:12376");
    config.registry.compile(&dir).unwrap();
    // Without --tls-cname the loopback names stay, and the specific listen address is added.
    let sans = openssl(
        &dir,
        &[
            "x509",
            "-in",
            "server-cert.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        sans.contains("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"),
        "{sans}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pol.env"))
            .unwrap()
            .lines()
            .next(),
        Some("DOCKER_HOST=tcp://127.0.0.1:12376")
    );
}

#[test]
fn push_list_and_policy_mode_round_trip_through_vch_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("push");
    let out = run_ok(&[
        "create",
        "--name",
        "push",
        "--no-tls",
        "--no-registry-probe",
        "--cert-path",
        dir.to_str().unwrap(),
        "--wr",
        "*.example.com",
        "--push-registry",
        "push.example.com",
        "--push-registry",
        "10.0.0.0/8",
        "--policy-mode",
        "audit",
    ]);
    for want in [
        "  whitelist:   *.example.com\n",
        "  push:        push.example.com, 10.0.0.0/8\n",
        "  policy mode: audit (denials are logged, not enforced)\n",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let text = std::fs::read_to_string(dir.join("vch.toml")).unwrap();
    assert!(
        text.contains("push = [\"push.example.com\", \"10.0.0.0/8\"]\nmode = \"audit\"\n"),
        "{text}"
    );
    let config = VchConfig::from_toml(&text, Path::new("vch.toml")).unwrap();
    assert_eq!(
        config.registry.push.as_deref(),
        Some(&["push.example.com".to_owned(), "10.0.0.0/8".to_owned()][..])
    );
    assert_eq!(config.registry.mode, vch_policy::EnforcementMode::Audit);
    assert_eq!(config.registry.narrowed, None);
    assert_eq!(
        config.to_toml().unwrap(),
        text,
        "a round trip changes nothing"
    );

    // The default: no push list (the whitelist decides pushes), enforce, which is not written
    // (older builds read the file as before).
    let dir = create(tmp.path(), "plain", &["--no-tls", "--no-registry-probe"]);
    let text = std::fs::read_to_string(dir.join("vch.toml")).unwrap();
    assert!(!text.contains("push"), "{text}");
    assert!(!text.contains("mode = \"enforce\""), "{text}");
    assert!(!text.contains("[registry.narrowed]"), "{text}");
    let out = run_ok(&[
        "create",
        "--name",
        "plain2",
        "--no-tls",
        "--no-registry-probe",
        "--cert-path",
        tmp.path().join("plain2").to_str().unwrap(),
    ]);
    assert!(
        out.contains("  push:        as the whitelist (no push list)\n")
            && out.contains("  policy mode: enforce\n"),
        "{out}"
    );
}

#[test]
fn no_push_writes_an_empty_push_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nopush");
    let out = run_ok(&[
        "create",
        "--name",
        "nopush",
        "--no-tls",
        "--no-registry-probe",
        "--cert-path",
        dir.to_str().unwrap(),
        "--no-push",
    ]);
    assert!(
        out.contains("  push:        none (every push is refused)\n"),
        "{out}"
    );
    let text = std::fs::read_to_string(dir.join("vch.toml")).unwrap();
    assert!(text.contains("push = []\n"), "{text}");
    let (config, _) = VchConfig::load(&dir).unwrap();
    assert_eq!(config.registry.push, Some(Vec::new()));
    let rules = config.registry.compile_rules(&dir).unwrap();
    assert!(matches!(rules.push, vch_policy::PushRule::Nowhere));
}

#[test]
fn key_type_and_days_apply_to_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(
        tmp.path(),
        "rsa",
        &["--key-type", "rsa-2048", "--days", "30"],
    );
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{json:#}");
    let files = json["files"].as_array().unwrap();
    let server = &files[1]["certificates"][0];
    assert_eq!(server["key"], "RSA 2048");
    assert_eq!(server["days_left"], 29, "{server:#}");
    assert_eq!(
        server["key_usage"],
        serde_json::json!(["digitalSignature", "keyEncipherment"])
    );
    let client = &files[2]["certificates"][0];
    assert_eq!(client["key"], "RSA 2048");
    // The CA keeps its 10 years.
    assert!(files[0]["certificates"][0]["days_left"].as_i64().unwrap() > 3600);
    // Expiring within 30 days is a warning, not an error.
    assert_eq!(files[1]["lints"][0]["code"], "expiring-soon");
}

/// Makes a CA with the openssl CLI, key in PKCS#1 (`-traditional`), with a subject mixing
/// PrintableString (C) and UTF8String (the rest) as openssl writes them.
pub(crate) fn openssl_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = format!("{name}-key.pem");
    let cert = format!("{name}.pem");
    openssl(dir, &["genrsa", "-traditional", "-out", &key, "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-sha256",
            "-days",
            "365",
            "-subj",
            &format!("/C=US/ST=California/O=Example Corp/OU=Platform/CN={name}"),
            "-out",
            &cert,
        ],
    );
    let text = std::fs::read_to_string(dir.join(&key)).unwrap();
    assert!(
        text.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1 expected"
    );
    (dir.join(cert), dir.join(key))
}

#[test]
fn issues_from_an_openssl_ca_without_copying_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, ca_key) = openssl_ca(tmp.path(), "Corp Root");
    let dir = create(
        tmp.path(),
        "corp",
        &[
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-ca-key",
            ca_key.to_str().unwrap(),
            "--tls-cname",
            "vch.corp.example",
        ],
    );
    assert!(
        !dir.join("ca-key.pem").exists(),
        "the CA key stays where it was"
    );
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        std::fs::read(&ca).unwrap()
    );
    assert!(openssl_verifies(&ca, &dir.join("server-cert.pem")));
    assert!(openssl_verifies(&ca, &dir.join("cert.pem")));
    let issuer = openssl(
        &dir,
        &["x509", "-in", "server-cert.pem", "-noout", "-issuer"],
    );
    let subject = openssl(
        tmp.path(),
        &["x509", "-in", "Corp Root.pem", "-noout", "-subject"],
    );
    assert_eq!(
        issuer.trim_start_matches("issuer="),
        subject.trim_start_matches("subject=")
    );
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{json:#}");
}

#[test]
fn bring_your_own_server_certificate_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    // A CA and server certificate from elsewhere (another VCH's files stand in for them).
    let src = create(
        tmp.path(),
        "src",
        &["--tls-cname", "vch.example", "--tls-cname", "10.0.0.9"],
    );
    let s = |f: &str| src.join(f).to_str().unwrap().to_owned();
    let stranger = create(tmp.path(), "stranger", &[]);

    // Accepted: matches its key, chains to --tls-ca, names every --tls-cname.
    let dir = create(
        tmp.path(),
        "byo",
        &[
            "--tls-ca",
            &s("ca.pem"),
            "--tls-server-cert",
            &s("server-cert.pem"),
            "--tls-server-key",
            &s("server-key.pem"),
            "--tls-cname",
            "vch.example",
        ],
    );
    assert_eq!(
        std::fs::read(dir.join("server-cert.pem")).unwrap(),
        std::fs::read(src.join("server-cert.pem")).unwrap()
    );
    // No CA key, so no client trio; the VCH verifies clients against --tls-ca.
    assert!(!dir.join("cert.pem").exists());
    assert!(!dir.join("ca-key.pem").exists());

    let refused = |extra: &[&str], want: &str| {
        let target = tmp.path().join("refused");
        let mut args = vec![
            "create",
            "--name",
            "refused",
            "--cert-path",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!target.exists());
    };
    let other_ca = stranger.join("ca.pem");
    let other_key = stranger.join("server-key.pem");
    refused(
        &[
            "--tls-ca",
            &s("ca.pem"),
            "--tls-server-cert",
            &s("server-cert.pem"),
            "--tls-server-key",
            other_key.to_str().unwrap(),
        ],
        "does not match",
    );
    refused(
        &[
            "--tls-ca",
            &s("ca.pem"),
            "--tls-server-cert",
            &s("server-cert.pem"),
            "--tls-server-key",
            &s("server-key.pem"),
            "--tls-cname",
            "other.example",
        ],
        "no subjectAltName for other.example",
    );
    refused(
        &[
            "--tls-ca",
            other_ca.to_str().unwrap(),
            "--tls-server-cert",
            &s("server-cert.pem"),
            "--tls-server-key",
            &s("server-key.pem"),
        ],
        "is not trusted",
    );
    refused(
        &[
            "--tls-server-cert",
            &s("server-cert.pem"),
            "--tls-server-key",
            &s("server-key.pem"),
        ],
        "needs --tls-ca",
    );
    refused(
        &["--tls-ca", &s("ca.pem")],
        "cannot issue a server certificate",
    );

    // Server-only TLS with a certificate from elsewhere needs no CA of ours.
    let dir = create(
        tmp.path(),
        "byo-tls",
        &[
            "--no-tlsverify",
            "--tls-server-cert",
            &s("server-cert.pem"),
            "--tls-server-key",
            &s("server-key.pem"),
            "--tls-cname",
            "10.0.0.9",
        ],
    );
    assert_eq!(
        listing(&dir),
        [
            "byo-tls.env",
            "server-cert.pem",
            "server-key.pem",
            "vch.toml"
        ]
    );
}

/// Starts a dockerd with `--tlsverify` and the VCH's server certificate and CA.
pub(crate) fn tls_dockerd(dir: &Path) -> Dockerd {
    Dockerd::builder()
        .tls(DockerdTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
        })
        .start()
        .unwrap()
}

/// The stock docker CLI with an empty configuration and no inherited DOCKER_* variables.
fn docker(config_dir: &Path) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config_dir)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT");
    cmd
}

#[test]
fn real_docker_cli_uses_the_client_trio_against_a_tlsverify_dockerd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "live", &[]);
    let dockerd = tls_dockerd(&dir);
    let port = dockerd.tcp_addr().unwrap().port();
    let host = format!("tcp://127.0.0.1:{port}");
    let cfg = tmp.path().join("docker-config");
    std::fs::create_dir(&cfg).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();

    // The exact command create printed (with the port of this dockerd).
    let out = docker(&cfg)
        .args([
            "-H",
            &host,
            "--tlsverify",
            "--tlscacert",
            &p("ca.pem"),
            "--tlscert",
            &p("cert.pem"),
            "--tlskey",
            &p("key.pem"),
            "version",
            "--format",
            "{{.Server.Version}}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dockerd.log()
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());

    // The env file, as `set -a; . NAME.env` loads it (DOCKER_HOST rewritten to this port).
    let env = std::fs::read_to_string(dir.join("live.env"))
        .unwrap()
        .replace("tcp://127.0.0.1:2376", &host);
    std::fs::write(tmp.path().join("port.env"), env).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -a; . '{}'; set +a; docker version --format '{{{{.Server.Version}}}}'",
            tmp.path().join("port.env").display()
        ))
        .env("DOCKER_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a client certificate: refused.
    let out = docker(&cfg)
        .args([
            "-H",
            &host,
            "--tlsverify",
            "--tlscacert",
            &p("ca.pem"),
            "version",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "accepted without a client certificate"
    );

    // With a client certificate from another CA: refused.
    let other = create(tmp.path(), "other", &[]);
    let o = |f: &str| other.join(f).to_str().unwrap().to_owned();
    let out = docker(&cfg)
        .args([
            "-H",
            &host,
            "--tlsverify",
            "--tlscacert",
            &p("ca.pem"),
            "--tlscert",
            &o("cert.pem"),
            "--tlskey",
            &o("key.pem"),
            "version",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "accepted a client certificate from another CA"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") || err.contains("tls"), "{err}");

    // And the client refuses a server whose CA it does not trust.
    let out = docker(&cfg)
        .args([
            "-H",
            &host,
            "--tlsverify",
            "--tlscacert",
            &o("ca.pem"),
            "--tlscert",
            &p("cert.pem"),
            "--tlskey",
            &p("key.pem"),
            "version",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn no_tlsverify_command_verifies_the_server_without_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = create(tmp.path(), "mutual", &[]);
    let dir_st = create(tmp.path(), "server-only", &["--no-tlsverify"]);
    let port = vch_testbed::free_port().unwrap();
    let p = |f: &str| dir_st.join(f).to_str().unwrap().to_owned();
    // dockerd in server-only TLS mode (`--tls`, no `--tlsverify`), as the VCH would serve it.
    let dockerd = Dockerd::builder()
        .args([
            "--tls",
            // dockerd reads a CA file in any TLS mode (default ~/.docker/ca.pem) and turns on
            // client verification unless told otherwise explicitly.
            "--tlsverify=false",
            "--tlscacert",
            &p("ca.pem"),
            "--tlscert",
            &p("server-cert.pem"),
            "--tlskey",
            &p("server-key.pem"),
        ])
        .args(["-H", &format!("tcp://127.0.0.1:{port}")])
        .start()
        .unwrap();
    let cfg = tmp.path().join("docker-config");
    std::fs::create_dir(&cfg).unwrap();
    let host = format!("tcp://127.0.0.1:{port}");
    // The command create printed for this mode.
    let out = docker(&cfg)
        .args([
            "-H",
            &host,
            "--tlsverify",
            "--tlscacert",
            &p("ca.pem"),
            "version",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dockerd.log()
    );
    // Another CA does not verify this server.
    let other_ca = dir.join("ca.pem");
    let out = docker(&cfg)
        .args([
            "-H",
            &host,
            "--tlsverify",
            "--tlscacert",
            other_ca.to_str().unwrap(),
            "version",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn create_probes_plain_host_registries_and_only_warns() {
    let registry =
        vch_testbed::Registry::start().expect("docker-registry from the testbed must start");
    let closed = vch_testbed::free_port().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vch-admin"))
        .args([
            "create",
            "--name",
            "probed",
            "--listen",
            "127.0.0.1:0",
            "--cert-path",
        ])
        .arg(tmp.path().join("probed"))
        .args([
            "--dir",
            &registry.addr(),
            "--wr",
            &format!("127.0.0.1:{closed}"),
            "--wr",
            "*.example.com",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a probe failure must only warn: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "Unable to confirm secure registry 127.0.0.1:{closed} is a valid registry at this time"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&registry.addr()),
        "the answering insecure registry was warned about: {stderr}"
    );
}
