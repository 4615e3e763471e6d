//! What a running endpoint can reload: TLS, upstream, policy, DNS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use vch_policy::{
    DnsConfig, EnforcementMode, HickoryResolver, Policy, PushRule, RegistryRules, ReverseDns,
    ReverseDnsMode,
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
    let auth = match client_ca {
        Some(ca) => vch_pki::ClientAuth::Required { ca },
        None => vch_pki::ClientAuth::None,
    };
    Ok(vch_pki::server_config(cert, key, auth)?)
}
