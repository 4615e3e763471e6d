//! The builder, the compiled policy and its decisions.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::Error;
use crate::dns::ReverseDnsMode;
use crate::entry::Entry;
use crate::host::Registry;
use crate::matcher::{Found, List, Matcher};
use crate::reference::ImageRef;

/// How an allowed registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Verified HTTPS only, against the system roots plus the registry CAs.
    Secure,
    /// Verified HTTPS, then unverified HTTPS, then plain HTTP (Docker's insecure registries).
    Insecure,
}

impl Transport {
    /// `secure` or `insecure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Secure => "secure",
            Transport::Insecure => "insecure",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something legal but probably unintended in a policy; `check` and `create` print these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A bare `*` entry in the whitelist allows every registry.
    WhitelistAllowsAll,
    /// A bare `*` entry in the insecure list makes every registry insecure.
    InsecureAll,
    /// The same entry (after normalisation) appears twice in a list.
    Duplicate {
        /// The entry's canonical text.
        entry: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::WhitelistAllowsAll => f.write_str(
                "whitelist entry `*` allows every registry: whitelist mode has no effect",
            ),
            Warning::InsecureAll => f.write_str(
                "insecure-registry entry `*` turns off certificate verification for every registry",
            ),
            Warning::Duplicate { entry } => write!(f, "entry `{entry}` is given more than once"),
        }
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Whitelist mode is off: every registry is allowed.
    WhitelistOff,
    /// An entry matched the registry.
    Matched,
    /// A wildcard entry matched a name that reverse DNS gave for the IP-literal registry.
    MatchedName(Box<str>),
    /// No entry matched, in whitelist mode.
    NotWhitelisted,
    /// No entry matched an IP-literal registry and reverse DNS gave no name that does: the lookup
    /// failed, found no PTR name, found no confirmed one, or found names no wildcard covers (fail
    /// closed). The text says which.
    ReverseDns(Box<str>),
    /// A policy that is part of an intersection denied it.
    DeniedByMember(usize),
}

/// The decision on one image reference or registry.
///
/// | whitelist mode | an entry matches | allowed | transport |
/// |---|---|---|---|
/// | off (no whitelist entries) | — | yes | insecure if an insecure entry matches, else secure |
/// | on | whitelist or insecure entry | yes | insecure if an insecure entry matches, else secure |
/// | on | none | no | — |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    registry: &'a Registry,
    allowed: bool,
    transport: Option<Transport>,
    entry: Option<(&'a Entry, List)>,
    reason: Reason,
}

impl<'a> Decision<'a> {
    /// Whether the registry may be used.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The registry decided on (`docker.io` for Hub).
    pub fn registry(&self) -> &'a Registry {
        self.registry
    }

    /// How to reach the registry; `None` when denied.
    pub fn transport(&self) -> Option<Transport> {
        self.transport
    }

    /// The entry that decided: the most specific matching one; `None` when nothing matched.
    pub fn entry(&self) -> Option<&'a Entry> {
        self.entry.map(|(e, _)| e)
    }

    /// Which list the deciding entry is in.
    pub fn list(&self) -> Option<List> {
        self.entry.map(|(_, l)| l)
    }

    /// Why.
    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// The error Docker users know, for a denial:
    /// `Access denied to unauthorized registry (HOST) while VCH is in whitelist mode`.
    pub fn denial_message(&self) -> Option<String> {
        (!self.allowed).then(|| {
            format!(
                "Access denied to unauthorized registry ({}) while VCH is in whitelist mode",
                self.registry
            )
        })
    }
}

