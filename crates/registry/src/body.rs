//! Request and response bodies: collecting with a bound, and digest verification while
//! streaming.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming};

use crate::error::{Error, Result};
use crate::reference::{Digest, Hasher};
use crate::transport::{self, BoxError};

/// A body of bytes in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> transport::Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> transport::Body {
    full(Bytes::new())
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub(crate) async fn collect(mut body: Incoming, limit: usize, what: &str) -> Result<Bytes> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Http {
            method: "GET".into(),
            url: what.to_owned(),
            reason: format!("reading the body: {e}"),
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(Error::Http {
                    method: "GET".into(),
                    url: what.to_owned(),
                    reason: format!("body larger than the {limit} byte limit"),
                });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// Every this many bytes a streaming blob records its hash state, so that an interrupted
/// upload resumes from the registry's offset without re-reading (or trusting) what came
/// before it.
const CHECKPOINT_EVERY: u64 = 8 << 20;

/// Hash states of a blob stream at offsets (ascending), shared with the copy that may need to
/// resume it. Always holds offset 0.
#[derive(Clone, Debug)]
pub(crate) struct Checkpoints(Arc<Mutex<Vec<(u64, Hasher)>>>);

impl Checkpoints {
    pub(crate) fn new(digest: &Digest) -> Self {
        Self(Arc::new(Mutex::new(vec![(0, digest.hasher())])))
    }

    fn record(&self, offset: u64, hasher: &Hasher) {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.last()
            .is_none_or(|(last, _)| offset >= last + CHECKPOINT_EVERY)
        {
            v.push((offset, hasher.clone()));
        }
    }

    /// The latest checkpoint at or before `offset`.
    pub(crate) fn at_or_before(&self, offset: u64) -> Option<(u64, Hasher)> {
        let v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.iter().rev().find(|(o, _)| *o <= offset).cloned()
    }
}

/// How often at most a stream reports its read offset to its progress hook.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Told the offset a blob stream has read up to (throttled to [`PROGRESS_EVERY`]).
pub(crate) type ProgressHook = Arc<dyn Fn(u64) + Send + Sync>;

/// A blob body that checks size and digest as it streams.
///
/// It holds back the last frame until the end of the source has been verified, so a
/// consumer that forwards it (an upload) never sends the complete content of a corrupt blob:
/// the error arrives before the final bytes, and the upload is aborted.
pub struct BlobStream {
    inner: Incoming,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: Option<u64>,
    seen: u64,
    pending: Option<Bytes>,
    done: bool,
    what: String,
    /// Bytes hashed but not yielded (a resumed stream starts before the resume offset).
    skip: u64,
    checkpoints: Option<Checkpoints>,
    progress: Option<(ProgressHook, Instant)>,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("expected", &self.expected)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl BlobStream {
    pub(crate) fn new(inner: Incoming, expected: Digest, size: Option<u64>, what: String) -> Self {
        Self {
            inner,
            hasher: Some(expected.hasher()),
            expected,
            expected_size: size,
            seen: 0,
            pending: None,
            done: false,
            what,
            skip: 0,
            checkpoints: None,
            progress: None,
        }
    }

    /// Records hash states into `checkpoints` as it streams.
    pub(crate) fn with_checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Tells `hook` the offset read up to as it streams, at most every [`PROGRESS_EVERY`]
    /// (a clock read per frame, so a progress display costs next to nothing), and once more
    /// with the whole size when the blob has been verified.
    pub(crate) fn with_progress(mut self, hook: ProgressHook) -> Self {
        self.progress = Some((hook, Instant::now()));
        self
    }

    /// A stream of the rest of a blob: `inner` serves the content from `from` (where
    /// `hasher` has hashed everything before), and yields from `from + skip`. The digest
    /// and total `size` are verified at the end as for a whole blob.
    pub(crate) fn resumed(
        inner: Incoming,
        expected: Digest,
        size: u64,
        from: u64,
        hasher: Hasher,
        skip: u64,
        what: String,
    ) -> Self {
        Self {
            inner,
            hasher: Some(hasher),
            expected,
            expected_size: Some(size),
            seen: from,
            pending: None,
            done: false,
            what,
            skip,
            checkpoints: None,
            progress: None,
        }
    }

    /// The size the registry announced (`Content-Length`), when it did.
    #[must_use]
    pub fn size(&self) -> Option<u64> {
        self.expected_size
    }

    /// The next verified chunk; `None` at the end (after the digest matched).
    ///
    /// # Errors
    /// [`Error::DigestMismatch`] at the end when the content does not hash to the digest (or
    /// has another size than announced); [`Error::Http`] when the connection fails.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        match self.frame().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(frame.into_data().ok()),
            Some(Err(e)) => Err(self.to_error(e)),
        }
    }

    /// Reads the whole blob into memory (for configs and small blobs).
    ///
    /// # Errors
    /// As [`BlobStream::chunk`].
    pub async fn bytes(mut self) -> Result<Bytes> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(Bytes::from(out))
    }

    fn to_error(&self, e: BoxError) -> Error {
        match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::Http {
                method: "GET".into(),
                url: self.what.clone(),
                reason: e.to_string(),
            },
        }
    }

    fn finish(&mut self) -> std::result::Result<(), Error> {
        let actual = self.hasher.take().map(Hasher::finish);
        if let Some(size) = self.expected_size
            && size != self.seen
        {
            return Err(Error::DigestMismatch {
                what: self.what.clone(),
                expected: format!("{} ({size} bytes)", self.expected),
                actual: format!("{} bytes", self.seen),
            });
        }
        match actual {
            Some(d) if d == self.expected => Ok(()),
            Some(d) => Err(Error::DigestMismatch {
                what: self.what.clone(),
                expected: self.expected.to_string(),
                actual: d.to_string(),
            }),
            None => Err(Error::Unreachable("blob stream finished twice")),
        }
    }
}

impl Body for BlobStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.pending.take().map(|b| Ok(Frame::data(b))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.seen += data.len() as u64;
                    if let Some((hook, last)) = &mut this.progress {
                        let now = Instant::now();
                        if now.duration_since(*last) >= PROGRESS_EVERY {
                            *last = now;
                            hook(this.seen);
                        }
                    }
                    if let Some(h) = this.hasher.as_mut() {
                        h.update(&data);
                        if let Some(c) = &this.checkpoints {
                            c.record(this.seen, h);
                        }
                    }
                    if this.skip > 0 {
                        let n = usize::try_from(this.skip)
                            .unwrap_or(usize::MAX)
                            .min(data.len());
                        this.skip -= n as u64;
                        data = data.slice(n..);
                        if data.is_empty() {
                            continue;
                        }
                    }
                    if let Some(prev) = this.pending.replace(data) {
                        return Poll::Ready(Some(Ok(Frame::data(prev))));
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    this.pending = None;
                    return Poll::Ready(Some(Err(Box::new(Error::Http {
                        method: "GET".into(),
                        url: this.what.clone(),
                        reason: format!("reading the blob: {e}"),
                    }))));
                }
                None => {
                    this.done = true;
                    if let Err(e) = this.finish() {
                        this.pending = None;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    // The whole blob, verified: a display always sees its last bytes.
                    if let Some((hook, _)) = &this.progress {
                        hook(this.seen);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}
