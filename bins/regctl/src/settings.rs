//! regctl's own settings (`~/.regctl/config.json` or `$REGCTL_CONFIG`), the `--policy` gate,
//! and building a registry client from them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use vch_registry::{Client, Credentials, DockerConfig, HostSettings, PlainHttp};

/// How to reach a registry.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// HTTPS with verification (default).
    #[default]
    Enabled,
    /// HTTPS without verification, falling back to plain HTTP (Docker's insecure registry).
    Insecure,
    /// Plain HTTP.
    Disabled,
}

/// Settings for one registry host.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// Transport.
    pub tls: TlsMode,
    /// Extra CA files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cacert: Vec<PathBuf>,
    /// Client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Client key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// base64 `user:password` from `registry login`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// The settings file.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// By registry host (`name[:port]`).
    pub hosts: BTreeMap<String, HostConfig>,
}

impl Config {
    /// `$REGCTL_CONFIG`, else `~/.regctl/config.json`.
    pub fn path() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("REGCTL_CONFIG") {
            return Ok(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME").context("HOME is not set; set REGCTL_CONFIG")?;
        Ok(PathBuf::from(home).join(".regctl").join("config.json"))
    }

    /// Reads the file; missing is empty.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Writes atomically (temp file, fsync, rename), mode 0600: it may hold credentials.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
        Ok(())
    }
}

/// The `[registry]` section of a VCH config file, compiled.
pub(crate) struct PolicyGate {
    policy: vch_policy::Policy,
    base_dir: PathBuf,
    ca: Vec<PathBuf>,
}

impl PolicyGate {
    /// Reads `[registry]` from a VCH config (TOML); other sections are ignored.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            registry: vch_policy::RegistryConfig,
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let file: File =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let policy = file
            .registry
            .compile(&base_dir)
            .with_context(|| format!("the [registry] policy in {}", path.display()))?;
        Ok(Self {
            policy,
            ca: file.registry.ca.clone(),
            base_dir,
        })
    }

    /// Refuses a denied registry with the VCH's message; otherwise the transport to use.
    pub(crate) fn check(&self, host: &str) -> anyhow::Result<TlsMode> {
        let registry = vch_policy::Registry::parse(host)
            .with_context(|| format!("registry {host:?} in the policy's terms"))?;
        let decision = self.policy.decide_registry(&registry);
        if let Some(message) = decision.denial_message() {
            bail!("{message}");
        }
        Ok(match decision.transport() {
            Some(vch_policy::Transport::Insecure) => TlsMode::Insecure,
            _ => TlsMode::Enabled,
        })
    }
}

/// Builds clients: per-host settings, certs.d, credentials, and the policy gate.
pub(crate) struct Clients {
    pub(crate) config: Config,
    pub(crate) policy: Option<PolicyGate>,
    pub(crate) docker: DockerConfig,
}

impl Clients {
    /// A client for `host`.
    pub(crate) async fn client(&self, host: &str) -> anyhow::Result<Client> {
        self.client_with(host, None).await
    }

    /// A client for `host` whose transport is `tls` when given (a replication endpoint's
    /// URL scheme and `verify_tls`), else regctl's setting or the policy's.
    pub(crate) async fn client_with(
        &self,
        host: &str,
        tls: Option<TlsMode>,
    ) -> anyhow::Result<Client> {
        let hc = self.config.hosts.get(host).cloned().unwrap_or_default();
        let mut builder = HostSettings::builder(host);
        let mut policy_tls = None;
        if let Some(gate) = &self.policy {
            // The policy decides secure or insecure; its CAs are trusted like --registry-ca.
            policy_tls = Some(gate.check(host)?);
            for ca in &gate.ca {
                builder = builder.ca_file(gate.base_dir.join(ca));
            }
        }
        if policy_tls == Some(TlsMode::Enabled) && tls.is_some_and(|t| t != TlsMode::Enabled) {
            bail!(
                "{host}: the policy lists it as a secure registry; its endpoint must be \
                 https:// with verify_tls = true"
            );
        }
        let tls = tls.or(policy_tls).unwrap_or(hc.tls);
        for ca in &hc.cacert {
            builder = builder.ca_file(ca);
        }
        for dir in certs_d_roots() {
            builder = builder.certs_d(dir);
        }
        match (&hc.client_cert, &hc.client_key) {
            (Some(c), Some(k)) => builder = builder.client_cert(c, k),
            (None, None) => {}
            _ => bail!("{host}: --client-cert and --client-key go together"),
        }
        let settings = match tls {
            TlsMode::Enabled => builder.build(),
            TlsMode::Insecure => builder.dangerous().insecure().build(),
            TlsMode::Disabled => builder.dangerous().plain_http(PlainHttp::Only).build(),
        }?;
        let credentials = match hc.auth.as_deref() {
            Some(auth) => decode_auth(auth).with_context(|| format!("stored login for {host}"))?,
            None => self.docker.credentials(host).await?,
        };
        Ok(Client::builder(host)
            .settings(settings)
            .credentials(credentials)
            .build()?)
    }
}

/// Docker's certs.d roots: the daemon's, then the user's (`~/.docker/certs.d`).
fn certs_d_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/etc/docker/certs.d")];
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".docker").join("certs.d"));
    }
    roots
}

/// base64 of `user:password`.
pub(crate) fn encode_auth(user: &str, password: &str) -> String {
    STANDARD.encode(format!("{user}:{password}"))
}

fn decode_auth(auth: &str) -> anyhow::Result<Credentials> {
    let raw = String::from_utf8(STANDARD.decode(auth)?)?;
    let (u, p) = raw.split_once(':').context("not user:password")?;
    Ok(Credentials::basic(u, p))
}
