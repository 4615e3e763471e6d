//! The audit log: one JSON line per request, emitted through `tracing` under the target
//! [`AUDIT_TARGET`] with the line in the field `record`, when the exchange ends: right after the end
//! of the response was flushed to the client (or the response was dropped), or when a hijacked
//! stream closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::{Method, Uri};

use crate::metrics::{Metrics, RouteKind};
use crate::route::ApiVersion;

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "vch_audit";

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The remote address (`None` on a unix socket).
    pub addr: Option<SocketAddr>,
    /// The client certificate's subject, for TLS clients that sent one.
    pub subject: Option<String>,
    /// The client certificate's SHA-256 fingerprint (hex).
    pub fingerprint: Option<String>,
    /// The client's name: its certificate subject's common name (CN).
    pub name: Option<String>,
    /// The client's project: its certificate subject's organizational unit (OU).
    pub project: Option<String>,
}

impl Peer {
    /// The connection's part of every record (`"peer":…,"client_subject":…,"client_sha256":…,
    /// "client_name":…,"project":…`), formatted once per connection.
    pub(crate) fn json_fields(&self) -> Arc<str> {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(160);
        out.push_str("\"peer\":");
        match self.addr {
            // A socket address has nothing to escape.
            Some(addr) => {
                let _ = write!(out, "\"{addr}\"");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"client_subject\":");
        push_opt_json_str(&mut out, self.subject.as_deref());
        out.push_str(",\"client_sha256\":");
        push_opt_json_str(&mut out, self.fingerprint.as_deref());
        out.push_str(",\"client_name\":");
        push_opt_json_str(&mut out, self.name.as_deref());
        out.push_str(",\"project\":");
        push_opt_json_str(&mut out, self.project.as_deref());
        out.into()
    }
}

/// One request's audit record, shared by the parts of the exchange that count bytes.
///
/// Making one costs no allocation beyond its `Arc`: the method and URI are cheap clones of what
/// hyper parsed, and the JSON line is written only when a subscriber wants audit events.
#[derive(Debug)]
pub(crate) struct Audit {
    started: Instant,
    time: SystemTime,
    /// [`Peer::json_fields`] of the connection.
    peer: Arc<str>,
    method: Method,
    uri: Uri,
    /// `major << 16 | minor`, 0 before routing.
    version: AtomicU32,
    status: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    policy: Mutex<Option<PolicyRecord>>,
    build: Mutex<Option<BuildRecord>>,
    /// The route kind for the metrics ([`RouteKind::UNROUTED`] until routed).
    route: AtomicU8,
    /// Where the exchange's bytes and decisions are also counted, when metrics are served.
    metrics: Option<Arc<Metrics>>,
}

/// A build's part of an audit record: what was read of its context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BuildRecord {
    /// The Dockerfile's path in the context, as resolved (empty when it was not found).
    pub(crate) dockerfile: String,
    /// The context's bytes as uploaded.
    pub(crate) context_bytes: u64,
    /// The tar stream's bytes, after decompression.
    pub(crate) tar_bytes: u64,
    /// `none`, `gzip`, `bzip2`, `xz` or `zstd`.
    pub(crate) compression: &'static str,
    /// Tar entries read.
    pub(crate) entries: u64,
}

/// The policy's part of an audit record: the gate's decision on a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PolicyRecord {
    /// The gate (`images/push`).
    pub(crate) route: &'static str,
    /// `enforce` or `audit`.
    pub(crate) mode: &'static str,
    /// The deciding item: the first denied one, else the last allowed one.
    pub(crate) verdict: Verdict,
    /// Every item decided, when there were several.
    pub(crate) others: Vec<Verdict>,
    /// Denied by the policy, let through because the mode is `audit`.
    pub(crate) would_deny: bool,
}

/// One decided item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `pull`, `push`, `login`, `search`, or what comes from no registry (`load`, `import`, …).
    pub(crate) action: &'static str,
    /// The image reference or registry decided (empty for content from no registry).
    pub(crate) image: String,
    /// The registry decided on.
    pub(crate) registry: Option<String>,
    /// The entry that matched.
    pub(crate) entry: Option<String>,
    /// The policy's verdict.
    pub(crate) allowed: bool,
    /// Why.
    pub(crate) decision: String,
}

impl Audit {
    pub(crate) fn new(
        peer: Arc<str>,
        method: &Method,
        uri: &Uri,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        Arc::new(Audit {
            started: Instant::now(),
            time: SystemTime::now(),
            peer,
            method: method.clone(),
            uri: uri.clone(),
            version: AtomicU32::new(0),
            status: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            policy: Mutex::new(None),
            build: Mutex::new(None),
            route: AtomicU8::new(RouteKind::UNROUTED.as_u8()),
            metrics,
        })
    }

