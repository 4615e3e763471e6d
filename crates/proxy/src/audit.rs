//! The audit log: one JSON line per request, emitted through `tracing` under the target
//! [`AUDIT_TARGET`] with the line in the field `record`, when the exchange ends (the response body
//! finished or was dropped, or a hijacked stream closed).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

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
}

/// One request's audit record, shared by the parts of the exchange that count bytes.
#[derive(Debug)]
pub(crate) struct Audit {
    started: Instant,
    time: SystemTime,
    peer: Arc<Peer>,
    method: String,
    path: String,
    version: Mutex<Option<String>>,
    status: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    policy: Mutex<Option<(String, bool, String)>>,
}

impl Audit {
    pub(crate) fn new(peer: Arc<Peer>, method: &str, path: &str) -> Arc<Self> {
        Arc::new(Audit {
            started: Instant::now(),
            time: SystemTime::now(),
            peer,
            method: method.to_owned(),
            path: path.to_owned(),
            version: Mutex::new(None),
            status: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            policy: Mutex::new(None),
        })
    }

    pub(crate) fn set_version(&self, version: String) {
        *lock(&self.version) = Some(version);
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.status.store(u64::from(status), Ordering::Relaxed);
    }

    /// Records a policy decision: the image (or registry), allowed, and the reason.
    pub(crate) fn set_decision(&self, image: String, allowed: bool, reason: String) {
        *lock(&self.policy) = Some((image, allowed, reason));
    }

    pub(crate) fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes the record. Called once, when the last holder of the exchange lets go.
    fn emit(&self) {
        let policy = lock(&self.policy).clone();
        let record = serde_json::json!({
            "time": rfc3339(self.time),
            "peer": self.peer.addr.map(|a| a.to_string()),
            "client_subject": self.peer.subject,
            "client_sha256": self.peer.fingerprint,
            "method": self.method,
            "path": self.path,
            "api_version": *lock(&self.version),
            "status": self.status.load(Ordering::Relaxed),
            "bytes_in": self.bytes_in.load(Ordering::Relaxed),
            "bytes_out": self.bytes_out.load(Ordering::Relaxed),
            "duration_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            "image": policy.as_ref().map(|p| p.0.clone()),
            "allowed": policy.as_ref().map(|p| p.1),
            "decision": policy.as_ref().map(|p| p.2.clone()),
        });
        tracing::info!(target: AUDIT_TARGET, record = %record);
    }
}

/// Emits the record when dropped; hold it as long as the exchange lives.
#[derive(Debug)]
pub(crate) struct AuditGuard(pub(crate) Arc<Audit>);

impl Drop for AuditGuard {
    fn drop(&mut self) {
        self.0.emit();
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
            audit: Arc::clone(&guard.0),
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
fn rfc3339(t: SystemTime) -> String {
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
