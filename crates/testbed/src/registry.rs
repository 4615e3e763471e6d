//! The Distribution registry (`docker-registry serve CONFIG`) in a temp dir.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::process::{self, Supervised};

/// Default bound on the wait for `/v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Token authentication settings (the registry's `auth.token` section): the registry answers
/// 401 with a `WWW-Authenticate: Bearer realm=…,service=…` challenge and accepts JWTs issued
/// by `issuer` and signed by a key whose certificate is in `rootcertbundle`.
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// URL of the token server.
    pub realm: String,
    /// Service name tokens must be issued for.
    pub service: String,
    /// Expected `iss` claim.
    pub issuer: String,
    /// PEM bundle of certificates whose keys may sign tokens (must exist at start).
    pub rootcertbundle: PathBuf,
}

#[derive(Clone, Debug)]
enum Auth {
    None,
    Htpasswd(Vec<(String, String)>),
    Token(TokenAuth),
}

/// Configures and starts a [`Registry`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RegistryBuilder {
    tls: Option<(PathBuf, PathBuf)>,
    auth: Auth,
    timeout: Duration,
    notify: Vec<String>,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        Self {
            tls: None,
            auth: Auth::None,
            timeout: START_TIMEOUT,
            notify: Vec::new(),
        }
    }
}

impl RegistryBuilder {
    /// Serves HTTPS with this certificate chain and key (PEM files).
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// Requires HTTP basic auth and adds a user (bcrypt entry made by `htpasswd -B`).
    /// Replaces token auth if it was set.
    pub fn htpasswd_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let entry = (user.into(), password.into());
        match &mut self.auth {
            Auth::Htpasswd(users) => users.push(entry),
            _ => self.auth = Auth::Htpasswd(vec![entry]),
        }
        self
    }

    /// Requires bearer tokens (replaces htpasswd auth if it was set).
    pub fn token_auth(mut self, token: TokenAuth) -> Self {
        self.auth = Auth::Token(token);
        self
    }

    /// Sends the registry's notifications (push, pull, delete, mount events) to `url`
    /// (`notifications.endpoints[]`; repeatable), with a 2 s timeout and 1 s backoff so
    /// tests see events within about a second and a dead listener does not stall them.
    pub fn notify(mut self, url: impl Into<String>) -> Self {
        self.notify.push(url.into());
        self
    }

    /// Bound on the wait for `/v2/` (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the registry on a free 127.0.0.1 port and waits until `GET /v2/` answers 200 or
    /// 401.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without `docker-registry` (or `htpasswd` for basic auth);
    /// [`Error::Exited`] or [`Error::Timeout`] with the log tail when it does not come up.
    pub fn start(self) -> Result<Registry> {
        let binary = process::find_binary("docker-registry", "docker-registry")?;
        process::retry_port_clash("registry", || self.start_once(&binary))
    }

    fn start_once(&self, binary: &Path) -> Result<Registry> {
        let dir = process::short_tempdir("vchr-")?;
        let root = dir.path();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, process::free_port()?));
        let htpasswd = match &self.auth {
            Auth::Htpasswd(users) => Some(write_htpasswd(&root.join("htpasswd"), users)?),
            _ => None,
        };
        let mut config = config_yaml(
            &root.join("storage"),
            addr,
            self.tls.as_ref(),
            &self.auth,
            htpasswd.as_deref(),
        );
        config.push_str(&notifications_yaml(&self.notify));
        let config_path = root.join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| Error::io(format!("write {}", config_path.display()), e))?;

        let tls = self.tls.is_some();
        let url = format!("{}://{addr}", if tls { "https" } else { "http" });
        let proc = spawn_ready(binary, &config_path, root, &url, tls, self.timeout)?;
        tracing::info!(%url, "registry ready");
        Ok(Registry {
            proc,
            addr,
            url,
            binary: binary.to_owned(),
            config: config_path,
            timeout: self.timeout,
            dir,
        })
    }
}

/// Starts `docker-registry serve CONFIG` (log appended to `registry.log` in `root`) and
/// waits until `/v2/` answers.
fn spawn_ready(
    binary: &Path,
    config_path: &Path,
    root: &Path,
    url: &str,
    tls: bool,
    timeout: Duration,
) -> Result<Supervised> {
    let mut cmd = Command::new(binary);
    cmd.arg("serve").arg(config_path);
    // REGISTRY_* variables override the config file; the machine's must not leak in.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(name);
        }
    }
    let log = root.join("registry.log");
    let mut proc = Supervised::spawn("docker-registry", cmd, &log, None)?;
    // The probe only asks whether it is up; trust is the tests' business.
    let client = if tls {
        HttpClient::tls_without_verification()
    } else {
        HttpClient::plain()
    };
    let probe_url = format!("{url}/v2/");
    proc.wait_ready(timeout, || match client.get(&probe_url) {
        Ok(r) if r.status == 200 || r.status == 401 => Ok(()),
        Ok(r) => Err(format!("/v2/ answered {}: {}", r.status, r.text())),
        Err(e) => Err(e.to_string()),
    })?;
    Ok(proc)
}

/// The `notifications` section: one endpoint per URL, quick to deliver and to give up.
fn notifications_yaml(urls: &[String]) -> String {
    if urls.is_empty() {
        return String::new();
    }
    let mut y = String::from("notifications:\n  endpoints:\n");
    for (i, url) in urls.iter().enumerate() {
        y.push_str(&format!(
            "    - name: vch-testbed-{i}\n      url: {}\n      timeout: 2s\n      \
             threshold: 3\n      backoff: 1s\n",
            quote(url)
        ));
    }
    y
}

