//! Byte streams on both sides: TCP, TLS over TCP, unix sockets.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::audit::Deferred;

/// A connected stream of any supported kind.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Engine(EngineUnix),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            Stream::Engine($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::ClientTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Engine(_) => true,
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
        }
    }
}

/// A unix socket to dockerd, watched for writability only while a write is blocked.
///
/// tokio registers every socket for reading and writing. A unix socket signals "writable" to its
/// writer each time its peer reads (Linux `unix_write_space`, unlike TCP, which signals only after
/// the buffer was full), so dockerd reading a request often woke the proxy's thread for nothing:
/// 0.6 of its 2.8 context switches per request on a `/_ping` loop (2.2 now, as haproxy). Here the
/// socket is registered for reading only; the first write that would block registers a duplicate
/// of it for writing, kept from then on (an upload that outruns dockerd).
#[derive(Debug)]
pub(crate) struct EngineUnix {
    read: AsyncFd<StdUnixStream>,
    write: Option<AsyncFd<StdUnixStream>>,
}

impl EngineUnix {
    pub(crate) fn new(stream: UnixStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        Ok(EngineUnix {
            read: register(stream, Interest::READABLE)?,
            write: None,
        })
    }

    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&StdUnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match write(self.read.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            let watch = match &mut self.write {
                Some(watch) => watch,
                None => self.write.insert(register(
                    self.read.get_ref().try_clone()?,
                    Interest::WRITABLE,
                )?),
            };
            let mut guard = ready!(watch.poll_write_ready(cx))?;
            // Ready again only after the next edge; the loop retries the write first.
            guard.clear_ready();
        }
    }
}

/// Registers a socket with the runtime for one kind of readiness.
///
/// tokio 1.54 deprecated this safe constructor in favour of an `unsafe` one, since an arbitrary
/// `T` could hand out a file descriptor that it closes or swaps while registered. This `T` is a
/// std `UnixStream` owned by the `AsyncFd` for its whole life, so that cannot happen, and this
/// crate forbids `unsafe`.
#[allow(deprecated)]
fn register(stream: StdUnixStream, interest: Interest) -> io::Result<AsyncFd<StdUnixStream>> {
    AsyncFd::with_interest(stream, interest)
}

impl AsyncRead for EngineUnix {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for EngineUnix {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(Shutdown::Write))
    }
}

/// A client connection's stream that writes the connection's finished audit records after each
/// flush, that is once a response's last bytes are with the kernel (see [`Deferred`]).
#[derive(Debug)]
pub(crate) struct EmitAfterFlush {
    inner: Stream,
    deferred: Arc<Deferred>,
}

impl EmitAfterFlush {
    pub(crate) fn new(inner: Stream, deferred: Arc<Deferred>) -> Self {
        EmitAfterFlush { inner, deferred }
    }
}

impl AsyncRead for EmitAfterFlush {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for EmitAfterFlush {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if flushed.is_ready() {
            this.deferred.emit_all();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn an_engine_socket_writes_past_a_full_buffer_half_closes_and_reads_to_the_end() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut engine = EngineUnix::new(ours).unwrap();
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let peer = tokio::spawn(async move {
            // Late to read: the socket buffer fills and the writer has to wait for room.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            theirs.write_all(b"read it all").await.unwrap();
            got
        });
        engine.write_all(&data).await.unwrap();
        assert!(engine.write.is_some(), "the writer never had to wait");
        engine.shutdown().await.unwrap();
        let mut answer = String::new();
        engine.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "read it all");
        assert!(peer.await.unwrap() == data, "the bytes changed on the way");
    }
}
