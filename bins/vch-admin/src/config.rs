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
//! push = ["registry.example.com"]           # absent: the whitelist decides; []: no pushes
//! mode = "enforce"                          # or "audit": denials are logged, not enforced
//!
//! [registry.narrowed]                       # written by `vch-admin update`, removed by --reset
//! whitelist = ["registry.example.com/team"]
//!
//! [api]                                     # optional: written by `create --api-version`
//! version = "1.25"                          # the highest Docker API version served
//!
//! [build]                                   # optional: `docker build` through the VCH
//! spool_limit = "2GiB"                      # held back while a late Dockerfile is found
//!
//! [docker_tls]                              # optional: a tcp:// engine behind --tlsverify
//! ca = "docker-ca.pem"
//! cert = "docker-cert.pem"
//! key = "docker-key.pem"
//!
//! [serve]                                   # optional: how `vch-admin serve` runs
//! metrics = "127.0.0.1:9323"                # Prometheus metrics on GET /metrics (plain HTTP)
//! ```
//!
//! Without `[api]` a VCH serves Docker API 1.24 up to the lower of its engine's `ApiVersion` and
//! the newest version the proxy has been audited for (`vch_proxy::AUDITED_API_VERSION`), and from
//! no lower than the engine's `MinAPIVersion`. `[api] version` lowers that ceiling: `"1.25"` is
//! VIC's strict mode, where every client is held to the API VIC's VCH spoke (`create` then writes
//! `DOCKER_API_VERSION=1.25` into the env file, as docker CLI 29 will not negotiate that low).
//! A version outside 1.24 to the audited one is refused when the file is read.
//!
//! Writers replace the file atomically ([`write_atomic`]): a reader, such as `serve` on SIGHUP,
//! sees the old file or the new one, never a half-written one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use vch_pki::TlsMode;
use vch_policy::{EnforcementMode, RegistryConfig};
use vch_proxy::{AUDITED_API_VERSION, ApiVersion, MIN_API_VERSION};

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
    /// The Docker API versions served; absent (the default) serves what the engine does.
    #[serde(default, skip_serializing_if = "ApiConfig::is_default")]
    pub api: ApiConfig,
    /// Builds: how much of a context is held back while its Dockerfile is found.
    #[serde(default, skip_serializing_if = "BuildConfig::is_default")]
    pub build: BuildConfig,
    /// Client TLS towards a `tcp://` engine that requires it (`dockerd --tlsverify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_tls: Option<DockerTls>,
    /// How `vch-admin serve` runs: the metrics listener.
    #[serde(default, skip_serializing_if = "ServeConfig::is_default")]
    pub serve: ServeConfig,
    /// `[[client]]`: the client certificates `vch-admin client add` issued.
    #[serde(default, rename = "client", skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientEntry>,
    /// `[projects.NAME]`: each project's registry list, inside the VCH whitelist.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, ProjectConfig>,
}

/// One `[[client]]`: a client certificate issued from the VCH's CA by `vch-admin client add`.
///
/// ```toml
/// [[client]]
/// name = "alice"
/// project = "team-a"                         # also the certificate's subject OU
/// sha256 = "3f0c…"                           # lower-case hex, no colons
/// serial = "5a:1f:…"                         # what the CRL lists once revoked
/// expires = "2029-03-11T09:22:25Z"
/// revoked = "2026-12-06T10:02:11Z"           # absent while the certificate is valid
/// ```
///
/// A name may appear more than once, but at most one entry per name is not revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client's name (the certificate's common name).
    pub name: String,
    /// The project it belongs to (also in the certificate's subject), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The certificate's SHA-256 fingerprint, hex.
    pub sha256: String,
    /// The certificate's serial number, colon-separated hex.
    #[serde(default)]
    pub serial: String,
    /// End of the certificate's validity, RFC 3339.
    #[serde(default)]
    pub expires: String,
    /// When `vch-admin client revoke` revoked it, RFC 3339; absent while valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// One `[projects.NAME]`: the registries the project's clients may use, inside the whitelist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Entries in the whitelist's syntax (namespaces included: `reg.example.com/team-a`).
    #[serde(default)]
    pub registries: Vec<String>,
}