fn write_htpasswd(path: &Path, users: &[(String, String)]) -> Result<PathBuf> {
    let htpasswd = process::find_binary("htpasswd", "apache2-utils")?;
    let mut text = String::new();
    for (user, password) in users {
        // -B bcrypt (the only scheme the registry accepts), -b password from argv, -n print.
        let out = process::run(
            Command::new(&htpasswd)
                .args(["-B", "-b", "-n"])
                .arg(user)
                .arg(password),
        )?;
        text.push_str(String::from_utf8_lossy(&out.stdout).trim());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(path.to_owned())
}

/// A YAML double-quoted scalar: JSON string syntax is valid YAML.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn config_yaml(
    storage: &Path,
    addr: SocketAddr,
    tls: Option<&(PathBuf, PathBuf)>,
    auth: &Auth,
    htpasswd: Option<&Path>,
) -> String {
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {}\n  secret: vch-testbed-not-secret\n",
        quote_path(storage),
        quote(&addr.to_string()),
    );
    if let Some((cert, key)) = tls {
        y.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            quote_path(cert),
            quote_path(key)
        ));
    }
    match (auth, htpasswd) {
        (Auth::Htpasswd(_), Some(path)) => y.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: vch-testbed\n    path: {}\n",
            quote_path(path)
        )),
        (Auth::Token(t), _) => y.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            quote(&t.realm),
            quote(&t.service),
            quote(&t.issuer),
            quote_path(&t.rootcertbundle)
        )),
        _ => {}
    }
    y
}

/// A running Distribution registry with filesystem storage in its temp dir and deletes
/// enabled. Dropping it stops the registry and removes the dir.
///
/// ```no_run
/// # fn main() -> vch_testbed::Result<()> {
/// let registry = vch_testbed::Registry::start()?;
/// let resp = vch_testbed::HttpClient::plain().get(&format!("{}/v2/", registry.url()))?;
/// assert_eq!(resp.status, 200);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Registry {
    // Field order matters: the process stops before the dir is removed.
    proc: Supervised,
    addr: SocketAddr,
    url: String,
    binary: PathBuf,
    config: PathBuf,
    timeout: Duration,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A builder for TLS and auth options.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Starts a plain-HTTP registry without auth.
    ///
    /// # Errors
    /// See [`RegistryBuilder::start`].
    pub fn start() -> Result<Self> {
        RegistryBuilder::default().start()
    }

    /// `127.0.0.1:PORT`, as image references name it.
    #[must_use]
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The socket address.
    #[must_use]
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The registry's temp dir (config, storage, log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The text of the registry's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        process::read_log(self.proc.log_path())
    }

    /// The registry's process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Stops the registry (SIGTERM, then SIGKILL after the grace period); its storage and log
    /// stay for [`Registry::restart`]. Idempotent.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts the registry again with the same config, port and storage (after
    /// [`Registry::stop`]; a running one is stopped first). The log continues in the same
    /// file.
    ///
    /// # Errors
    /// As [`RegistryBuilder::start`]; [`Error::Timeout`] also when another process took
    /// the port meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.stop();
        let tls = self.url.starts_with("https://");
        self.proc = spawn_ready(
            &self.binary,
            &self.config,
            self.dir.path(),
            &self.url,
            tls,
            self.timeout,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_delete_storage_and_addr() {
        let y = config_yaml(
            Path::new("/tmp/x/storage"),
            "127.0.0.1:5000".parse().unwrap(),
            None,
            &Auth::None,
            None,
        );
        assert!(y.contains("rootdirectory: \"/tmp/x/storage\"\n"));
        assert!(y.contains("  delete:\n    enabled: true\n"));
        assert!(y.contains("  addr: \"127.0.0.1:5000\"\n"));
        assert!(!y.contains("tls:"));
        assert!(!y.contains("auth:"));
    }

    #[test]
    fn notifications_section() {
        assert_eq!(notifications_yaml(&[]), "");
        let y = notifications_yaml(&["http://127.0.0.1:9/notify/src".to_owned()]);
        assert!(
            y.starts_with("notifications:\n  endpoints:\n    - name: vch-testbed-0\n"),
            "{y}"
        );
        assert!(
            y.contains("      url: \"http://127.0.0.1:9/notify/src\"\n"),
            "{y}"
        );
        assert!(y.contains("      backoff: 1s\n"), "{y}");
    }

    #[test]
    fn config_tls_and_token() {
        let tls = (PathBuf::from("/c.pem"), PathBuf::from("/k.pem"));
        let token = TokenAuth {
            realm: "https://auth.example/token".into(),
            service: "reg \"x\"".into(),
            issuer: "iss".into(),
            rootcertbundle: "/b.pem".into(),
        };
        let y = config_yaml(
            Path::new("/s"),
            "127.0.0.1:1".parse().unwrap(),
            Some(&tls),
            &Auth::Token(token),
            None,
        );
        assert!(y.contains("  tls:\n    certificate: \"/c.pem\"\n    key: \"/k.pem\"\n"));
        assert!(y.contains("    service: \"reg \\\"x\\\"\"\n"));
        assert!(y.contains("    rootcertbundle: \"/b.pem\"\n"));
    }
}
