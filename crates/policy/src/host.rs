//! Registry hosts and addresses, normalised once so that matching compares values, not text.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host names under which Docker Hub is reached. They are one registry: an entry naming any of
/// them allows every Hub reference.
pub const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// The port Docker connects to when a reference names none.
pub const DEFAULT_PORT: u16 = 443;

/// A registry host: a lower-case DNS name without trailing dot, or an IP address.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are stored as the IPv4 address, so both spellings
/// compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A DNS name: ASCII, lower case, no trailing dot.
    Name(Box<str>),
    /// An IP address (never an IPv4-mapped IPv6 one).
    Ip(IpAddr),
}

impl Host {
    /// Parses a host as written in an entry or a registry address: a DNS name, an IPv4 address, or
    /// an IPv6 address with or without brackets.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| "unclosed `[` in IPv6 address".to_owned())?;
            return parse_ipv6(inner).map(Host::Ip);
        }
        if text.contains(':') {
            return parse_ipv6(text).map(Host::Ip);
        }
        parse_name_or_ipv4(text)
    }

    /// Returns the IP address, if this host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }

    /// Returns the DNS name, if this host is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }

    /// Whether this host is one of [`DOCKER_HUB_ALIASES`].
    pub fn is_hub_alias(&self) -> bool {
        self.name().is_some_and(|n| DOCKER_HUB_ALIASES.contains(&n))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Maps an IPv4-mapped IPv6 address to its IPv4 address; every other address is returned as is.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn parse_ipv6(text: &str) -> Result<IpAddr, String> {
    if text.contains('%') {
        return Err(format!(
            "IPv6 zone identifiers are not supported (`{text}`)"
        ));
    }
    text.parse::<Ipv6Addr>()
        .map(|ip| canonical_ip(IpAddr::V6(ip)))
        .map_err(|_| format!("`{text}` is not a valid IPv6 address"))
}

/// Parses a DNS name or a dotted-quad IPv4 address.
///
/// Names are ASCII letters, digits and hyphens in labels of 1 to 63 characters (RFC 1123), at most
/// 253 characters, compared case-insensitively; one trailing dot is ignored. A name whose last
/// label is numeric but which is not a dotted quad (`10.1.1`, `010.0.0.1`) is refused: resolvers
/// disagree on what such text means, so it could name a different address than it seems to.
pub(crate) fn parse_name_or_ipv4(text: &str) -> Result<Host, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    match plain_name(name) {
        Some(host) => Ok(host),
        None => parse_any_name_or_ipv4(name),
    }
}

