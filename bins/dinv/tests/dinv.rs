//! End-to-end: the dinv binary with the real dockerd and docker CLI.
//!
//! Each test gives dinv a free `-port` and, through the extra arguments, a private data root,
//! exec root, pidfile, unix socket, config file and containerd namespace, so tests run in
//! parallel beside any other dockerd. Each stops exactly the dinv it started (SIGTERM; the
//! signal tests SIGINT or SIGQUIT) and checks that dinv exits with dockerd's status and that
//! no process of that dockerd (dockerd, its containerd) survives. A dockerd that does not come
//! up fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic with its location"
)]

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use vch_testbed::{HttpClient, Registry, TestImage, free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

fn dinv_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dinv")
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

/// Processes whose command line names `dir` (dockerd and the containerd it started).
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // Not our own dinv (its command line names the dir too): it is waited for apart.
            if cmdline.contains(&needle) && !cmdline.starts_with(dinv_bin()) {
                out.push(pid);
            }
        }
    }
    out
}

/// One dinv with its own directory.
struct Dinv {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    certs: PathBuf,
    dockerd_pid: Option<u32>,
}

struct Start<'a> {
    flags: Vec<String>,
    env: Vec<(&'a str, &'a str)>,
    certs: Option<PathBuf>,
    port: Option<u16>,
}

impl<'a> Start<'a> {
    fn new(flags: &[&str]) -> Self {
        Start {
            flags: flags.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            certs: None,
            port: None,
        }
    }

    fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    fn certs(mut self, dir: &Path) -> Self {
        self.certs = Some(dir.to_owned());
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Spawns dinv without waiting for dockerd.
    fn spawn(self) -> Dinv {
        // Short: the unix socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("dinv-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        for d in ["data", "exec", "docker-config"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("docker-config/config.json"), "{}\n").unwrap();
        let config = serde_json::json!({
            "deprecated-key-path": root.join("key.json").to_string_lossy(),
        });
        std::fs::write(root.join("daemon.json"), config.to_string()).unwrap();
        let certs = self.certs.unwrap_or_else(|| root.join("certs"));
        let port = self.port.unwrap_or_else(|| free_port().unwrap());
        let namespace = format!(
            "dinv-{}",
            root.file_name().unwrap().to_string_lossy().replace('.', "")
        );
        let p = |name: &str| root.join(name).display().to_string();
        let mut cmd = Command::new(dinv_bin());
        cmd.args(["-certs", &certs.display().to_string()])
            .args(["-port", &port.to_string(), "-storage", "vfs"])
            .args(&self.flags)
            .arg("--")
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args([
                "--pidfile",
                &p("docker.pid"),
                "--config-file",
                &p("daemon.json"),
            ])
            .args(["-H", &format!("unix://{}", p("docker.sock"))])
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--userland-proxy=false",
                "--shutdown-timeout=3",
            ])
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-p")])
            .env_remove("DEBUG")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("out.log")).unwrap())
            .stderr(std::fs::File::create(root.join("err.log")).unwrap());
        for var in ["DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"] {
            cmd.env_remove(var);
        }
        let child = cmd.spawn().expect("dinv starts");
        Dinv {
            child: Some(child),
            dir,
            port,
            certs,
            dockerd_pid: None,
        }
    }

    /// Spawns dinv and waits until dockerd answers `/_ping` on its unix socket.
    fn start(self) -> Dinv {
        let mut dinv = self.spawn();
        dinv.wait_ready();
        dinv
    }
}

