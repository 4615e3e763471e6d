//! Whitelist and insecure-registry entries: parsing, canonical text, naive matching, containment.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

use crate::Error;
use crate::host::{DOCKER_HUB_ALIASES, Host, Registry, parse_port, split_host_port, strip_scheme};
use crate::reference::validate_path;

/// One whitelist or insecure-registry entry.
///
/// | form | example | matches |
/// |---|---|---|
/// | exact host | `reg.example.com`, `10.2.40.40`, `[fd00::1]` | that host |
/// | host and port | `reg.example.com:5000` | that host on that port (no port in a reference is 443) |
/// | CIDR range | `10.2.2.1/24` (stored as `10.2.2.0/24`), `fd00::/64` | IP-literal registries in it |
/// | wildcard | `*.example.com`, `*.example.com:5000` | names with one or more labels before `example.com`, not `example.com` |
/// | anything | `*` | every registry |
/// | scheme | `https://reg`, `http://reg` | as `reg:443`, `reg:80`; the scheme only supplies a port |
/// | namespace | `reg.example.com/team` | repositories `team` and `team/…` on that registry |
///
/// An entry without a port matches any port. Entries naming a Docker Hub alias (`docker.io`,
/// `index.docker.io`, `registry-1.docker.io`, `registry.hub.docker.com`), or a wildcard covering
/// one (`*.docker.io`), match every Hub reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    host: EntryHost,
    port: Option<u16>,
    path: Option<Box<str>>,
    text: Box<str>,
}

/// What an entry's host part names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryHost {
    /// `*`: every host.
    Any,
    /// One host.
    Exact(Host),
    /// `*.suffix`: names strictly below `suffix` (stored without `*.`).
    Wildcard(Box<str>),
    /// An IP range, canonical (host bits cleared).
    Cidr(IpNet),
}

/// How specific a match is; the most specific matching entry decides and is reported.
///
/// Exact hosts beat CIDR ranges (longer prefixes first), which beat wildcards (longer suffixes
/// first), which beat `*`; then an entry with a port beats one without, a longer namespace beats a
/// shorter one, and last the earlier entry wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    class: u8,
    detail: u16,
    port: bool,
    path: u16,
}

impl Entry {
    /// Parses an entry; see the type's docs for the forms.
    pub fn parse(text: &str) -> Result<Self, Error> {
        parse(text)
    }

    /// What the host part names.
    pub fn host(&self) -> &EntryHost {
        &self.host
    }

    /// The port, if the entry (or its scheme) gives one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The namespace path, if any (`team` for `reg.example.com/team`).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The canonical text, as shown in decisions and written back to configuration.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is the bare `*`, which turns the whitelist off in effect.
    pub fn is_match_all(&self) -> bool {
        self.host == EntryHost::Any && self.port.is_none() && self.path.is_none()
    }

    /// Whether this entry matches a registry and, for a pull, a repository path.
    ///
    /// This is the definition of matching, evaluated naively; the compiled policy must agree with
    /// it. `path` is `None` for registry-level questions (such as a login), which namespace entries
    /// answer for their host. IP-literal registries match wildcard entries only through
    /// [`Entry::matches_name`] after a reverse lookup.
    pub fn matches(&self, registry: &Registry, path: Option<&str>) -> bool {
        self.matches_port_and_path(registry.effective_port(), path)
            && match &self.host {
                EntryHost::Any => true,
                EntryHost::Exact(host) => {
                    host == registry.host() || (registry.is_docker_hub() && host.is_hub_alias())
                }
                EntryHost::Wildcard(suffix) => {
                    registry
                        .host()
                        .name()
                        .is_some_and(|name| is_strictly_below(name, suffix))
                        || (registry.is_docker_hub()
                            && DOCKER_HUB_ALIASES
                                .iter()
                                .any(|alias| is_strictly_below(alias, suffix)))
                }
                EntryHost::Cidr(net) => registry.host().ip().is_some_and(|ip| net.contains(&ip)),
            }
    }

