//! A minimal blocking HTTP/1.1 client over a raw socket: keep-alive, `Content-Length` and chunked
//! bodies, streamed both ways through one reusable buffer. It does only what the bench needs, so
//! the client's own cost is small and the same for every target.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A connected byte stream of any kind.
pub(crate) trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// How to reach a target.
#[derive(Clone)]
pub(crate) enum Dial {
    Unix(PathBuf),
    Tcp(SocketAddr),
    /// TLS to an IP address (the server certificate names 127.0.0.1).
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

impl Dial {
    /// Connects (and for TLS completes the handshake, so it is not counted in the first request).
    /// Reads and writes time out after `timeout`, so a stuck peer fails the bench instead of
    /// hanging it.
    pub(crate) fn connect(&self, timeout: Duration) -> io::Result<Conn> {
        let mut tls_summary = None;
        let io: Box<dyn Io> = match self {
            Dial::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Box::new(s)
            }
            Dial::Tcp(addr) => Box::new(tcp(*addr, timeout)?),
            Dial::Tls(addr, config) => {
                let sock = tcp(*addr, timeout)?;
                let name = rustls::pki_types::ServerName::from(addr.ip());
                let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, sock);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                tls_summary = match (
                    tls.conn.protocol_version(),
                    tls.conn.negotiated_cipher_suite(),
                ) {
                    (Some(version), Some(suite)) => {
                        Some(format!("{version:?} {:?}", suite.suite()))
                    }
                    _ => Some("(handshake incomplete)".to_owned()),
                };
                Box::new(tls)
            }
        };
        Ok(Conn {
            io,
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            tls_summary,
        })
    }
}

fn tcp(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    // As the docker CLI (Go) does: no Nagle delay on small requests.
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Read buffer size: large enough that a 512 MiB body costs few system calls.
const BUF: usize = 256 * 1024;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response head: what the bench looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) framing: Framing,
}

/// One client connection.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// For TLS, the protocol version and cipher suite negotiated.
    tls_summary: Option<String>,
}

impl Conn {
    /// The TLS protocol version and cipher suite, or "plain".
    pub(crate) fn tls_summary(&self) -> &str {
        self.tls_summary.as_deref().unwrap_or("plain")
    }

    /// Sends a request line and headers (`Host` is added) in one write.
    pub(crate) fn send_head(&mut self, method: &str, path: &str, headers: &str) -> io::Result<()> {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\n{headers}\r\n");
        self.send_raw(head.as_bytes())
    }

    /// Writes bytes as they are and flushes.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    /// Writes part of a request body.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)
    }

    /// Flushes a request body.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }

    /// Reads more into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a response line or head does not fit the buffer",
            ));
        }
        let n = self.io.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    fn fill_some(&mut self) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Reads a response head. `head_request` says the request was `HEAD` (no body follows).
    pub(crate) fn read_head(&mut self, head_request: bool) -> io::Result<Head> {
        loop {
            if let Some(at) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                let head = parse_head(&self.buf[self.start..self.start + at], head_request)?;
                self.start += at + 4;
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                return Ok(head);
            }
            self.fill_some()?;
        }
    }

    /// Reads a whole body, handing each piece to `sink`; returns the body's length.
    pub(crate) fn read_body(
        &mut self,
        framing: Framing,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        match framing {
            Framing::Empty => Ok(0),
            Framing::Length(n) => {
                self.read_exact_into(n, sink)?;
                Ok(n)
            }
            Framing::UntilClose => {
                let mut total = 0;
                loop {
                    if self.start == self.end && self.fill()? == 0 {
                        return Ok(total);
                    }
                    sink(&self.buf[self.start..self.end])?;
                    total += (self.end - self.start) as u64;
                    self.start = self.end;
                }
            }
            Framing::Chunked => {
                let mut total = 0;
                loop {
                    let line = self.read_line()?;
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.read_line()?.is_empty() {}
                        return Ok(total);
                    }
                    self.read_exact_into(size, sink)?;
                    total += size;
                    if !self.read_line()?.is_empty() {
                        return Err(invalid("a chunk does not end with CRLF"));
                    }
                }
            }
        }
    }

    /// Reads a small body into a vector.
    pub(crate) fn read_body_vec(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        self.read_body(framing, &mut |piece| {
            body.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(body)
    }

    /// Waits until at least one byte of body is buffered (for a stream that is meant to stay
    /// open, such as `/events`).
    pub(crate) fn wait_data(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.fill_some()?;
        }
        Ok(())
    }

    fn read_exact_into(
        &mut self,
        mut remaining: u64,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while remaining > 0 {
            if self.start == self.end {
                self.fill_some()?;
            }
            let available = (self.end - self.start) as u64;
            let take = remaining.min(available) as usize;
            sink(&self.buf[self.start..self.start + take])?;
            self.start += take;
            remaining -= take as u64;
        }
        Ok(())
    }

    /// A line without its CRLF.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = self.buf[self.start..self.start + at].to_vec();
                self.start += at + 2;
                return Ok(line);
            }
            self.fill_some()?;
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8], head_request: bool) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(&format!("bad status line {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(&format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| invalid(&format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head { status, framing })
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("chunk size is not UTF-8"))?;
    let size = text.split(';').next().unwrap_or_default().trim();
    u64::from_str_radix(size, 16).map_err(|_| invalid(&format!("bad chunk size {size:?}")))
}