/// One line explaining the decision.
impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |l: List| match l {
            List::Whitelist => "whitelist",
            List::Insecure => "insecure-registry",
        };
        match (&self.reason, self.entry) {
            (Reason::WhitelistOff, Some((e, l))) => write!(
                f,
                "whitelist mode is off; {} by {} entry `{e}`",
                self.transport.unwrap_or(Transport::Secure),
                list(l)
            ),
            (Reason::WhitelistOff, None) => f.write_str("whitelist mode is off"),
            (Reason::Matched, Some((e, l))) => write!(f, "allowed by {} entry `{e}`", list(l)),
            (Reason::MatchedName(name), Some((e, l))) => write!(
                f,
                "allowed by {} entry `{e}`: reverse DNS names {} `{name}`",
                list(l),
                self.registry.host()
            ),
            (Reason::ReverseDns(why), _) => write!(
                f,
                "Access denied to unauthorized registry ({}) while VCH is in whitelist mode (reverse DNS: {why})",
                self.registry
            ),
            (Reason::DeniedByMember(i), _) => write!(
                f,
                "Access denied to unauthorized registry ({}) while VCH is in whitelist mode (by policy {})",
                self.registry,
                i + 1
            ),
            _ => write!(
                f,
                "Access denied to unauthorized registry ({}) while VCH is in whitelist mode",
                self.registry
            ),
        }
    }
}

enum Pending {
    Text(String),
    Parsed(Entry),
}

/// Collects entries and settings; [`PolicyBuilder::build`] validates them and compiles a
/// [`Policy`].
///
/// ```
/// use vch_policy::{ImageRef, PolicyBuilder, Transport};
///
/// let policy = PolicyBuilder::new()
///     .whitelist("10.2.40.40:443")
///     .whitelist("10.2.2.1/24")
///     .whitelist("*.example.com")
///     .insecure("192.168.100.207")
///     .build()?;
/// let image = ImageRef::parse("reg.example.com/team/app:1")?;
/// let decision = policy.decide(&image);
/// assert!(decision.is_allowed());
/// assert_eq!(decision.transport(), Some(Transport::Secure));
/// assert!(!policy.decide(&ImageRef::parse("busybox")?).is_allowed());
/// # Ok::<(), vch_policy::Error>(())
/// ```
#[derive(Default)]
pub struct PolicyBuilder {
    whitelist: Vec<Pending>,
    insecure: Vec<Pending>,
    cas: Vec<CertificateDer<'static>>,
    reverse_dns: ReverseDnsMode,
}

impl PolicyBuilder {
    /// An empty builder: no whitelist (so whitelist mode off), no insecure registries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a whitelist entry (parsed by `build`).
    pub fn whitelist(&mut self, entry: impl Into<String>) -> &mut Self {
        self.whitelist.push(Pending::Text(entry.into()));
        self
    }

    /// Adds a parsed whitelist entry.
    pub fn whitelist_entry(&mut self, entry: Entry) -> &mut Self {
        self.whitelist.push(Pending::Parsed(entry));
        self
    }

    /// Adds an insecure-registry entry (parsed by `build`).
    pub fn insecure(&mut self, entry: impl Into<String>) -> &mut Self {
        self.insecure.push(Pending::Text(entry.into()));
        self
    }

    /// Adds a parsed insecure-registry entry.
    pub fn insecure_entry(&mut self, entry: Entry) -> &mut Self {
        self.insecure.push(Pending::Parsed(entry));
        self
    }

    /// Adds registry CA certificates (DER), trusted for secure registries besides the system roots.
    pub fn registry_cas(
        &mut self,
        cas: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> &mut Self {
        self.cas.extend(cas);
        self
    }

    /// How IP-literal registries are checked against wildcard entries (default: confirmed).
    pub fn reverse_dns(&mut self, mode: ReverseDnsMode) -> &mut Self {
        self.reverse_dns = mode;
        self
    }

    /// Validates every entry and compiles the policy. The first malformed entry is the error.
    pub fn build(&self) -> Result<Policy, Error> {
        let parse = |pending: &[Pending]| -> Result<Vec<Entry>, Error> {
            pending
                .iter()
                .map(|p| match p {
                    Pending::Text(t) => Entry::parse(t),
                    Pending::Parsed(e) => Ok(e.clone()),
                })
                .collect()
        };
        Ok(Policy::compile(
            parse(&self.whitelist)?,
            parse(&self.insecure)?,
            self.cas.clone(),
            self.reverse_dns,
        ))
    }
}

/// A compiled registry policy. Cheap to clone (shared), `Send + Sync`; deciding cannot fail and
/// allocates nothing.
///
/// Whitelist mode is on iff there is at least one whitelist entry; then insecure entries are
/// allowed too, and nothing else. See [`Decision`] for the truth table and [`Entry`] for matching.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

struct Inner {
    matcher: Matcher,
    whitelist: Vec<Entry>,
    insecure: Vec<Entry>,
    cas: Vec<CertificateDer<'static>>,
    reverse_dns: ReverseDnsMode,
    warnings: Vec<Warning>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("whitelist", &self.inner.whitelist)
            .field("insecure", &self.inner.insecure)
            .field("cas", &self.inner.cas.len())
            .field("reverse_dns", &self.inner.reverse_dns)
            .finish()
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::empty()
    }
}

