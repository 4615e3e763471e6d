//! `vch-admin create` then `vch-admin serve`: a stock docker CLI over mutual TLS with the env
//! file, audit lines naming the client, SIGHUP reload of the whitelist, SIGTERM shutdown, the
//! audit-mode warning.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use vch_testbed::Dockerd;

fn vch_admin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
}

/// The docker CLI configured only by the VCH's env file, as a user would after `set -a; . NAME.env`.
pub(crate) fn docker_with_env(env_file: &Path, config_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env("DOCKER_CONFIG", config_dir);
    for line in std::fs::read_to_string(env_file).unwrap().lines() {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.args(args).output().unwrap()
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A running `vch-admin serve`, killed when dropped.
pub(crate) struct Serving(pub(crate) Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serving {
    /// Starts `vch-admin serve DIR ARGS` with `env` added; its stderr lines arrive on the
    /// receiver (drained on a thread, so the server never blocks on them).
    pub(crate) fn spawn(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> (Serving, Receiver<String>) {
        let mut cmd = vch_admin();
        cmd.arg("serve").arg(dir).args(args).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (Serving(child), rx)
    }

    /// Waits up to 20 s for the process to exit (after a SIGTERM).
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The next stderr line containing `what`, within 30 s.
pub(crate) fn line_with(rx: &Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no stderr line with {what:?} within 30 s; saw {seen:#?}");
}

#[test]
fn create_then_serve_with_reload_and_shutdown() {
    let dockerd =
        Dockerd::start().expect("dockerd from the testbed must start (apt-get install docker.io)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vch1");
    let port = vch_testbed::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let out = vch_admin()
        .args([
            "create",
            "--name",
            "vch1",
            "--tls-cname",
            "127.0.0.1",
            "--no-registry-probe",
            "--wr",
            "reg.allowed.example",
        ])
        .args([
            "--docker-host",
            &dockerd.host(),
            "--listen",
            &listen,
            "--cert-path",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The env file points at 0.0.0.0 or the listen address; aim it at the loopback address.
    let env_file = dir.join("vch1.env");
    let env = std::fs::read_to_string(&env_file).unwrap();
    let env: String = env
        .lines()
        .map(|l| {
            if l.starts_with("DOCKER_HOST=") {
                format!("DOCKER_HOST=tcp://{listen}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&env_file, env).unwrap();

    let audit = tmp.path().join("audit.jsonl");
    let mut child = vch_admin()
        .arg("serve")
        .arg(&dir)
        .arg("--audit-log")
        .arg(&audit)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serving = Serving(child);
    let mut lines = BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(
        banner.contains(&listen) && banner.contains("tlsverify"),
        "{banner}"
    );
    // Keep draining stderr so the server never blocks on it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let config_dir = dockerd.docker_config_dir();
    let out = docker_with_env(
        &env_file,
        config_dir,
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not pinned: the CLI negotiates the testbed engine's own newest (dockerd 20.10).
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.41");

    let pull = |image: &str| docker_with_env(&env_file, config_dir, &["pull", image]);
    let out = pull("reg.other.example/app");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Access denied to unauthorized registry (reg.other.example)")
    );

    // SIGHUP: a new whitelist takes effect without a restart.
    let config = dir.join("vch.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("reg.allowed.example", "reg.other.example");
    std::fs::write(&config, text).unwrap();
    signal(&serving.0, "-HUP");
    // First the audit log is reopened (log rotation), then the settings are reloaded.
    let reopened = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        reopened.contains(&format!("reopened the audit log {}", audit.display())),
        "{reopened}"
    );
    let reloaded = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(reloaded.contains("reloaded"), "{reloaded}");
    let out = pull("reg.other.example/app");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Access denied"),
        "still denied after reload: {stderr}"
    );
    let out = pull("reg.allowed.example/app");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Access denied to unauthorized registry (reg.allowed.example)")
    );

    // A broken config on SIGHUP keeps the running settings.
    std::fs::write(&config, "this is not toml").unwrap();
    signal(&serving.0, "-HUP");
    let failed = rx
        .iter()
        .find(|l| !l.contains("reopened the audit log"))
        .unwrap();
    assert!(failed.contains("reload failed"), "{failed}");
    let out = docker_with_env(
        &env_file,
        config_dir,
        &["info", "--format", "{{.ServerVersion}}"],
    );
    assert!(out.status.success());

    // The audit log names the client certificate.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["status"] == 403 && r["image"] == "reg.other.example/app:latest")
    );
    assert!(
        records.iter().all(|r| r["client_subject"].is_string()),
        "{records:?}"
    );

    // SIGTERM: a clean exit.
    let mut serving = serving;
    signal(&serving.0, "-TERM");
    let status = serving.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn serve_fails_closed_on_a_broken_vch() {
    let tmp = tempfile::tempdir().unwrap();
    let out = vch_admin().arg("serve").arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vch.toml"));

    let dir = tmp.path().join("v");
    let ok = vch_admin()
        .args([
            "create",
            "--name",
            "v",
            "--tls-cname",
            "127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--cert-path",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(
        dir.join("server-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = vch_admin()
        .arg("serve")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server-key.pem"), "{stderr}");
}

#[test]
fn serve_reaches_an_engine_behind_mutual_tls() {
    use std::io::{Read, Write};

    let tmp = tempfile::tempdir().unwrap();
    // The engine's own PKI, separate from the VCH's.
    let engine_dir = tmp.path().join("engine");
    let out = vch_admin()
        .args([
            "create",
            "--name",
            "engine",
            "--tls-cname",
            "127.0.0.1",
            "--cert-path",
        ])
        .arg(&engine_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dockerd = vch_testbed::Dockerd::builder()
        .tls(vch_testbed::DockerdTls {
            ca: engine_dir.join("ca.pem"),
            cert: engine_dir.join("server-cert.pem"),
            key: engine_dir.join("server-key.pem"),
        })
        .start()
        .expect("dockerd from the testbed must start (apt-get install docker.io)");
    let engine = dockerd.tcp_addr().unwrap();

    let dir = tmp.path().join("vch");
    let port = vch_testbed::free_port().unwrap();
    let out = vch_admin()
        .args([
            "create",
            "--name",
            "vch",
            "--no-tls",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--docker-host", &format!("tcp://{engine}"), "--cert-path"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (from, to) in [
        ("ca.pem", "docker-ca.pem"),
        ("cert.pem", "docker-cert.pem"),
        ("key.pem", "docker-key.pem"),
    ] {
        std::fs::copy(engine_dir.join(from), dir.join(to)).unwrap();
    }
    let config = dir.join("vch.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[docker_tls]\nca = \"docker-ca.pem\"\ncert = \"docker-cert.pem\"\nkey = \"docker-key.pem\"\n");
    std::fs::write(&config, text).unwrap();

    let mut child = vch_admin()
        .arg("serve")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _serving = Serving(child);
    let banner = BufReader::new(stderr).lines().next().unwrap().unwrap();
    assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /v1.25/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("ServerVersion"),
        "{answer}"
    );
}

#[test]
fn audit_mode_is_announced_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let port = vch_testbed::free_port().unwrap();
    let out = vch_admin()
        .args([
            "create",
            "--name",
            "audit",
            "--no-tls",
            "--no-registry-probe",
            "--policy-mode",
            "audit",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--docker-host",
            "unix:///nonexistent/docker.sock",
            "--cert-path",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = vch_admin()
        .arg("serve")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serving = Serving(child);
    let mut lines = BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
    // No engine answers: the range is the audited one until it does, and stderr says so.
    assert!(
        banner.contains("serves Docker API 1.24 to 1.55 (engine not reachable yet)"),
        "{banner}"
    );
    let unreachable = lines.next().unwrap().unwrap();
    assert!(
        unreachable.starts_with(
            "vch-admin: warning: the Docker engine at unix:///nonexistent/docker.sock did not \
             answer /version"
        ),
        "{unreachable}"
    );
    let warning = lines.next().unwrap().unwrap();
    assert_eq!(
        warning,
        "vch-admin: warning: policy mode audit: denials are logged, not enforced"
    );
    // A reload says it again, as long as the mode stays audit.
    signal(&serving.0, "-HUP");
    assert!(lines.next().unwrap().unwrap().contains("reloaded"));
    assert_eq!(lines.next().unwrap().unwrap(), unreachable);
    assert_eq!(lines.next().unwrap().unwrap(), warning);
}
