//! What a running endpoint can reload: TLS, upstream, policy, DNS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use vch_policy::{
    DnsConfig, EnforcementMode, Entry, HickoryResolver, Policy, PushRule, RegistryRules,
    ReverseDns, ReverseDnsMode,
};

use crate::Error;
use crate::route::ApiVersion;
use crate::upstream::Upstream;

/// The reloadable settings of an endpoint. A reload (SIGHUP in `vch-admin serve`) swaps them as a
/// whole: new connections and new requests use the new settings; requests in flight and hijacked
/// streams finish with the old ones.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Docker engine requests go to.
    pub upstream: Upstream,
    /// TLS for clients; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// The registry policy for pulls, logins and searches.
    pub policy: Policy,
    /// Where pushes may go.
    pub push: PushRule,
    /// Whether denials are enforced or only audited.
    pub mode: EnforcementMode,
    /// Whether the lists are narrowed from the deploy-time ones (shown by `docker info`).
    pub narrowed: bool,
    /// A ceiling below the engine's and the audited one (`Some(1.25)`: VIC's strict mode).
    pub api_pin: Option<ApiVersion>,
    /// Reverse DNS for IP-literal registries; `None` matches them only against IP and CIDR entries.
    pub dns: Option<Arc<ReverseDns<HickoryResolver>>>,
    /// Where and how much of a build upload is held back while its Dockerfile is found.
    pub build: BuildSpool,
    /// The projects, by name: a client whose certificate's OU names one is held to its list too.
    pub projects: HashMap<String, Arc<Project>>,
}

/// One project's registry list, compiled once per settings load. A client of the project (its
/// certificate subject's OU) is decided by its effective policy, the VCH's policy ∩ this list:
///
/// | VCH policy (or push list) | project list | decision |
/// |---|---|---|
/// | denies | — | denied, the denial names the project |
/// | allows | allows | allowed |
/// | allows | denies | denied, the denial names the project |
///
/// A client whose OU names no configured project is refused everything the gates decide (a
/// project removed from `vch.toml` does not widen its clients to the whole whitelist); a client
/// without an OU is decided by the VCH policy alone.
#[derive(Debug, Clone)]
pub struct Project {
    name: String,
    list: Policy,
    effective: Vec<Entry>,
}

impl Project {
    /// The project's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The project's own list (a policy whose whitelist is the list).
    pub fn list(&self) -> &Policy {
        &self.list
    }

    /// The entries in force for its clients: the list as the VCH whitelist narrows it.
    pub fn effective(&self) -> &[Entry] {
        &self.effective
    }
}

/// Which policy decides a request: the connection's project, looked up per request in the
/// settings in force (a hash lookup and a reference count, no allocation).
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// No project: the VCH policy alone.
    Vch,
    /// A configured project.
    Project(Arc<Project>),
    /// A project the settings do not name: everything gated is refused.
    Unknown(Arc<str>),
}

impl Scope {
    /// The project's name, if any.
    pub(crate) fn project(&self) -> Option<&str> {
        match self {
            Scope::Vch => None,
            Scope::Project(p) => Some(&p.name),
            Scope::Unknown(name) => Some(name),
        }
    }
}

/// The build spool (`[build]` in `vch.toml`): a context whose Dockerfile comes late is held back
/// until the Dockerfile is found and decided, in memory for its first MiBs, then in an unlinked
/// temporary file in `dir`, never more than `limit` bytes; beyond that the build is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpool {
    /// The directory of the temporary file (a VCH's own directory).
    pub dir: PathBuf,
    /// The most bytes held back.
    pub limit: u64,
}

impl BuildSpool {
    /// The default limit: 2 GiB.
    pub const DEFAULT_LIMIT: u64 = 2 * 1024 * 1024 * 1024;
}

