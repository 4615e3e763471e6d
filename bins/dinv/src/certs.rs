//! The TLS material in `-certs`: which files are needed, which may be generated, and the names
//! a generated server certificate covers.
//!
//! Completion rules (existing files are never overwritten; new files are written all or
//! nothing, keys 0600):
//!
//! | mode | files present | result |
//! |---|---|---|
//! | `-tls` | `docker.crt` + `docker.key` | used as they are |
//! | `-tls` | none of the server pair, `ca.crt` + `ca-key.pem` | server pair issued from that CA |
//! | `-tls` | none of the server pair, no CA file | new CA (`ca.crt`, `ca-key.pem`) and server pair |
//! | `-tlsverify` | `ca.crt` + `ca-key.pem` | the missing server and/or client pair issued from that CA |
//! | `-tlsverify` | `ca.crt` + server pair, no `ca-key.pem` | used as they are (copied from a VCH); nothing generated |
//! | `-tlsverify` | nothing | all six files |
//! | any | anything else (half a pair, a CA key without its certificate, a server pair without `ca.crt`) | error naming the missing files |

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use vch_pki::{Bundle, CaOptions, CertificateAuthority, Layout, LeafOptions, Overwrite};
use vch_policy::Resolver as _;

/// `ca.crt`.
pub const CA_CERT: &str = "ca.crt";
/// `ca-key.pem`.
pub const CA_KEY: &str = "ca-key.pem";
/// `docker.crt`.
pub const SERVER_CERT: &str = "docker.crt";
/// `docker.key`.
pub const SERVER_KEY: &str = "docker.key";
/// `docker-client.crt`.
pub const CLIENT_CERT: &str = "docker-client.crt";
/// `docker-client.key`.
pub const CLIENT_KEY: &str = "docker-client.key";

/// How long name resolution for the server certificate may take in total (the `-vic-ip` name,
/// then the reverse lookups): a host without network must not hang at start.
pub const RESOLVE_BUDGET: Duration = Duration::from_secs(2);

/// TLS on the TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-tls`: server certificate only.
    Tls,
    /// `-tlsverify`: clients must present a certificate from `ca.crt`.
    TlsVerify,
}

/// Which of the six files exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present {
    /// `ca.crt`.
    pub ca_cert: bool,
    /// `ca-key.pem`.
    pub ca_key: bool,
    /// `docker.crt`.
    pub server_cert: bool,
    /// `docker.key`.
    pub server_key: bool,
    /// `docker-client.crt`.
    pub client_cert: bool,
    /// `docker-client.key`.
    pub client_key: bool,
}

impl Present {
    /// Looks at `dir`.
    pub fn scan(dir: &Path) -> Self {
        let has = |name| dir.join(name).exists();
        Present {
            ca_cert: has(CA_CERT),
            ca_key: has(CA_KEY),
            server_cert: has(SERVER_CERT),
            server_key: has(SERVER_KEY),
            client_cert: has(CLIENT_CERT),
            client_key: has(CLIENT_KEY),
        }
    }

    fn all(self) -> [(&'static str, bool); 6] {
        [
            (CA_CERT, self.ca_cert),
            (CA_KEY, self.ca_key),
            (SERVER_CERT, self.server_cert),
            (SERVER_KEY, self.server_key),
            (CLIENT_CERT, self.client_cert),
            (CLIENT_KEY, self.client_key),
        ]
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// A new CA (`ca.crt`, `ca-key.pem`).
    pub ca: bool,
    /// A server pair.
    pub server: bool,
    /// A client pair.
    pub client: bool,
}

impl Plan {
    /// Whether nothing is generated.
    pub fn is_empty(&self) -> bool {
        !(self.ca || self.server || self.client)
    }
}

/// A set of files that cannot be completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// The files that would be needed.
    pub missing: Vec<&'static str>,
    /// The files found.
    pub found: Vec<&'static str>,
    /// Why they cannot be generated.
    pub reason: &'static str,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "incomplete TLS material: missing {} (found {}); {}",
            self.missing.join(", "),
            if self.found.is_empty() {
                "nothing".to_owned()
            } else {
                self.found.join(", ")
            },
            self.reason
        )
    }
}