impl Dinv {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr (tail)\n{}",
            self.stdout(),
            tail(&self.stderr(), 40)
        )
    }

    fn wait_ready(&mut self) {
        let client = HttpClient::unix(&self.socket()).timeout(Duration::from_secs(5));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "dinv exited before dockerd was ready: {status}\n{}",
                    self.logs()
                );
            }
            if self.socket().exists()
                && let Ok(r) = client.get("http://docker/_ping")
                && r.status == 200
            {
                break;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "dockerd not ready within {READY_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let pid = std::fs::read_to_string(self.dir.path().join("docker.pid")).unwrap();
        self.dockerd_pid = Some(pid.trim().parse().unwrap());
    }

    /// The docker CLI against the TCP port (`tcp://HOST:PORT`) with these TLS arguments.
    fn docker(&self, host: &str, tls: &[&str], args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .args(tls)
            .args(["-H", &format!("tcp://{host}:{}", self.port)])
            .args(args)
            .output()
            .expect("docker CLI runs")
    }

    fn docker_ok(&self, host: &str, tls: &[&str], args: &[&str]) -> String {
        let out = self.docker(host, tls, args);
        assert!(
            out.status.success(),
            "docker {tls:?} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Docker CLI 28 opens `ca.pem` in its config directory even for `--tls` alone (which
    /// does not verify), and fails without it: a `-tls` user copies `ca.crt` there.
    fn trust_ca_for_cli(&self) {
        std::fs::copy(
            self.certs.join("ca.crt"),
            self.dir.path().join("docker-config/ca.pem"),
        )
        .unwrap();
    }

    /// The client trio (`ca.crt`, `docker-client.crt`, `docker-client.key`) copied into a
    /// `DOCKER_CERT_PATH`-style directory as `ca.pem`, `cert.pem`, `key.pem`.
    fn client_cert_path(&self) -> PathBuf {
        let dir = self.dir.path().join("client");
        std::fs::create_dir_all(&dir).unwrap();
        for (from, to) in [
            ("ca.crt", "ca.pem"),
            ("docker-client.crt", "cert.pem"),
            ("docker-client.key", "key.pem"),
        ] {
            std::fs::copy(self.certs.join(from), dir.join(to)).unwrap();
        }
        dir
    }

    /// The docker CLI as a `-tlsverify` user runs it: `DOCKER_HOST=tcp://HOST:PORT`,
    /// `DOCKER_TLS_VERIFY=1`, `DOCKER_CERT_PATH=cert_path`.
    fn docker_env(&self, host: &str, cert_path: &Path, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", format!("tcp://{host}:{}", self.port))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", cert_path)
            .args(args)
            .output()
            .expect("docker CLI runs")
    }

    fn assert_success(&self, out: &Output) {
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// Waits until dinv's stderr (dinv's and dockerd's logs) contains `text`.
    fn wait_for_stderr(&self, text: &str) {
        let start = Instant::now();
        while !self.stderr().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {text:?} on stderr\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to dinv; waits for it; checks that nothing of its dockerd is left.
    fn stop(&mut self) -> ExitStatus {
        self.stop_with(Signal::TERM)
    }

    /// `sig` to dinv; waits for it; checks that nothing of its dockerd is left.
    fn stop_with(&mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), sig);
        let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("dinv did not exit after {sig:?}\n{}", self.logs())
        });
        if let Some(pid) = self.dockerd_pid {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "dockerd {pid} survived dinv"
            );
        }
        // containerd stops after dockerd; give it a moment.
        let start = Instant::now();
        while !processes_under(self.dir.path()).is_empty() && start.elapsed() < STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = processes_under(self.dir.path());
        assert!(left.is_empty(), "processes left behind: {left:?}");
        status
    }
}

