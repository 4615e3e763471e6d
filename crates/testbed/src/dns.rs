//! `dnsmasq` as an authoritative-for-tests DNS server on a loopback port, plus a tiny UDP
//! client to query it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{self, Supervised};

/// Default bound on the wait for a first answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// DNS record types the client understands (RFC 1035 §3.2.2, RFC 3596).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Reverse pointer.
    Ptr,
}

impl RecordType {
    fn code(self) -> u16 {
        match self {
            Self::A => 1,
            Self::Ptr => 12,
            Self::Aaaa => 28,
        }
    }
}

/// One answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// An A or AAAA record.
    Addr(IpAddr),
    /// A PTR record's target name (without the trailing dot).
    Name(String),
}

/// Configures and starts [`Dns`].
///
/// The record kinds map to dnsmasq options with dnsmasq's semantics:
///
/// | method | option | answers |
/// |---|---|---|
/// | [`a`](DnsBuilder::a), [`aaaa`](DnsBuilder::aaaa) | `--address=/name/ip` | A/AAAA for `name` **and every name below it**; no PTR |
/// | [`host`](DnsBuilder::host) | `--host-record=name,ip` | A/AAAA for exactly `name`, and the PTR for `ip` |
/// | [`ptr`](DnsBuilder::ptr) | `--ptr-record=rev,name` | the PTR for `ip` only (may disagree with forward records, on purpose) |
///
/// Any other name gets no answer data: there is no upstream (`--no-resolv`, `--no-hosts`).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct DnsBuilder {
    args: Vec<String>,
    timeout: Option<Duration>,
}

impl DnsBuilder {
    /// An A record for `name` (and its subdomains, see the table above).
    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Self {
        self.args
            .push(format!("--address=/{}/{ip}", trim_dot(name)));
        self
    }

    /// An AAAA record for `name` (and its subdomains).
    pub fn aaaa(mut self, name: &str, ip: Ipv6Addr) -> Self {
        self.args
            .push(format!("--address=/{}/{ip}", trim_dot(name)));
        self
    }

    /// Forward and reverse records for exactly `name` and `ip`.
    pub fn host(mut self, name: &str, ip: IpAddr) -> Self {
        self.args
            .push(format!("--host-record={},{ip}", trim_dot(name)));
        self
    }

    /// A PTR record: `ip` resolves back to `name`.
    pub fn ptr(mut self, ip: IpAddr, name: &str) -> Self {
        self.args.push(format!(
            "--ptr-record={},{}",
            reverse_name(ip),
            trim_dot(name)
        ));
        self
    }

    /// TTL of the answers (dnsmasq `--local-ttl`; default 0, which forbids caching).
    pub fn ttl(mut self, seconds: u32) -> Self {
        self.args.push(format!("--local-ttl={seconds}"));
        self
    }

    /// Bound on the wait for the first answer (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Starts dnsmasq on a free 127.0.0.1 port (UDP and TCP) and waits until it answers a
    /// real query.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without dnsmasq; [`Error::Exited`] or [`Error::Timeout`] with
    /// the log tail when it does not come up.
    pub fn start(self) -> Result<Dns> {
        let binary = process::find_binary("dnsmasq", "dnsmasq")?;
        process::retry_port_clash("dnsmasq", || self.start_once(&binary))
    }

    fn start_once(&self, binary: &Path) -> Result<Dns> {
        let dir = process::short_tempdir("vchn-")?;
        let port = process::free_tcp_udp_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = Command::new(binary);
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            // As root dnsmasq would switch to `nobody`; staying root keeps the pid file and
            // log writable in our temp dir.
            "--user=root",
            "--log-facility=-",
            "--log-queries",
        ])
        .arg(format!("--port={port}"))
        .arg(process::flag("--pid-file", dir.path().join("dnsmasq.pid")))
        .args(&self.args);
        let log = dir.path().join("dnsmasq.log");
        let mut proc = Supervised::spawn("dnsmasq", cmd, &log, None)?;
        proc.wait_ready(self.timeout.unwrap_or(START_TIMEOUT), || {
            // Any well-formed answer, even REFUSED for a name it does not know, proves it serves.
            exchange(addr, "vch-testbed-probe.invalid", RecordType::A)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        tracing::info!(%addr, "dnsmasq ready");
        Ok(Dns { proc, addr, dir })
    }
}

