//! The `[registry]` section of a VCH configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::dns::ReverseDnsMode;
use crate::{Entry, Error, Policy, PolicyBuilder};

/// The registry policy as configured (TOML `[registry]` in `vch.toml`):
///
/// ```toml
/// [registry]
/// whitelist = ["10.2.40.40:443", "10.2.2.1/24", "*.example.com"]
/// insecure = ["192.168.100.207"]
/// ca = ["registry-ca.pem"]          # relative to the configuration file's directory
/// push = ["10.2.40.40:443"]         # where `docker push` may go; absent: the whitelist decides,
///                                   # empty: pushes are refused
/// mode = "enforce"                  # or "audit": decide and log, refuse nothing
///
/// [registry.narrowed]               # written by `vch-admin update`; the lists above stay the
/// whitelist = ["10.2.40.40:443"]    # deploy-time ones every update is checked against
/// push = ["10.2.40.40:443"]
///
/// [registry.dns]
/// reverse = "confirmed"             # or "ptr-only", "off"
/// servers = ["127.0.0.1:53"]        # empty: the system resolver
/// timeout_ms = 2000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RegistryConfig {
    /// Whitelist entries (`--whitelist-registry`); none means whitelist mode off.
    pub whitelist: Vec<String>,
    /// Insecure-registry entries (`--insecure-registry`).
    pub insecure: Vec<String>,
    /// PEM files of registry CAs (`--registry-ca`).
    pub ca: Vec<PathBuf>,
    /// Push-list entries (`--push-registry`): where images may be pushed. `None`: the whitelist
    /// decides pushes as it decides pulls; an empty list refuses every push.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub push: Option<Vec<String>>,
    /// Whether denials are enforced or only logged (`--policy-mode`). Written only when it is
    /// `audit`, so a file without the new fields reads the same to older builds.
    #[cfg_attr(
        feature = "serde",
        serde(skip_serializing_if = "EnforcementMode::is_enforce")
    )]
    pub mode: EnforcementMode,
    /// The lists as narrowed by `vch-admin update`; `None` until the first update.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub narrowed: Option<NarrowedLists>,
    /// Reverse-DNS settings.
    pub dns: DnsConfig,
}

/// What a VCH does with a denial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum EnforcementMode {
    /// Denied requests are refused (the default).
    #[default]
    Enforce,
    /// Every decision is made and logged as it would be, and denied requests go through: for
    /// rolling a whitelist out without breaking builds.
    Audit,
}

impl EnforcementMode {
    /// Whether this is the default, `enforce`.
    pub fn is_enforce(&self) -> bool {
        *self == EnforcementMode::Enforce
    }

    /// `enforce` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Enforce => "enforce",
            EnforcementMode::Audit => "audit",
        }
    }
}

impl std::fmt::Display for EnforcementMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EnforcementMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(EnforcementMode::Enforce),
            "audit" => Ok(EnforcementMode::Audit),
            other => Err(format!(
                "unknown policy mode `{other}` (expected `enforce` or `audit`)"
            )),
        }
    }
}

/// The lists in force after `vch-admin update` (TOML `[registry.narrowed]`). Each may only be
/// narrower than its deploy-time list, which [`RegistryConfig`] keeps beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct NarrowedLists {
    /// The narrowed whitelist; `None` keeps the deploy-time one.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub whitelist: Option<Vec<String>>,
    /// The narrowed push list; `None` keeps the deploy-time one.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub push: Option<Vec<String>>,
}

/// Where pushes may go.
#[derive(Debug, Clone)]
pub enum PushRule {
    /// No push list: the pull policy decides pushes too.
    SameAsPull,
    /// Only registries this policy's whitelist allows (its insecure list is empty: a push list
    /// is exact).
    List(Policy),
    /// An empty push list: every push is refused.
    Nowhere,
}

