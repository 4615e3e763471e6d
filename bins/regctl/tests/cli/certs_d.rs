//! regctl trusts a registry through `~/.docker/certs.d` as written by `vch-admin registry
//! trust` (run in-process through vch-admin's library): the real binary, a real
//! `docker-registry` serving the `registry.env` of `vch-admin registry cert`, TLS verified, no
//! regctl settings at all.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use vch_testbed::{HttpClient, TestImage, free_port};

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

/// `registry.env` as (name, value) pairs.
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A `docker-registry` on `addr` with the TLS settings of a `registry.env` (as vch-admin's
/// tests start it). Dropping it kills exactly its process.
struct ServedRegistry {
    child: Child,
    dir: tempfile::TempDir,
}

impl ServedRegistry {
    fn start(env: &Path, addr: SocketAddr) -> Self {
        let found = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .any(|d| d.join("docker-registry").is_file());
        assert!(
            found,
            "docker-registry is not installed (Debian package docker-registry; run \
             scripts/setup.sh)"
        );
        let dir = tempfile::Builder::new().prefix("vchrc-").tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    \
                 rootdirectory: {:?}\nhttp:\n  addr: \"{addr}\"\n  secret: test-not-secret\n",
                dir.path().join("storage").display().to_string()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        // REGISTRY_* variables override the config file; the machine's must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env_file(env))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("registry.err")).unwrap());
        let child = cmd.spawn().unwrap();
        let mut reg = ServedRegistry { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err() {
            if let Some(status) = reg.child.try_wait().unwrap() {
                panic!("registry exited with {status}: {}", reg.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "registry on {addr} did not come up: {}",
                reg.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        reg
    }

    fn log_text(&self) -> String {
        ["registry.log", "registry.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }
}

impl Drop for ServedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let registry = ServedRegistry::start(&out.join("registry.env"), addr);
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