impl Policy {
    /// The policy with no entries: whitelist mode off, every registry allowed and secure.
    pub fn empty() -> Self {
        Policy::compile(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            ReverseDnsMode::default(),
        )
    }

    fn compile(
        whitelist: Vec<Entry>,
        insecure: Vec<Entry>,
        cas: Vec<CertificateDer<'static>>,
        reverse_dns: ReverseDnsMode,
    ) -> Self {
        let mut warnings = Vec::new();
        if whitelist.iter().any(Entry::is_match_all) {
            warnings.push(Warning::WhitelistAllowsAll);
        }
        if insecure.iter().any(Entry::is_match_all) {
            warnings.push(Warning::InsecureAll);
        }
        for list in [&whitelist, &insecure] {
            // A set, not a scan of the earlier entries: building stays linear at 100 000 entries.
            let mut seen = std::collections::HashSet::with_capacity(list.len());
            for entry in list {
                if !seen.insert(entry) {
                    warnings.push(Warning::Duplicate {
                        entry: entry.to_string(),
                    });
                }
            }
        }
        let tagged = whitelist
            .iter()
            .map(|e| (e.clone(), List::Whitelist))
            .chain(insecure.iter().map(|e| (e.clone(), List::Insecure)))
            .collect();
        Policy {
            inner: Arc::new(Inner {
                matcher: Matcher::new(tagged),
                whitelist,
                insecure,
                cas,
                reverse_dns,
                warnings,
            }),
        }
    }

    /// Whether whitelist mode is on (at least one whitelist entry).
    pub fn whitelist_mode(&self) -> bool {
        !self.inner.whitelist.is_empty()
    }

    /// The whitelist entries, normalised, in the order given.
    pub fn whitelist(&self) -> &[Entry] {
        &self.inner.whitelist
    }

    /// The insecure-registry entries, normalised, in the order given.
    pub fn insecure(&self) -> &[Entry] {
        &self.inner.insecure
    }

    /// The registry CA certificates.
    pub fn registry_cas(&self) -> &[CertificateDer<'static>] {
        &self.inner.cas
    }

    /// The reverse-DNS mode.
    pub fn reverse_dns(&self) -> ReverseDnsMode {
        self.inner.reverse_dns
    }

    /// Legal but probably unintended settings.
    pub fn warnings(&self) -> &[Warning] {
        &self.inner.warnings
    }

    /// Decides an image reference, without reverse DNS (an IP-literal registry matches wildcard
    /// entries only through [`Policy::decide_with_names`] or `decide_resolving`).
    pub fn decide<'a>(&'a self, image: &'a ImageRef) -> Decision<'a> {
        self.decide_at(image.registry(), Some(image.match_path()))
    }

    /// Decides a registry as a whole, as for a login: namespace entries count for their host.
    pub fn decide_registry<'a>(&'a self, registry: &'a Registry) -> Decision<'a> {
        self.decide_at(registry, None)
    }

