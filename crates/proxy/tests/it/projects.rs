//! Issue 16: per-project registry lists. Clients' certificates carry their project in the
//! subject's OU; the endpoint holds each to the VCH whitelist ∩ its project's list, with the real
//! docker CLI against two testbed registries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vch_pki::{CaOptions, CertificateAuthority, LeafOptions};
use vch_policy::{Policy, PolicyBuilder, RegistryRules};
use vch_proxy::{Listen, Options, Server, Settings, Upstream, server_tls};
use vch_testbed::{Dockerd, Registry, TestImage};

use crate::support::{audit_records, dockerd};

fn list(entries: &[&str]) -> Policy {
    let mut b = PolicyBuilder::new();
    for e in entries {
        b.whitelist(*e);
    }
    b.build().unwrap()
}

/// A client's certificate directory: `ca.pem`, `cert.pem`, `key.pem`.
fn client(ca: &CertificateAuthority, root: &Path, name: &str, project: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let options = LeafOptions {
        organizational_unit: project.map(str::to_owned),
        ..LeafOptions::client(name)
    };
    let cert = ca.issue(&options).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert_pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key().to_pem()).unwrap();
    dir
}

fn docker(dockerd: &Dockerd, addr: &str, certs: &Path) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", dockerd.docker_config_dir())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs)
        .arg("-H")
        .arg(format!("tcp://{addr}"));
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> (bool, String, String) {
    let out = cmd.args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_same_pull_is_allowed_for_one_project_and_denied_for_another() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let a = Registry::start().expect("docker-registry from the testbed must start");
    let b = Registry::start().expect("docker-registry from the testbed must start");
    let (a_addr, b_addr) = (a.addr().to_string(), b.addr().to_string());

    let root = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(&CaOptions::new("vch projects CA")).unwrap();
    let server = ca
        .issue(&LeafOptions::server(["127.0.0.1", "localhost"]))
        .unwrap();
    std::fs::write(root.path().join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(root.path().join("server-cert.pem"), server.cert_pem()).unwrap();
    std::fs::write(root.path().join("server-key.pem"), server.key().to_pem()).unwrap();
    let alice = client(&ca, root.path(), "alice", Some("alpha"));
    let bob = client(&ca, root.path(), "bob", Some("beta"));
    let carol = client(&ca, root.path(), "carol", None);
    let dave = client(&ca, root.path(), "dave", Some("gone"));

    let rules = RegistryRules {
        pull: list(&[&a_addr, &b_addr]),
        ..RegistryRules::default()
    };
    let settings = Settings::new(
        Upstream::parse(&dockerd.host(), None).unwrap(),
        Policy::empty(),
    )
    .with_rules(rules)
    // `beta` names a registry outside the whitelist too: it has no effect.
    .with_project("alpha", list(&[&format!("{a_addr}/team-a")]))
    .with_project("beta", list(&[&b_addr, "elsewhere.example.net"]))
    .with_tls(
        server_tls(
            &root.path().join("server-cert.pem"),
            &root.path().join("server-key.pem"),
            Some(&root.path().join("ca.pem")),
        )
        .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    crate::support::init_audit_capture();
    let server = runtime
        .block_on(Server::bind(
            &[Listen::Tcp("127.0.0.1:0".parse().unwrap())],
            settings,
            Options::default(),
        ))
        .unwrap();
    let addr = server.local_addrs()[0].clone();
    let handle = server.handle();
    runtime.spawn(server.run());

    let in_a = format!("{a_addr}/team-a/busybox:p");
    let in_b = format!("{b_addr}/team-b/busybox:p");
    let ok = |who: &Path, args: &[&str]| {
        let (ok, out, err) = run(docker(&dockerd, &addr, who), args);
        assert!(ok, "docker {args:?}: {err}");
        out
    };
    ok(&alice, &["tag", &image, &in_a]);
    ok(&alice, &["tag", &image, &in_b]);
    ok(&alice, &["push", &in_a]);
    ok(&bob, &["push", &in_b]);
    ok(&alice, &["rmi", &in_a, &in_b]);

    // The same pull: allowed for alpha's client, denied for beta's with the project named.
    ok(&alice, &["pull", &in_a]);
    ok(&alice, &["rmi", &in_a]);
    let (allowed, _, err) = run(docker(&dockerd, &addr, &bob), &["pull", &in_a]);
    assert!(!allowed);
    assert!(
        err.contains(&format!(
            "Access denied to unauthorized registry ({a_addr}) while VCH is in whitelist mode \
             (project beta)"
        )),
        "{err}"
    );
    // And the other way round.
    ok(&bob, &["pull", &in_b]);
    let (allowed, _, err) = run(docker(&dockerd, &addr, &alice), &["pull", &in_b]);
    assert!(!allowed && err.contains("(project alpha)"), "{err}");
    // No project: the VCH whitelist alone. An unknown project: nothing.
    ok(&carol, &["pull", &in_a]);
    let (allowed, _, err) = run(docker(&dockerd, &addr, &dave), &["pull", &in_a]);
    assert!(
        !allowed && err.contains("project gone is not configured on this VCH"),
        "{err}"
    );

    // `docker info` shows the caller's project and its list in force.
    let labels = ok(&bob, &["info", "--format", "{{json .Labels}}"]);
    assert!(labels.contains("vch.registry.project=beta"), "{labels}");
    assert!(
        labels.contains(&format!("vch.registry.project-whitelist={b_addr}")),
        "{labels}"
    );
    assert!(!labels.contains("elsewhere.example.net"), "{labels}");
    let labels = ok(&carol, &["info", "--format", "{{json .Labels}}"]);
    assert!(!labels.contains("vch.registry.project"), "{labels}");

    // Every audit line carries the client's name and project.
    std::thread::sleep(Duration::from_millis(200));
    let records = audit_records();
    let bob_pull = records
        .iter()
        .find(|r| r["client_name"] == "bob" && r["status"] == 403)
        .unwrap_or_else(|| panic!("no denied record of bob"));
    assert_eq!(bob_pull["project"], "beta");
    assert!(
        records
            .iter()
            .filter(|r| r["client_name"] == "carol")
            .all(|r| r["project"].is_null())
    );
    assert!(
        records
            .iter()
            .filter(|r| r["client_name"] == "alice")
            .all(|r| r["project"] == "alpha")
    );
    handle.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop((a, b));
}
