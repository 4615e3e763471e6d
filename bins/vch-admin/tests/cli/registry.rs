//! `vch-admin registry cert` and `registry trust`: the files, a real Distribution registry
//! serving them from `registry.env`, curl and skopeo trusting `ca.crt` and `certs.d`, and a real
//! dockerd pushing through `certs.d` to a registry in a network namespace of the test's own
//! (dockerd treats 127.0.0.0/8 as insecure and would not verify there).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vch_testbed::{Dockerd, EnvRegistry, HttpClient, TestImage, free_port, read_env_file};

use crate::create::{create, openssl, openssl_verifies, run, run_ok};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// Fails loudly when a program the test needs is missing.
fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .any(|d| d.join(program).is_file());
    assert!(
        found,
        "{program} is not installed (Debian package {package}; run scripts/setup.sh)"
    );
}

/// `curl -sS --cacert CA [--cert C --key K] URL`: (success, stdout + stderr).
fn curl(ca: &Path, client: Option<(&Path, &Path)>, url: &str) -> (bool, String) {
    require("curl", "curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "20", "--cacert"])
        .arg(ca);
    if let Some((cert, key)) = client {
        // curl reads `--cert FILE:PASSWORD`; the colon of a certs.d name is escaped.
        let cert = cert.to_str().unwrap().replace(':', "\\:");
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(url).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn cert_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["registry", "cert", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    args
}

#[test]
fn cert_writes_the_registry_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reg");
    let stdout = run_ok(&cert_args(
        &out,
        &[
            "--name",
            "reg.example",
            "--dns",
            "registry.internal",
            "--ip",
            "10.1.2.3",
            "--ip",
            "fd00::5",
            "--port",
            "5000",
            "--new-ca",
            "--client",
            "ci",
        ],
    ));
    assert!(stdout.contains("registry trust"), "{stdout}");
    for (file, want) in [
        ("registry.pem", 0o644),
        ("registry-key.pem", 0o600),
        ("ca.crt", 0o644),
        ("ca-key.pem", 0o600),
        ("registry.env", 0o644),
    ] {
        assert_eq!(mode(&out.join(file)), want, "{file}");
    }
    let mut dirs: Vec<String> = std::fs::read_dir(out.join("certs.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "10.1.2.3:5000",
            "[fd00::5]:5000",
            "reg.example:5000",
            "registry.internal:5000"
        ]
    );
    for dir in &dirs {
        let d = out.join("certs.d").join(dir);
        assert_eq!(text(&d.join("ca.crt")), text(&out.join("ca.crt")));
        assert_eq!(mode(&d.join("ci.key")), 0o600);
        assert!(openssl_verifies(&d.join("ca.crt"), &d.join("ci.cert")));
    }
    let env = read_env_file(&out.join("registry.env")).unwrap();
    let abs = |f: &str| out.join(f).display().to_string();
    assert_eq!(
        env,
        [
            ("REGISTRY_HTTP_TLS_CERTIFICATE".into(), abs("registry.pem")),
            ("REGISTRY_HTTP_TLS_KEY".into(), abs("registry-key.pem")),
            ("REGISTRY_HTTP_TLS_CLIENTCAS_0".into(), abs("ca.crt")),
            (
                "REGISTRY_HTTP_TLS_CLIENTCAS".into(),
                format!("[{:?}]", abs("ca.crt"))
            ),
        ]
    );
    assert!(openssl_verifies(
        &out.join("ca.crt"),
        &out.join("registry.pem")
    ));
    let dump = openssl(&out, &["x509", "-in", "registry.pem", "-noout", "-text"]);
    for san in [
        "DNS:reg.example",
        "DNS:registry.internal",
        "IP Address:10.1.2.3",
        "IP Address:FD00:0:0:0:0:0:0:5",
    ] {
        assert!(dump.contains(san), "{san} missing:\n{dump}");
    }
    assert!(dump.contains("TLS Web Server Authentication"), "{dump}");
    assert!(!dump.contains("TLS Web Client Authentication"), "{dump}");

    // `inspect` lints the directory like a VCH's.
    let out_inspect = run(&["inspect", out.to_str().unwrap()]);
    let inspect_text = String::from_utf8_lossy(&out_inspect.stdout);
    assert!(out_inspect.status.success(), "{inspect_text}");
    assert!(
        inspect_text.contains("registry certificate:"),
        "{inspect_text}"
    );
    assert!(
        inspect_text.contains("chain:       trusted"),
        "{inspect_text}"
    );
    assert!(
        inspect_text.contains("client certificate:"),
        "{inspect_text}"
    );
    assert!(inspect_text.contains("result: ok"), "{inspect_text}");
    // A name the certificate does not cover is an error.
    let bad = run(&["inspect", out.to_str().unwrap(), "--host", "other.example"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("no-san-for-host"));

    // Nothing is overwritten without --force; with it, everything is.
    let before = text(&out.join("registry.pem"));
    let again = run(&cert_args(&out, &["--name", "reg.example", "--new-ca"]));
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(text(&out.join("registry.pem")), before);
    run_ok(&cert_args(
        &out,
        &["--name", "reg.example", "--new-ca", "--force"],
    ));
    assert_ne!(text(&out.join("registry.pem")), before);
    // Port 443 is left out of the directory name.
    assert!(out.join("certs.d/reg.example/ca.crt").is_file());
}

#[test]
fn cert_refuses_bad_input_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reg");
    for (extra, needle) in [
        (vec!["--name", "reg.example"], "required"),
        (
            vec!["--name", "reg.example", "--new-ca", "--client", "../x"],
            "invalid --client",
        ),
        (vec!["--name", "a/b", "--new-ca"], "a/b"),
        (
            vec![
                "--name",
                "reg.example",
                "--ca-dir",
                tmp.path().to_str().unwrap(),
            ],
            "has no ca.pem",
        ),
    ] {
        let o = run(&cert_args(&out, &extra));
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote files");
    }
}

/// A CA made by openssl as docker-machine makes it: RSA 2048, `O=<user>`, CA:TRUE, in
/// `~/.docker/machine/certs` as `ca.pem` and `ca-key.pem`.
fn docker_machine_certs(home: &Path) -> PathBuf {
    let certs = home.join(".docker/machine/certs");
    std::fs::create_dir_all(&certs).unwrap();
    openssl(
        &certs,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/O=tester",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        ],
    );
    certs
}

#[test]
fn registry_serves_registry_env_and_curl_skopeo_and_the_registry_client_agree() {
    require("skopeo", "skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let machine = docker_machine_certs(tmp.path());
    let out = tmp.path().join("reg");
    let port = free_port().unwrap();
    let port_s = port.to_string();
    run_ok(&cert_args(
        &out,
        &[
            "--name",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--port",
            &port_s,
            "--ca-dir",
            machine.to_str().unwrap(),
        ],
    ));
    // The CA is docker-machine's, as it is.
    assert_eq!(text(&out.join("ca.crt")), text(&machine.join("ca.pem")));
    assert!(!out.join("ca-key.pem").exists());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let registry = EnvRegistry::start(&out.join("registry.env"), addr, None).unwrap();
    let ca = out.join("ca.crt");
    let pushed = TestImage::random("team/app", "v1")
        .push(
            &HttpClient::tls(&ca).unwrap(),
            &format!("https://localhost:{port}"),
        )
        .unwrap();

    for name in ["localhost", "127.0.0.1"] {
        let (ok, body) = curl(&ca, None, &format!("https://{name}:{port}/v2/_catalog"));
        assert!(ok, "curl {name}: {body}\n{}", registry.log_text());
        assert!(body.contains("team/app"), "{body}");
        let cert_dir = out.join("certs.d").join(format!("{name}:{port}"));
        let o = Command::new("skopeo")
            .arg("inspect")
            .arg("--cert-dir")
            .arg(&cert_dir)
            .arg(format!("docker://{name}:{port}/team/app:v1"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "skopeo {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains(&pushed.manifest_digest), "{stdout}");
        // Without the CA both refuse.
        let o = Command::new("skopeo")
            .args(["inspect", &format!("docker://{name}:{port}/team/app:v1")])
            .output()
            .unwrap();
        assert!(!o.status.success());
    }

    // What regctl builds its clients from: certs.d read by vch-registry.
    let certs_d = tmp.path().join("home/.docker/certs.d");
    let stdout = run_ok(&[
        "registry",
        "trust",
        &format!("localhost:{port}"),
        "--ca",
        ca.to_str().unwrap(),
        "--certs-d",
        certs_d.to_str().unwrap(),
    ]);
    assert!(stdout.contains("no restart"), "{stdout}");
    assert_eq!(
        text(&certs_d.join(format!("localhost:{port}/ca.crt"))),
        text(&ca)
    );
    let host = format!("localhost:{port}");
    let settings = vch_registry::HostSettings::builder(&host)
        .certs_d(&certs_d)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = vch_registry::Client::builder(&host)
        .settings(settings)
        .build()
        .unwrap();
    let tags = runtime.block_on(client.tags("team/app", None)).unwrap();
    assert!(tags.iter().any(|t| t == "v1"), "{tags:?}");
}

#[test]
fn registry_requiring_client_certificates_refuses_clients_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let vch = create(tmp.path(), "vch1", &["--no-registry-probe"]);
    let out = tmp.path().join("reg");
    let port = free_port().unwrap();
    let port_s = port.to_string();
    run_ok(&cert_args(
        &out,
        &[
            "--name",
            "127.0.0.1",
            "--port",
            &port_s,
            "--ca-dir",
            vch.to_str().unwrap(),
            "--client",
            "ci",
        ],
    ));
    assert_eq!(text(&out.join("ca.crt")), text(&vch.join("ca.pem")));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let registry = EnvRegistry::start(&out.join("registry.env"), addr, None).unwrap();
    let dir = out.join("certs.d").join(format!("127.0.0.1:{port}"));
    let url = format!("https://127.0.0.1:{port}/v2/");
    let (ok, body) = curl(&dir.join("ca.crt"), None, &url);
    assert!(!ok, "served without a client certificate: {body}");
    let (ok, body) = curl(
        &dir.join("ca.crt"),
        Some((&dir.join("ci.cert"), &dir.join("ci.key"))),
        &url,
    );
    assert!(ok, "{body}\n{}", registry.log_text());
}

// ---- dockerd through certs.d, with the registry in a network namespace ----

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair: the host end `10.243.A.B+1/30`, the namespace end
/// `+2`. Dropping it deletes both.
struct Netns {
    name: String,
    host_if: String,
    host_addr: String,
    ns_addr: String,
}

impl Netns {
    fn new() -> Self {
        require("ip", "iproute2");
        let pid = std::process::id();
        let name = format!("vchreg{pid}");
        let host_if = format!("vr{}h", pid % 1_000_000);
        let ns_if = format!("vr{}n", pid % 1_000_000);
        let base = (pid % (1 << 14)) << 2;
        let (a, b) = (base >> 8, base & 0xff);
        let host_addr = format!("10.243.{a}.{}", b + 1);
        let ns_addr = format!("10.243.{a}.{}", b + 2);
        let shown = Command::new("ip").args(["-o", "addr"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&shown.stdout).contains(&format!("{host_addr}/")),
            "{host_addr} is in use on this host"
        );
        ip(&["netns", "add", &name]);
        // From here on Drop cleans up whatever was made.
        let ns = Netns {
            name,
            host_if,
            host_addr,
            ns_addr,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_addr),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        in_ns(&["addr", "add", &format!("{}/30", ns.ns_addr), "dev", &ns_if]);
        in_ns(&["link", "set", &ns_if, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes the other.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Removes `/etc/docker/certs.d/<name>` directories this test made (and `certs.d` itself when
/// the test created it and it is empty).
struct CertsDCleanup {
    names: Vec<String>,
    created_root: bool,
}

impl Drop for CertsDCleanup {
    fn drop(&mut self) {
        let root = Path::new("/etc/docker/certs.d");
        for name in &self.names {
            let _ = std::fs::remove_dir_all(root.join(name));
        }
        if self.created_root {
            let _ = std::fs::remove_dir(root);
        }
    }
}

fn push(dockerd: &Dockerd, image: &str) -> (bool, String) {
    let out = dockerd.docker().args(["push", image]).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn dockerd_pushes_and_pulls_through_certs_d_written_by_trust() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reg");
    let mtls = tmp.path().join("reg-mtls");
    let (port, mtls_port) = (5000u16, 5001u16);
    // A DNS name for the same address, through /etc/hosts (dockerd's resolver reads it): the
    // certificate covers it too, and dockerd pushes by it.
    let hosts = HostsEntry::add(&ns.ns_addr);
    run_ok(&cert_args(
        &out,
        &[
            "--name",
            &ns.ns_addr,
            "--dns",
            &hosts.name,
            "--port",
            "5000",
            "--new-ca",
        ],
    ));
    run_ok(&cert_args(
        &mtls,
        &[
            "--name",
            &ns.ns_addr,
            "--port",
            "5001",
            "--ca-cert",
            out.join("ca.crt").to_str().unwrap(),
            "--ca-key",
            out.join("ca-key.pem").to_str().unwrap(),
            "--client",
            "builder",
        ],
    ));
    let name = format!("{}:{port}", ns.ns_addr);
    let mtls_name = format!("{}:{mtls_port}", ns.ns_addr);
    let dns_name = format!("{}:{port}", hosts.name);
    let cleanup = CertsDCleanup {
        names: vec![name.clone(), mtls_name.clone(), dns_name.clone()],
        created_root: !Path::new("/etc/docker/certs.d").exists(),
    };
    for n in &cleanup.names {
        assert!(
            !Path::new("/etc/docker/certs.d").join(n).exists(),
            "{n} is already in /etc/docker/certs.d"
        );
    }
    let registry = EnvRegistry::start(
        &out.join("registry.env"),
        name.parse().unwrap(),
        Some(&ns.name),
    )
    .unwrap();
    let mtls_registry = EnvRegistry::start(
        &mtls.join("registry.env"),
        mtls_name.parse().unwrap(),
        Some(&ns.name),
    )
    .unwrap();

    let dockerd = Dockerd::start().unwrap();
    let busybox = TestImage::busybox(&dockerd).unwrap();
    let image = format!("{name}/team/busybox:1");
    dockerd.docker_ok(["tag", &busybox, &image]).unwrap();

    // dockerd verifies here: refused before trust.
    let (ok, log) = push(&dockerd, &image);
    assert!(!ok, "pushed before trust: {log}");
    assert!(log.contains("x509") || log.contains("certificate"), "{log}");

    let ca = out.join("ca.crt");
    let stdout = run_ok(&["registry", "trust", &name, "--ca", ca.to_str().unwrap()]);
    assert!(stdout.contains("trusted"), "{stdout}");
    assert!(stdout.contains("no restart"), "{stdout}");
    let (ok, log) = push(&dockerd, &image);
    assert!(ok, "{log}\n{}", registry.log_text());
    dockerd.docker_ok(["rmi", &image]).unwrap();
    dockerd.docker_ok(["pull", &image]).unwrap();

    // By the DNS name the certificate covers: refused until that name is trusted too.
    let by_name = format!("{dns_name}/team/busybox:2");
    dockerd.docker_ok(["tag", &busybox, &by_name]).unwrap();
    let (ok, log) = push(&dockerd, &by_name);
    assert!(!ok, "pushed by name before trust: {log}");
    run_ok(&["registry", "trust", &dns_name, "--ca", ca.to_str().unwrap()]);
    let (ok, log) = push(&dockerd, &by_name);
    assert!(ok, "{log}\n{}", registry.log_text());
    dockerd.docker_ok(["rmi", &by_name]).unwrap();
    dockerd.docker_ok(["pull", &by_name]).unwrap();

    // Idempotent; a different CA is not installed over it without --force.
    let again = run_ok(&["registry", "trust", &name, "--ca", ca.to_str().unwrap()]);
    assert!(again.contains("already trusted"), "{again}");
    let other = run(&[
        "registry",
        "trust",
        &name,
        "--ca",
        vch_other_ca(tmp.path()).to_str().unwrap(),
    ]);
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("--force"));
    assert_eq!(
        text(&Path::new("/etc/docker/certs.d").join(&name).join("ca.crt")),
        text(&ca)
    );

    // A registry requiring client certificates: the CA alone is not enough.
    let mtls_image = format!("{mtls_name}/team/busybox:1");
    dockerd.docker_ok(["tag", &busybox, &mtls_image]).unwrap();
    run_ok(&[
        "registry",
        "trust",
        &mtls_name,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let (ok, log) = push(&dockerd, &mtls_image);
    assert!(!ok, "pushed without a client certificate: {log}");
    let dir = mtls.join("certs.d").join(&mtls_name);
    run_ok(&[
        "registry",
        "trust",
        &mtls_name,
        "--ca",
        ca.to_str().unwrap(),
        "--client-cert",
        dir.join("builder.cert").to_str().unwrap(),
        "--client-key",
        dir.join("builder.key").to_str().unwrap(),
    ]);
    let (ok, log) = push(&dockerd, &mtls_image);
    assert!(ok, "{log}\n{}", mtls_registry.log_text());

    drop(dockerd);
    drop(mtls_registry);
    drop(registry);
    drop(cleanup);
    drop(hosts);
    drop(ns);
}

/// A line of `/etc/hosts` naming an address, removed again on drop (only that line).
struct HostsEntry {
    name: String,
    line: String,
}

impl HostsEntry {
    fn add(addr: &str) -> HostsEntry {
        let name = format!("vch-reg-{}.test", std::process::id());
        let line = format!("{addr} {name} # vch-admin registry test");
        let hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
        let mut text = hosts.clone();
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        std::fs::write("/etc/hosts", text).expect("/etc/hosts is writable (the test runs as root)");
        HostsEntry { name, line }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = hosts
                .lines()
                .filter(|l| *l != self.line)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

/// Another CA certificate (from a VCH).
fn vch_other_ca(parent: &Path) -> PathBuf {
    create(parent, "other", &["--no-registry-probe"]).join("ca.pem")
}
