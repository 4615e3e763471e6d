//! HTTP proxies: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (and their lower-case forms) with
//! the semantics of Go's `net/http.ProxyFromEnvironment` (golang.org/x/net/http/httpproxy),
//! which the Docker daemon and CLI use, so one environment means the same to both.

use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine as _;

use crate::error::{Error, Result};

/// The variable naming a PEM file of CAs trusted for `https://` proxies, besides the system
/// bundle ([`ProxyConfig::from_env`]).
pub const PROXY_CA_FILE_VAR: &str = "VCH_PROXY_CA_FILE";

/// Where and how to reach a proxy: `http[s]://[user:password@]host[:port]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl {
    /// `https://`: TLS to the proxy itself.
    pub(crate) tls: bool,
    /// Host to dial (brackets removed from IPv6).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Basic …` from the URL's userinfo.
    pub(crate) authorization: Option<String>,
}

impl std::fmt::Debug for ProxyUrl {
    // Never print the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `host[:port]` / `[v6][:port]`; the port is `None` when absent.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has colons but no port.
        Some((h, _)) if h.contains(':') => Some((s, None)),
        Some((h, p)) => Some((h, Some(p))),
        None => Some((s, None)),
    }
}

impl ProxyUrl {
    /// Parses a proxy URL as Go does: a value without a scheme is `http://`; the port
    /// defaults to 80 for `http://` and 443 for `https://`.
    fn parse(var: &str, value: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Settings {
            host: var.to_owned(),
            reason: format!("proxy {value:?}: {reason}"),
        };
        let (tls, rest) = match value.split_once("://") {
            None => (false, value),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "{scheme}:// proxies are not supported (only http:// and https://)"
                )));
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None | Some("") if tls => 443,
            None | Some("") => 80,
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        let authorization = userinfo.map(|u| {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            let pair = format!("{}:{}", percent_decode(user), percent_decode(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            authorization,
        })
    }
}

/// One `NO_PROXY` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NoProxyEntry {
    /// `*`: no proxy for anything.
    All,
    /// `10.0.0.0/8`, `fd00::/8`.
    Cidr(IpAddr, u8),
    /// `10.1.2.3`, `10.1.2.3:5000`, `[::1]:5000`.
    Ip(IpAddr, Option<String>),
    /// `.example.com` (sub-domains only) or `example.com` / `*.example.com` (the domain and
    /// its sub-domains); stored with the leading dot; optional port.
    Domain {
        suffix: String,
        also_exact: bool,
        port: Option<String>,
    },
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn in_cidr(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Which proxy each request uses: one for `http://`, one for `https://`, and the `NO_PROXY`
/// exceptions. Cheap to clone.
///
/// `NO_PROXY` follows Go's rules: comma-separated, case-insensitive entries, each one of:
///
/// | entry | matches | does not match |
/// |---|---|---|
/// | `*` | everything | |
/// | `example.com` | `example.com`, `reg.example.com` | `badexample.com` |
/// | `.example.com` | `reg.example.com` | `example.com` |
/// | `*.example.com` | `reg.example.com` (Go reads it as `.example.com`) | `example.com` |
/// | `reg.example.com:5000` | `reg.example.com:5000` | `reg.example.com` (port 443) |
/// | `10.1.2.3`, `[fd00::1]:5000` | that address (and port) | |
/// | `10.0.0.0/8`, `fd00::/8` | addresses in the range, any port | names |
///
/// Ports compare after the default is filled in (443 for https, 80 for http). As in Go,
/// `localhost` and loopback addresses are never proxied.
///
/// A proxy URL may be `https://` (TLS to the proxy, then `CONNECT` inside it for https
/// registries: TLS within TLS). The proxy's certificate is verified against the system
/// bundle plus the CA files of [`ProxyConfig::proxy_ca_file`] (from the environment:
/// [`PROXY_CA_FILE_VAR`]), never against a registry's own CAs: as curl keeps `--cacert` and
/// `--proxy-cacert` apart, a registry's private CA does not vouch for the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    no_proxy: Vec<NoProxyEntry>,
    ca_files: Vec<PathBuf>,
}

