//! Reverse DNS for IP-literal registries: PTR names, forward-confirmed, matched against wildcards.
//!
//! VIC documents that a registry given by IP address is checked against wildcard entries by a
//! reverse lookup. A bare PTR record is controlled by whoever controls the address's reverse zone,
//! not the forward zone it names, so by default a PTR name counts only if its own A/AAAA lookup
//! contains the address (forward-confirmed reverse DNS, FCrDNS). Any failure denies.
//!
//! The matcher stays synchronous: [`Resolver`] is the I/O boundary, [`ReverseDns`] adds
//! confirmation and a TTL cache, and [`Policy::decide_resolving`] ties them to a decision.
//! [`HickoryResolver`] (feature `dns`) is the real resolver.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::host::{Host, canonical_ip, parse_name_or_ipv4};
use crate::{Decision, Error, ImageRef, Policy, Registry};

/// How IP-literal registries are checked against wildcard entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum ReverseDnsMode {
    /// PTR names whose forward lookup contains the address (the default).
    #[default]
    Confirmed,
    /// Every PTR name, unconfirmed. Whoever controls the address's reverse zone can claim any name.
    PtrOnly,
    /// No lookups: IP-literal registries match only exact-IP and CIDR entries.
    Off,
}

impl ReverseDnsMode {
    /// `confirmed`, `ptr-only` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReverseDnsMode::Confirmed => "confirmed",
            ReverseDnsMode::PtrOnly => "ptr-only",
            ReverseDnsMode::Off => "off",
        }
    }
}

impl fmt::Display for ReverseDnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReverseDnsMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "confirmed" => Ok(ReverseDnsMode::Confirmed),
            "ptr-only" => Ok(ReverseDnsMode::PtrOnly),
            "off" => Ok(ReverseDnsMode::Off),
            _ => Err(Error::DnsConfig {
                reason: format!("unknown reverse-DNS mode `{s}`: use confirmed, ptr-only or off"),
            }),
        }
    }
}

/// The records of one answer and how long they may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The records; empty when the name exists without records of that type, or does not exist.
    pub records: Vec<T>,
    /// The smallest TTL of the records.
    pub ttl: Duration,
}

/// The two lookups reverse DNS needs. A failure (timeout, refused, server failure) is an error;
/// "no such record" is an empty answer.
pub trait Resolver: Send + Sync {
    /// PTR names for an address, as returned (trailing dot allowed).
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Result<Answer<String>, Error>> + Send;
    /// A and AAAA addresses of a name.
    fn forward(&self, name: &str) -> impl Future<Output = Result<Answer<IpAddr>, Error>> + Send;
}

/// What reverse DNS found for one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReverseNames {
    /// PTR names whose forward lookup contains the address.
    pub confirmed: Vec<Box<str>>,
    /// PTR names whose forward lookup does not contain it (or failed).
    pub unconfirmed: Vec<Box<str>>,
}

/// At most this many PTR names are considered for one address.
const MAX_PTR_NAMES: usize = 8;
/// At most this many addresses are cached; past it, expired ones are dropped, then all.
const CACHE_CAPACITY: usize = 4096;

/// A [`Resolver`] with forward confirmation and a cache that keeps each result for the smallest
/// TTL involved (at most `max_ttl`, default 5 minutes). Failures are not cached.
#[derive(Debug)]
pub struct ReverseDns<R> {
    resolver: R,
    max_ttl: Duration,
    cache: Mutex<HashMap<IpAddr, (Instant, Arc<ReverseNames>)>>,
}