    /// Whether this wildcard (or `*`) entry matches a DNS name found for an IP-literal registry by
    /// reverse lookup, on the registry's port and path.
    pub fn matches_name(&self, name: &str, registry: &Registry, path: Option<&str>) -> bool {
        self.matches_port_and_path(registry.effective_port(), path)
            && match &self.host {
                EntryHost::Any => true,
                EntryHost::Wildcard(suffix) => is_strictly_below(name, suffix),
                EntryHost::Exact(_) | EntryHost::Cidr(_) => false,
            }
    }

    pub(crate) fn matches_port_and_path(&self, port: u16, path: Option<&str>) -> bool {
        self.port.is_none_or(|p| p == port)
            && match (&self.path, path) {
                (None, _) | (Some(_), None) => true,
                (Some(ns), Some(path)) => is_path_under(path, ns),
            }
    }

    /// Whether everything this entry matches, `outer` matches too (ignoring reverse DNS, which
    /// only ever adds names to wildcards and so keeps containment sound).
    ///
    /// Exact host ⊂ same host without port ⊂ wildcard covering it ⊂ wider wildcard; IP ⊂ CIDR ⊂
    /// wider CIDR; `host/ns/sub` ⊂ `host/ns` ⊂ `host`.
    pub fn is_contained_in(&self, outer: &Entry) -> bool {
        let port_ok = match (outer.port, self.port) {
            (None, _) => true,
            (Some(o), Some(s)) => o == s,
            (Some(_), None) => false,
        };
        let path_ok = match (&outer.path, &self.path) {
            (None, _) => true,
            (Some(o), Some(s)) => is_path_under(s, o),
            (Some(_), None) => false,
        };
        port_ok && path_ok && host_contained(&self.host, self.port, &outer.host)
    }

    pub(crate) fn rank(&self) -> Rank {
        let (class, detail) = match &self.host {
            EntryHost::Any => (0, 0),
            EntryHost::Wildcard(suffix) => (1, suffix.split('.').count() as u16),
            EntryHost::Cidr(net) => (2, u16::from(net.prefix_len())),
            EntryHost::Exact(_) => (3, 0),
        };
        Rank {
            class,
            detail,
            port: self.port.is_some(),
            path: self
                .path
                .as_deref()
                .map_or(0, |p| p.split('/').count() as u16),
        }
    }
}

fn host_contained(inner: &EntryHost, inner_port: Option<u16>, outer: &EntryHost) -> bool {
    match (outer, inner) {
        (EntryHost::Any, _) => true,
        (_, EntryHost::Any) => false,
        (EntryHost::Exact(o), EntryHost::Exact(i)) => {
            // Two Hub aliases on 443 both mean exactly Docker Hub.
            o == i || (o.is_hub_alias() && i.is_hub_alias() && inner_port == Some(443))
        }
        (EntryHost::Wildcard(suffix), EntryHost::Exact(Host::Name(name))) => {
            is_strictly_below(name, suffix)
        }
        (EntryHost::Wildcard(outer), EntryHost::Wildcard(inner)) => {
            inner == outer || is_strictly_below(inner, outer)
        }
        (EntryHost::Cidr(net), EntryHost::Exact(Host::Ip(ip))) => net.contains(ip),
        (EntryHost::Cidr(outer), EntryHost::Cidr(inner)) => outer.contains(inner),
        _ => false,
    }
}