/// A VCH's compiled registry rules: what decides pulls, what decides pushes, and whether
/// denials are enforced.
#[derive(Debug, Clone)]
pub struct RegistryRules {
    /// Decides pulls, logins and searches: the whitelist in force (narrowed, if it was).
    pub pull: Policy,
    /// Decides pushes.
    pub push: PushRule,
    /// Enforce or only audit.
    pub mode: EnforcementMode,
    /// Whether `vch-admin update` narrowed a deploy-time list.
    pub narrowed: bool,
}

impl Default for RegistryRules {
    fn default() -> Self {
        RegistryRules {
            pull: Policy::empty(),
            push: PushRule::SameAsPull,
            mode: EnforcementMode::Enforce,
            narrowed: false,
        }
    }
}

/// Reverse-DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct DnsConfig {
    /// How IP-literal registries are checked against wildcards (default `confirmed`).
    pub reverse: ReverseDnsMode,
    /// Name servers (`IP:PORT`); empty means the system's.
    pub servers: Vec<SocketAddr>,
    /// Per-lookup timeout in milliseconds (default 2000).
    pub timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            reverse: ReverseDnsMode::default(),
            servers: Vec::new(),
            timeout_ms: 2000,
        }
    }
}

impl DnsConfig {
    /// The per-lookup timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl RegistryConfig {
    /// Validates the entries, reads the CA files (relative paths against `base_dir`) and compiles
    /// the policy that decides pulls: the narrowed whitelist if there is one, else the
    /// deploy-time one.
    pub fn compile(&self, base_dir: &Path) -> Result<Policy, Error> {
        Ok(self.compile_rules(base_dir)?.pull)
    }

    /// Compiles every rule: the pull policy, the push rule and the mode. A narrowed list that is
    /// not contained in its deploy-time list (a hand-edited file) is an error, never widened.
    pub fn compile_rules(&self, base_dir: &Path) -> Result<RegistryRules, Error> {
        let deploy = self.compile_deploy(base_dir)?;
        let narrowed = self.narrowed.as_ref();
        let pull = match narrowed.and_then(|n| n.whitelist.as_deref()) {
            Some(list) => deploy.narrow(&parse_entries(list)?)?,
            None => deploy.clone(),
        };
        let push = match narrowed.and_then(|n| n.push.as_deref()) {
            Some(list) => self.narrow_push(&deploy, list)?,
            None => self.push_rule(self.push.as_deref())?,
        };
        Ok(RegistryRules {
            pull,
            push,
            mode: self.mode,
            narrowed: narrowed.is_some_and(|n| n.whitelist.is_some() || n.push.is_some()),
        })
    }

    /// This configuration with its lists narrowed (content trust): each given list replaces the
    /// narrowed one, and must be contained in its deploy-time list; `None` keeps what is there.
    /// The error names the first entry that would broaden.
    pub fn narrow(
        &self,
        whitelist: Option<&[String]>,
        push: Option<&[String]>,
        base_dir: &Path,
    ) -> Result<RegistryConfig, Error> {
        let mut next = self.clone();
        let lists = next.narrowed.get_or_insert_with(NarrowedLists::default);
        if let Some(list) = whitelist {
            lists.whitelist = Some(list.to_vec());
        }
        if let Some(list) = push {
            lists.push = Some(list.to_vec());
        }
        // Compiling checks every narrowed list against its deploy-time one.
        next.compile_rules(base_dir)?;
        Ok(next)
    }

    /// This configuration back at its deploy-time lists.
    pub fn reset(&self) -> RegistryConfig {
        RegistryConfig {
            narrowed: None,
            ..self.clone()
        }
    }

    /// The deploy-time pull policy: whitelist, insecure list, CAs, DNS mode.
    fn compile_deploy(&self, base_dir: &Path) -> Result<Policy, Error> {
        if self.dns.timeout_ms == 0 {
            return Err(Error::DnsConfig {
                reason: "timeout_ms must be greater than 0".to_owned(),
            });
        }
        let mut builder = PolicyBuilder::new();
        for entry in &self.whitelist {
            builder.whitelist(entry.as_str());
        }
        for entry in &self.insecure {
            builder.insecure(entry.as_str());
        }
        for path in &self.ca {
            builder.registry_cas(load_ca_file(&base_dir.join(path))?);
        }
        builder.reverse_dns(self.dns.reverse).build()
    }