impl Drop for Dinv {
    /// A panicking test still leaves nothing running: SIGKILL dinv, then what it started.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..50 {
            let left = processes_under(self.dir.path());
            if left.is_empty() {
                break;
            }
            for pid in left {
                signal(pid, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // dockerd bind-mounts its data root on itself and leaves the mount behind when it dies
        // early (a failed start) or is killed; the temp dir cannot be removed under it.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn tcp_refused(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_err()
}

mod cli {
    use super::*;

    #[test]
    fn help_prints_usage_and_exits_0() {
        for h in ["-h", "-help", "--help"] {
            let out = Command::new(dinv_bin()).arg(h).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{h}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.starts_with(&format!("Usage of {}:\n", dinv_bin())),
                "{text}"
            );
            for flag in [
                "-tls\n",
                "-tlsverify\n",
                "-local\n",
                "-storage driver\n",
                "-vic-ip ",
            ] {
                assert!(text.contains(flag), "{flag}: {text}");
            }
            assert!(!text.contains("dinv: starting"));
        }
    }

    #[test]
    fn unknown_flag_is_usage_on_stderr_and_exit_2() {
        let out = Command::new(dinv_bin())
            .args(["-tls", "-nope"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.starts_with("flag provided but not defined: -nope\nUsage of "),
            "{text}"
        );
    }

    #[test]
    fn local_with_a_whitelist_is_a_usage_error() {
        let out = Command::new(dinv_bin())
            .args(["-local", "-whitelist-registry", "r.example"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
}

mod engine {
    use super::*;

    #[test]
    fn plain_serves_tcp_and_exits_with_dockerds_status() {
        let mut dinv = Start::new(&[]).start();
        let version = dinv.docker_ok(
            "127.0.0.1",
            &[],
            &["info", "--format", "{{.ServerVersion}}"],
        );
        assert!(!version.trim().is_empty());
        let out = dinv.stdout();
        assert!(
            out.contains(&format!("-H tcp://0.0.0.0:{}", dinv.port)),
            "{out}"
        );
        assert!(out.contains("--storage-driver=vfs"), "{out}");
        // dockerd accepts the API versions the VCH serves (Docker 29 reads this).
        let pid = dinv.dockerd_pid.expect("dockerd's pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            environ
                .split(|&b| b == 0)
                .any(|v| v == b"DOCKER_MIN_API_VERSION=1.24"),
            "dockerd's environment lacks DOCKER_MIN_API_VERSION=1.24"
        );
        // No TLS: no certificate written.
        assert!(!dinv.certs.exists());
        let status = dinv.stop();
        assert_eq!(status.code(), Some(0), "{}", dinv.logs());
    }

    #[test]
    fn tls_generates_a_server_certificate() {
        let mut dinv = Start::new(&["-tls"]).start();
        dinv.trust_ca_for_cli();
        dinv.docker_ok("127.0.0.1", &["--tls"], &["info"]);
        for f in ["docker.crt", "docker.key"] {
            assert!(dinv.certs.join(f).exists(), "{f}");
        }
        let out = dinv.stdout();
        assert!(
            out.contains("--tls --tlsverify=false --tlscacert="),
            "{out}"
        );
        assert!(
            out.contains("the server certificate covers") && out.contains("localhost, 127.0.0.1"),
            "{out}"
        );
        // Plain HTTP against the TLS port fails.
        assert!(!dinv.docker("127.0.0.1", &[], &["info"]).status.success());
        assert_eq!(dinv.stop().code(), Some(0));
    }

    #[test]
    fn tlsverify_generates_six_files_and_a_second_start_reuses_them() {
        let mut dinv = Start::new(&["-tlsverify"]).start();
        let certs = dinv.certs.clone();
        let names: Vec<String> = read_all(&certs).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "ca-key.pem",
                "ca.crt",
                "docker-client.crt",
                "docker-client.key",
                "docker.crt",
                "docker.key"
            ]
        );
        // The client trio, copied out.
        let client = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "docker-client.crt", "docker-client.key"] {
            std::fs::copy(certs.join(f), client.path().join(f)).unwrap();
        }
        let c = |f: &str| client.path().join(f).display().to_string();
        let (ca, cert, key) = (c("ca.crt"), c("docker-client.crt"), c("docker-client.key"));
        let verify = [
            "--tlsverify",
            "--tlscacert",
            &ca,
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
        ];
        dinv.docker_ok("localhost", &verify, &["info"]);
        dinv.docker_ok("127.0.0.1", &verify, &["info"]);
        // Without a client certificate: refused.
        let out = dinv.docker("127.0.0.1", &["--tlsverify", "--tlscacert", &ca], &["info"]);
        assert!(!out.status.success(), "served without a client certificate");
        let out = dinv.docker("127.0.0.1", &["--tls"], &["info"]);
        assert!(!out.status.success(), "served without a client certificate");
        assert_eq!(dinv.stop().code(), Some(0));

        // A second start: the same files, byte for byte; the same client works.
        let before = read_all(&certs);
        let keep = tempfile::tempdir().unwrap();
        let certs_copy = keep.path().join("certs");
        std::fs::create_dir(&certs_copy).unwrap();
        for (name, bytes) in &before {
            std::fs::write(certs_copy.join(name), bytes).unwrap();
        }
        let mut again = Start::new(&["-tlsverify"]).certs(&certs_copy).start();
        again.docker_ok("127.0.0.1", &verify, &["info"]);
        assert_eq!(read_all(&certs_copy), before);
        assert!(again.stdout().contains("as it is"), "{}", again.stdout());
        assert_eq!(again.stop().code(), Some(0));
    }

    #[test]
    fn local_has_no_tcp_listener() {
        let mut dinv = Start::new(&["-local"]).start();
        assert!(tcp_refused(dinv.port), "TCP port open with -local");
        let out = dinv.stdout();
        assert!(!out.contains("tcp://"), "{out}");
        // The socket from the extra arguments replaces the default one.
        assert!(!out.contains("/var/run/docker.sock"), "{out}");
        let client = HttpClient::unix(&dinv.socket());
        assert_eq!(client.get("http://docker/_ping").unwrap().status, 200);
        assert_eq!(dinv.stop().code(), Some(0));
    }

    /// Certificates copied in from a VCH (no CA key, no client pair): used as they are.
    #[test]
    fn supplied_certificates_are_kept_byte_for_byte() {
        use vch_pki::{CaOptions, CertificateAuthority, LeafOptions};
        let ca = CertificateAuthority::generate(&CaOptions::new("vch CA")).unwrap();
        let server = ca.issue(&LeafOptions::server(["127.0.0.1"])).unwrap();
        let client = ca.issue(&LeafOptions::client("user")).unwrap();
        let keep = tempfile::tempdir().unwrap();
        let certs = keep.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(certs.join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(certs.join("docker.crt"), server.cert_pem()).unwrap();
        std::fs::write(certs.join("docker.key"), server.key().to_pem()).unwrap();
        let user = keep.path().join("user");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("cert.pem"), client.cert_pem()).unwrap();
        std::fs::write(user.join("key.pem"), client.key().to_pem()).unwrap();
        let before = read_all(&certs);

        let mut dinv = Start::new(&["-tlsverify"]).certs(&certs).start();
        let u = |f: &str| user.join(f).display().to_string();
        let ca_path = certs.join("ca.crt").display().to_string();
        dinv.docker_ok(
            "127.0.0.1",
            &[
                "--tlsverify",
                "--tlscacert",
                &ca_path,
                "--tlscert",
                &u("cert.pem"),
                "--tlskey",
                &u("key.pem"),
            ],
            &["info"],
        );
        assert_eq!(read_all(&certs), before, "nothing written or changed");
        assert_eq!(dinv.stop().code(), Some(0));
    }

    #[test]
    fn an_incomplete_set_is_an_error_naming_the_missing_files() {
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("docker.crt"), "x").unwrap();
        let out = Command::new(dinv_bin())
            .args(["-tlsverify", "-certs"])
            .arg(keep.path())
            .args(["-dockerd", "/nonexistent/dockerd"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("missing docker.key"), "{err}");
        assert_eq!(read_all(keep.path()).len(), 1);
    }

    #[test]
    fn debug_logs_from_dinv_and_dockerd() {
        let mut dinv = Start::new(&[]).env("DEBUG", "1").start();
        let out = dinv.stdout();
        assert!(out.contains("dockerd --log-level debug"), "{out}");
        dinv.stop();
        let err = dinv.stderr();
        assert!(
            err.contains("DEBUG") && err.contains("dinv starting"),
            "{}",
            tail(&err, 20)
        );
        assert!(err.contains("level=debug"), "{}", tail(&err, 20));
    }

    /// `-vic-ip` as an address: the new server certificate is for it, the output lists what
    /// the certificate covers, and a verifying client reaches the engine at that address.
    /// The stop is SIGQUIT, which dinv forwards: dockerd 20.10 answers it with a goroutine dump
    /// and exits at once, without cleanup.
    #[test]
    fn vic_ip_address_is_in_the_certificate_and_sigquit_reaches_dockerd() {
        let mut dinv = Start::new(&["-tlsverify", "-vic-ip", "127.0.0.2"]).start();
        let pem = std::fs::read(dinv.certs.join("docker.crt")).unwrap();
        let inspection =
            vch_pki::inspect_pem(&pem, "docker.crt", &vch_pki::InspectOptions::default()).unwrap();
        let leaf = &inspection.certificates[0];
        let ips: Vec<String> = leaf.ip_addresses.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.1"], "{leaf:?}");
        assert!(leaf.dns_names.contains(&"localhost".to_owned()), "{leaf:?}");
        // The output names exactly what the certificate covers, the -vic-ip address first.
        let out = dinv.stdout();
        let covers = out
            .lines()
            .find_map(|l| l.strip_prefix("dinv: the server certificate covers "))
            .unwrap_or_else(|| panic!("no names listed\n{out}"));
        assert!(covers.starts_with("127.0.0.2, "), "{covers}");
        let mut listed: Vec<&str> = covers.split(", ").collect();
        let mut sans: Vec<&str> = ips
            .iter()
            .chain(&leaf.dns_names)
            .map(String::as_str)
            .collect();
        listed.sort_unstable();
        sans.sort_unstable();
        assert_eq!(listed, sans);

        let cert_path = dinv.client_cert_path();
        let info = dinv.docker_env("127.0.0.2", &cert_path, &["info", "--format", "{{.ID}}"]);
        assert!(
            info.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&info.stderr),
            dinv.logs()
        );

        // dockerd 20.10 (cmd/dockerd trap): stack dump, then os.Exit(128 + SIGQUIT) at once.
        // Its containerd dies with it (stop_with checks); the data root's bind mount is left
        // behind (Drop unmounts it).
        let status = dinv.stop_with(Signal::QUIT);
        assert_eq!(status.code(), Some(128 + 3), "{}", dinv.logs());
        let err = dinv.stderr();
        assert!(
            err.contains("goroutine 1 [")
                && err.contains("Forcing docker daemon shutdown without cleanup on SIGQUIT")
                && err.contains("dinv: dockerd exited: exit status: 131"),
            "{}",
            tail(&err, 40)
        );
    }

    /// A `-vic-ip` name that does not resolve cannot go into a certificate: exit 1 with the
    /// cause, nothing written and no dockerd. (`.invalid` never resolves, RFC 6761 section
    /// 6.4; this relies on the host's resolver answering NXDOMAIN within the 2 s budget.)
    #[test]
    fn vic_ip_name_that_does_not_resolve_is_an_error() {
        let mut dinv = Start::new(&["-tlsverify", "-vic-ip", "no-such-host.invalid"]).spawn();
        let mut child = dinv.child.take().unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("dinv exits");
        assert_eq!(status.code(), Some(1), "{}", dinv.logs());
        let err = dinv.stderr();
        assert!(
            err.starts_with("dinv: cannot resolve -vic-ip no-such-host.invalid: "),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            !dinv.stdout().contains("dinv: starting"),
            "{}",
            dinv.stdout()
        );
        assert!(!dinv.certs.exists(), "TLS material written");
        assert!(!dinv.dir.path().join("docker.pid").exists());
        assert!(processes_under(dinv.dir.path()).is_empty());
    }
}

mod policy_front {
    use super::*;