/// A running dnsmasq. Dropping it stops dnsmasq and removes its temp dir.
///
/// ```no_run
/// # fn main() -> vch_testbed::Result<()> {
/// use std::net::Ipv4Addr;
/// let dns = vch_testbed::Dns::builder()
///     .a("reg.example.com", Ipv4Addr::new(10, 2, 40, 40))
///     .start()?;
/// assert_eq!(dns.lookup_ip("reg.example.com")?, vec![Ipv4Addr::new(10, 2, 40, 40)]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Dns {
    // Field order matters: the process stops before the dir is removed.
    proc: Supervised,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Dns {
    /// A builder for the records.
    pub fn builder() -> DnsBuilder {
        DnsBuilder::default()
    }

    /// The server's address (UDP and TCP).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one query and returns the answers of the asked type.
    ///
    /// Without an upstream, dnsmasq answers REFUSED for a name and type it has no record of.
    ///
    /// # Errors
    /// [`Error::Dns`] on timeout, a malformed answer or an error rcode other than NXDOMAIN
    /// (the message says `rcode 5 (REFUSED)` and so on).
    pub fn query(&self, name: &str, kind: RecordType) -> Result<Vec<Answer>> {
        query(self.addr, name, kind)
    }

    /// The A records of `name`.
    ///
    /// # Errors
    /// As [`Dns::query`].
    pub fn lookup_ip(&self, name: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .query(name, RecordType::A)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Addr(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            })
            .collect())
    }

    /// The PTR names of `ip`.
    ///
    /// # Errors
    /// As [`Dns::query`].
    pub fn lookup_ptr(&self, ip: IpAddr) -> Result<Vec<String>> {
        Ok(self
            .query(&reverse_name(ip), RecordType::Ptr)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Name(n) => Some(n),
                Answer::Addr(_) => None,
            })
            .collect())
    }

    /// The temp dir (pid file, log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The text of dnsmasq's log so far (it logs every query).
    #[must_use]
    pub fn log(&self) -> String {
        process::read_log(self.proc.log_path())
    }

    /// dnsmasq's process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

fn trim_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// The reverse-lookup name of `ip` (RFC 1035 §3.5, RFC 3596 §2.5), without trailing dot.
#[must_use]
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

fn dns_error(name: &str, server: SocketAddr, reason: impl Into<String>) -> Error {
    Error::Dns {
        name: name.to_owned(),
        server: server.to_string(),
        reason: reason.into(),
    }
}

/// Builds a query message (RFC 1035 §4.1) with recursion desired.
fn build_query(id: u16, name: &str, kind: RecordType) -> std::result::Result<Vec<u8>, String> {
    let mut msg = Vec::with_capacity(32 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in trim_dot(name).split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("bad label {label:?}"))?;
        msg.push(len);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&kind.code().to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    Ok(msg)
}

fn query(server: SocketAddr, name: &str, kind: RecordType) -> Result<Vec<Answer>> {
    let (rcode, answers) = exchange(server, name, kind)?;
    match rcode {
        0 | 3 => Ok(answers), // NOERROR, NXDOMAIN
        rcode => {
            let meaning = match rcode {
                1 => "FORMERR",
                2 => "SERVFAIL",
                4 => "NOTIMP",
                5 => "REFUSED",
                _ => "other",
            };
            Err(dns_error(
                name,
                server,
                format!("rcode {rcode} ({meaning})"),
            ))
        }
    }
}

/// One query and its answer: the rcode and the answers of `kind`.
fn exchange(server: SocketAddr, name: &str, kind: RecordType) -> Result<(u16, Vec<Answer>)> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(0x5a5a);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let msg = build_query(id, name, kind).map_err(|r| dns_error(name, server, r))?;
    let io = |what: &str, e: std::io::Error| dns_error(name, server, format!("{what}: {e}"));
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| io("bind", e))?;
    socket
        .set_read_timeout(Some(QUERY_TIMEOUT))
        .map_err(|e| io("set timeout", e))?;
    socket.connect(server).map_err(|e| io("connect", e))?;
    socket.send(&msg).map_err(|e| io("send", e))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).map_err(|e| io("receive", e))?;
        // A late answer to an earlier query of ours is skipped, not mistaken for this one.
        match parse_response(&buf[..n], id, kind) {
            Ok(Some(answers)) => return Ok(answers),
            Ok(None) => continue,
            Err(r) => return Err(dns_error(name, server, r)),
        }
    }
}