impl<R: Resolver> ReverseDns<R> {
    /// Wraps a resolver.
    pub fn new(resolver: R) -> Self {
        ReverseDns {
            resolver,
            max_ttl: Duration::from_secs(300),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Caps how long a result is cached.
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// The wrapped resolver.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// PTR names of `ip`, each checked by a forward lookup.
    pub async fn names(&self, ip: IpAddr) -> Result<Arc<ReverseNames>, Error> {
        let ip = canonical_ip(ip);
        let now = Instant::now();
        if let Some((expires, names)) = self.lock().get(&ip)
            && *expires > now
        {
            return Ok(Arc::clone(names));
        }
        let ptr = self.resolver.ptr(ip).await?;
        let mut ttl = ptr.ttl.min(self.max_ttl);
        let mut names = ReverseNames::default();
        for raw in ptr.records.iter().take(MAX_PTR_NAMES) {
            // PTR data is whatever the reverse zone says: keep only valid host names.
            let Ok(Host::Name(name)) = parse_name_or_ipv4(raw) else {
                tracing::debug!(%ip, ptr = %raw, "ignoring PTR record that is not a host name");
                continue;
            };
            if names.confirmed.contains(&name) || names.unconfirmed.contains(&name) {
                continue;
            }
            match self.resolver.forward(&name).await {
                Ok(forward) if forward.records.iter().any(|a| canonical_ip(*a) == ip) => {
                    ttl = ttl.min(forward.ttl);
                    names.confirmed.push(name);
                }
                Ok(forward) => {
                    ttl = ttl.min(forward.ttl);
                    names.unconfirmed.push(name);
                }
                Err(err) => {
                    tracing::debug!(%ip, %name, %err, "forward confirmation failed");
                    names.unconfirmed.push(name);
                }
            }
        }
        let names = Arc::new(names);
        let mut cache = self.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        if !ttl.is_zero() {
            cache.insert(ip, (now + ttl, Arc::clone(&names)));
        }
        Ok(names)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, Arc<ReverseNames>)>> {
        // A panic while holding the lock cannot leave the map inconsistent; keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Policy {
    /// Decides an image reference, using reverse DNS for an IP-literal registry when wildcard
    /// entries could match it (see [`Policy::wants_reverse_dns`]) and the policy's mode allows.
    /// A DNS failure, no PTR name, or no confirmed one denies (fail closed); when the registry is
    /// already allowed, they leave the transport secure.
    pub async fn decide_resolving<'a, R: Resolver>(
        &'a self,
        image: &'a ImageRef,
        dns: &ReverseDns<R>,
    ) -> Decision<'a> {
        self.decide_at_resolving(image.registry(), Some(image.match_path()), dns)
            .await
    }

    /// As [`Policy::decide_resolving`], for a registry and optional repository path.
    pub async fn decide_at_resolving<'a, R: Resolver>(
        &'a self,
        registry: &'a Registry,
        path: Option<&str>,
        dns: &ReverseDns<R>,
    ) -> Decision<'a> {
        let direct = self.decide_at(registry, path);
        let Some(ip) = self.wants_reverse_dns(&direct) else {
            return direct;
        };
        let names = match dns.names(ip).await {
            Ok(names) => names,
            Err(err) => return self.decide_dns_failed(registry, path, &err.to_string()),
        };
        let usable: &[Box<str>] = match self.reverse_dns() {
            ReverseDnsMode::Confirmed => &names.confirmed,
            ReverseDnsMode::PtrOnly | ReverseDnsMode::Off => {
                // PtrOnly uses both; Off never gets here (wants_reverse_dns).
                return self.decide_with_names(
                    registry,
                    path,
                    &[&names.confirmed[..], &names.unconfirmed[..]].concat(),
                );
            }
        };
        let decision = self.decide_with_names(registry, path, usable);
        if decision.is_allowed() {
            return decision;
        }
        let why = if names.confirmed.is_empty() && names.unconfirmed.is_empty() {
            format!("no PTR record for {ip}")
        } else if names.confirmed.is_empty() {
            format!(
                "PTR name `{}` of {ip} is not confirmed by its forward lookup",
                names.unconfirmed.join("`, `")
            )
        } else {
            format!(
                "no wildcard entry matches `{}`, the name of {ip}",
                names.confirmed.join("`, `")
            )
        };
        self.decide_dns_failed(registry, path, &why)
    }
}

#[cfg(feature = "dns")]
pub use hickory::HickoryResolver;

#[cfg(feature = "dns")]
mod hickory {
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::RData;

    use super::{Answer, Resolver};
    use crate::Error;

    /// The real resolver: hickory-resolver on tokio, with its own TTL-respecting cache.
    #[derive(Clone)]
    pub struct HickoryResolver {
        inner: TokioResolver,
        timeout: Duration,
    }

    impl std::fmt::Debug for HickoryResolver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HickoryResolver")
                .field("timeout", &self.timeout)
                .finish_non_exhaustive()
        }
    }

    impl HickoryResolver {
        /// Queries the given servers (UDP, then TCP for truncated answers), or the system's
        /// (`/etc/resolv.conf`) when `servers` is empty. Each lookup gives up after `timeout`.
        /// Must be called inside a tokio runtime.
        pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Self, Error> {
            let err = |reason: String| Error::DnsConfig { reason };
            let mut builder = if servers.is_empty() {
                TokioResolver::builder_tokio()
                    .map_err(|e| err(format!("cannot read the system DNS configuration: {e}")))?
            } else {
                let name_servers = servers
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(name_servers),
                    TokioRuntimeProvider::default(),
                )
            };
            let opts: &mut ResolverOpts = builder.options_mut();
            opts.timeout = timeout;
            opts.attempts = 1;
            opts.cache_size = 1024;
            Ok(HickoryResolver {
                inner: builder
                    .build()
                    .map_err(|e| err(format!("cannot build the DNS resolver: {e}")))?,
                timeout,
            })
        }

        async fn bounded<T>(
            &self,
            query: String,
            lookup: impl std::future::Future<Output = Result<T, hickory_resolver::net::NetError>>,
        ) -> Result<Option<T>, Error> {
            match tokio::time::timeout(self.timeout, lookup).await {
                Ok(Ok(found)) => Ok(Some(found)),
                Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
                Ok(Err(e)) => Err(Error::Dns {
                    query,
                    reason: e.to_string(),
                }),
                Err(_) => Err(Error::Dns {
                    query,
                    reason: format!("no answer within {} ms", self.timeout.as_millis()),
                }),
            }
        }
    }

    impl Resolver for HickoryResolver {
        async fn ptr(&self, ip: IpAddr) -> Result<Answer<String>, Error> {
            let lookup = self
                .bounded(format!("PTR {ip}"), self.inner.reverse_lookup(ip))
                .await?;
            Ok(match lookup {
                Some(lookup) => Answer {
                    records: lookup
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::PTR(ptr) => Some(ptr.0.to_ascii()),
                            _ => None,
                        })
                        .collect(),
                    ttl: lookup
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now()),
                },
                None => Answer {
                    records: Vec::new(),
                    ttl: Duration::ZERO,
                },
            })
        }

        async fn forward(&self, name: &str) -> Result<Answer<IpAddr>, Error> {
            // A trailing dot makes the name absolute: no search-domain guesses.
            let fqdn = format!("{}.", name.trim_end_matches('.'));
            let lookup = self
                .bounded(
                    format!("A/AAAA {name}"),
                    self.inner.lookup_ip(fqdn.as_str()),
                )
                .await?;
            Ok(match lookup {
                Some(lookup) => Answer {
                    records: lookup.iter().collect(),
                    ttl: lookup
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now()),
                },
                None => Answer {
                    records: Vec::new(),
                    ttl: Duration::ZERO,
                },
            })
        }
    }
}