impl std::error::Error for Incomplete {}

/// Decides what to generate, by the table in the module docs.
pub fn plan(mode: Mode, present: Present) -> Result<Plan, Incomplete> {
    let found: Vec<_> = present
        .all()
        .iter()
        .filter(|(_, p)| *p)
        .map(|(n, _)| *n)
        .collect();
    let fail = |missing: Vec<&'static str>, reason| Incomplete {
        missing,
        found: found.clone(),
        reason,
    };
    // A pair is whole, absent, or an error.
    let pair = |cert: bool, key: bool, names: [&'static str; 2]| -> Result<bool, Incomplete> {
        match (cert, key) {
            (true, true) => Ok(true),
            (false, false) => Ok(false),
            (true, false) => Err(fail(vec![names[1]], "a certificate needs its key")),
            (false, true) => Err(fail(vec![names[0]], "a key needs its certificate")),
        }
    };
    if present.ca_key && !present.ca_cert {
        return Err(fail(vec![CA_CERT], "a CA key needs its certificate"));
    }
    let server = pair(
        present.server_cert,
        present.server_key,
        [SERVER_CERT, SERVER_KEY],
    )?;
    let client = match mode {
        Mode::Tls => true, // not needed
        Mode::TlsVerify => pair(
            present.client_cert,
            present.client_key,
            [CLIENT_CERT, CLIENT_KEY],
        )?,
    };
    let has_ca = present.ca_cert && present.ca_key;
    match mode {
        Mode::Tls if server => Ok(Plan::default()),
        Mode::Tls if has_ca => Ok(Plan {
            server: true,
            ..Plan::default()
        }),
        Mode::Tls if !present.ca_cert => Ok(Plan {
            ca: true,
            server: true,
            client: false,
        }),
        Mode::Tls => Err(fail(
            vec![SERVER_CERT, SERVER_KEY, CA_KEY],
            "without ca-key.pem no server certificate can be issued from ca.crt",
        )),
        Mode::TlsVerify if has_ca => Ok(Plan {
            ca: false,
            server: !server,
            client: !client,
        }),
        // Certificates copied in from a VCH: the client pair lives with the user.
        Mode::TlsVerify if present.ca_cert && server => Ok(Plan::default()),
        Mode::TlsVerify if present.ca_cert => Err(fail(
            vec![SERVER_CERT, SERVER_KEY, CA_KEY],
            "without ca-key.pem no server certificate can be issued from ca.crt",
        )),
        Mode::TlsVerify if !server && !client => Ok(Plan {
            ca: true,
            server: true,
            client: true,
        }),
        Mode::TlsVerify => Err(fail(
            vec![CA_CERT, CA_KEY],
            "clients are verified against ca.crt, and new certificates cannot be issued for \
             the existing ones",
        )),
    }
}

/// The files dockerd (or the policy front) is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Whether clients must present a certificate from `ca` (`-tlsverify`).
    pub verify: bool,
    /// `ca.crt`; with `-tls` and no `ca.crt`, `docker.crt`: dockerd 20.10 reads `--tlscacert`
    /// (default `~/.docker/ca.pem`) even without `--tlsverify`, and fails when it is missing.
    pub ca: PathBuf,
    /// `docker.crt`.
    pub cert: PathBuf,
    /// `docker.key`.
    pub key: PathBuf,
}

/// What [`prepare`] did, for the start-up lines.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The files written.
    pub written: Vec<PathBuf>,
    /// The names a new server certificate covers.
    pub server_names: Vec<String>,
    /// Resolution that gave nothing in time, and the like.
    pub notes: Vec<String>,
}