impl ProxyConfig {
    /// No proxy at all.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// From `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (upper case first, then lower case, as
    /// Go reads them), and [`PROXY_CA_FILE_VAR`] for `https://` proxies. An empty variable is
    /// unset.
    ///
    /// # Errors
    /// As [`ProxyConfig::new`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From a variable lookup (for tests and embedders with their own environment).
    ///
    /// # Errors
    /// As [`ProxyConfig::new`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |upper: &str| {
            lookup(upper)
                .filter(|v| !v.is_empty())
                .or_else(|| lookup(&upper.to_ascii_lowercase()).filter(|v| !v.is_empty()))
        };
        let config = Self::new(
            get("HTTP_PROXY").as_deref(),
            get("HTTPS_PROXY").as_deref(),
            get("NO_PROXY").as_deref().unwrap_or_default(),
        )?;
        Ok(match lookup(PROXY_CA_FILE_VAR).filter(|v| !v.is_empty()) {
            Some(path) => config.proxy_ca_file(path),
            None => config,
        })
    }

    /// Trusts the CA certificates in this PEM file for `https://` proxies too (read when
    /// [`crate::HostSettingsBuilder::build`] compiles the settings).
    #[must_use]
    pub fn proxy_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Whether a proxy URL is `https://`.
    pub(crate) fn has_tls_proxy(&self) -> bool {
        [&self.http, &self.https]
            .into_iter()
            .flatten()
            .any(|p| p.tls)
    }

    /// The CA files of [`ProxyConfig::proxy_ca_file`].
    pub(crate) fn ca_files(&self) -> &[PathBuf] {
        &self.ca_files
    }

    /// A proxy for `http://` requests, one for `https://` requests (CONNECT tunnels), and the
    /// `NO_PROXY` list.
    ///
    /// # Errors
    /// [`Error::Settings`] for a proxy URL that is neither `http://` nor `https://` (socks5
    /// proxies are not supported), or has no host or a bad port.
    pub fn new(http: Option<&str>, https: Option<&str>, no_proxy: &str) -> Result<Self> {
        let parse = |var: &str, v: Option<&str>| {
            v.filter(|v| !v.trim().is_empty())
                .map(|v| ProxyUrl::parse(var, v.trim()))
                .transpose()
        };
        Ok(Self {
            http: parse("HTTP_PROXY", http)?,
            https: parse("HTTPS_PROXY", https)?,
            no_proxy: parse_no_proxy(no_proxy),
            ca_files: Vec::new(),
        })
    }

    /// Whether any proxy is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy (`http[s]://host:port`, without credentials) a request to `scheme://host:port`
    /// goes through, `None` for a direct connection. `host` may be bracketed IPv6.
    #[must_use]
    pub fn proxy_for(&self, scheme: &str, host: &str, port: Option<u16>) -> Option<String> {
        self.select(scheme, host, port).map(ToString::to_string)
    }

    pub(crate) fn select(&self, scheme: &str, host: &str, port: Option<u16>) -> Option<&ProxyUrl> {
        let https = scheme.eq_ignore_ascii_case("https");
        let proxy = if https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        let port = port.unwrap_or(if https { 443 } else { 80 }).to_string();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        let bypass = self.no_proxy.iter().any(|e| match e {
            NoProxyEntry::All => true,
            NoProxyEntry::Cidr(net, len) => ip.is_some_and(|ip| in_cidr(*net, *len, ip)),
            NoProxyEntry::Ip(want, p) => {
                ip == Some(*want) && p.as_deref().is_none_or(|p| p == port)
            }
            NoProxyEntry::Domain {
                suffix,
                also_exact,
                port: p,
            } => {
                (host.ends_with(suffix.as_str()) || (*also_exact && host == suffix[1..]))
                    && p.as_deref().is_none_or(|p| p == port)
            }
        });
        (!bypass).then_some(proxy)
    }
}

