//! A VCH under test: the proxy in front of a testbed dockerd, certificates, audit capture.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;
use vch_pki::{CaOptions, CertificateAuthority, LeafOptions};
use vch_policy::{Policy, PolicyBuilder, RegistryConfig, RegistryRules};
use vch_proxy::{Handle, Listen, Options, Server, Settings, Upstream, server_tls};
use vch_testbed::Dockerd;

/// How clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Plain,
    Tls,
    MutualTls,
}

/// Client and server certificate files for one test.
pub(crate) struct Certs {
    pub(crate) dir: tempfile::TempDir,
}

impl Certs {
    /// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in the
    /// layout the docker CLI expects (`ca.pem`, `cert.pem`, `key.pem`), plus the server pair.
    pub(crate) fn new(client_name: &str) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate(&CaOptions::new("vch test CA")).unwrap();
        let server = ca
            .issue(&LeafOptions::server(["127.0.0.1", "localhost"]))
            .unwrap();
        let client = ca.issue(&LeafOptions::client(client_name)).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.cert_pem());
        write("server-cert.pem", &server.cert_pem());
        write("server-key.pem", server.key().to_pem());
        write("cert.pem", &client.cert_pem());
        write("key.pem", client.key().to_pem());
        Certs { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Short timeouts: a test's requests are quick.
fn test_options() -> Options {
    Options {
        header_read_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(5),
        ..Options::default()
    }
}

/// Rules with only these whitelist entries.
fn whitelist_rules(whitelist: &[&str]) -> RegistryRules {
    let mut policy = PolicyBuilder::new();
    for entry in whitelist {
        policy.whitelist(*entry);
    }
    RegistryRules {
        pull: policy.build().unwrap(),
        ..RegistryRules::default()
    }
}

/// The proxy running on its own tokio runtime, in front of a dockerd.
pub(crate) struct Vch {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: Handle,
    pub(crate) mode: Mode,
    pub(crate) certs: Certs,
    runtime: Option<tokio::runtime::Runtime>,
    docker_config: PathBuf,
}

impl Vch {
    pub(crate) fn start(dockerd: &Dockerd, mode: Mode, whitelist: &[&str]) -> Vch {
        Self::start_with(dockerd.host(), dockerd.docker_config_dir(), mode, whitelist)
    }

    pub(crate) fn start_with(
        docker_host: String,
        docker_config: &Path,
        mode: Mode,
        whitelist: &[&str],
    ) -> Vch {
        let upstream = Upstream::parse(&docker_host, None).unwrap();
        Self::start_opts(upstream, docker_config, mode, whitelist, test_options())
    }

    pub(crate) fn start_opts(
        upstream: Upstream,
        docker_config: &Path,
        mode: Mode,
        whitelist: &[&str],
        options: Options,
    ) -> Vch {
        Self::start_rules(
            upstream,
            docker_config,
            mode,
            whitelist_rules(whitelist),
            options,
        )
    }

    /// As [`Vch::start`], pinned to VIC's API 1.25 (`[api] version = "1.25"`): what a client does
    /// through it shows in dockerd's log as `/v1.25/…`, apart from what a test does directly.
    pub(crate) fn start_vic(dockerd: &Dockerd, mode: Mode, whitelist: &[&str]) -> Vch {
        let upstream = Upstream::parse(&dockerd.host(), None).unwrap();
        Self::start_pinned(
            upstream,
            dockerd.docker_config_dir(),
            mode,
            whitelist_rules(whitelist),
            test_options(),
            Some(vch_proxy::VIC_API_VERSION),
        )
    }

    /// The proxy in front of `dockerd` with a `[registry]` section as `vch.toml` would hold it
    /// (push list, mode, narrowed lists).
    pub(crate) fn start_config(dockerd: &Dockerd, mode: Mode, config: &RegistryConfig) -> Vch {
        let rules = config.compile_rules(Path::new(".")).unwrap();
        let upstream = Upstream::parse(&dockerd.host(), None).unwrap();
        Self::start_rules(
            upstream,
            dockerd.docker_config_dir(),
            mode,
            rules,
            test_options(),
        )
    }

    pub(crate) fn start_rules(
        upstream: Upstream,
        docker_config: &Path,
        mode: Mode,
        rules: RegistryRules,
        options: Options,
    ) -> Vch {
        Self::start_pinned(upstream, docker_config, mode, rules, options, None)
    }

    pub(crate) fn start_pinned(
        upstream: Upstream,
        docker_config: &Path,
        mode: Mode,
        rules: RegistryRules,
        options: Options,
        pin: Option<vch_proxy::ApiVersion>,
    ) -> Vch {
        init_audit_capture();
        let certs = Certs::new("vch-test-client");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut settings = Settings::new(upstream, Policy::empty())
            .with_rules(rules)
            .with_api_version(pin);
        settings = match mode {
            Mode::Plain => settings,
            Mode::Tls => settings.with_tls(
                server_tls(
                    &certs.path("server-cert.pem"),
                    &certs.path("server-key.pem"),
                    None,
                )
                .unwrap(),
            ),
            Mode::MutualTls => settings.with_tls(
                server_tls(
                    &certs.path("server-cert.pem"),
                    &certs.path("server-key.pem"),
                    Some(&certs.path("ca.pem")),
                )
                .unwrap(),
            ),
        };
        let server = runtime
            .block_on(Server::bind(
                &[Listen::Tcp("127.0.0.1:0".parse().unwrap())],
                settings,
                options,
            ))
            .unwrap();
        let addr = server.local_addrs()[0].parse().unwrap();
        let handle = server.handle();
        runtime.spawn(server.run());
        Vch {
            addr,
            handle,
            mode,
            certs,
            runtime: Some(runtime),
            docker_config: docker_config.to_owned(),
        }
    }

    /// The docker CLI aimed at the proxy, with the mode's TLS flags.
    pub(crate) fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION")
            .env("DOCKER_BUILDKIT", "0")
            .arg("-H")
            .arg(format!("tcp://{}", self.addr));
        match self.mode {
            Mode::Plain => {}
            Mode::Tls => {
                cmd.arg("--tlsverify")
                    .arg("--tlscacert")
                    .arg(self.certs.path("ca.pem"));
            }
            Mode::MutualTls => {
                cmd.arg("--tlsverify")
                    .arg("--tlscacert")
                    .arg(self.certs.path("ca.pem"))
                    .arg("--tlscert")
                    .arg(self.certs.path("cert.pem"))
                    .arg("--tlskey")
                    .arg(self.certs.path("key.pem"));
            }
        }
        cmd
    }

    /// Runs the docker CLI through the proxy; panics with stderr on failure.
    pub(crate) fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Vch {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

static AUDIT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Audit records seen so far (JSON lines), across every test in this binary.
pub(crate) fn audit_records() -> Vec<serde_json::Value> {
    AUDIT
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != vch_proxy::AUDIT_TARGET {
            return;
        }
        struct Visitor(Option<String>);
        impl tracing::field::Visit for Visitor {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "record" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut v = Visitor(None);
        event.record(&mut v);
        if let Some(line) = v.0 {
            AUDIT.lock().unwrap().push(line);
        }
    }
}

pub(crate) fn init_audit_capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// A dockerd with debug logging (its log shows every API call, to prove what never reached it).
pub(crate) fn dockerd() -> Dockerd {
    Dockerd::builder()
        .log_level("debug")
        .start()
        .expect("dockerd from the testbed must start (apt-get install docker.io)")
}
