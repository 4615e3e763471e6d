//! The HTTP/1.1 client side: a client connection's own connection to dockerd, driven inside the
//! client connection's task.
//!
//! hyper's client would add a task, channels and a second header map per exchange. Its requests
//! are built here from the head hyper's server already parsed (so the client side keeps hyper's
//! strict parsing), and dockerd's answers are read straight from the socket: one task, no
//! channels, about 7 µs of CPU less per proxied request (measured side by side with the
//! `VCH_BENCH_BASELINE` run of the proxy bench). Hijacks (`101`) still go through hyper's client,
//! which hands the raw stream over.
//!
//! The connection is kept between requests and reused. A response body dropped before its end
//! takes the connection with it: the client went away, and closing the engine connection is how
//! dockerd learns to cancel what it was doing (a pull, a build).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWrite};

use crate::io::Stream;
use crate::service::Body;
use crate::upstream::Upstream;

/// Largest response head accepted from the engine (dockerd's are under 1 KiB).
const MAX_HEAD: usize = 256 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// Largest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Queued pieces handed to one vectored write (a chunk is three: size line, data, CRLF).
const WRITE_SLICES: usize = 16;
/// Reads start at this size and double while they come back full, up to [`MAX_READ`].
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 512 * 1024;

/// An open connection to dockerd.
pub(crate) struct EngineConn {
    io: Stream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    next_read: usize,
    /// The engine it is connected to: a reload may point the settings elsewhere.
    url: Arc<str>,
    /// It has served an exchange before (a failure may then mean it went stale while idle).
    reused: bool,
}

/// Where a client connection keeps its engine connection between requests.
pub(crate) type Slot = Arc<Mutex<Option<EngineConn>>>;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) message: String,
    /// Nothing reached the engine that it could have acted on: a kept connection that had gone
    /// stale. A body-less `GET`/`HEAD` may then be sent again on a new connection.
    pub(crate) stale: bool,
}

impl EngineConn {
    /// Connects to the engine.
    pub(crate) async fn open(upstream: &Upstream) -> Result<EngineConn, String> {
        let url = upstream.url();
        let io = upstream
            .connect()
            .await
            .map_err(|e| format!("cannot reach the Docker engine at {url}: {e}"))?;
        Ok(EngineConn {
            io,
            buf: BytesMut::new(),
            next_read: MIN_READ,
            url: Arc::clone(url),
            reused: false,
        })
    }

    /// Takes the kept connection out of `slot` if it leads to `url`.
    pub(crate) fn take(slot: &Slot, url: &str) -> Option<EngineConn> {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().filter(|conn| *conn.url == *url)
    }