    /// Two registries, each holding `team/app:v1`: one to whitelist, one to be refused.
    fn registries_with_team_app() -> (Registry, Registry) {
        let (allowed, denied) = (Registry::start().unwrap(), Registry::start().unwrap());
        let client = HttpClient::plain();
        for r in [&allowed, &denied] {
            TestImage::random("team/app", "v1")
                .push(&client, r.url())
                .unwrap();
        }
        (allowed, denied)
    }

    #[test]
    fn whitelist_denies_and_allows_pulls() {
        let (allowed, denied) = registries_with_team_app();
        let mut dinv = Start::new(&["-tls", "-whitelist-registry", &allowed.addr()]).start();
        dinv.trust_ca_for_cli();
        let out = dinv.stdout();
        assert!(out.contains("policy endpoint on 0.0.0.0:"), "{out}");
        // dockerd itself has no TCP listener and no TLS flags.
        assert!(
            !out.contains("tcp://") && !out.contains("--tlscert"),
            "{out}"
        );

        let no = dinv.docker(
            "127.0.0.1",
            &["--tls"],
            &["pull", &format!("{}/team/app:v1", denied.addr())],
        );
        let err = String::from_utf8_lossy(&no.stderr);
        assert!(
            !no.status.success(),
            "pull from a registry off the whitelist succeeded"
        );
        assert!(err.contains("Error response from daemon"), "{err}");
        dinv.docker_ok(
            "127.0.0.1",
            &["--tls"],
            &["pull", &format!("{}/team/app:v1", allowed.addr())],
        );
        assert_eq!(dinv.stop().code(), Some(0));
    }