/// The `[build]` section. A build's upload is held back until its Dockerfile has been found in the
/// context and decided; a context whose Dockerfile comes late is spooled to an unlinked temporary
/// file in the VCH directory, at most `spool_limit` bytes (an integer, or a string with a unit:
/// `"512MiB"`, `"2GiB"`, `"1G"`); a build whose Dockerfile is not found within it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The most bytes held back.
    #[serde(
        default = "default_spool_limit",
        serialize_with = "serialize_size",
        deserialize_with = "deserialize_size"
    )]
    pub spool_limit: u64,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            spool_limit: default_spool_limit(),
        }
    }
}

impl BuildConfig {
    /// Nothing set: the section is left out of the file.
    pub fn is_default(&self) -> bool {
        *self == BuildConfig::default()
    }
}

fn default_spool_limit() -> u64 {
    vch_proxy::BuildSpool::DEFAULT_LIMIT
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024, with or without
/// `i`/`B`: `512MiB`, `2G`, `1GB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a size: write bytes, or a number with KiB, MiB, GiB or TiB")
    })?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown size unit `{unit}` (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn serialize_size<S: serde::Serializer>(size: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if *size != 0 && size.is_multiple_of(1u64 << shift) {
            return serializer.serialize_str(&format!("{}{unit}", size >> shift));
        }
    }
    serializer.serialize_u64(*size)
}

fn deserialize_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(text) => parse_size(&text).map_err(serde::de::Error::custom),
    }
}

/// The `[serve]` section, read by `vch-admin serve` at start (a SIGHUP does not move the
/// listener).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where Prometheus metrics are served (`GET /metrics`, plain HTTP without authentication:
    /// a loopback address or a scrape network); `serve --metrics` overrides it. `None`: not
    /// served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

impl ServeConfig {
    /// Nothing set: the section is left out of the file.
    pub fn is_default(&self) -> bool {
        *self == ServeConfig::default()
    }
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

/// The `[api]` section: which Docker API versions the VCH serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The highest version served (`"1.25"`: VIC's strict mode); `None` serves up to the engine's
    /// own (at most [`AUDITED_API_VERSION`]). Between [`MIN_API_VERSION`] and
    /// [`AUDITED_API_VERSION`], written `1.N`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_api_version",
        deserialize_with = "deserialize_api_version"
    )]
    pub version: Option<ApiVersion>,
}

impl ApiConfig {
    /// Nothing set: the section is left out of the file.
    pub fn is_default(&self) -> bool {
        *self == ApiConfig::default()
    }
}

/// Parses a pinned API version (`create --api-version`, `[api] version`): `1.N`, from
/// [`MIN_API_VERSION`] to [`AUDITED_API_VERSION`].
pub fn parse_api_version(text: &str) -> Result<ApiVersion, String> {
    let range = || {
        format!(
            "use 1.N from {MIN_API_VERSION} to {AUDITED_API_VERSION} ({} is VIC's)",
            vch_proxy::VIC_API_VERSION
        )
    };
    match ApiVersion::parse(text) {
        // Canonical `1.N` only: "1" or "1.025" would read as another version than written.
        Some(v) if v.to_string() == text && v.major == 1 => {
            if v < MIN_API_VERSION {
                Err(format!(
                    "API version {text} is older than the oldest a VCH serves: {}",
                    range()
                ))
            } else if v > AUDITED_API_VERSION {
                Err(format!(
                    "API version {text} is newer than the newest the proxy has been audited \
                     for: {}",
                    range()
                ))
            } else {
                Ok(v)
            }
        }
        _ => Err(format!("invalid API version {text:?}: {}", range())),
    }
}

/// `serialize_with` gets the field by reference.
fn serialize_api_version<S: serde::Serializer>(
    version: &Option<ApiVersion>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match version {
        Some(v) => serializer.serialize_str(&v.to_string()),
        None => serializer.serialize_none(),
    }
}