/// Parses a response: `Ok(None)` for another query's id, else the rcode and the answers of
/// `kind`.
fn parse_response(
    msg: &[u8],
    id: u16,
    kind: RecordType,
) -> std::result::Result<Option<(u16, Vec<Answer>)>, String> {
    let u16_at = |o: usize| {
        msg.get(o..o + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated message".to_owned())
    };
    if u16_at(0)? != id {
        return Ok(None);
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response".to_owned());
    }
    let rcode = flags & 0x000f;
    let (qdcount, ancount) = (u16_at(4)?, u16_at(6)?);
    let mut pos = 12;
    for _ in 0..qdcount {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        let (_, after) = read_name(msg, pos)?;
        let rtype = u16_at(after)?;
        let rdlen = usize::from(u16_at(after + 8)?);
        let rdata_at = after + 10;
        let rdata = msg
            .get(rdata_at..rdata_at + rdlen)
            .ok_or_else(|| "truncated rdata".to_owned())?;
        if rtype == kind.code() {
            answers.push(match kind {
                RecordType::A => {
                    let o: [u8; 4] = rdata.try_into().map_err(|_| "bad A rdata".to_owned())?;
                    Answer::Addr(IpAddr::from(o))
                }
                RecordType::Aaaa => {
                    let o: [u8; 16] = rdata.try_into().map_err(|_| "bad AAAA rdata".to_owned())?;
                    Answer::Addr(IpAddr::from(o))
                }
                RecordType::Ptr => Answer::Name(read_name(msg, rdata_at)?.0),
            });
        }
        pos = rdata_at + rdlen;
    }
    Ok(Some((rcode, answers)))
}

/// Reads a possibly compressed name (RFC 1035 §4.1.4) at `pos`; returns it and the position
/// after it in the original sequence.
fn read_name(msg: &[u8], mut pos: usize) -> std::result::Result<(String, usize), String> {
    let mut name = String::new();
    let mut end = None;
    // Each pointer must go strictly backwards, so loops are impossible.
    let mut limit = pos;
    loop {
        let len = *msg.get(pos).ok_or("truncated name")?;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(pos + 1).ok_or("truncated pointer")?;
                let target = usize::from(l & 0x3f) << 8 | usize::from(low);
                if target >= limit {
                    return Err("compression pointer does not point backwards".to_owned());
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            l if l & 0xc0 == 0 => {
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(l))
                    .ok_or("truncated label")?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                pos += 1 + usize::from(l);
            }
            _ => return Err("reserved label type".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.2.40.40".parse().unwrap()),
            "40.40.2.10.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn query_encoding() {
        let q = build_query(0x1234, "a.bc.", RecordType::Aaaa).unwrap();
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 28, 0, 1
            ]
        );
        assert!(build_query(1, "a..b", RecordType::A).is_err());
        assert!(build_query(1, &"x".repeat(64), RecordType::A).is_err());
    }

    #[test]
    fn response_parsing_with_compression() {
        // Response to "x.io PTR": answer name is a pointer to the question, rdata "a." + ptr.
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'x', 2, b'i', b'o', 0, 0, 12, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'a', 0xc0, 14]);
        let answers = parse_response(&m, 0x1234, RecordType::Ptr)
            .unwrap()
            .unwrap();
        assert_eq!(answers, (0, vec![Answer::Name("a.io".into())]));
        assert_eq!(parse_response(&m, 0x9999, RecordType::Ptr).unwrap(), None);
        // A self-pointing name is refused, not looped on.
        let mut bad = m.clone();
        bad[22] = 0xc0;
        bad[23] = 22;
        assert!(parse_response(&bad, 0x1234, RecordType::Ptr).is_err());
        // Truncation anywhere is an error, never a panic.
        for cut in 0..m.len() {
            let _ = parse_response(&m[..cut], 0x1234, RecordType::Ptr);
        }
    }

    #[test]
    fn rcode_is_reported() {
        let m = [0x12, 0x34, 0x81, 0x82, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_response(&m, 0x1234, RecordType::A).unwrap(),
            Some((2, vec![]))
        );
        // A query, not a response.
        let q = [0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(parse_response(&q, 0x1234, RecordType::A).is_err());
    }
}