/// [`parse_name_or_ipv4`] for every input (after the trailing dot is gone), naming what is wrong.
fn parse_any_name_or_ipv4(name: &str) -> Result<Host, String> {
    if name.is_empty() {
        return Err("empty host".to_owned());
    }
    if !name.is_ascii() {
        return Err(
            "non-ASCII host: write internationalised names in their punycode (xn--) form"
                .to_owned(),
        );
    }
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if name.len() > 253 {
        return Err("host name longer than 253 characters".to_owned());
    }
    for label in name.split('.') {
        validate_label(label)?;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{name}` looks like an IPv4 address but is not a valid dotted quad"
        ));
    }
    Ok(Host::Name(name.to_ascii_lowercase().into_boxed_str()))
}

/// The common case in one pass: a valid lower-case name whose last label is not numeric. Anything
/// else (upper case, IPv4, errors) returns `None` for the general path, which names the fault.
fn plain_name(name: &str) -> Option<Host> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 253 {
        return None;
    }
    let mut label_start = 0;
    let mut label_numeric = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'-' => label_numeric = false,
            b'0'..=b'9' => {}
            b'.' => {
                if !label_ok(&bytes[label_start..i]) {
                    return None;
                }
                label_start = i + 1;
                label_numeric = true;
            }
            _ => return None,
        }
    }
    (label_ok(&bytes[label_start..]) && !label_numeric).then(|| Host::Name(name.into()))
}

/// A label of 1 to 63 letters, digits and inner hyphens (its bytes are already known to be valid).
fn label_ok(label: &[u8]) -> bool {
    matches!(label, [first, .., last] | [first @ last] if *first != b'-' && *last != b'-')
        && label.len() <= 63
}

fn validate_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label in host name (two dots in a row, or a leading dot)".to_owned());
    }
    if label.len() > 63 {
        return Err(format!("host label `{label}` is longer than 63 characters"));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("character `{bad}` is not allowed in a host name"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "host label `{label}` must not start or end with a hyphen"
        ));
    }
    Ok(())
}

/// Parses a port number: decimal digits, 1 to 65535.
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid port `{text}`: must be a number from 1 to 65535"
        ));
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "invalid port `{text}`: must be a number from 1 to 65535"
        )),
    }
}

/// Splits `host[:port]` where an IPv6 host is in brackets. Returns the host text and the port text.
pub(crate) fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if text.starts_with('[') {
        let close = text
            .find(']')
            .ok_or_else(|| "unclosed `[` in IPv6 address".to_owned())?;
        let (host, rest) = text.split_at(close + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected `{rest}` after IPv6 address")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, Some(port)))
        }
        // More than one colon without brackets can only be a bare IPv6 address (no port).
        _ => Ok((text, None)),
    }
}

/// A normalised registry: host, explicit port, and whether it is Docker Hub.
///
/// Built from an image reference's domain or from a registry address; see [`Registry::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    host: Host,
    port: Option<u16>,
    hub: bool,
    text: RegistryText,
}

/// A registry's canonical text, allocated only when it differs from the host name (deciding
/// parses a registry per request; most are a bare name or Hub).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RegistryText {
    /// `docker.io`.
    Hub,
    /// The host name itself.
    HostName,
    /// `host:port`, or an IP address.
    Owned(Box<str>),
}

impl Registry {
    /// Builds a registry from a parsed host and optional port.
    ///
    /// A Hub alias on the default port is Docker Hub, shown as `docker.io`.
    pub fn new(host: Host, port: Option<u16>) -> Self {
        let hub = host.is_hub_alias() && port.unwrap_or(DEFAULT_PORT) == DEFAULT_PORT;
        let text = match (&host, port) {
            _ if hub => RegistryText::Hub,
            (Host::Name(_), None) => RegistryText::HostName,
            (Host::Name(name), Some(port)) => RegistryText::Owned(join_port(name, port)),
            (Host::Ip(_), Some(port)) => {
                RegistryText::Owned(format!("{host}:{port}").into_boxed_str())
            }
            (Host::Ip(_), None) => RegistryText::Owned(host.to_string().into_boxed_str()),
        };
        Registry {
            host,
            port,
            hub,
            text,
        }
    }

    /// [`Registry::new`] for an IPv4 host whose `host[:port]` text is known to be canonical (a
    /// dotted quad that parsed, a port without leading zeros): no formatting on the per-request
    /// path.
    pub(crate) fn new_ipv4_as_written(host: Ipv4Addr, port: Option<u16>, text: &str) -> Self {
        Registry {
            host: Host::Ip(IpAddr::V4(host)),
            port,
            hub: false,
            text: RegistryText::Owned(text.into()),
        }
    }

    /// Docker Hub.
    pub fn docker_hub() -> Self {
        Registry::new(Host::Name("docker.io".into()), None)
    }

    /// Parses a registry address as given to `docker login` or in a `POST /auth` `serveraddress`:
    /// an optional `http://` or `https://` scheme (which supplies port 80 or 443 when none is
    /// given), `host[:port]`, and an optional path, which is ignored (`https://index.docker.io/v1/`).
    /// An empty address is Docker Hub, as for Docker.
    pub fn parse(address: &str) -> Result<Self, crate::Error> {
        let err = |reason: String| crate::Error::InvalidRegistry {
            address: address.to_owned(),
            reason,
        };
        let trimmed = address.trim();
        if trimmed.is_empty() {
            return Ok(Registry::docker_hub());
        }
        let (rest, default_port) = strip_scheme(trimmed).map_err(err)?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let (host, port) = split_host_port(hostport).map_err(err)?;
        if host.contains('*') {
            return Err(err("a registry address cannot contain `*`".to_owned()));
        }
        let host = Host::parse(host).map_err(err)?;
        let port = match port {
            Some(p) => Some(parse_port(p).map_err(err)?),
            // `https://` means 443, which is what no port means: keep the canonical text short.
            None => default_port.filter(|&p| p != DEFAULT_PORT),
        };
        Ok(Registry::new(host, port))
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port given explicitly, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port Docker connects to: the explicit port, else 443.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    /// Whether this is Docker Hub (a Hub alias on port 443).
    pub fn is_docker_hub(&self) -> bool {
        self.hub
    }

    /// The canonical text: `docker.io` for Hub, else `host[:port]` with the host normalised.
    pub fn as_str(&self) -> &str {
        match (&self.text, &self.host) {
            (RegistryText::Hub, _) => "docker.io",
            (RegistryText::HostName, Host::Name(name)) => name,
            (RegistryText::Owned(text), _) => text,
            // `new` pairs `HostName` with a name only.
            (RegistryText::HostName, Host::Ip(_)) => "",
        }
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `name:port`, without the formatting machinery.
fn join_port(name: &str, port: u16) -> Box<str> {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = port;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut text = String::with_capacity(name.len() + 1 + digits.len() - at);
    text.push_str(name);
    text.push(':');
    // ASCII digits.
    text.extend(digits[at..].iter().map(|&d| char::from(d)));
    text.into_boxed_str()
}

/// Strips an optional `http://`/`https://` scheme, returning the rest and the port it implies.
pub(crate) fn strip_scheme(text: &str) -> Result<(&str, Option<u16>), String> {
    match text.split_once("://") {
        None => Ok((text, None)),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => Ok((rest, Some(443))),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => Ok((rest, Some(80))),
        Some((scheme, _)) => Err(format!(
            "unsupported scheme `{scheme}://`: use https:// or http://, or none"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(
            Host::parse("Reg.Example.COM.").unwrap(),
            Host::Name("reg.example.com".into())
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(
            Host::parse("[::ffff:10.2.40.40]").unwrap(),
            Host::parse("10.2.40.40").unwrap()
        );
        assert_eq!(
            Host::parse("::ffff:a02:2828").unwrap(),
            Host::parse("10.2.40.40").unwrap()
        );
    }

    #[test]
    fn ipv6_compares_as_an_address() {
        assert_eq!(
            Host::parse("[FD00:0::1]").unwrap(),
            Host::parse("fd00::0001").unwrap()
        );
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "reg_x.com",
            "rég.com",
            "10.1.1",
            "010.0.0.1",
            "1.2.3.4.5",
            "[fd00::1",
            "[fd00::1%eth0]",
            "[zz::1]",
            &"a".repeat(64),
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_general_one(name in "[a-zA-Z0-9.-]{0,70}|[a-z0-9-]{60,66}") {
            if let Some(fast) = plain_name(&name) {
                proptest::prop_assert_eq!(Ok(fast), parse_any_name_or_ipv4(&name));
            }
        }
    }

    #[test]
    fn registry_addresses() {
        let hub = Registry::parse("https://index.docker.io/v1/").unwrap();
        assert!(hub.is_docker_hub());
        assert_eq!(hub.as_str(), "docker.io");
        assert!(Registry::parse("").unwrap().is_docker_hub());
        assert_eq!(
            Registry::parse("https://reg.x/v2/").unwrap().as_str(),
            "reg.x"
        );
        let r = Registry::parse("http://Reg.Example.com").unwrap();
        assert_eq!(r.as_str(), "reg.example.com:80");
        assert_eq!(Registry::parse("r:1").unwrap().as_str(), "r:1");
        assert_eq!(Registry::parse("R:65535").unwrap().as_str(), "r:65535");
        assert_eq!(Registry::parse("r:0080").unwrap().as_str(), "r:80");
        let r = Registry::parse("[fd00::1]:5000").unwrap();
        assert_eq!(r.as_str(), "[fd00::1]:5000");
        assert!(!Registry::parse("docker.io:5000").unwrap().is_docker_hub());
        assert!(Registry::parse("ftp://x").is_err());
        assert!(Registry::parse("x:0").is_err());
        assert!(Registry::parse("x:65536").is_err());
    }
}
