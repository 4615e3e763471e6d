//! regctl trusts a registry through `~/.docker/certs.d` as written by `vch-admin registry
//! trust` (run in-process through vch-admin's library): the real binary, a real
//! `docker-registry` serving the `registry.env` of `vch-admin registry cert`, TLS verified, no
//! regctl settings at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Output};

use clap::Parser as _;
use vch_testbed::{EnvRegistry, HttpClient, TestImage, free_port};

use crate::Home;

/// Runs `vch-admin ARGS` in-process and expects success.
fn vch_admin(args: &[&str]) {
    let cli =
        vch_admin::Cli::try_parse_from(std::iter::once("vch-admin").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("vch-admin {args:?}: {e}"));
    let code = vch_admin::run(cli)
        .unwrap_or_else(|e| panic!("vch-admin {args:?}: {}", vch_admin::one_line(&e)));
    assert_eq!(code, ExitCode::SUCCESS, "vch-admin {args:?}");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn regctl_trusts_a_registry_through_certs_d_written_by_vch_admin_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reg");
    let port = free_port().unwrap();
    vch_admin(&[
        "registry",
        "cert",
        "--name",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--new-ca",
        "--out",
        out.to_str().unwrap(),
    ]);
    let ca = out.join("ca.crt");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let registry = EnvRegistry::start(&out.join("registry.env"), addr, None).unwrap();
    let pushed = TestImage::random("team/app", "v1")
        .push(
            &HttpClient::tls(&ca).unwrap(),
            &format!("https://127.0.0.1:{port}"),
        )
        .unwrap();

    let home = Home::new();
    let certs_d = home.path().join(".docker/certs.d");
    for name in ["127.0.0.1", "localhost"] {
        let host = format!("{name}:{port}");
        // regctl also reads the daemon's certs.d: an entry there would make the first
        // refusal below meaningless.
        assert!(
            !Path::new("/etc/docker/certs.d").join(&host).exists(),
            "/etc/docker/certs.d/{host} exists on this machine"
        );
        let repo = format!("{host}/team/app");

        // Not trusted yet (trusting the other name does not count): a certificate error.
        let refused = home.run(&["tag", "ls", &repo]);
        assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
        let err = stderr(&refused);
        assert!(
            err.contains(&format!("tls handshake with {host} failed"))
                && err.contains("certificate"),
            "{err}"
        );

        vch_admin(&[
            "registry",
            "trust",
            &host,
            "--ca",
            ca.to_str().unwrap(),
            "--certs-d",
            certs_d.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(certs_d.join(&host).join("ca.crt")).unwrap(),
            std::fs::read(&ca).unwrap()
        );

        // Trusted through certs.d alone, with verification: regctl lists and reads the image.
        let listed = home.run(&["tag", "ls", &repo]);
        assert!(
            listed.status.success(),
            "regctl tag ls {repo}: {}\n{}",
            stderr(&listed),
            registry.log_text()
        );
        assert_eq!(String::from_utf8_lossy(&listed.stdout), "v1\n");
        assert_eq!(
            home.ok(&["image", "digest", &format!("{repo}:v1")]).trim(),
            pushed.manifest_digest
        );
    }
    // No regctl settings were written or read: no --cacert, no insecure mode.
    let settings: PathBuf = home.path().join("regctl.json");
    assert!(!settings.exists(), "{} was written", settings.display());
}