    /// Reads more from the engine into `buf`; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.next_read {
            self.buf.reserve(self.next_read);
        }
        let want = self.buf.capacity() - self.buf.len();
        let n = ready!(pin!(self.io.read_buf(&mut self.buf)).poll(cx))?;
        if n == want && self.next_read < MAX_READ {
            self.next_read *= 2;
        } else if n < want / 4 && self.next_read > MIN_READ {
            self.next_read /= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Sends `req` on `conn` and waits for the response head; the response body reads the rest and
/// puts the connection back in `slot` at its end.
pub(crate) async fn exchange(
    mut conn: EngineConn,
    parts: &hyper::http::request::Parts,
    body: Body,
    slot: Slot,
) -> Result<Response<Body>, Failed> {
    let url = Arc::clone(&conn.url);
    let failed = |stale: bool, what: String| Failed {
        message: format!("the Docker engine at {url} failed: {what}"),
        stale,
    };
    let head_only = parts.method == Method::HEAD;
    let mut upload = Upload::new(parts, body);
    let reused = conn.reused;
    conn.reused = true;
    let mut answered = false;
    // A head ends with a line feed: it is parsed again only when one has come in, so that an
    // engine that answers a byte at a time does not cost a parse per byte.
    let mut new_line = true;
    let head = poll_fn(|cx| {
        loop {
            if !upload.complete
                && let Poll::Ready(Err(e)) = upload.poll(&mut conn.io, cx)
            {
                if e.client_side {
                    return Poll::Ready(Err(failed(false, e.error.to_string())));
                }
                // dockerd stopped reading; it may still have answered.
                tracing::debug!(error = %e.error, "request body not fully sent");
            }
            let parsed = match new_line {
                true => parse_response_head(&conn.buf),
                false => Ok(None),
            };
            match parsed {
                Ok(Some((head, len))) => {
                    answered = true;
                    let _ = conn.buf.split_to(len);
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue; // 100 Continue, 103 Early Hints: the answer follows.
                    }
                    return Poll::Ready(Ok(head));
                }
                Ok(None) if conn.buf.len() > MAX_HEAD => {
                    return Poll::Ready(Err(failed(
                        false,
                        "its answer's head is too large".into(),
                    )));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(failed(false, e))),
            }
            let stale = reused && !answered;
            let before = conn.buf.len();
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    let what = "it closed the connection without answering".to_owned();
                    return Poll::Ready(Err(failed(stale, what)));
                }
                Ok(_) => {
                    answered = true;
                    new_line = conn.buf[before..].contains(&b'\n');
                }
                Err(e) => return Poll::Ready(Err(failed(stale, e.to_string()))),
            }
        }
    })
    .await?;

    let mut body = EngineBody {
        conn: Some(conn),
        upload,
        framing: head.framing(head_only),
        // After a `101` the connection no longer speaks HTTP (the caller refuses it: it asked
        // for no upgrade).
        keep: head.keep_alive && head.status != StatusCode::SWITCHING_PROTOCOLS,
        slot,
    };
    if body.framing.is_done() {
        body.finish();
    }
    let mut response = Response::new(body.boxed());
    *response.status_mut() = head.status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// A parsed response head.
#[derive(Debug)]
#[doc(hidden)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// The header fields, as sent.
    pub headers: HeaderMap,
    /// The connection may carry another exchange after this one.
    pub keep_alive: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
#[doc(hidden)]
pub enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(ChunkedDecoder),
    /// Until the engine closes the connection.
    Close,
    /// Read to its end.
    Done,
}

impl Framing {
    fn is_done(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }
}

impl ResponseHead {
    /// How the body that follows this head is delimited (RFC 9112 §6.3).
    pub fn framing(&self, head_request: bool) -> Framing {
        let status = self.status.as_u16();
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Framing::Done;
        }
        if let Some(codings) = self.headers.get(header::TRANSFER_ENCODING) {
            let chunked_last = codings
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            return if chunked_last {
                Framing::Chunked(ChunkedDecoder::default())
            } else {
                Framing::Close
            };
        }
        match content_length(&self.headers) {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }
}

/// The one `Content-Length` of a head (repeated equal values count as one); `None` if absent.
/// A head with conflicting or invalid lengths is refused by [`parse_response_head`].
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = std::str::from_utf8(part.trim_ascii()).ok()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = part.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// Parses a response head at the start of `bytes`: `Ok(None)` if it is not complete yet, or the
/// head and its length. Refuses what could desynchronize the connection: conflicting or invalid
/// lengths, a length beside a transfer coding.
#[doc(hidden)]
pub fn parse_response_head(bytes: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("its answer is not HTTP/1.1: {e}")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("its answer has an invalid status")?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = parsed.version != Some(1);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| format!("its answer has an invalid header name {:?}", field.name))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| format!("its answer has an invalid {name} header"))?;
        if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && parsed.version == Some(0) {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 0 {
        if content_length(&headers).is_none() {
            return Err("its answer has an invalid Content-Length".into());
        }
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err("its answer has both Content-Length and Transfer-Encoding".into());
        }
    }
    Ok(Some((
        ResponseHead {
            status,
            headers,
            keep_alive: !close,
        },
        len,
    )))
}