    /// `-whitelist-registry` with `-tlsverify`: the front asks for a client certificate from
    /// `ca.crt` as dockerd would, then filters pulls with the VCH's denial text. SIGHUP reaches
    /// dockerd (a configuration reload) and ends nothing; SIGINT then stops dockerd, and dinv
    /// with it.
    #[test]
    fn tlsverify_front_wants_the_client_trio_and_filters_pulls() {
        let (allowed, denied) = registries_with_team_app();
        let mut dinv = Start::new(&["-tlsverify", "-whitelist-registry", &allowed.addr()]).start();
        let out = dinv.stdout();
        assert!(out.contains("(tlsverify)"), "{out}");
        assert!(!out.contains("tcp://") && !out.contains("--tls"), "{out}");
        let cert_path = dinv.client_cert_path();

        // Without a client certificate: the handshake fails.
        let ca = cert_path.join("ca.pem").display().to_string();
        let no_cert = dinv.docker("127.0.0.1", &["--tlsverify", "--tlscacert", &ca], &["info"]);
        let err = String::from_utf8_lossy(&no_cert.stderr);
        assert!(
            !no_cert.status.success(),
            "served without a client certificate"
        );
        assert!(err.contains("tls: certificate required"), "{err}");
        let ca_only = dinv.dir.path().join("ca-only");
        std::fs::create_dir(&ca_only).unwrap();
        std::fs::copy(&ca, ca_only.join("ca.pem")).unwrap();
        let no_cert = dinv.docker_env("127.0.0.1", &ca_only, &["info"]);
        let err = String::from_utf8_lossy(&no_cert.stderr);
        assert!(
            !no_cert.status.success(),
            "served without a client certificate"
        );
        assert!(err.contains("tls: certificate required"), "{err}");
        assert!(dinv.stderr().contains("peer sent no certificates"));

        // With the trio: served, and filtered.
        dinv.assert_success(&dinv.docker_env("localhost", &cert_path, &["info"]));
        let no = dinv.docker_env(
            "127.0.0.1",
            &cert_path,
            &["pull", &format!("{}/team/app:v1", denied.addr())],
        );
        assert!(
            !no.status.success(),
            "pull from off the whitelist succeeded"
        );
        let err = String::from_utf8_lossy(&no.stderr);
        let denial = format!(
            "Access denied to unauthorized registry ({}) while VCH is in whitelist mode",
            denied.addr()
        );
        assert!(err.contains(&denial), "{err}");
        dinv.assert_success(&dinv.docker_env(
            "127.0.0.1",
            &cert_path,
            &["pull", &format!("{}/team/app:v1", allowed.addr())],
        ));

        // SIGHUP: dockerd reloads its configuration; dinv, dockerd and the front stay.
        let dockerd = dinv.dockerd_pid.expect("dockerd's pid");
        signal(dinv.child.as_ref().unwrap().id(), Signal::HUP);
        dinv.wait_for_stderr("Got signal to reload configuration");
        assert!(dinv.child.as_mut().unwrap().try_wait().unwrap().is_none());
        assert!(Path::new(&format!("/proc/{dockerd}")).exists());
        dinv.assert_success(&dinv.docker_env("127.0.0.1", &cert_path, &["info"]));

        assert_eq!(
            dinv.stop_with(Signal::INT).code(),
            Some(0),
            "{}",
            dinv.logs()
        );
    }

    #[test]
    fn a_taken_port_fails_the_start_without_a_dockerd() {
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut dinv = Start::new(&["-whitelist-registry", "r.example"])
            .port(port)
            .spawn();
        let mut child = dinv.child.take().unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("dinv exits");
        assert_eq!(status.code(), Some(1), "{}", dinv.logs());
        let mut err = String::new();
        std::fs::File::open(dinv.dir.path().join("err.log"))
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(err.contains("cannot start the policy endpoint"), "{err}");
        assert!(!dinv.dir.path().join("docker.pid").exists());
        assert!(processes_under(dinv.dir.path()).is_empty());
    }
}
