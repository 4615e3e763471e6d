//! `vch.toml`: one VCH's configuration, written by `create`, read by `serve` and `inspect`.
//!
//! ```toml
//! name = "vch1"
//! listen = "0.0.0.0:2376"                   # default: 0.0.0.0:2376 with TLS, :2375 without
//! docker_host = "unix:///var/run/docker.sock"
//!
//! [tls]
//! mode = "tlsverify"                        # "tlsverify" (mutual), "tls" (server only), "none"
//! ca = "ca.pem"                             # file names relative to the VCH directory
//! cert = "server-cert.pem"
//! key = "server-key.pem"
//!
//! [registry]                                # vch_policy::RegistryConfig
//! whitelist = ["registry.example.com"]
//!
//! [docker_tls]                              # optional: a tcp:// engine behind --tlsverify
//! ca = "docker-ca.pem"
//! cert = "docker-cert.pem"
//! key = "docker-key.pem"
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use vch_pki::TlsMode;
use vch_policy::RegistryConfig;

/// The configuration file's name inside a VCH directory.
pub const CONFIG_FILE: &str = "vch.toml";

/// The default upstream Docker daemon.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// One VCH's configuration (`vch.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VchConfig {
    /// The VCH's name (also the name of its `.env` file).
    pub name: String,
    /// Address the endpoint listens on; `None` means `0.0.0.0` on the mode's default port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The upstream Docker daemon (`unix://…` or `tcp://…`).
    #[serde(default = "default_docker_host")]
    pub docker_host: String,
    /// TLS settings.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Registry policy.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Client TLS towards a `tcp://` engine that requires it (`dockerd --tlsverify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_tls: Option<DockerTls>,
}

/// The `[docker_tls]` section: how the VCH authenticates to a TLS-protected engine. Paths are
/// relative to the VCH directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTls {
    /// CA the engine's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate presented to the engine.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

fn default_docker_host() -> String {
    DEFAULT_DOCKER_HOST.to_owned()
}

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// How clients connect.
    #[serde(default)]
    pub mode: TlsMode,
    /// CA file clients' certificates are verified against (and the CA clients trust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Server certificate (chain) file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Server key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::TlsVerify,
            ca: Some("ca.pem".into()),
            cert: Some("server-cert.pem".into()),
            key: Some("server-key.pem".into()),
        }
    }
}

/// The files of a loaded configuration, resolved against the VCH directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPaths {
    /// The VCH directory.
    pub dir: PathBuf,
    /// The configuration file.
    pub config_file: PathBuf,
    /// The CA file (`None` in `tls` mode without a CA, and in `none` mode).
    pub ca: Option<PathBuf>,
    /// The server certificate (`None` in `none` mode).
    pub cert: Option<PathBuf>,
    /// The server key (`None` in `none` mode).
    pub key: Option<PathBuf>,
}

impl VchConfig {
    /// The address to listen on, with the mode's default port filled in.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                self.tls.mode.default_port(),
            )
        })
    }

    /// The file's text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("cannot serialise the VCH configuration")
    }

    /// Parses a configuration file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let config: VchConfig =
            toml::from_str(text).with_context(|| format!("{} is not valid", origin.display()))?;
        if config.name.trim().is_empty() {
            bail!("{}: name must not be empty", origin.display());
        }
        Ok(config)
    }

    /// Reads `DIR/vch.toml` and resolves its file names against `DIR`.
    ///
    /// Fails with a message naming the file when it is missing or invalid, when the TLS mode
    /// needs a file the `[tls]` section does not name, or when a named file does not exist.
    pub fn load(dir: &Path) -> anyhow::Result<(VchConfig, ResolvedPaths)> {
        let config_file = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_file).with_context(|| {
            format!(
                "cannot read {} (is {} a VCH directory made by `vch-admin create`?)",
                config_file.display(),
                dir.display()
            )
        })?;
        let config = Self::from_toml(&text, &config_file)?;
        let resolve = |field: &str,
                       value: &Option<PathBuf>,
                       needed: bool|
         -> anyhow::Result<Option<PathBuf>> {
            match value {
                Some(rel) => {
                    let path = dir.join(rel);
                    if !path.is_file() {
                        bail!(
                            "{}: tls.{field} names {}, which does not exist",
                            config_file.display(),
                            path.display()
                        );
                    }
                    Ok(Some(path))
                }
                None if needed => bail!(
                    "{}: tls.mode = \"{}\" needs tls.{field}",
                    config_file.display(),
                    config.tls.mode
                ),
                None => Ok(None),
            }
        };
        let (ca, cert, key) = match config.tls.mode {
            TlsMode::None => (None, None, None),
            mode => (
                resolve("ca", &config.tls.ca, mode == TlsMode::TlsVerify)?,
                resolve("cert", &config.tls.cert, true)?,
                resolve("key", &config.tls.key, true)?,
            ),
        };
        let paths = ResolvedPaths {
            dir: dir.to_owned(),
            config_file,
            ca,
            cert,
            key,
        };
        Ok((config, paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VchConfig {
        VchConfig {
            name: "vch1".into(),
            listen: Some("0.0.0.0:2376".parse().unwrap()),
            docker_host: DEFAULT_DOCKER_HOST.into(),
            tls: TlsConfig::default(),
            registry: RegistryConfig {
                whitelist: vec!["registry.example.com".into()],
                ..RegistryConfig::default()
            },
            docker_tls: None,
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let text = sample().to_toml().unwrap();
        assert!(text.contains("mode = \"tlsverify\""), "{text}");
        assert_eq!(
            VchConfig::from_toml(&text, Path::new("x")).unwrap(),
            sample()
        );
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let c =
            VchConfig::from_toml("name = \"a\"\n[tls]\nmode = \"none\"\n", Path::new("x")).unwrap();
        assert_eq!(c.listen_addr(), "0.0.0.0:2375".parse().unwrap());
        assert_eq!(c.docker_host, DEFAULT_DOCKER_HOST);
        let c = VchConfig::from_toml("name = \"a\"\n", Path::new("x")).unwrap();
        assert_eq!(c.tls.mode, TlsMode::TlsVerify);
        assert_eq!(c.listen_addr(), "0.0.0.0:2376".parse().unwrap());
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = VchConfig::from_toml("name = \"a\"\nbogus = 1\n", Path::new("/d/vch.toml"))
            .unwrap_err();
        assert!(format!("{err:#}").contains("/d/vch.toml"), "{err:#}");
        let err =
            VchConfig::from_toml("name = \"a\"\n[tls]\nmode = \"tlsverfy\"\n", Path::new("f"))
                .unwrap_err();
        assert!(format!("{err:#}").contains("tlsverfy"), "{err:#}");

        let tmp = tempfile::tempdir().unwrap();
        let err = VchConfig::load(tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("vch.toml"), "{err:#}");
        std::fs::write(tmp.path().join(CONFIG_FILE), sample().to_toml().unwrap()).unwrap();
        let err = VchConfig::load(tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("tls.ca names"), "{err:#}");
        for f in ["ca.pem", "server-cert.pem", "server-key.pem"] {
            std::fs::write(tmp.path().join(f), "x").unwrap();
        }
        let (_, paths) = VchConfig::load(tmp.path()).unwrap();
        assert_eq!(paths.key, Some(tmp.path().join("server-key.pem")));
    }
}