    fn push_rule(&self, list: Option<&[String]>) -> Result<PushRule, Error> {
        Ok(match list {
            None => PushRule::SameAsPull,
            Some([]) => PushRule::Nowhere,
            Some(list) => {
                let mut builder = PolicyBuilder::new();
                for entry in list {
                    builder.whitelist(entry.as_str());
                }
                PushRule::List(builder.reverse_dns(self.dns.reverse).build()?)
            }
        })
    }

    /// A narrowed push list, checked against the deploy-time push list, or against the
    /// deploy-time whitelist when there is none.
    fn narrow_push(&self, deploy: &Policy, list: &[String]) -> Result<PushRule, Error> {
        let update = parse_entries(list)?;
        let broadening = |entry: &Entry| Error::PushBroadening {
            entry: entry.to_string(),
        };
        match self.push_rule(self.push.as_deref())? {
            PushRule::Nowhere => match update.first() {
                Some(entry) => return Err(broadening(entry)),
                None => return Ok(PushRule::Nowhere),
            },
            PushRule::List(base) => {
                if let Some(wider) = update
                    .iter()
                    .find(|u| !base.whitelist().iter().any(|b| u.is_contained_in(b)))
                {
                    return Err(broadening(wider));
                }
            }
            PushRule::SameAsPull => {
                if deploy.whitelist_mode()
                    && let Some(wider) = update.iter().find(|u| {
                        !deploy
                            .whitelist()
                            .iter()
                            .chain(deploy.insecure())
                            .any(|b| u.is_contained_in(b))
                    })
                {
                    return Err(broadening(wider));
                }
            }
        }
        self.push_rule(Some(list))
    }
}

fn parse_entries(list: &[String]) -> Result<Vec<Entry>, Error> {
    list.iter().map(|e| Entry::parse(e)).collect()
}

/// Reads the PEM certificates of a registry CA file. At least one certificate is required, and
/// anything else in the file (keys, garbage) is refused rather than skipped.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::CaFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    parse_ca_pem(&bytes).map_err(|reason| Error::CaPem {
        path: path.to_owned(),
        reason,
    })
}

/// Parses PEM certificates; an error says what was found instead.
pub fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        match item {
            Ok(cert) => certs.push(cert),
            Err(e) => return Err(format!("malformed PEM: {e}")),
        }
    }
    #[cfg(feature = "tls")]
    for (i, cert) in certs.iter().enumerate() {
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| {
                format!(
                    "certificate {} is not a usable X.509 CA certificate: {e}",
                    i + 1
                )
            })?;
    }
    if certs.is_empty() {
        let text = String::from_utf8_lossy(pem);
        return Err(if text.contains("PRIVATE KEY-----") {
            "it holds a private key, not a certificate".to_owned()
        } else if text.contains("-----BEGIN") {
            "no CERTIFICATE block".to_owned()
        } else {
            "not PEM (expected -----BEGIN CERTIFICATE-----)".to_owned()
        });
    }
    Ok(certs)
}

#[cfg(feature = "tls")]
impl Policy {
    /// The registry CAs as a rustls root store. Add the system roots for secure registries, as
    /// Docker trusts both.
    pub fn registry_root_store(&self) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        // Every certificate was checked when the CA file was loaded.
        store.add_parsable_certificates(self.registry_cas().iter().cloned());
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageRef;

    fn config(whitelist: &[&str], push: Option<&[&str]>) -> RegistryConfig {
        let strings = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        RegistryConfig {
            whitelist: strings(whitelist),
            insecure: strings(&["insecure.example.com"]),
            push: push.map(strings),
            ..RegistryConfig::default()
        }
    }