impl Default for BuildSpool {
    /// The system's temporary directory, [`BuildSpool::DEFAULT_LIMIT`].
    fn default() -> Self {
        BuildSpool {
            dir: std::env::temp_dir(),
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

impl Settings {
    /// Plain HTTP to clients, no reverse DNS.
    pub fn new(upstream: Upstream, policy: Policy) -> Self {
        Settings {
            upstream,
            tls: None,
            policy,
            push: PushRule::SameAsPull,
            mode: EnforcementMode::Enforce,
            narrowed: false,
            api_pin: None,
            dns: None,
            build: BuildSpool::default(),
            projects: HashMap::new(),
        }
    }

    /// Adds a project: its clients are held to `list` inside the VCH policy. Call after
    /// [`Settings::with_rules`], which sets the policy the effective entries are computed from.
    /// `list` should be in whitelist mode (at least one entry): an empty one narrows nothing.
    pub fn with_project(mut self, name: &str, list: Policy) -> Self {
        let effective = self.policy.narrowed_entries(list.whitelist());
        self.projects.insert(
            name.to_owned(),
            Arc::new(Project {
                name: name.to_owned(),
                list,
                effective,
            }),
        );
        self
    }

    /// The scope of a connection whose client certificate names `project`.
    pub(crate) fn scope(&self, project: Option<&Arc<str>>) -> Scope {
        match project {
            None => Scope::Vch,
            Some(name) => match self.projects.get(&**name) {
                Some(p) => Scope::Project(Arc::clone(p)),
                None => Scope::Unknown(Arc::clone(name)),
            },
        }
    }

    /// Sets where and how much of a build upload is spooled.
    pub fn with_build_spool(mut self, spool: BuildSpool) -> Self {
        self.build = spool;
        self
    }

    /// Pins the highest API version served (`[api] version` in `vch.toml`).
    pub fn with_api_version(mut self, pin: Option<ApiVersion>) -> Self {
        self.api_pin = pin;
        self
    }

    /// Installs a VCH's compiled registry rules: the pull policy, the push rule and the mode.
    pub fn with_rules(mut self, rules: RegistryRules) -> Self {
        self.policy = rules.pull;
        self.push = rules.push;
        self.mode = rules.mode;
        self.narrowed = rules.narrowed;
        self
    }

    /// Serves TLS with this configuration; ALPN is set to offer `http/1.1` only.
    pub fn with_tls(mut self, mut config: ServerConfig) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.tls = Some(Arc::new(config));
        self
    }

    /// Enables reverse DNS as the policy's mode says (nothing for `off`). Must be called inside a
    /// tokio runtime.
    pub fn with_dns(mut self, config: &DnsConfig) -> Result<Self, Error> {
        let push_wants_dns =
            matches!(&self.push, PushRule::List(p) if p.reverse_dns() != ReverseDnsMode::Off);
        if self.policy.reverse_dns() != ReverseDnsMode::Off || push_wants_dns {
            let resolver = HickoryResolver::new(&config.servers, config.timeout())?;
            self.dns = Some(Arc::new(ReverseDns::new(resolver)));
        }
        Ok(self)
    }
}

/// A rustls server configuration from PEM files: mutual TLS when `client_ca` is given (clients
/// must present a certificate chaining to it), else server-only TLS.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, Error> {
    server_tls_with_crl(cert, key, client_ca, None)
}

/// As [`server_tls`], refusing at the handshake the client certificates revoked by the CRLs in
/// `crl` (a PEM file such as `crl.pem`, issued by the CA of `client_ca`); `crl` is ignored
/// without `client_ca`. See `vch_pki::ClientAuth::Required` for what is checked.
pub fn server_tls_with_crl(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    crl: Option<&Path>,
) -> Result<ServerConfig, Error> {
    let auth = match client_ca {
        Some(ca) => vch_pki::ClientAuth::Required { ca, crl },
        None => vch_pki::ClientAuth::None,
    };
    Ok(vch_pki::server_config(cert, key, auth)?)
}