    /// The metrics the exchange is counted in, if any.
    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// Records how the router classified the request.
    pub(crate) fn set_route(&self, route: RouteKind) {
        self.route.store(route.as_u8(), Ordering::Relaxed);
    }

    /// Counts the answer in the metrics: its status, and the time from the request's head to
    /// the response's.
    pub(crate) fn count_answer(&self) {
        if let Some(metrics) = &self.metrics {
            let route = RouteKind::from_u8(self.route.load(Ordering::Relaxed));
            let status = u16::try_from(self.status.load(Ordering::Relaxed)).unwrap_or(0);
            metrics.answered(route, status, self.started.elapsed());
        }
    }

    pub(crate) fn set_version(&self, version: ApiVersion) {
        let packed = (u32::from(version.major) << 16) | u32::from(version.minor);
        self.version.store(packed, Ordering::Relaxed);
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.status.store(u64::from(status), Ordering::Relaxed);
    }

    /// Records the gate's decision.
    pub(crate) fn set_policy(&self, record: PolicyRecord) {
        *lock(&self.policy) = Some(record);
    }

    /// Records what was read of a build's context (again as more is read).
    pub(crate) fn set_build(&self, record: BuildRecord) {
        *lock(&self.build) = Some(record);
    }

    pub(crate) fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.bytes_in(n);
        }
    }

    pub(crate) fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.bytes_out(n);
        }
    }

    /// Writes the record. Called once, when the last holder of the exchange lets go; the line is
    /// only built when some subscriber listens to [`AUDIT_TARGET`].
    fn emit(&self) {
        if !tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
            return;
        }
        let mut line = String::with_capacity(320);
        self.write_json(&mut line);
        tracing::info!(target: AUDIT_TARGET, record = %line);
    }

    /// The record as one JSON object, written by hand: it is on every request's path, and
    /// building a `serde_json::Value` map cost more than forwarding the request.
    fn write_json(&self, out: &mut String) {
        out.push_str("{\"time\":\"");
        push_rfc3339(out, self.time);
        out.push_str("\",");
        out.push_str(&self.peer);
        out.push_str(",\"method\":");
        push_json_str(out, self.method.as_str());
        out.push_str(",\"path\":");
        push_json_str(out, self.uri.path_and_query().map_or("/", |p| p.as_str()));
        out.push_str(",\"api_version\":");
        match self.version.load(Ordering::Relaxed) {
            0 => out.push_str("null"),
            v => {
                out.push('"');
                push_u64(out, u64::from(v >> 16), 1);
                out.push('.');
                push_u64(out, u64::from(v & 0xffff), 1);
                out.push('"');
            }
        }
        out.push_str(",\"status\":");
        push_u64(out, self.status.load(Ordering::Relaxed), 1);
        out.push_str(",\"bytes_in\":");
        push_u64(out, self.bytes_in.load(Ordering::Relaxed), 1);
        out.push_str(",\"bytes_out\":");
        push_u64(out, self.bytes_out.load(Ordering::Relaxed), 1);
        // Milliseconds with microsecond precision.
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        out.push_str(",\"duration_ms\":");
        push_u64(out, micros / 1000, 1);
        out.push('.');
        push_u64(out, micros % 1000, 3);
        match &*lock(&self.policy) {
            Some(record) => {
                out.push_str(",\"route\":");
                push_json_str(out, record.route);
                out.push_str(",\"mode\":");
                push_json_str(out, record.mode);
                out.push(',');
                record.verdict.write_json_fields(out);
                out.push_str(if record.would_deny {
                    ",\"would_deny\":true"
                } else {
                    ",\"would_deny\":false"
                });
                if !record.others.is_empty() {
                    out.push_str(",\"items\":[");
                    for (i, verdict) in record.others.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push('{');
                        verdict.write_json_fields(out);
                        out.push('}');
                    }
                    out.push(']');
                }
            }
            None => out.push_str(",\"image\":null,\"allowed\":null,\"decision\":null"),
        }
        if let Some(build) = &*lock(&self.build) {
            out.push_str(",\"build\":{\"dockerfile\":");
            push_json_str(out, &build.dockerfile);
            out.push_str(",\"context_bytes\":");
            push_u64(out, build.context_bytes, 1);
            out.push_str(",\"tar_bytes\":");
            push_u64(out, build.tar_bytes, 1);
            out.push_str(",\"compression\":");
            push_json_str(out, build.compression);
            out.push_str(",\"entries\":");
            push_u64(out, build.entries, 1);
            out.push('}');
        }
        out.push('}');
    }
}