/// `a.b.example.com` and `b.example.com` are strictly below `example.com`; `example.com` and
/// `badexample.com` are not.
pub(crate) fn is_strictly_below(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// Path-segment prefix: `team/app` is under `team`, `teamx/app` is not.
pub(crate) fn is_path_under(path: &str, namespace: &str) -> bool {
    path.strip_prefix(namespace)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Entry {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse(s)
    }
}

fn parse(original: &str) -> Result<Entry, Error> {
    let err = |reason: String| Error::entry(original, reason);
    let text = original.trim();
    if text.is_empty() {
        return Err(err("empty entry".to_owned()));
    }
    let (rest, scheme_port) = strip_scheme(text).map_err(err)?;
    let (hostport, path) = match rest.split_once('/') {
        Some((hostport, path)) => (hostport, Some(path.trim_end_matches('/'))),
        None => (rest, None),
    };
    if hostport.is_empty() {
        return Err(err("no host".to_owned()));
    }

    if let Some(prefix) = path.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && let Some(net) = parse_cidr(hostport, prefix).map_err(err)?
    {
        if scheme_port.is_some() {
            return Err(err("a CIDR range takes no scheme or port".to_owned()));
        }
        return Ok(build(EntryHost::Cidr(net), None, None));
    }

    let path = match path {
        Some("") | None => None,
        Some(p) => {
            validate_path(p).map_err(|reason| err(format!("namespace: {reason}")))?;
            Some(p)
        }
    };

    let (host_text, port_text) = if hostport == "*" {
        ("*", None)
    } else {
        split_host_port(hostport).map_err(err)?
    };
    let port = match port_text {
        Some(p) => Some(parse_port(p).map_err(err)?),
        None => scheme_port,
    };
    let host = if host_text == "*" {
        EntryHost::Any
    } else if let Some(suffix) = host_text.strip_prefix("*.") {
        match Host::parse(suffix).map_err(err)? {
            Host::Name(name) => EntryHost::Wildcard(name),
            Host::Ip(_) => {
                return Err(err(
                    "a wildcard takes a domain name; use a CIDR range for addresses".to_owned(),
                ));
            }
        }
    } else if host_text.contains('*') {
        return Err(err(
            "`*` must be the whole first label, as in *.example.com, or the whole entry".to_owned(),
        ));
    } else {
        EntryHost::Exact(Host::parse(host_text).map_err(err)?)
    };
    Ok(build(host, port, path))
}

/// Parses `ip/len` (IPv6 with or without brackets). `Ok(None)` when `host` is not an IP address,
/// in which case the digits are a namespace path.
fn parse_cidr(host: &str, prefix: &str) -> Result<Option<IpNet>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // `10.0.0.1./24` names the same address as `10.0.0.1/24`: a trailing dot must not turn the
    // range into a host with namespace `24` (found by the entry_parse fuzz target).
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    let Ok(ip) = bare.parse::<IpAddr>() else {
        return Ok(None);
    };
    let len: u8 = prefix
        .parse()
        .map_err(|_| format!("invalid prefix length `/{prefix}`"))?;
    let net = IpNet::new(ip, len)
        .map_err(|_| format!("prefix length /{len} is too long for {ip}"))?
        .trunc();
    // An IPv4-mapped range is the IPv4 range, as addresses are.
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96)
            .map_err(|_| format!("invalid prefix length `/{prefix}`"))?;
        return Ok(Some(IpNet::V4(v4.trunc())));
    }
    Ok(Some(net))
}

