//! A private `dockerd` (with its own managed containerd) in a temp dir.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::process::{self, Supervised, flag};

/// Default bound on the wait for `/_ping`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Files for dockerd's TLS TCP listener (`--tlsverify`: clients must present a certificate
/// signed by `ca`).
#[derive(Clone, Debug)]
pub struct DockerdTls {
    /// CA bundle that client certificates must chain to (`--tlscacert`).
    pub ca: PathBuf,
    /// Server certificate chain (`--tlscert`).
    pub cert: PathBuf,
    /// Server private key (`--tlskey`).
    pub key: PathBuf,
}

/// Configures and starts a [`Dockerd`].
#[derive(Clone, Debug)]
#[must_use]
pub struct DockerdBuilder {
    args: Vec<OsString>,
    tcp: bool,
    tls: Option<DockerdTls>,
    insecure_registries: Vec<String>,
    registry_mirrors: Vec<String>,
    log_level: String,
    timeout: Duration,
}

impl Default for DockerdBuilder {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            tcp: false,
            tls: None,
            insecure_registries: Vec::new(),
            registry_mirrors: Vec::new(),
            log_level: "info".to_owned(),
            timeout: START_TIMEOUT,
        }
    }
}

impl DockerdBuilder {
    /// Appends one extra command-line argument for dockerd.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends extra command-line arguments for dockerd.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Also listens on plain TCP at 127.0.0.1 on a free port (see [`Dockerd::tcp_addr`]).
    ///
    /// dockerd 20.10 warns about a TCP listener without `--tlsverify` and then sleeps one
    /// second before going on (seen in its log timestamps; the 15 s penalty of later releases
    /// applies only to non-loopback addresses). We accept that second rather than relay the
    /// unix socket, so tests talk to dockerd's own listener. [`DockerdBuilder::tls`] has no
    /// such delay.
    pub fn tcp_listener(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// Listens on TCP at 127.0.0.1 (free port) with `--tlsverify` and these files; replaces a
    /// plain [`DockerdBuilder::tcp_listener`].
    pub fn tls(mut self, tls: DockerdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds `--insecure-registry` (a `host:port` or CIDR).
    pub fn insecure_registry(mut self, registry: impl Into<String>) -> Self {
        self.insecure_registries.push(registry.into());
        self
    }

    /// Adds `--registry-mirror` (a URL).
    pub fn registry_mirror(mut self, url: impl Into<String>) -> Self {
        self.registry_mirrors.push(url.into());
        self
    }

    /// dockerd's `--log-level` (default `info`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Bound on the wait for `/_ping` (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts dockerd and waits until `GET /_ping` answers `OK` on its unix socket.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without `dockerd` or `containerd`; [`Error::Exited`] or
    /// [`Error::Timeout`] (with the log tail) when it does not come up.
    pub fn start(self) -> Result<Dockerd> {
        let binary = process::find_binary("dockerd", "docker.io")?;
        // dockerd starts its own containerd from PATH; fail with the package name, not a log.
        process::find_binary("containerd", "containerd")?;
        process::find_binary("runc", "runc")?;
        process::retry_port_clash("dockerd", || self.start_once(&binary))
    }

    fn start_once(&self, binary: &Path) -> Result<Dockerd> {
        let dir = process::short_tempdir("vchd-")?;
        let root = dir.path().to_owned();
        let socket = root.join("docker.sock");
        let config_file = root.join("daemon.json");
        let docker_config = root.join("docker-config");
        for d in [root.join("data"), root.join("exec"), docker_config.clone()] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        // A config file of our own keeps /etc/docker/daemon.json out of the picture. The trust
        // key (which is also the daemon ID) defaults to the shared /etc/docker/key.json; its
        // only setting is this config key.
        let config = serde_json::json!({
            "deprecated-key-path": root.join("key.json").to_string_lossy(),
        });
        std::fs::write(&config_file, format!("{config}\n"))
            .map_err(|e| Error::io(format!("write {}", config_file.display()), e))?;
        std::fs::write(docker_config.join("config.json"), "{}\n")
            .map_err(|e| Error::io(format!("write {}", docker_config.display()), e))?;

        let namespace = format!(
            "vch-{}",
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut cmd = Command::new(binary);
        cmd.arg(flag("--data-root", root.join("data")))
            .arg(flag("--exec-root", root.join("exec")))
            .arg(flag("--pidfile", root.join("docker.pid")))
            .arg(flag("--config-file", &config_file))
            .arg(flag("--host", format!("unix://{}", socket.display())))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--userland-proxy=false",
                // Containers still running at shutdown get this long before SIGKILL, so a
                // drop finishes within the testbed's own stop grace.
                "--shutdown-timeout=3",
            ])
            .arg(flag("--containerd-namespace", &namespace))
            .arg(flag(
                "--containerd-plugins-namespace",
                format!("{namespace}-p"),
            ))
            .arg(flag("--log-level", &self.log_level));
        let mut tcp = None;
        if self.tcp || self.tls.is_some() {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, process::free_port()?));
            cmd.arg(flag("--host", format!("tcp://{addr}")));
            tcp = Some(addr);
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tlsverify")
                .arg(flag("--tlscacert", &tls.ca))
                .arg(flag("--tlscert", &tls.cert))
                .arg(flag("--tlskey", &tls.key));
        }
        for r in &self.insecure_registries {
            cmd.arg(flag("--insecure-registry", r));
        }
        for m in &self.registry_mirrors {
            cmd.arg(flag("--registry-mirror", m));
        }
        cmd.args(&self.args);
        // The daemon must not pick up a client's environment.
        for var in [
            "DOCKER_HOST",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "DOCKER_CONFIG",
        ] {
            cmd.env_remove(var);
        }