    /// Decides a registry and repository path (`None`: the registry as a whole).
    pub fn decide_at<'a>(&'a self, registry: &'a Registry, path: Option<&str>) -> Decision<'a> {
        let found = self.inner.matcher.find(registry, path);
        self.conclude(registry, found, None)
    }

    /// Whether deciding this registry could use reverse DNS: it is an IP literal, wildcard entries
    /// exist, the mode is not off, and without names it is denied or not yet insecure.
    pub fn wants_reverse_dns(&self, decision: &Decision<'_>) -> Option<IpAddr> {
        let ip = decision.registry.host().ip()?;
        let useful = self.inner.reverse_dns != ReverseDnsMode::Off
            && self.inner.matcher.has_wildcards()
            && (!decision.allowed || decision.transport == Some(Transport::Secure));
        useful.then_some(ip)
    }

    /// Decides with the names that reverse DNS found for an IP-literal registry (already
    /// confirmed as the mode requires): wildcard entries are matched against each name.
    pub fn decide_with_names<'a, S: AsRef<str>>(
        &'a self,
        registry: &'a Registry,
        path: Option<&str>,
        names: &[S],
    ) -> Decision<'a> {
        let matcher = &self.inner.matcher;
        let direct = matcher.find(registry, path);
        let mut found = direct;
        let mut via: Option<&str> = None;
        for name in names {
            let by_name = matcher.find_by_name(name.as_ref(), registry, path);
            let merged = matcher.merge(found, by_name);
            if merged.best != found.best {
                via = Some(name.as_ref());
            }
            found = merged;
        }
        let via = via.filter(|_| found.best != direct.best);
        self.conclude(registry, found, via)
    }

    /// A denial for an IP-literal registry whose reverse lookup failed (fail closed), or the
    /// direct decision when whitelist mode does not need names to allow it.
    pub fn decide_dns_failed<'a>(
        &'a self,
        registry: &'a Registry,
        path: Option<&str>,
        why: &str,
    ) -> Decision<'a> {
        let decision = self.decide_at(registry, path);
        if decision.allowed {
            // Only the transport was in question; secure is the stricter answer.
            return decision;
        }
        Decision {
            reason: Reason::ReverseDns(why.into()),
            ..decision
        }
    }

    fn conclude<'a>(
        &'a self,
        registry: &'a Registry,
        found: Found,
        via: Option<&str>,
    ) -> Decision<'a> {
        let entry = found.best.map(|id| {
            let (e, l) = self.inner.matcher.entry(id);
            (e, *l)
        });
        let transport = if found.insecure {
            Transport::Insecure
        } else {
            Transport::Secure
        };
        if !self.whitelist_mode() {
            return Decision {
                registry,
                allowed: true,
                transport: Some(transport),
                entry,
                reason: Reason::WhitelistOff,
            };
        }
        match entry {
            Some(_) => Decision {
                registry,
                allowed: true,
                transport: Some(transport),
                entry,
                reason: match via {
                    Some(name) => Reason::MatchedName(name.into()),
                    None => Reason::Matched,
                },
            },
            None => Decision {
                registry,
                allowed: false,
                transport: None,
                entry: None,
                reason: Reason::NotWhitelisted,
            },
        }
    }

    /// Appends every entry matching the registry and path to `out` (no reverse DNS), most
    /// specific first; for explaining a decision.
    pub fn matches_into<'a>(
        &'a self,
        registry: &Registry,
        path: Option<&str>,
        out: &mut Vec<&'a Entry>,
    ) {
        let matcher = &self.inner.matcher;
        let start = out.len();
        let mut ids = Vec::new();
        matcher.each_match(registry, path, |id| ids.push(id));
        ids.sort_by_key(|&id| {
            std::cmp::Reverse((matcher.entry(id).0.rank(), std::cmp::Reverse(id)))
        });
        ids.dedup();
        out.extend(ids.into_iter().map(|id| &matcher.entry(id).0));
        debug_assert!(out.len() >= start);
    }

    /// Applies a whitelist update that may only restrict (content trust).
    ///
    /// The result's whitelist is `update`, accepted only if every update entry is contained in
    /// some entry of this policy's whitelist or insecure list (insecure registries are allowed in
    /// whitelist mode, and stay allowed). This policy is the deploy-time one: narrowing always
    /// starts from it, so an update can never ratchet it wider. An empty whitelist accepts any
    /// update (it turns whitelist mode on); an empty update is refused, as it would turn whitelist
    /// mode off. The insecure list, CAs and DNS settings are kept.
    pub fn narrow(&self, update: &[Entry]) -> Result<Policy, Error> {
        if update.is_empty() {
            return Err(Error::EmptyUpdate);
        }
        if self.whitelist_mode() {
            let base = || self.inner.whitelist.iter().chain(&self.inner.insecure);
            if let Some(wider) = update
                .iter()
                .find(|u| !base().any(|b| u.is_contained_in(b)))
            {
                return Err(Error::Broadening {
                    entry: wider.to_string(),
                });
            }
        }
        Ok(Policy::compile(
            update.to_vec(),
            self.inner.insecure.clone(),
            self.inner.cas.clone(),
            self.inner.reverse_dns,
        ))
    }

    /// A project's list as this policy narrows it (`docker info` shows the result): an entry
    /// inside this policy's whitelist or insecure list is kept; an entry wider than some of them
    /// gives those; an entry that overlaps none gives nothing (it has no effect: the more
    /// restrictive list wins). With whitelist mode off, `list` is kept as it is.
    pub fn narrowed_entries(&self, list: &[Entry]) -> Vec<Entry> {
        if !self.whitelist_mode() {
            return list.to_vec();
        }
        let base = || self.inner.whitelist.iter().chain(&self.inner.insecure);
        let mut out: Vec<Entry> = Vec::new();
        for entry in list {
            if base().any(|b| entry.is_contained_in(b)) {
                if !out.contains(entry) {
                    out.push(entry.clone());
                }
                continue;
            }
            for b in base().filter(|b| b.is_contained_in(entry)) {
                if !out.contains(b) {
                    out.push(b.clone());
                }
            }
        }
        out
    }

    /// A policy that allows only what both this and `other` allow.
    pub fn intersect(&self, other: &Policy) -> Intersection {
        Intersection {
            members: vec![self.clone(), other.clone()],
        }
    }
}