fn build(host: EntryHost, port: Option<u16>, path: Option<&str>) -> Entry {
    let mut text = match &host {
        EntryHost::Any => "*".to_owned(),
        EntryHost::Exact(h) => h.to_string(),
        EntryHost::Wildcard(suffix) => format!("*.{suffix}"),
        EntryHost::Cidr(net) => net.to_string(),
    };
    if let Some(port) = port {
        text.push_str(&format!(":{port}"));
    }
    if let Some(path) = path {
        text.push('/');
        text.push_str(path);
    }
    Entry {
        host,
        port,
        path: path.map(Into::into),
        text: text.into_boxed_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageRef;

    /// (input, canonical text)
    const CANONICAL: &[(&str, &str)] = &[
        ("reg.example.com", "reg.example.com"),
        ("Reg.Example.COM.", "reg.example.com"),
        ("reg.example.com:5000", "reg.example.com:5000"),
        ("https://reg.example.com", "reg.example.com:443"),
        ("HTTP://reg.example.com", "reg.example.com:80"),
        ("http://reg.example.com:8080/", "reg.example.com:8080"),
        ("10.2.40.40:443", "10.2.40.40:443"),
        ("10.2.2.1/24", "10.2.2.0/24"),
        ("10.0.0.1./24", "10.0.0.0/24"),
        ("fd00::1:2/64", "fd00::/64"),
        ("[fd00::1:2]/64", "fd00::/64"),
        ("::ffff:10.2.2.1/120", "10.2.2.0/24"),
        ("[FD00::1]", "[fd00::1]"),
        ("fd00::1", "[fd00::1]"),
        ("[fd00::1]:5000", "[fd00::1]:5000"),
        ("[::ffff:10.0.0.1]:5000", "10.0.0.1:5000"),
        ("*.example.com", "*.example.com"),
        ("*.Example.com:5000", "*.example.com:5000"),
        ("*", "*"),
        ("*:5000", "*:5000"),
        ("reg.example.com/team", "reg.example.com/team"),
        ("reg.example.com/team/sub/", "reg.example.com/team/sub"),
        ("10.0.0.1/team", "10.0.0.1/team"),
        ("10.0.0.1:5000/24", "10.0.0.1:5000/24"),
        ("  localhost  ", "localhost"),
    ];

    #[test]
    fn canonical_text() {
        for &(input, canonical) in CANONICAL {
            let entry = Entry::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(entry.as_str(), canonical, "{input}");
            // Canonical text parses back to the same entry.
            assert_eq!(Entry::parse(canonical).unwrap(), entry, "{input}");
        }
    }

    #[test]
    fn malformed_entries_name_the_entry() {
        for bad in [
            "",
            "  ",
            "ftp://reg",
            "reg:",
            "reg:0",
            "reg:99999",
            "reg:abc",
            "*.",
            "*.*.example.com",
            "a*.example.com",
            "reg.*.com",
            "**",
            "*.10.0.0.1",
            "10.0.0.0/33",
            "fd00::/129",
            "https://10.0.0.0/8",
            "reg/Team",
            "reg/a..b",
            "rég.com",
            "reg_x.com",
            "[fd00::1",
            "[fd00::1]x",
            "/team",
            "10.1.1",
            "10.2.2.112./410",
        ] {
            match Entry::parse(bad) {
                Err(Error::InvalidEntry { entry, reason }) => {
                    assert_eq!(entry, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }

    fn m(entry: &str, reference: &str) -> bool {
        let e = Entry::parse(entry).unwrap();
        let r = ImageRef::parse(reference).unwrap();
        e.matches(r.registry(), Some(r.match_path()))
    }

    #[test]
    fn matching_rules() {
        // ports: no port in a reference is 443
        assert!(m("reg.x:443", "reg.x/x"));
        assert!(m("reg.x:443", "reg.x:443/x"));
        assert!(!m("reg.x:443", "reg.x:5000/x"));
        assert!(m("reg.x", "reg.x:5000/x"));
        assert!(m("https://reg.x", "reg.x/x"));
        assert!(!m("http://reg.x", "reg.x/x"));
        assert!(m("http://reg.x", "reg.x:80/x"));
        // `reg/x` is the Hub repository `reg/x`, not registry `reg`.
        assert!(!m("reg", "reg/x"));
        assert!(m("docker.io/reg", "reg/x"));
        // wildcards
        assert!(m("*.example.com", "a.example.com/x"));
        assert!(m("*.example.com", "a.b.example.com/x"));
        assert!(!m("*.example.com", "example.com/x"));
        assert!(!m("*.example.com", "badexample.com/x"));
        assert!(!m("*.example.com", "example.com.evil.net/x"));
        assert!(m("*.example.com:5000", "a.example.com:5000/x"));
        assert!(!m("*.example.com:5000", "a.example.com/x"));
        // CIDR and IPs
        assert!(m("10.2.2.1/24", "10.2.2.200/x"));
        assert!(!m("10.2.2.1/24", "10.2.3.1/x"));
        assert!(m("fd00::/64", "[fd00::abcd]:5000/x"));
        assert!(m("10.0.0.1", "[::ffff:a00:1]/x"));
        assert!(!m("10.0.0.0/8", "ten.example.com/x"));
        // namespaces are path-segment prefixes
        assert!(m("reg.x/team", "reg.x/team/app"));
        assert!(m("reg.x/team", "reg.x/team"));
        assert!(!m("reg.x/team", "reg.x/teamx/app"));
        assert!(!m("reg.x/team/sub", "reg.x/team/app"));
        // Hub aliases
        for entry in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "registry.hub.docker.com",
            "*.docker.io",
            "*.hub.docker.com",
            "docker.io:443",
        ] {
            for reference in [
                "busybox",
                "library/busybox",
                "docker.io/busybox",
                "index.docker.io/library/busybox",
                "registry-1.docker.io/busybox",
            ] {
                assert!(m(entry, reference), "{entry} should allow {reference}");
            }
        }
        assert!(m("docker.io/library", "busybox"));
        assert!(m("docker.io/library", "registry-1.docker.io/busybox"));
        assert!(!m("docker.io/library", "user/app"));
        // A Hub alias on another port is just that host.
        assert!(m("docker.io", "docker.io:5000/x"));
        assert!(!m("docker.io:443", "docker.io:5000/x"));
        assert!(!m("index.docker.io", "docker.io:5000/x"));
        assert!(!m("docker.io:5000", "busybox"));
        // localhost and loopback are not special
        assert!(!m("reg.x", "localhost/x"));
        assert!(!m("10.0.0.0/8", "127.0.0.1/x"));
        assert!(m("*", "anything.example/x"));
        assert!(m("*:5000", "anything.example:5000/x"));
        assert!(!m("*:5000", "anything.example/x"));
    }

    fn c(inner: &str, outer: &str) -> bool {
        Entry::parse(inner)
            .unwrap()
            .is_contained_in(&Entry::parse(outer).unwrap())
    }

    #[test]
    fn containment() {
        assert!(c("reg:5000", "reg"));
        assert!(!c("reg", "reg:5000"));
        assert!(c("a.example.com", "*.example.com"));
        assert!(c("a.example.com:5000", "*.example.com"));
        assert!(!c("example.com", "*.example.com"));
        assert!(c("*.a.example.com", "*.example.com"));
        assert!(c("*.example.com", "*.example.com"));
        assert!(!c("*.example.com", "*.a.example.com"));
        assert!(!c("*.example.com", "a.example.com"));
        assert!(c("10.2.2.7", "10.2.2.0/24"));
        assert!(c("10.2.2.0/25", "10.2.2.0/24"));
        assert!(!c("10.2.0.0/16", "10.2.2.0/24"));
        assert!(c("reg/ns/sub", "reg/ns"));
        assert!(c("reg/ns", "reg"));
        assert!(!c("reg", "reg/ns"));
        assert!(!c("reg/nsx", "reg/ns"));
        assert!(c("anything", "*"));
        assert!(!c("*", "reg"));
        assert!(c("index.docker.io:443", "docker.io"));
        assert!(!c("index.docker.io", "docker.io"));
        assert!(!c("10.0.0.1", "*.example.com"));
    }

    #[test]
    fn rank_prefers_the_more_specific_entry() {
        let rank = |s: &str| Entry::parse(s).unwrap().rank();
        assert!(rank("reg") > rank("*.x"));
        assert!(rank("reg:1") > rank("reg"));
        assert!(rank("reg/a/b") > rank("reg/a"));
        assert!(rank("10.0.0.0/24") > rank("10.0.0.0/8"));
        assert!(rank("10.0.0.0/8") > rank("*.x"));
        assert!(rank("*.a.x") > rank("*.x"));
        assert!(rank("*.x") > rank("*"));
    }
}
