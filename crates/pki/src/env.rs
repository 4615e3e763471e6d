//! Docker client environment files (`NAME.env`) and shell `export` lines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// How a VCH endpoint speaks to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum TlsMode {
    /// Mutual TLS: the server verifies client certificates against the CA (the default).
    #[default]
    TlsVerify,
    /// Server TLS only (`--no-tlsverify`): any client may connect.
    Tls,
    /// Plain TCP (`--no-tls`): no encryption at all.
    None,
}

impl TlsMode {
    /// The conventional Docker port: 2376 with TLS, 2375 without.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::TlsVerify | TlsMode::Tls => 2376,
            TlsMode::None => 2375,
        }
    }

    /// The name used in `vch.toml` (`tlsverify`, `tls`, `none`).
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::TlsVerify => "tlsverify",
            TlsMode::Tls => "tls",
            TlsMode::None => "none",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tlsverify" => Ok(TlsMode::TlsVerify),
            "tls" => Ok(TlsMode::Tls),
            "none" => Ok(TlsMode::None),
            other => Err(format!(
                "unknown TLS mode {other:?}: use tlsverify, tls or none"
            )),
        }
    }
}

/// The environment a Docker client needs to reach a VCH.
///
/// | mode | variables |
/// |---|---|
/// | [`TlsMode::TlsVerify`] | `DOCKER_HOST=tcp://ADDR:PORT`, `DOCKER_TLS_VERIFY=1`, `DOCKER_CERT_PATH=<absolute dir>`, `COMPOSE_TLS_VERSION=TLSv1_2` |
/// | [`TlsMode::Tls`], [`TlsMode::None`] | `DOCKER_HOST=tcp://ADDR:PORT` only, as vic-machine writes it |
/// | any, with [`DockerEnv::with_api_version`] | then `DOCKER_API_VERSION=1.25` |
///
/// `DOCKER_API_VERSION` makes the docker CLI (and docker-py, the Go SDK, compose) speak that
/// version without negotiating: docker CLI 29 refuses to negotiate below its own floor (1.40 or
/// 1.44), so an endpoint that serves no newer API than VIC's 1.25 needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEnv {
    /// Host name or IP address clients dial.
    pub host: String,
    /// Port clients dial.
    pub port: u16,
    /// TLS mode of the endpoint.
    pub mode: TlsMode,
    /// The directory holding `ca.pem`, `cert.pem`, `key.pem`; made absolute by [`DockerEnv::new`].
    pub cert_path: PathBuf,
    /// The Docker API version clients must speak (`1.25`), when the endpoint pins one; `None`
    /// lets them negotiate.
    pub api_version: Option<String>,
}

impl DockerEnv {
    /// The environment for `host:port` in `mode`, with the client trio in `cert_path`
    /// (made absolute against the current directory).
    pub fn new(host: &str, port: u16, mode: TlsMode, cert_path: &Path) -> Result<Self> {
        let cert_path = std::path::absolute(cert_path).map_err(|e| Error::io(cert_path, e))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            mode,
            cert_path,
            api_version: None,
        })
    }

    /// Adds `DOCKER_API_VERSION=version` (`1.25`). The caller checks that the endpoint serves
    /// that version; [`DockerEnv::env_file`] refuses a value an env file cannot hold.
    pub fn with_api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// `tcp://HOST:PORT`, with an IPv6 host in brackets.
    pub fn docker_host(&self) -> String {
        let bare = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        if bare.contains(':') {
            format!("tcp://[{bare}]:{}", self.port)
        } else {
            format!("tcp://{bare}:{}", self.port)
        }
    }

    /// The variables, in order.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("DOCKER_HOST", self.docker_host())];
        if self.mode == TlsMode::TlsVerify {
            vars.push(("DOCKER_TLS_VERIFY", "1".to_owned()));
            vars.push(("DOCKER_CERT_PATH", self.cert_path.display().to_string()));
            vars.push(("COMPOSE_TLS_VERSION", "TLSv1_2".to_owned()));
        }
        if let Some(version) = &self.api_version {
            vars.push(("DOCKER_API_VERSION", version.clone()));
        }
        vars
    }

    /// The `NAME.env` file: one `KEY=value` per line, no quoting, so that `set -a; . NAME.env`,
    /// `docker --env-file NAME.env` and systemd's `EnvironmentFile=` read the same values.
    ///
    /// Refuses values those readers would disagree on (spaces, quotes, `$`, backslashes,
    /// shell operators) with [`Error::EnvValue`].
    pub fn env_file(&self) -> Result<String> {
        let mut out = String::new();
        for (key, value) in self.vars() {
            if !value.bytes().all(env_safe) || value.is_empty() {
                return Err(Error::EnvValue { key, value });
            }
            out.push_str(key);
            out.push('=');
            out.push_str(&value);
            out.push('\n');
        }
        Ok(out)
    }

    /// `export KEY='value'` lines for `eval "$(…)"` in sh, bash and zsh; values are
    /// single-quoted, so any path works.
    pub fn shell_exports(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.vars() {
            out.push_str("export ");
            out.push_str(key);
            out.push('=');
            out.push_str(&shell_quote(&value));
            out.push('\n');
        }
        out
    }
}

