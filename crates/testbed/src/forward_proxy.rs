//! A forward HTTP proxy on loopback, for clients that honour `HTTPS_PROXY`/`HTTP_PROXY`:
//! `CONNECT host:port` tunnels and absolute-form requests (`GET http://host:port/…`).
//!
//! Names it is given resolve to 127.0.0.1 here and nowhere else, so a client that reaches such
//! a name did so through the proxy. Only loopback targets are dialled: traffic never leaves the
//! machine. It runs on threads of the test process (no program to install), and logs the first
//! request line of every connection.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// A running forward proxy. Dropping it stops accepting; tunnels already open run to their end.
#[derive(Debug)]
pub struct ForwardProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ForwardProxy {
    /// Starts the proxy on a free 127.0.0.1 port. `names` resolve to 127.0.0.1 through it;
    /// with `credentials` (user, password), a request without the matching
    /// `Proxy-Authorization: Basic` header is answered 407.
    ///
    /// # Errors
    /// [`Error::Io`] when no port can be bound.
    pub fn start(names: &[&str], credentials: Option<(&str, &str)>) -> Result<ForwardProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("bind the forward proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("address of the forward proxy", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let names: Arc<[String]> = names.iter().map(|n| (*n).to_owned()).collect();
        let expected: Option<Arc<str>> = credentials.map(|(user, password)| {
            format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))).into()
        });
        let (stop2, log2) = (Arc::clone(&stop), Arc::clone(&log));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (names, log, expected) =
                    (Arc::clone(&names), Arc::clone(&log2), expected.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &names, &log, expected.as_deref());
                });
            }
        });
        Ok(ForwardProxy { addr, log, stop })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the value for `HTTPS_PROXY`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The first request line of every connection so far (`CONNECT reg.test:5000`,
    /// `GET http://…`), in order.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    mut conn: TcpStream,
    names: &[String],
    log: &Mutex<Vec<String>>,
    expected: Option<&str>,
) -> std::io::Result<()> {
    // The head byte by byte, so nothing after it is consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default();
    let auth = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{method} {target}"));
    if let Some(want) = expected
        && auth.as_deref() != Some(want)
    {
        return conn.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let authority = if method == "CONNECT" {
        target
    } else {
        target
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("")
    };
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if names.iter().any(|n| n == host) {
        Ipv4Addr::LOCALHOST.into()
    } else {
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => ip,
            _ => {
                return conn.write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    };
    let upstream = TcpStream::connect((ip, port.parse::<u16>().unwrap_or(80)))?;
    if method == "CONNECT" {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        // Go's servers (the registry) take absolute-form targets as they are.
        (&upstream).write_all(&head)?;
    }
    let (mut from_client, mut to_upstream) = (conn.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let (mut from_upstream, mut to_client) = (upstream, conn);
    let _ = std::io::copy(&mut from_upstream, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