/// The state of a chunked body's decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[doc(hidden)]
pub enum ChunkedDecoder {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes remain.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, up to an empty line.
    Trailers,
    /// The body has ended.
    Done,
}

impl ChunkedDecoder {
    /// Decodes from the start of `buf`, consuming what it used: `Ok(Some(data))` for body bytes
    /// (possibly empty when only framing was consumed), `Ok(None)` when more input is needed
    /// (or the body has ended: see [`ChunkedDecoder::is_done`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
        loop {
            match self {
                ChunkedDecoder::Size => {
                    let Some(end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let line = buf.split_to(end + 2);
                    let size = parse_chunk_size(&line[..end])?;
                    *self = if size == 0 {
                        ChunkedDecoder::Trailers
                    } else {
                        ChunkedDecoder::Data(size)
                    };
                }
                ChunkedDecoder::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let data = buf.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *self = ChunkedDecoder::DataEnd;
                    }
                    return Ok(Some(data));
                }
                ChunkedDecoder::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk does not end with CRLF".into());
                    }
                    let _ = buf.split_to(2);
                    *self = ChunkedDecoder::Size;
                }
                ChunkedDecoder::Trailers => {
                    let Some(end) = find_crlf(buf, MAX_TRAILERS)? else {
                        return Ok(None);
                    };
                    let _ = buf.split_to(end + 2);
                    if end == 0 {
                        *self = ChunkedDecoder::Done;
                    }
                }
                ChunkedDecoder::Done => return Ok(None),
            }
        }
    }

    /// The last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        *self == ChunkedDecoder::Done
    }
}

/// Decodes a chunked body fed `step` bytes at a time (as reads may split it): its data, and
/// whether it ended. For tests and the fuzz target.
#[doc(hidden)]
pub fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), String> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(data) = decoder.decode(&mut buf)? {
            out.extend_from_slice(&data);
        }
    }
    Ok((out, decoder.is_done()))
}

/// The offset of the first CRLF in `buf`; an error if a line grows past `max` without one, or
/// holds a bare CR or LF.
/// The verdict does not depend on how the bytes were split between reads.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, String> {
    let too_long = || Err("a chunked framing line is too long".into());
    match buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
        Some(i) if i > max => too_long(),
        Some(i) if buf[i] == b'\r' => match buf.get(i + 1) {
            Some(b'\n') => Ok(Some(i)),
            Some(_) => Err("a bare CR in chunked framing".into()),
            None => Ok(None),
        },
        Some(_) => Err("a bare LF in chunked framing".into()),
        None if buf.len() > max => too_long(),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
        return Err("an invalid chunk size".into());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| "an invalid chunk size")?;
    u64::from_str_radix(hex, 16).map_err(|_| "an invalid chunk size".into())
}

/// The request body on its way to the engine, after the request head.
struct Upload {
    /// Bytes to write, in order (the head, chunk framing, data).
    queue: VecDeque<Bytes>,
    body: Option<Body>,
    chunked: bool,
    /// All of it is written and flushed.
    complete: bool,
    failed: bool,
}

struct UploadError {
    error: io::Error,
    /// The client's body failed, not the engine's socket.
    client_side: bool,
}

impl Upload {
    fn new(parts: &hyper::http::request::Parts, body: Body) -> Upload {
        let has_body = !body.is_end_stream();
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let mut head = BytesMut::with_capacity(256);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.extend_from_slice(b" ");
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &parts.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/1.0 clients may send none; Go's server refuses an HTTP/1.1 request without.
            head.extend_from_slice(b"host: docker\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Upload {
            queue: VecDeque::from([head.freeze()]),
            body: has_body.then_some(body),
            chunked,
            complete: false,
            failed: false,
        }
    }