/// Several policies composed: allowed only if every member allows (a VCH whitelist combined with a
/// project's registry list). The transport is insecure only if every member says insecure.
#[derive(Debug, Clone, Default)]
pub struct Intersection {
    members: Vec<Policy>,
}

impl Intersection {
    /// Composes the given policies. With none, everything is allowed.
    pub fn new(members: impl IntoIterator<Item = Policy>) -> Self {
        Intersection {
            members: members.into_iter().collect(),
        }
    }

    /// Adds one more member.
    pub fn and(mut self, policy: Policy) -> Self {
        self.members.push(policy);
        self
    }

    /// The members.
    pub fn members(&self) -> &[Policy] {
        &self.members
    }

    /// Decides an image reference (no reverse DNS): the first denying member's decision, else the
    /// first member's decision with the strictest transport.
    pub fn decide<'a>(&'a self, image: &'a ImageRef) -> Decision<'a> {
        let mut first: Option<Decision<'a>> = None;
        let mut transport = Transport::Insecure;
        for (i, member) in self.members.iter().enumerate() {
            let d = member.decide(image);
            if !d.allowed {
                return Decision {
                    reason: if i == 0 {
                        d.reason
                    } else {
                        Reason::DeniedByMember(i)
                    },
                    ..d
                };
            }
            if d.transport == Some(Transport::Secure) {
                transport = Transport::Secure;
            }
            first.get_or_insert(d);
        }
        match first {
            Some(d) => Decision {
                transport: Some(transport),
                ..d
            },
            None => Decision {
                registry: image.registry(),
                allowed: true,
                transport: Some(Transport::Secure),
                entry: None,
                reason: Reason::WhitelistOff,
            },
        }
    }
}