fn deserialize_api_version<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ApiVersion>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_api_version(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
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

    /// Reads and parses `DIR/vch.toml` alone (no other file is looked at); returns it with the
    /// file's path.
    pub fn read(dir: &Path) -> anyhow::Result<(VchConfig, PathBuf)> {
        let config_file = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_file).with_context(|| {
            format!(
                "cannot read {} (is {} a VCH directory made by `vch-admin create`?)",
                config_file.display(),
                dir.display()
            )
        })?;
        let config = Self::from_toml(&text, &config_file)?;
        Ok((config, config_file))
    }

    /// Reads `DIR/vch.toml` and resolves its file names against `DIR`.
    ///
    /// Fails with a message naming the file when it is missing or invalid, when the TLS mode
    /// needs a file the `[tls]` section does not name, or when a named file does not exist.
    pub fn load(dir: &Path) -> anyhow::Result<(VchConfig, ResolvedPaths)> {
        let (config, config_file) = Self::read(dir)?;
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

/// The whitelist in force: the narrowed one if `vch-admin update` wrote one, else the
/// deploy-time one.
pub fn whitelist_in_force(registry: &RegistryConfig) -> &[String] {
    registry
        .narrowed
        .as_ref()
        .and_then(|n| n.whitelist.as_deref())
        .unwrap_or(&registry.whitelist)
}

/// The push list in force (`None`: the whitelist decides pushes).
pub fn push_in_force(registry: &RegistryConfig) -> Option<&[String]> {
    registry
        .narrowed
        .as_ref()
        .and_then(|n| n.push.as_deref())
        .or(registry.push.as_deref())
}

/// A whitelist as one line of text.
pub(crate) fn describe_whitelist(list: &[String]) -> String {
    if list.is_empty() {
        "any registry (no whitelist)".to_owned()
    } else {
        list.join(", ")
    }
}

/// A push list as one line of text.
pub(crate) fn describe_push(list: Option<&[String]>) -> String {
    match list {
        None => "as the whitelist (no push list)".to_owned(),
        Some([]) => "none (every push is refused)".to_owned(),
        Some(list) => list.join(", "),
    }
}

/// An enforcement mode as one line of text.
pub(crate) fn describe_mode(mode: EnforcementMode) -> &'static str {
    match mode {
        EnforcementMode::Enforce => "enforce",
        EnforcementMode::Audit => "audit (denials are logged, not enforced)",
    }
}