/// Bytes that mean the same to sh (in an assignment: no field splitting or globbing),
/// docker's env-file reader and systemd. `~` is out: sh expands it after `:` in assignments.
fn env_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_./:@%+,=-[]".contains(&b)
}

/// Quotes `value` for POSIX sh with single quotes.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(env_safe) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlsverify_env_has_all_variables() {
        let env = DockerEnv::new(
            "vch.example",
            2376,
            TlsMode::TlsVerify,
            Path::new("/srv/vch"),
        )
        .unwrap();
        assert_eq!(
            env.env_file().unwrap(),
            "DOCKER_HOST=tcp://vch.example:2376\nDOCKER_TLS_VERIFY=1\nDOCKER_CERT_PATH=/srv/vch\n\
             COMPOSE_TLS_VERSION=TLSv1_2\n"
        );
        assert_eq!(
            env.shell_exports(),
            "export DOCKER_HOST=tcp://vch.example:2376\nexport DOCKER_TLS_VERIFY=1\n\
             export DOCKER_CERT_PATH=/srv/vch\nexport COMPOSE_TLS_VERSION=TLSv1_2\n"
        );
    }

    #[test]
    fn no_tls_variables_without_verification() {
        let env = DockerEnv::new("10.0.0.5", 2376, TlsMode::Tls, Path::new("/x")).unwrap();
        assert_eq!(env.env_file().unwrap(), "DOCKER_HOST=tcp://10.0.0.5:2376\n");
        let env = DockerEnv::new(
            "::1",
            TlsMode::None.default_port(),
            TlsMode::None,
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(env.env_file().unwrap(), "DOCKER_HOST=tcp://[::1]:2375\n");
    }

    #[test]
    fn a_pinned_api_version_is_in_every_format() {
        for mode in [TlsMode::TlsVerify, TlsMode::Tls, TlsMode::None] {
            let env = DockerEnv::new("10.0.0.5", 2376, mode, Path::new("/srv/vch"))
                .unwrap()
                .with_api_version("1.25");
            let file = env.env_file().unwrap();
            assert!(
                file.starts_with("DOCKER_HOST=tcp://10.0.0.5:2376\n"),
                "{file}"
            );
            assert!(file.ends_with("\nDOCKER_API_VERSION=1.25\n"), "{file}");
            let exports = env.shell_exports();
            assert!(
                exports.ends_with("\nexport DOCKER_API_VERSION=1.25\n"),
                "{exports}"
            );
            assert_eq!(file.lines().count(), exports.lines().count());
        }
        let unpinned = DockerEnv::new("h", 2376, TlsMode::TlsVerify, Path::new("/x")).unwrap();
        assert!(!unpinned.env_file().unwrap().contains("DOCKER_API_VERSION"));
        assert!(!unpinned.shell_exports().contains("DOCKER_API_VERSION"));
        // A value the readers would disagree on is refused, as a path is.
        let bad = unpinned.with_api_version("1.25 $x");
        assert!(matches!(
            bad.env_file(),
            Err(Error::EnvValue {
                key: "DOCKER_API_VERSION",
                ..
            })
        ));
    }

    #[test]
    fn relative_cert_path_becomes_absolute() {
        let env = DockerEnv::new("h", 2376, TlsMode::TlsVerify, Path::new("rel/dir")).unwrap();
        assert!(env.cert_path.is_absolute());
        assert!(env.cert_path.ends_with("rel/dir"));
    }

    #[test]
    fn unsafe_values_are_refused_in_env_files_but_quoted_in_exports() {
        let env =
            DockerEnv::new("h", 2376, TlsMode::TlsVerify, Path::new("/my certs/it's")).unwrap();
        assert!(matches!(
            env.env_file(),
            Err(Error::EnvValue {
                key: "DOCKER_CERT_PATH",
                ..
            })
        ));
        assert!(
            env.shell_exports()
                .contains("export DOCKER_CERT_PATH='/my certs/it'\\''s'\n")
        );
    }

    #[test]
    fn env_file_reads_back_identically_in_sh() {
        let tmp = tempfile::tempdir().unwrap();
        let env = DockerEnv::new("[fe80::1]", 2376, TlsMode::TlsVerify, tmp.path())
            .unwrap()
            .with_api_version("1.25");
        let file = tmp.path().join("x.env");
        std::fs::write(&file, env.env_file().unwrap()).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -a; . '{}'; env | grep -E '^(DOCKER|COMPOSE)_' | sort",
                file.display()
            ))
            .env_clear()
            .output()
            .unwrap();
        let mut want: Vec<String> = env.vars().iter().map(|(k, v)| format!("{k}={v}")).collect();
        want.sort();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            want.join("\n") + "\n"
        );
        let exports = env.shell_exports();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{exports}env | grep -E '^(DOCKER|COMPOSE)_' | sort"
            ))
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            want.join("\n") + "\n"
        );
    }
}