    fn strings(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| (*s).to_owned()).collect()
    }

    fn allows(policy: &Policy, image: &str) -> bool {
        policy.decide(&ImageRef::parse(image).unwrap()).is_allowed()
    }

    #[test]
    fn push_rules() {
        let here = Path::new(".");
        let rules = config(&["*.example.com"], None)
            .compile_rules(here)
            .unwrap();
        assert!(matches!(rules.push, PushRule::SameAsPull));
        assert_eq!(rules.mode, EnforcementMode::Enforce);
        let rules = config(&["*.example.com"], Some(&[]))
            .compile_rules(here)
            .unwrap();
        assert!(matches!(rules.push, PushRule::Nowhere));
        let rules = config(&["*.example.com"], Some(&["push.example.com"]))
            .compile_rules(here)
            .unwrap();
        let PushRule::List(push) = rules.push else {
            panic!("a push list")
        };
        assert!(allows(&push, "push.example.com/a"));
        assert!(!allows(&push, "pull.example.com/a"));
        // A push list is exact: the insecure list does not extend it.
        assert!(!allows(&push, "insecure.example.com/a"));
    }

    #[test]
    fn narrowing_checks_against_the_deploy_time_lists() {
        let here = Path::new(".");
        let deploy = config(&["*.example.com"], Some(&["*.push.example.com"]));
        let narrowed = deploy
            .narrow(Some(&strings(&["a.example.com"])), None, here)
            .unwrap();
        let rules = narrowed.compile_rules(here).unwrap();
        assert!(rules.narrowed);
        assert!(allows(&rules.pull, "a.example.com/x"));
        assert!(!allows(&rules.pull, "b.example.com/x"));
        // The insecure list is still allowed in whitelist mode.
        assert!(allows(&rules.pull, "insecure.example.com/x"));
        // A second update starts from the deploy-time list, not the narrowed one.
        let again = narrowed
            .narrow(Some(&strings(&["b.example.com"])), None, here)
            .unwrap();
        assert!(allows(&again.compile(here).unwrap(), "b.example.com/x"));
        assert_eq!(
            narrowed.narrow(Some(&strings(&["other.org"])), None, here),
            Err(Error::Broadening {
                entry: "other.org".to_owned()
            })
        );
        assert_eq!(
            deploy.narrow(None, Some(&strings(&["a.example.com"])), here),
            Err(Error::PushBroadening {
                entry: "a.example.com".to_owned()
            })
        );
        let push = deploy
            .narrow(None, Some(&strings(&["x.push.example.com"])), here)
            .unwrap();
        let PushRule::List(list) = push.compile_rules(here).unwrap().push else {
            panic!("a push list")
        };
        assert!(allows(&list, "x.push.example.com/a"));
        assert!(!allows(&list, "y.push.example.com/a"));
        // Without a push list, a push update is checked against the whitelist.
        let no_push = config(&["*.example.com"], None);
        assert!(
            no_push
                .narrow(None, Some(&strings(&["a.example.com"])), here)
                .is_ok()
        );
        assert!(
            no_push
                .narrow(None, Some(&strings(&["a.other.org"])), here)
                .is_err()
        );
        // Pushes refused at deploy time stay refused.
        assert!(
            config(&["*.example.com"], Some(&[]))
                .narrow(None, Some(&strings(&["a.example.com"])), here)
                .is_err()
        );
        // An empty narrowed whitelist would turn whitelist mode off.
        assert_eq!(
            deploy.narrow(Some(&[]), None, here),
            Err(Error::EmptyUpdate)
        );
        assert_eq!(narrowed.reset(), deploy);
        assert!(!deploy.compile_rules(here).unwrap().narrowed);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_hand_widened_narrowed_list_is_refused_at_load() {
        let text = r#"
            whitelist = ["*.example.com"]
            mode = "audit"
            [narrowed]
            whitelist = ["*.org"]
        "#;
        let config: RegistryConfig = toml_like(text);
        assert_eq!(config.mode, EnforcementMode::Audit);
        assert!(config.compile_rules(Path::new(".")).is_err());
    }

    #[cfg(feature = "serde")]
    fn toml_like(text: &str) -> RegistryConfig {
        toml::from_str(text).unwrap()
    }
}
