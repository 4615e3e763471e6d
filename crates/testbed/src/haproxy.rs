//! `haproxy` as a TCP relay (plain, or terminating TLS) on a loopback port, in front of a unix socket or a TCP
//! address (the baseline of the proxy benchmark: a relay that does no HTTP work).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{self, Supervised};

/// Default bound on the wait for the listener.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
enum Backend {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Configures and starts [`Haproxy`].
#[derive(Clone, Debug)]
#[must_use]
pub struct HaproxyBuilder {
    backend: Backend,
    maxconn: u32,
    timeout: Duration,
    /// Certificate chain and key (PEM) to terminate TLS with.
    tls: Option<(String, String)>,
}

impl HaproxyBuilder {
    /// Most concurrent connections (haproxy's `maxconn`, default 4096).
    pub fn maxconn(mut self, maxconn: u32) -> Self {
        self.maxconn = maxconn;
        self
    }

    /// Bound on the wait for the listener (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Terminates TLS on the listener (OpenSSL's server, a peer other than rustls) with this
    /// certificate chain and key, both PEM, and relays the plaintext.
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// Starts haproxy in the foreground (`-db`) on a free 127.0.0.1 port and waits until the
    /// port accepts connections.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without haproxy; [`Error::Invalid`] for a unix socket path
    /// haproxy cannot take; [`Error::Exited`] or [`Error::Timeout`] with the log tail.
    pub fn start(self) -> Result<Haproxy> {
        if let Backend::Unix(path) = &self.backend
            && (path.as_os_str().len() >= 108 || !path.is_absolute())
        {
            return Err(Error::Invalid {
                what: "unix socket path for haproxy (absolute, < 108 bytes)",
                value: path.display().to_string(),
            });
        }
        let binary = process::find_binary("haproxy", "haproxy")?;
        process::retry_port_clash("haproxy", || self.start_once(&binary))
    }

    fn start_once(&self, binary: &Path) -> Result<Haproxy> {
        let dir = process::short_tempdir("vchh-")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, process::free_port()?));
        let mut bind = addr.to_string();
        if let Some((cert, key)) = &self.tls {
            // haproxy takes the chain and the key from one file.
            let pem = dir.path().join("server.pem");
            std::fs::write(&pem, format!("{}\n{key}", cert.trim_end()))
                .map_err(|e| Error::io(format!("write {}", pem.display()), e))?;
            bind = format!("{addr} ssl crt {}", pem.display());
        }
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config(&bind, &self.backend, self.maxconn))
            .map_err(|e| Error::io(format!("write {}", config_path.display()), e))?;
        let mut cmd = Command::new(binary);
        // -db: stay in the foreground, no daemon mode; alerts go to stderr (our log).
        cmd.arg("-db").arg("-f").arg(&config_path);
        let log = dir.path().join("haproxy.log");
        let mut proc = Supervised::spawn("haproxy", cmd, &log, None)?;
        proc.wait_ready(self.timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map(drop)
                .map_err(|e| format!("connect {addr}: {e}"))
        })?;
        tracing::info!(%addr, "haproxy ready");
        Ok(Haproxy { proc, addr, dir })
    }
}

/// `bind`: the address, and TLS options after it.
fn config(bind: &str, backend: &Backend, maxconn: u32) -> String {
    let server = match backend {
        // haproxy reads an address starting with '/' as a unix socket; `unix@` says so
        // explicitly.
        Backend::Unix(path) => format!("unix@{}", path.display()),
        Backend::Tcp(a) => a.to_string(),
    };
    format!(
        "global\n  maxconn {maxconn}\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         frontend relay\n  bind {bind}\n  default_backend target\n\
         backend target\n  server target {server}\n"
    )
}

/// A running haproxy relaying plain TCP. Dropping it stops haproxy and removes its temp dir.
///
/// ```no_run
/// # fn main() -> vch_testbed::Result<()> {
/// let dockerd = vch_testbed::Dockerd::start()?;
/// let relay = vch_testbed::Haproxy::to_unix(dockerd.socket_path()).start()?;
/// let ping = vch_testbed::HttpClient::plain().get(&format!("http://{}/_ping", relay.addr()))?;
/// assert_eq!(ping.status, 200);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Haproxy {
    // Field order matters: the process stops before the dir is removed.
    proc: Supervised,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// A relay to the unix socket at `socket`.
    pub fn to_unix(socket: &Path) -> HaproxyBuilder {
        HaproxyBuilder {
            backend: Backend::Unix(socket.to_owned()),
            maxconn: 4096,
            timeout: START_TIMEOUT,
            tls: None,
        }
    }

    /// A relay to the TCP address `target`.
    pub fn to_tcp(target: SocketAddr) -> HaproxyBuilder {
        HaproxyBuilder {
            backend: Backend::Tcp(target),
            maxconn: 4096,
            timeout: START_TIMEOUT,
            tls: None,
        }
    }

    /// The relay's listening address on 127.0.0.1.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The temp dir (config, log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The text of haproxy's log so far (alerts and warnings only).
    #[must_use]
    pub fn log(&self) -> String {
        process::read_log(self.proc.log_path())
    }

    /// haproxy's process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_relays_to_unix_socket() {
        let c = config(
            "127.0.0.1:8080",
            &Backend::Unix("/tmp/x/docker.sock".into()),
            10,
        );
        assert!(c.contains("  mode tcp\n"));
        assert!(c.contains("  bind 127.0.0.1:8080\n"));
        assert!(c.contains("  server target unix@/tmp/x/docker.sock\n"));
        assert!(c.contains("  maxconn 10\n"));
    }

    #[test]
    fn long_socket_path_is_refused() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let err = Haproxy::to_unix(&long).start().unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }
}