fn parse_no_proxy(value: &str) -> Vec<NoProxyEntry> {
    let mut out = Vec::new();
    for p in value.split(',') {
        let p = p.trim().to_ascii_lowercase();
        if p.is_empty() {
            continue;
        }
        if p == "*" {
            return vec![NoProxyEntry::All];
        }
        if let Some((ip, len)) = parse_cidr(&p) {
            out.push(NoProxyEntry::Cidr(ip, len));
            continue;
        }
        let Some((host, port)) = split_host_port(&p) else {
            continue;
        };
        let port = port.filter(|p| !p.is_empty()).map(str::to_owned);
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(NoProxyEntry::Ip(ip, port));
            continue;
        }
        // Go: `*.a.b` is `.a.b`; a name without a leading dot also matches itself.
        let mut host = match host.strip_prefix("*.") {
            Some(rest) => format!(".{rest}"),
            None => host.to_owned(),
        };
        if host.is_empty() || host == "." {
            continue;
        }
        let also_exact = !host.starts_with('.');
        if also_exact {
            host.insert(0, '.');
        }
        out.push(NoProxyEntry::Domain {
            suffix: host,
            also_exact,
            port,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(no_proxy: &str) -> ProxyConfig {
        ProxyConfig::new(
            Some("http://plain-proxy:3128"),
            Some("tls-proxy:8080"),
            no_proxy,
        )
        .unwrap()
    }

    /// Go's `httpproxy` tests, as rows: (NO_PROXY, scheme, host, port, proxied).
    #[test]
    fn no_proxy_follows_go() {
        let rows: &[(&str, &str, &str, Option<u16>, bool)] = &[
            ("", "https", "reg.example.com", None, true),
            ("", "http", "reg.example.com", Some(5000), true),
            ("", "https", "localhost", Some(5000), false),
            ("", "https", "127.0.0.1", Some(5000), false),
            ("", "https", "[::1]", Some(5000), false),
            ("*", "https", "reg.example.com", None, false),
            ("example.com", "https", "example.com", None, false),
            ("example.com", "https", "reg.example.com", None, false),
            ("example.com", "https", "badexample.com", None, true),
            ("Example.COM", "https", "REG.example.com", None, false),
            (".example.com", "https", "example.com", None, true),
            (".example.com", "https", "reg.example.com", None, false),
            ("*.example.com", "https", "example.com", None, true),
            ("*.example.com", "https", "a.b.example.com", None, false),
            (
                "reg.example.com:5000",
                "https",
                "reg.example.com",
                Some(5000),
                false,
            ),
            (
                "reg.example.com:5000",
                "https",
                "reg.example.com",
                None,
                true,
            ),
            (
                "reg.example.com:443",
                "https",
                "reg.example.com",
                None,
                false,
            ),
            ("10.1.2.3", "https", "10.1.2.3", Some(5000), false),
            ("10.1.2.3:5000", "https", "10.1.2.3", Some(5001), true),
            ("[fd00::1]:5000", "https", "[fd00::1]", Some(5000), false),
            ("fd00::1", "https", "[fd00::1]", Some(5000), false),
            ("10.0.0.0/8", "https", "10.200.0.1", Some(5000), false),
            ("10.0.0.0/8", "https", "11.0.0.1", Some(5000), true),
            ("10.0.0.0/8", "https", "ten.example", None, true),
            ("fd00::/8", "https", "[fd12::1]", None, false),
            (
                " , foo.bar ,, example.com ",
                "https",
                "x.example.com",
                None,
                false,
            ),
            ("foo.bar", "http", "reg.example.com", Some(80), true),
        ];
        for (no_proxy, scheme, host, port, proxied) in rows {
            let got = config(no_proxy).proxy_for(scheme, host, *port);
            assert_eq!(
                got.is_some(),
                *proxied,
                "NO_PROXY={no_proxy:?} {scheme}://{host}:{port:?} -> {got:?}"
            );
        }
    }

    #[test]
    fn scheme_picks_the_proxy_and_credentials_are_parsed() {
        let c = ProxyConfig::new(
            Some("http://us%40er:p%3Ass@[fd00::3]:3128/ignored"),
            Some("proxy.example"),
            "",
        )
        .unwrap();
        let http = c.select("http", "reg", None).unwrap();
        assert_eq!(http.to_string(), "http://[fd00::3]:3128");
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(
            http.authorization.as_deref(),
            Some(format!("Basic {expected}").as_str())
        );
        assert!(!format!("{http:?}").contains(&expected));
        assert_eq!(
            c.proxy_for("https", "reg", None).as_deref(),
            Some("http://proxy.example:80")
        );
        assert!(ProxyConfig::new(None, Some("socks5://p:1080"), "").is_err());
        let tls = ProxyConfig::new(None, Some("HTTPS://u:p@tls-proxy"), "").unwrap();
        assert!(tls.has_tls_proxy());
        let p = tls.select("https", "reg", None).unwrap();
        assert_eq!(p.to_string(), "https://tls-proxy:443");
        assert!(p.authorization.is_some());
        assert!(!c.has_tls_proxy());
        assert!(ProxyConfig::new(None, Some("http://p:notaport"), "").is_err());
        assert!(ProxyConfig::new(Some(""), None, "").unwrap().is_empty());
    }

    #[test]
    fn environment_upper_case_wins() {
        let env = |name: &str| match name {
            "HTTPS_PROXY" => Some("upper:1".to_owned()),
            "https_proxy" => Some("lower:2".to_owned()),
            "http_proxy" => Some("lower:3".to_owned()),
            "NO_PROXY" => Some(String::new()),
            "no_proxy" => Some("reg.example".to_owned()),
            _ => None,
        };
        let c = ProxyConfig::from_lookup(env).unwrap();
        assert_eq!(
            c.proxy_for("https", "x", None).as_deref(),
            Some("http://upper:1")
        );
        assert_eq!(
            c.proxy_for("http", "x", None).as_deref(),
            Some("http://lower:3")
        );
        assert_eq!(c.proxy_for("https", "reg.example", None), None);
        assert!(c.ca_files().is_empty());
        let with_ca = ProxyConfig::from_lookup(|name| match name {
            "HTTPS_PROXY" => Some("https://p:8443".to_owned()),
            PROXY_CA_FILE_VAR => Some("/etc/proxy-ca.pem".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(with_ca.ca_files(), [PathBuf::from("/etc/proxy-ca.pem")]);
    }
}