    /// Writes what there is to write; `Ready(Ok)` once the whole request is with the engine.
    fn poll(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), UploadError>> {
        if self.failed || self.complete {
            return Poll::Ready(Ok(()));
        }
        let result = self.poll_inner(io, cx);
        if let Poll::Ready(Err(_)) = &result {
            self.failed = true;
            self.body = None;
            self.queue.clear();
        }
        result
    }

    fn poll_inner(
        &mut self,
        io: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        let engine = |error| UploadError {
            error,
            client_side: false,
        };
        loop {
            while !self.queue.is_empty() {
                // On the stack: this runs for every chunk of an upload.
                let mut slices = [io::IoSlice::new(&[]); WRITE_SLICES];
                let count = self.queue.len().min(WRITE_SLICES);
                for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                    *slice = io::IoSlice::new(bytes);
                }
                let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))
                    .map_err(engine)?;
                if n == 0 {
                    return Poll::Ready(Err(engine(io::ErrorKind::WriteZero.into())));
                }
                advance(&mut self.queue, n);
            }
            let Some(body) = self.body.as_mut() else {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(engine)?;
                self.complete = true;
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    self.body = None;
                    if self.chunked {
                        self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                }
                Some(Ok(frame)) => {
                    // Trailers from the client are not passed on: dockerd reads none.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if self.chunked {
                        self.queue
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    } else {
                        self.queue.push_back(data);
                    }
                }
                Some(Err(e)) => {
                    return Poll::Ready(Err(UploadError {
                        error: io::Error::other(e),
                        client_side: true,
                    }));
                }
            }
        }
    }

    /// The whole request reached the engine: the connection can carry another one.
    fn done(&self) -> bool {
        self.complete && !self.failed
    }
}

/// Drops the first `n` bytes of the queue.
fn advance(queue: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if n < front.len() {
            let _ = front.split_to(n);
            return;
        }
        n -= front.len();
        queue.pop_front();
    }
}

/// A response body read from the engine connection, which also finishes sending the request
/// body if the engine answered before reading all of it.
struct EngineBody {
    conn: Option<EngineConn>,
    upload: Upload,
    framing: Framing,
    keep: bool,
    slot: Slot,
}