/// Completes the material in `dir` for `mode` (see the module docs), issuing a server
/// certificate for [`server_names`] when one is needed.
pub async fn prepare(
    dir: &Path,
    mode: Mode,
    vic_ip: Option<&str>,
) -> anyhow::Result<(TlsFiles, Report)> {
    let present = Present::scan(dir);
    let plan = plan(mode, present).with_context(|| format!("in {}", dir.display()))?;
    tracing::debug!(dir = %dir.display(), ?present, ?plan, "TLS material");
    let mut report = Report::default();
    if !plan.is_empty() {
        let ca = if plan.ca {
            CertificateAuthority::generate(&CaOptions::new("dinv CA"))?
        } else {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .with_context(|| format!("cannot read {}", dir.join(name).display()))
            };
            CertificateAuthority::from_pem(&read(CA_CERT)?, &read(CA_KEY)?)
                .with_context(|| format!("the CA in {}", dir.display()))?
        };
        let mut bundle = Bundle::default();
        if plan.ca {
            bundle.ca_cert = Some(ca.cert_pem());
            bundle.ca_key = Some(ca.key().to_pem().to_owned());
        }
        if plan.server {
            let (names, notes) = server_names(vic_ip).await?;
            let issued = ca.issue(&LeafOptions::server(names.clone()))?;
            bundle.server = Some((issued.cert_pem(), issued.key().to_pem().to_owned()));
            report.server_names = names;
            report.notes = notes;
        }
        if plan.client {
            let issued = ca.issue(&LeafOptions::client("dinv-client"))?;
            bundle.client = Some((issued.cert_pem(), issued.key().to_pem().to_owned()));
        }
        let files = bundle.files(&Layout::Dinv)?;
        report.written = vch_pki::write_files(dir, &files, Overwrite::Never)
            .with_context(|| format!("cannot write the TLS material to {}", dir.display()))?;
    }
    let ca = dir.join(CA_CERT);
    let files = TlsFiles {
        verify: mode == Mode::TlsVerify,
        ca: if ca.exists() {
            ca
        } else {
            dir.join(SERVER_CERT)
        },
        cert: dir.join(SERVER_CERT),
        key: dir.join(SERVER_KEY),
    };
    Ok((files, report))
}

/// The subjectAltNames of a new server certificate: the `-vic-ip` address (an IP, or a name and
/// the addresses it resolves to), else every non-loopback address of the host; then the
/// reverse-DNS names of those addresses (`/etc/hosts`, then PTR records), `localhost` and
/// `127.0.0.1`. Resolution gets [`RESOLVE_BUDGET`] in total; what did not answer in time is
/// left out and said in the notes.
pub async fn server_names(vic_ip: Option<&str>) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let deadline = tokio::time::Instant::now() + RESOLVE_BUDGET;
    let mut names = Vec::new();
    let mut notes = Vec::new();
    let addrs: Vec<IpAddr> = match vic_ip {
        Some(ip) => match ip.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => vec![ip],
            Err(_) => {
                names.push(ip.to_owned());
                match tokio::time::timeout_at(deadline, tokio::net::lookup_host((ip, 0))).await {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    Ok(Err(e)) => anyhow::bail!("cannot resolve -vic-ip {ip}: {e}"),
                    Err(_) => {
                        notes.push(format!(
                            "{ip} did not resolve within {} s: the certificate names it only",
                            RESOLVE_BUDGET.as_secs()
                        ));
                        Vec::new()
                    }
                }
            }
        },
        None => host_addresses(),
    };
    for ip in &addrs {
        names.push(ip.to_string());
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for ip in &addrs {
        names.extend(hosts_names(&hosts, *ip));
    }
    names.extend(ptr_names(&addrs, deadline, &mut notes).await);
    names.push("localhost".to_owned());
    names.push("127.0.0.1".to_owned());
    let mut seen = HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    Ok((names, notes))
}