impl Verdict {
    /// `"action":…,"image":…,"registry":…,"entry":…,"allowed":…,"decision":…`
    fn write_json_fields(&self, out: &mut String) {
        out.push_str("\"action\":");
        push_json_str(out, self.action);
        out.push_str(",\"image\":");
        push_json_str(out, &self.image);
        out.push_str(",\"registry\":");
        push_opt_json_str(out, self.registry.as_deref());
        out.push_str(",\"entry\":");
        push_opt_json_str(out, self.entry.as_deref());
        out.push_str(if self.allowed {
            ",\"allowed\":true"
        } else {
            ",\"allowed\":false"
        });
        out.push_str(",\"decision\":");
        push_json_str(out, &self.decision);
    }
}

fn push_opt_json_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (at most 20).
fn push_u64(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width.clamp(1, 20) {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Appends `s` as a JSON string (RFC 8259 §7: quote, backslash and control characters escaped).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Emits the record when dropped (or hands it to the connection's [`Deferred`]); hold it as long
/// as the exchange lives.
#[derive(Debug)]
pub(crate) struct AuditGuard {
    audit: Arc<Audit>,
    deferred: Option<Arc<Deferred>>,
}

impl AuditGuard {
    /// A guard whose record is written after the connection's next flush.
    pub(crate) fn deferred(audit: Arc<Audit>, deferred: Arc<Deferred>) -> Self {
        AuditGuard {
            audit,
            deferred: Some(deferred),
        }
    }

    /// The record is written as soon as the guard is dropped (a hijacked stream: it ends when
    /// the splice does, not with a flush of the HTTP connection).
    pub(crate) fn immediate(mut self) -> Self {
        self.deferred = None;
        self
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        match self.deferred.take() {
            Some(deferred) => deferred.push(Arc::clone(&self.audit)),
            None => self.audit.emit(),
        }
    }
}

/// Records of one client connection whose exchange has ended, waiting for the response to be
/// flushed. hyper drops a finished response body before it writes the body's last bytes, so a
/// record written from that drop would hold every response back by the audit write; the
/// connection's stream writes them right after its next flush instead (`io::EmitAfterFlush`),
/// and whatever is left when the connection goes.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pending: AtomicBool,
    records: Mutex<Vec<Arc<Audit>>>,
}

impl Deferred {
    fn push(&self, audit: Arc<Audit>) {
        lock(&self.records).push(audit);
        self.pending.store(true, Ordering::Release);
    }

    /// Writes the records waiting (none: one atomic load).
    pub(crate) fn emit_all(&self) {
        if !self.pending.swap(false, Ordering::Acquire) {
            return;
        }
        let records = std::mem::take(&mut *lock(&self.records));
        for record in records {
            record.emit();
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.emit_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A body that counts its data bytes into the audit record; with a guard it also emits the record
/// when it ends or is dropped.
pub(crate) struct Counted<B> {
    inner: B,
    audit: Arc<Audit>,
    outgoing: bool,
    _guard: Option<AuditGuard>,
}

impl<B> Counted<B> {
    /// Counts a request body (client → dockerd).
    pub(crate) fn request(inner: B, audit: Arc<Audit>) -> Self {
        Counted {
            inner,
            audit,
            outgoing: false,
            _guard: None,
        }
    }

    /// Counts a response body (dockerd → client) and emits the record at its end.
    pub(crate) fn response(inner: B, guard: AuditGuard) -> Self {
        Counted {
            inner,
            audit: Arc::clone(&guard.audit),
            outgoing: true,
            _guard: Some(guard),
        }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            if self.outgoing {
                self.audit.add_out(n);
            } else {
                self.audit.add_in(n);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// RFC 3339 UTC with milliseconds, without a date library: days from the epoch to a civil date
/// (Howard Hinnant's algorithm).
fn push_rfc3339(out: &mut String, t: SystemTime) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Every field is non-negative for times after the epoch (earlier ones were clamped to it).
    let field = |v: i64| u64::try_from(v).unwrap_or(0);
    push_u64(out, field(year), 4);
    out.push('-');
    push_u64(out, field(month), 2);
    out.push('-');
    push_u64(out, field(day), 2);
    out.push('T');
    push_u64(out, field(rem / 3600), 2);
    out.push(':');
    push_u64(out, field(rem % 3600 / 60), 2);
    out.push(':');
    push_u64(out, field(rem % 60), 2);
    out.push('.');
    push_u64(out, u64::from(d.subsec_millis()), 3);
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rfc3339(t: SystemTime) -> String {
        let mut s = String::new();
        push_rfc3339(&mut s, t);
        s
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn deferred_records_wait_for_the_flush() {
        let deferred = Arc::new(Deferred::default());
        let audit = Audit::new(
            Peer::default().json_fields(),
            &Method::GET,
            &Uri::from_static("/_ping"),
            None,
        );
        drop(AuditGuard::deferred(
            Arc::clone(&audit),
            Arc::clone(&deferred),
        ));
        assert_eq!(lock(&deferred.records).len(), 1);
        deferred.emit_all();
        assert!(lock(&deferred.records).is_empty());
        // An immediate guard never queues.
        drop(AuditGuard::deferred(audit, Arc::clone(&deferred)).immediate());
        assert!(lock(&deferred.records).is_empty());
    }

    #[test]
    fn numbers() {
        for (n, width, text) in [
            (0, 1, "0"),
            (7, 3, "007"),
            (1234, 2, "1234"),
            (u64::MAX, 1, "18446744073709551615"),
            (5, 25, "00000000000000000005"),
        ] {
            let mut s = String::new();
            push_u64(&mut s, n, width);
            assert_eq!(s, text);
        }
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        for s in [
            "",
            "plain",
            "q\"uote and back\\slash",
            "ctl \u{0}\u{1f}\u{7f}\n\r\t end",
            "CN=ünïcödé,O=\"x\"",
            "\\",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
    }

    #[test]
    fn records_are_json_with_every_field() {
        let peer = Peer {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 40_000))),
            subject: Some("CN=client \"1\",OU=team-a".into()),
            fingerprint: Some("ab".repeat(32)),
            name: Some("client \"1\"".into()),
            project: Some("team-a".into()),
        };
        let uri: Uri = "/v1.24/images/create?fromImage=a%2Fb&tag=1"
            .parse()
            .unwrap();
        let audit = Audit::new(peer.json_fields(), &Method::POST, &uri, None);
        audit.set_version(ApiVersion {
            major: 1,
            minor: 24,
        });
        audit.set_status(403);
        audit.add_in(5);
        audit.add_out(70);
        audit.add_out(7);
        audit.set_policy(PolicyRecord {
            route: "images/create",
            mode: "enforce",
            verdict: Verdict {
                action: "pull",
                image: "reg.x/a:1".into(),
                registry: Some("reg.x".into()),
                entry: None,
                allowed: false,
                decision: "denied: \"reg.x\"".into(),
            },
            others: Vec::new(),
            would_deny: false,
        });
        let mut line = String::new();
        audit.write_json(&mut line);
        let rec: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(rec["peer"], "127.0.0.1:40000");
        assert_eq!(rec["client_subject"], "CN=client \"1\",OU=team-a");
        assert_eq!(rec["client_name"], "client \"1\"");
        assert_eq!(rec["project"], "team-a");
        assert_eq!(rec["client_sha256"], "ab".repeat(32));
        assert_eq!(rec["method"], "POST");
        assert_eq!(rec["path"], "/v1.24/images/create?fromImage=a%2Fb&tag=1");
        assert_eq!(rec["api_version"], "1.24");
        assert_eq!(rec["status"], 403);
        assert_eq!(
            (rec["bytes_in"].as_u64(), rec["bytes_out"].as_u64()),
            (Some(5), Some(77))
        );
        assert!(rec["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        assert_eq!(rec["image"], "reg.x/a:1");
        assert_eq!(rec["allowed"], false);
        assert_eq!(rec["decision"], "denied: \"reg.x\"");
        assert_eq!(rec["route"], "images/create");
        assert_eq!(rec["action"], "pull");
        assert_eq!(rec["registry"], "reg.x");
        assert!(rec["entry"].is_null());
        assert_eq!(rec["mode"], "enforce");
        assert_eq!(rec["would_deny"], false);
        assert!(rec.get("items").is_none());
        assert!(rec["time"].as_str().is_some_and(|t| t.ends_with('Z')));

        let bare = Audit::new(
            Peer::default().json_fields(),
            &Method::GET,
            &Uri::from_static("/_ping"),
            None,
        );
        let mut line = String::new();
        bare.write_json(&mut line);
        let rec: serde_json::Value = serde_json::from_str(&line).unwrap();
        for null in [
            "peer",
            "client_subject",
            "client_sha256",
            "api_version",
            "image",
            "allowed",
            "decision",
        ] {
            assert!(rec[null].is_null(), "{null} in {line}");
        }
        assert_eq!(rec["path"], "/_ping");
    }
}
