//! Credentials: anonymous, basic, identity tokens; Docker's `config.json` and credential
//! helpers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::AsyncWriteExt as _;

use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;

/// The key Docker stores Docker Hub credentials under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// How to authenticate to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials (anonymous tokens where the registry offers them).
    #[default]
    Anonymous,
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token server.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

impl Credentials {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization: Basic …` value, for basic credentials.
    #[must_use]
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Self::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

/// Docker's client configuration file (`~/.docker/config.json`), the parts that hold
/// credentials.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DockerConfig {
    /// Stored credentials by registry (`auth` is base64 `user:password`).
    #[serde(default)]
    pub auths: HashMap<String, AuthEntry>,
    /// The credential store for all registries (`docker-credential-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_store: Option<String>,
    /// Per-registry credential helpers.
    #[serde(default)]
    pub cred_helpers: HashMap<String, String>,
}

/// One entry of `auths`.
#[derive(Clone, Default, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// A user name stored separately (older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A password stored separately (older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An OAuth2 refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identitytoken: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(***)")
    }
}

impl AuthEntry {
    /// The credentials this entry holds.
    ///
    /// # Errors
    /// [`Error::Credentials`] when `auth` is not base64 of `user:password`.
    pub fn credentials(&self, host: &str) -> Result<Credentials> {
        let bad = |reason: &str| Error::Credentials {
            host: host.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(token) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Credentials::IdentityToken(token.clone()));
        }
        if let Some(auth) = self.auth.as_ref().filter(|a| !a.is_empty()) {
            let raw = STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("the auth field is not base64"))?;
            let text = String::from_utf8(raw).map_err(|_| bad("the auth field is not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad("the auth field is not user:password"))?;
            return Ok(Credentials::basic(u, p));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Ok(Credentials::basic(u.clone(), p.clone())),
            _ => Ok(Credentials::Anonymous),
        }
    }
}

/// The keys a host's credentials may be stored under in `auths` (Docker's normalisation:
/// Docker Hub under its v1 URL, others by host, with or without a scheme).
fn auth_keys(host: &str) -> Vec<String> {
    if host == DOCKER_HUB || host == "index.docker.io" || host == "registry-1.docker.io" {
        return vec![
            DOCKER_HUB_AUTH_KEY.to_owned(),
            "index.docker.io".to_owned(),
            "docker.io".to_owned(),
        ];
    }
    vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ]
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    #[must_use]
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    /// Reads a config file; a missing file is an empty config.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::Credentials`] when it is not JSON.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Credentials {
                host: path.display().to_string(),
                reason: format!("not a docker config file: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// The credentials for `host` (`name[:port]` or `docker.io`): a per-host credential
    /// helper first, then the file's `auths`, then the global credential store; anonymous
    /// when none has any.
    ///
    /// # Errors
    /// [`Error::Credentials`] when a helper fails (other than "not found") or an entry is
    /// malformed.
    pub async fn credentials(&self, host: &str) -> Result<Credentials> {
        let keys = auth_keys(host);
        if let Some(helper) = keys.iter().find_map(|k| self.cred_helpers.get(k)) {
            return helper_get(helper, host, &keys[0]).await;
        }
        if let Some(entry) = keys.iter().find_map(|k| self.auths.get(k)) {
            let creds = entry.credentials(host)?;
            if creds != Credentials::Anonymous || self.creds_store.is_none() {
                return Ok(creds);
            }
        }
        match &self.creds_store {
            Some(store) if !store.is_empty() => helper_get(store, host, &keys[0]).await,
            _ => Ok(Credentials::Anonymous),
        }
    }
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin (the credential
/// helper protocol); "credentials not found" is anonymous.
pub(crate) async fn helper_get(helper: &str, host: &str, server_url: &str) -> Result<Credentials> {
    helper_get_in(helper, host, server_url, None).await
}

/// As [`helper_get`], looking the program up in `path` instead of `$PATH` when given.
async fn helper_get_in(
    helper: &str,
    host: &str,
    server_url: &str,
    path: Option<&std::ffi::OsStr>,
) -> Result<Credentials> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| Error::Credentials {
        host: host.to_owned(),
        reason,
    };
    let mut cmd = tokio::process::Command::new(&program);
    if let Some(path) = path {
        // std looks the program up in the child's PATH when it is set.
        cmd.env("PATH", path);
    }
    let mut child = cmd
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server_url.as_bytes())
            .await
            .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(format!("{program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's "not found" answer, printed on stdout.
        if stdout.contains("credentials not found") {
            return Ok(Credentials::Anonymous);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!(
            "{program} get failed ({}): {}",
            out.status,
            format!("{stdout} {stderr}").trim()
        )));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let a: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("{program} printed no credentials JSON: {e}")))?;
    // The protocol marks identity tokens with this user name.
    if a.username == "<token>" {
        Ok(Credentials::IdentityToken(a.secret))
    } else {
        Ok(Credentials::basic(a.username, a.secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn auths_entries_by_host_and_hub_key() {
        let cfg: DockerConfig = serde_json::from_str(
            r#"{"auths":{"reg:5000":{"auth":"dXNlcjpwYTpzcw=="},"https://index.docker.io/v1/":{"identitytoken":"tok"}}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.credentials("reg:5000").await.unwrap(),
            Credentials::basic("user", "pa:ss")
        );
        assert_eq!(
            cfg.credentials("docker.io").await.unwrap(),
            Credentials::IdentityToken("tok".into())
        );
        assert_eq!(
            cfg.credentials("other").await.unwrap(),
            Credentials::Anonymous
        );
        let bad: DockerConfig = serde_json::from_str(r#"{"auths":{"r":{"auth":"!!"}}}"#).unwrap();
        assert!(bad.credentials("r").await.is_err());
    }

    #[tokio::test]
    async fn helper_protocol_with_a_real_helper_program() {
        // A helper is any executable named docker-credential-NAME on PATH.
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("docker-credential-vchtest");
        std::fs::write(
            &script,
            "#!/bin/sh\nread url\ncase \"$url\" in\n  reg:5000) echo '{\"ServerURL\":\"reg:5000\",\"Username\":\"helper-user\",\"Secret\":\"s3cret\"}' ;;\n  tok) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}' ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&script, perm).unwrap();
        let path = format!("{}:/usr/bin:/bin", tmp.path().display());
        let get = |url: &'static str| {
            let path = path.clone();
            async move { helper_get_in("vchtest", url, url, Some(path.as_ref())).await }
        };
        assert_eq!(
            get("reg:5000").await.unwrap(),
            Credentials::basic("helper-user", "s3cret")
        );
        assert_eq!(
            get("tok").await.unwrap(),
            Credentials::IdentityToken("refresh".into())
        );
        assert_eq!(get("elsewhere").await.unwrap(), Credentials::Anonymous);
        let err = helper_get_in("vch-missing", "h", "h", Some(path.as_ref()))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot run docker-credential-vch-missing"),
            "{err}"
        );
    }
}