/// Replaces `path` with `contents` atomically: a temporary file beside it (same directory, so
/// the rename cannot cross file systems), written, fsynced and given the old file's permission
/// bits (0644 for a new file) and, when run as root, its owner, before it is renamed over the target; then the directory is
/// fsynced so the rename survives a crash. On failure the target is untouched and the temporary
/// removed.
///
/// `vch_pki::write_files` is the all-or-nothing writer for a set of new files; it sets fixed
/// modes (0644/0600), while an edit of an existing file must keep whatever the admin chose.
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let (mode, owner) = match std::fs::metadata(path) {
        Ok(meta) => (
            meta.permissions().mode() & 0o7777,
            Some((meta.uid(), meta.gid())),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (vch_pki::PUBLIC_MODE, None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    name.push(format!(".tmp-{}-{nanos:09}", std::process::id()));
    let temp = dir.join(name);
    let written = (|| -> std::io::Result<()> {
        // Created owner-only; the final bits are set before any content is written.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // Only root may give a file away; anyone else writes a file they own, as an editor
        // would.
        if let Some((uid, gid)) = owner
            && file
                .metadata()
                .is_ok_and(|m| (m.uid(), m.gid()) != (uid, gid))
        {
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        }
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Checks a name that becomes a file name and a certificate's common name (a VCH, a client, a
/// project): up to 63 letters, digits, `.`, `-` and `_`, not starting with `.` or `-`.
pub(crate) fn validate_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!(
            "invalid {what} {name:?}: use up to 63 letters, digits, '.', '-' and '_', not \
             starting with '.' or '-'"
        );
    }
    Ok(())
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
            api: ApiConfig::default(),
            build: BuildConfig::default(),
            docker_tls: None,
            serve: ServeConfig::default(),
            clients: Vec::new(),
            projects: BTreeMap::new(),
        }
    }

    #[test]
    fn the_metrics_address_round_trips_and_a_bad_one_is_refused() {
        let with_metrics = VchConfig {
            serve: ServeConfig {
                metrics: Some("127.0.0.1:9323".parse().unwrap()),
            },
            ..sample()
        };
        let text = with_metrics.to_toml().unwrap();
        assert!(
            text.contains("[serve]\nmetrics = \"127.0.0.1:9323\"\n"),
            "{text}"
        );
        assert_eq!(
            VchConfig::from_toml(&text, Path::new("x")).unwrap(),
            with_metrics
        );
        // Absent: nothing served, and no section written.
        assert!(!sample().to_toml().unwrap().contains("[serve]"));
        for bad in ["localhost:9323", "127.0.0.1", "9323", "[::1]:99999"] {
            let text = format!("name = \"a\"\n[serve]\nmetrics = \"{bad}\"\n");
            let err = VchConfig::from_toml(&text, Path::new("vch.toml")).unwrap_err();
            let err = format!("{err:#}");
            assert!(
                err.contains("vch.toml is not valid") && err.contains("socket address"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_build_spool_limit_reads_sizes_and_is_absent_when_default() {
        let text = sample().to_toml().unwrap();
        assert!(!text.contains("[build]"), "{text}");
        for (written, bytes) in [
            ("\"512MiB\"", 512u64 << 20),
            ("\"2G\"", 2 << 30),
            ("\"1 GiB\"", 1 << 30),
            ("4096", 4096),
            ("\"100\"", 100),
        ] {
            let text = format!("name = \"a\"\n[build]\nspool_limit = {written}\n");
            let config = VchConfig::from_toml(&text, Path::new("x")).unwrap();
            assert_eq!(config.build.spool_limit, bytes, "{written}");
            let again = VchConfig::from_toml(&config.to_toml().unwrap(), Path::new("x")).unwrap();
            assert_eq!(again, config, "{written} round-trips");
        }
        for bad in ["\"12XB\"", "\"lots\"", "-1", "\"99999999999999TiB\""] {
            let text = format!("name = \"a\"\n[build]\nspool_limit = {bad}\n");
            assert!(
                VchConfig::from_toml(&text, Path::new("x")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_api_pin_round_trips_and_is_absent_when_unset() {
        let text = sample().to_toml().unwrap();
        assert!(!text.contains("[api]"), "{text}");
        let pinned = VchConfig {
            api: ApiConfig {
                version: Some(vch_proxy::VIC_API_VERSION),
            },
            ..sample()
        };
        let text = pinned.to_toml().unwrap();
        assert!(text.contains("[api]\nversion = \"1.25\"\n"), "{text}");
        assert_eq!(VchConfig::from_toml(&text, Path::new("x")).unwrap(), pinned);
        // An empty section is the default.
        let c = VchConfig::from_toml("name = \"a\"\n[api]\n", Path::new("x")).unwrap();
        assert_eq!(c.api.version, None);
    }

    #[test]
    fn api_versions_outside_the_served_range_are_refused() {
        for (text, want) in [
            ("1.24", Ok(ApiVersion::new(1, 24))),
            ("1.25", Ok(ApiVersion::new(1, 25))),
            ("1.41", Ok(ApiVersion::new(1, 41))),
            ("1.55", Ok(AUDITED_API_VERSION)),
            ("1.23", Err("older than the oldest")),
            ("1.56", Err("newer than the newest")),
            ("2.0", Err("invalid API version")),
            ("1", Err("invalid API version")),
            ("1.025", Err("invalid API version")),
            ("v1.25", Err("invalid API version")),
            ("abc", Err("invalid API version")),
            ("", Err("invalid API version")),
        ] {
            match (parse_api_version(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => {
                    assert!(
                        got.contains(want) && got.contains("1.24 to 1.55"),
                        "{text}: {got}"
                    );
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        for bad in ["\"1.23\"", "\"2.0\"", "1.25", "\"1.25\"\nextra = 1"] {
            let text = format!("name = \"a\"\n[api]\nversion = {bad}\n");
            let err = VchConfig::from_toml(&text, Path::new("/d/vch.toml")).unwrap_err();
            assert!(format!("{err:#}").contains("/d/vch.toml"), "{bad}: {err:#}");
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

    #[test]
    fn write_atomic_keeps_the_mode_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CONFIG_FILE);
        write_atomic(&path, b"one").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // A directory in the way: the error names the file, nothing is left behind.
        let err = write_atomic(tmp.path(), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn lists_in_force_prefer_the_narrowed_ones() {
        let mut registry = sample().registry;
        assert_eq!(whitelist_in_force(&registry), ["registry.example.com"]);
        assert_eq!(push_in_force(&registry), None);
        registry.push = Some(Vec::new());
        assert_eq!(push_in_force(&registry), Some(&[][..]));
        registry.narrowed = Some(vch_policy::NarrowedLists {
            whitelist: Some(vec!["registry.example.com/team".into()]),
            push: None,
        });
        assert_eq!(whitelist_in_force(&registry), ["registry.example.com/team"]);
        assert_eq!(push_in_force(&registry), Some(&[][..]));
        assert_eq!(describe_push(None), "as the whitelist (no push list)");
        assert_eq!(describe_push(Some(&[])), "none (every push is refused)");
    }
}