impl EngineBody {
    /// At the body's end: the connection goes back to the slot if it can carry another exchange.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep
            && self.upload.done()
            && conn.buf.is_empty()
        {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, io::Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if !self.upload.complete
            && let Poll::Ready(Err(e)) = self.upload.poll(&mut conn.io, cx)
        {
            if e.client_side {
                return Poll::Ready(Some(Err(e.error)));
            }
            tracing::debug!(error = %e.error, "request body not fully sent");
        }
        loop {
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Framing::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Some(data)) if !data.is_empty() => {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(_) if decoder.is_done() => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e,
                        ))));
                    }
                },
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.keep = false;
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the Docker engine closed the connection before the end of its answer",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl HttpBody for EngineBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut()
            .poll_data(cx)
            .map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Full};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    use super::*;

    fn parts(method: &str, target: &str) -> hyper::http::request::Parts {
        let (parts, ()) = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "docker")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    /// Reads one request head from the fake engine's side.
    async fn request_head(engine: &mut UnixStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(engine.read(&mut byte).await.unwrap(), 1, "{head:?}");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn exchanges_stream_answers_in_any_slicing_and_reuse_the_connection() {
        let (ours, mut engine) = UnixStream::pair().unwrap();
        let slot = Slot::default();
        let conn = EngineConn {
            io: Stream::Unix(ours),
            buf: BytesMut::new(),
            next_read: MIN_READ,
            url: Arc::from("unix:///test"),
            reused: false,
        };
        let fake = tokio::spawn(async move {
            let head = request_head(&mut engine).await;
            assert!(head.starts_with("GET /v1.25/events HTTP/1.1\r\n"), "{head}");
            // A 100 Continue first, then a chunked answer, a byte at a time.
            let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
            for byte in answer {
                engine.write_all(&[*byte]).await.unwrap();
                engine.flush().await.unwrap();
            }
            // The same connection carries the next exchange, with a body.
            let head = request_head(&mut engine).await;
            assert!(head.starts_with("POST /v1.25/build HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
            let mut body = vec![0u8; b"7\r\ncontext\r\n0\r\n\r\n".len()];
            engine.read_exact(&mut body).await.unwrap();
            assert_eq!(body, b"7\r\ncontext\r\n0\r\n\r\n");
            engine
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
                .await
                .unwrap();
            engine
        });

        let response = exchange(
            conn,
            &parts("GET", "/v1.25/events"),
            Body::default(),
            Arc::clone(&slot),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["api-version"], "1.41");
        assert!(
            slot.lock().unwrap().is_none(),
            "given back before the answer's end"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello world");

        let conn = EngineConn::take(&slot, "unix:///test").expect("the connection was not kept");
        assert!(EngineConn::take(&slot, "unix:///test").is_none());
        // Streamed (no length): it goes chunked.
        let upload = Full::new(Bytes::from_static(b"context"))
            .map_err(|never| match never {})
            .boxed();
        let mut upload_parts = parts("POST", "/v1.25/build");
        upload_parts.headers.remove(header::CONTENT_LENGTH);
        let response = exchange(conn, &upload_parts, upload, Arc::clone(&slot))
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "OK");
        assert!(slot.lock().unwrap().is_some());
        drop(fake.await.unwrap());
    }

    fn head(text: &str) -> ResponseHead {
        let (head, len) = parse_response_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(len, text.len());
        head
    }

    #[test]
    fn a_ping_answer_as_dockerd_sends_it() {
        let text = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nCache-Control: no-cache, no-store, must-revalidate\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nDocker-Experimental: false\r\nOstype: linux\r\nPragma: no-cache\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\nDate: Tue, 01 Dec 2026 12:00:00 GMT\r\n\r\n";
        let h = head(text);
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.keep_alive);
        assert_eq!(h.headers["api-version"], "1.41");
        assert_eq!(h.headers.len(), 9);
        assert_eq!(h.framing(false), Framing::Length(2));
        assert_eq!(h.framing(true), Framing::Done);
        // Incomplete: wait for more.
        assert!(
            parse_response_head(&text.as_bytes()[..40])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = Framing::Chunked(ChunkedDecoder::default());
        for (text, framing) in [
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Done),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Framing::Done,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                chunked.clone(),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Framing::Close,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
                Framing::Close,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                Framing::Length(7),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Framing::Length(0),
            ),
        ] {
            assert_eq!(head(text).framing(false), framing, "{text}");
        }
    }

    #[test]
    fn heads_that_could_desynchronize_the_connection_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(parse_response_head(text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn keep_alive_is_read_from_the_version_and_connection() {
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_they_arrive() {
        let input =
            b"5\r\nhello\r\n6;name=value\r\n world\r\nA \r\n, chunked!\r\n0\r\nTrailer: x\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, done) = dechunk(input, step).unwrap();
            assert_eq!(data, b"hello world, chunked!", "step {step}");
            assert!(done, "step {step}");
        }
        // Not ended yet: more is awaited.
        let (data, done) = dechunk(b"5\r\nhello\r\n", 1).unwrap();
        assert_eq!((data.as_slice(), done), (&b"hello"[..], false));
    }

    #[test]
    fn malformed_chunked_framing_is_an_error() {
        for input in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"z\r\n",
            b"\r\n",
            b"-5\r\n",
            b"5 x\r\n",
            b"11111111111111111\r\n",
            b"0\r\nTrailer: x\n\r\n",
            b"5\rhello",
        ] {
            assert!(dechunk(input, 1).is_err(), "{input:?}");
            assert!(dechunk(input, input.len()).is_err(), "{input:?}");
        }
        let long = [b'0'; MAX_CHUNK_LINE + 2];
        assert!(dechunk(&long, long.len()).is_err());
    }
}