/// PTR names of `addrs` from the system's DNS servers, until `deadline`.
async fn ptr_names(
    addrs: &[IpAddr],
    deadline: tokio::time::Instant,
    notes: &mut Vec<String>,
) -> Vec<String> {
    if addrs.is_empty() {
        return Vec::new();
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let resolver = match vch_policy::HickoryResolver::new(&[], left.max(Duration::from_millis(1))) {
        Ok(r) => std::sync::Arc::new(r),
        Err(e) => {
            notes.push(format!("no reverse DNS: {e}"));
            return Vec::new();
        }
    };
    let mut lookups = tokio::task::JoinSet::new();
    for ip in addrs.iter().copied() {
        let resolver = std::sync::Arc::clone(&resolver);
        lookups.spawn(async move { (ip, resolver.ptr(ip).await) });
    }
    let mut names = Vec::new();
    let mut answered = HashSet::new();
    loop {
        match tokio::time::timeout_at(deadline, lookups.join_next()).await {
            Ok(Some(Ok((ip, Ok(answer))))) => {
                answered.insert(ip);
                names.extend(
                    answer
                        .records
                        .into_iter()
                        .map(|n| n.trim_end_matches('.').to_owned()),
                );
            }
            Ok(Some(Ok((ip, Err(e))))) => tracing::debug!(%ip, error = %e, "reverse DNS"),
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    lookups.abort_all();
    let unanswered: Vec<String> = addrs
        .iter()
        .filter(|ip| !answered.contains(ip))
        .map(ToString::to_string)
        .collect();
    if !unanswered.is_empty() {
        notes.push(format!(
            "reverse DNS gave no answer within {} s for {}: no DNS names from it",
            RESOLVE_BUDGET.as_secs(),
            unanswered.join(", ")
        ));
    }
    names
}

/// The names `/etc/hosts` (its text) gives `ip`.
fn hosts_names(hosts: &str, ip: IpAddr) -> Vec<String> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let addr: IpAddr = fields.next()?.parse().ok()?;
            (addr == ip).then(|| fields.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// The host's addresses, loopback and link-local left out, from `/proc/net` (IPv4 local
/// routes, IPv6 interface addresses).
pub fn host_addresses() -> Vec<IpAddr> {
    let v4 = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    parse_host_addresses(&v4, &v6)
}

fn parse_host_addresses(fib_trie: &str, if_inet6: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut last = None;
    for line in fib_trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<std::net::Ipv4Addr>() {
            last = Some(ip);
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !ip.is_link_local()
            && !out.contains(&IpAddr::V4(ip))
        {
            out.push(IpAddr::V4(ip));
        }
    }
    for line in if_inet6.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let ip = std::net::Ipv6Addr::from(bits);
        let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
        if !ip.is_loopback() && !link_local && !out.contains(&IpAddr::V6(ip)) {
            out.push(IpAddr::V6(ip));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(names: &[&str]) -> Present {
        let has = |n| names.contains(&n);
        Present {
            ca_cert: has(CA_CERT),
            ca_key: has(CA_KEY),
            server_cert: has(SERVER_CERT),
            server_key: has(SERVER_KEY),
            client_cert: has(CLIENT_CERT),
            client_key: has(CLIENT_KEY),
        }
    }

    const ALL: Plan = Plan {
        ca: true,
        server: true,
        client: true,
    };
    const NONE: Plan = Plan {
        ca: false,
        server: false,
        client: false,
    };

    /// Rows: name, mode, files present, the plan or the missing files.
    #[test]
    fn completion_rules() {
        use Mode::*;
        let server = Plan {
            server: true,
            ..NONE
        };
        let client = Plan {
            client: true,
            ..NONE
        };
        let ca_server = Plan {
            ca: true,
            server: true,
            ..NONE
        };
        type Row<'a> = (&'a str, Mode, &'a [&'a str], Result<Plan, &'a [&'a str]>);
        let rows: &[Row<'_>] = &[
            ("tls, empty", Tls, &[], Ok(ca_server)),
            (
                "tls, server pair",
                Tls,
                &[SERVER_CERT, SERVER_KEY],
                Ok(NONE),
            ),
            ("tls, CA", Tls, &[CA_CERT, CA_KEY], Ok(server)),
            ("tls, half pair", Tls, &[SERVER_CERT], Err(&[SERVER_KEY])),
            (
                "tls, ca.crt only",
                Tls,
                &[CA_CERT],
                Err(&[SERVER_CERT, SERVER_KEY, CA_KEY]),
            ),
            ("verify, empty", TlsVerify, &[], Ok(ALL)),
            (
                "verify, all six",
                TlsVerify,
                &[
                    CA_CERT,
                    CA_KEY,
                    SERVER_CERT,
                    SERVER_KEY,
                    CLIENT_CERT,
                    CLIENT_KEY,
                ],
                Ok(NONE),
            ),
            (
                "verify, CA only",
                TlsVerify,
                &[CA_CERT, CA_KEY],
                Ok(Plan {
                    server: true,
                    client: true,
                    ..NONE
                }),
            ),
            (
                "verify, CA and server",
                TlsVerify,
                &[CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY],
                Ok(client),
            ),
            (
                "verify, CA and client",
                TlsVerify,
                &[CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY],
                Ok(server),
            ),
            (
                "verify, copied from a VCH",
                TlsVerify,
                &[CA_CERT, SERVER_CERT, SERVER_KEY],
                Ok(NONE),
            ),
            (
                "verify, server pair without CA",
                TlsVerify,
                &[SERVER_CERT, SERVER_KEY],
                Err(&[CA_CERT, CA_KEY]),
            ),
            (
                "verify, CA key alone",
                TlsVerify,
                &[CA_KEY],
                Err(&[CA_CERT]),
            ),
            (
                "verify, half client",
                TlsVerify,
                &[CA_CERT, CA_KEY, CLIENT_KEY],
                Err(&[CLIENT_CERT]),
            ),
            (
                "verify, ca.crt only",
                TlsVerify,
                &[CA_CERT],
                Err(&[SERVER_CERT, SERVER_KEY, CA_KEY]),
            ),
        ];
        for (name, mode, files, want) in rows {
            let got = plan(*mode, present(files));
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{name}"),
                (Err(got), Err(want)) => {
                    assert_eq!(got.missing, *want, "{name}");
                    assert!(
                        got.to_string()
                            .starts_with("incomplete TLS material: missing")
                    );
                }
                (got, want) => panic!("{name}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn hosts_file_names() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.5 commented\n10.0.0.5\tbuild1 build1.lab # x\n";
        let ip = "10.0.0.5".parse().unwrap();
        assert_eq!(hosts_names(hosts, ip), ["build1", "build1.lab"]);
        assert!(hosts_names(hosts, "10.0.0.6".parse().unwrap()).is_empty());
    }

    #[test]
    fn proc_net_addresses() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
                   +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     \
                   |-- 172.17.0.2\n        /32 host LOCAL\n     |-- 172.17.255.255\n        \
                   /32 link BROADCAST\nLocal:\n     |-- 172.17.0.2\n        /32 host LOCAL\n";
        let v6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
                  fe800000000000000000000000000001 02 40 20 80     eth0\n\
                  20010db8000000000000000000000001 02 40 00 80     eth0\n";
        let got: Vec<String> = parse_host_addresses(fib, v6)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["172.17.0.2", "2001:db8::1"]);
    }

    #[tokio::test]
    async fn names_for_an_ip_include_localhost_and_stay_in_budget() {
        let start = std::time::Instant::now();
        let (names, _notes) = server_names(Some("192.0.2.7")).await.unwrap();
        assert_eq!(names[0], "192.0.2.7");
        assert!(names.contains(&"localhost".to_owned()));
        assert!(names.contains(&"127.0.0.1".to_owned()));
        assert!(start.elapsed() < RESOLVE_BUDGET + Duration::from_secs(1));
    }
}