        let log = root.join("dockerd.log");
        // containerd and its shims name our exec root on their command lines: if any survive
        // dockerd, the stop finds them by it.
        let mut proc = Supervised::spawn("dockerd", cmd, &log, Some(&root.join("")))?;
        let client = HttpClient::unix(&socket);
        proc.wait_ready(self.timeout, || {
            if !socket.exists() {
                return Err(format!("{} not created yet", socket.display()));
            }
            match client.get("http://docker/_ping") {
                Ok(r) if r.status == 200 && r.body == b"OK" => Ok(()),
                Ok(r) => Err(format!("/_ping answered {} {:?}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            }
        })?;
        tracing::info!(socket = %socket.display(), ?tcp, "dockerd ready");
        Ok(Dockerd {
            proc,
            socket,
            tcp,
            docker_config,
            dir,
        })
    }
}

/// A running private dockerd. Dropping it stops dockerd (which stops its containers and its
/// containerd), then any containerd or shim left behind, then removes the temp dir.
///
/// ```no_run
/// # fn main() -> vch_testbed::Result<()> {
/// let dockerd = vch_testbed::Dockerd::start()?;
/// let out = dockerd.docker().arg("version").output().expect("docker CLI runs");
/// assert!(out.status.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Dockerd {
    // Field order matters: the process stops before the dir is removed.
    proc: Supervised,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    docker_config: PathBuf,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// A builder for options.
    pub fn builder() -> DockerdBuilder {
        DockerdBuilder::default()
    }

    /// Starts a dockerd with the default options.
    ///
    /// # Errors
    /// See [`DockerdBuilder::start`].
    pub fn start() -> Result<Self> {
        DockerdBuilder::default().start()
    }

    /// Path of the API unix socket.
    #[must_use]
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// `unix://<socket>`, for `docker -H` or `DOCKER_HOST`.
    #[must_use]
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The TCP listener, when one was asked for.
    #[must_use]
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The docker CLI (the first `docker` in `PATH`) aimed at this daemon, with an isolated
    /// `DOCKER_CONFIG` so credentials and contexts of the machine do not leak in.
    #[must_use]
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("--host")
            .arg(self.host())
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    /// Runs `docker ARGS…` against this daemon and returns its stdout; a non-zero exit is an
    /// [`Error::Command`] carrying stderr.
    ///
    /// # Errors
    /// When the CLI is missing or fails.
    pub fn docker_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        process::find_binary("docker", "docker.io")?;
        let out = process::run(self.docker().args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `DOCKER_CONFIG` directory the [`Dockerd::docker`] command uses.
    #[must_use]
    pub fn docker_config_dir(&self) -> &Path {
        &self.docker_config
    }

    /// An HTTP client for the Engine API on the unix socket (URLs like `http://docker/_ping`).
    #[must_use]
    pub fn api(&self) -> HttpClient {
        HttpClient::unix(&self.socket)
    }

    /// The daemon's temp dir (data root, exec root, log, socket).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// dockerd's process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The text of dockerd's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        process::read_log(self.proc.log_path())
    }

    /// Stops dockerd now (also done on drop): running containers are killed first, since
    /// dockerd would give each 10 s to react to SIGTERM (a shell as PID 1 ignores it).
    pub fn stop(&mut self) {
        if self.proc.pid().is_some() {
            self.kill_containers();
        }
        self.proc.stop();
    }

    fn kill_containers(&self) {
        // Short: a wedged daemon must not hold up the drop; SIGTERM/SIGKILL follow anyway.
        let api = self.api().timeout(Duration::from_secs(5));
        let Ok(list) = api.get("http://docker/containers/json") else {
            return;
        };
        let Ok(serde_json::Value::Array(containers)) = serde_json::from_slice(&list.body) else {
            return;
        };
        for id in containers.iter().filter_map(|c| c["Id"].as_str()) {
            let url = format!("http://docker/containers/{id}/kill");
            if let Err(e) = api.request("POST", &url, &[], &[]) {
                tracing::debug!(id, error = %e, "kill before stop failed");
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}
