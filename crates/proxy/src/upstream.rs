//! The Docker engine behind the endpoint: a unix socket or TCP, optionally TLS.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};

use crate::Error;
use crate::io::Stream;

/// The send buffer asked for on a unix socket to dockerd.
///
/// On a unix socket the sender's buffer is all that lies between the two ends, 208 KiB by
/// default: an upload then moved in lockstep, the proxy waiting while dockerd untarred and dockerd
/// waiting while the proxy decrypted. With 1 MiB (the kernel doubles it, and caps the request at
/// `net.core.wmem_max`) dockerd reads in larger gulps and both work at once: mutual TLS uploads
/// went from 0.71 to 0.95 of direct TCP in the proxy bench (0.67 to 0.76 with the default
/// `wmem_max` of 208 KiB, so hosts that upload much over TLS gain by raising it). Kernel memory
/// is only taken while data waits in it.
const ENGINE_SNDBUF: usize = 1 << 20;

/// Where dockerd listens.
#[derive(Clone)]
pub struct Upstream {
    target: Target,
    url: Arc<str>,
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp {
        addr: String,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    },
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Upstream {
    /// Parses a Docker host URL: `unix:///path` or `tcp://host:port`. For a TCP engine that
    /// requires TLS, pass its client configuration (see `vch_pki::client_config`).
    pub fn parse(url: &str, tls: Option<Arc<ClientConfig>>) -> Result<Self, Error> {
        let err = |reason: &str| Error::DockerHost {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let target = if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(err(
                    "a unix socket path must be absolute (unix:///var/run/docker.sock)",
                ));
            }
            if tls.is_some() {
                return Err(err("TLS is for tcp:// engines only"));
            }
            Target::Unix(PathBuf::from(path))
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            let addr = rest.trim_end_matches('/');
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| err("a tcp:// host needs a port (tcp://127.0.0.1:2376)"))?;
            if port.parse::<u16>().is_err() || host.is_empty() {
                return Err(err("expected tcp://HOST:PORT"));
            }
            let tls = match tls {
                Some(config) => {
                    let name = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(name.to_owned())
                        .map_err(|_| err("the host is not a valid TLS server name"))?;
                    Some((config, name))
                }
                None => None,
            };
            Target::Tcp {
                addr: addr.to_owned(),
                tls,
            }
        } else {
            return Err(err("expected unix:///path or tcp://host:port"));
        };
        Ok(Upstream {
            target,
            url: url.into(),
        })
    }

    /// The URL it was parsed from.
    pub(crate) fn url(&self) -> &Arc<str> {
        &self.url
    }

    /// Opens a new connection.
    pub(crate) async fn connect(&self) -> std::io::Result<Stream> {
        match &self.target {
            Target::Unix(path) => {
                let unix = UnixStream::connect(path).await?;
                // Best effort: a smaller buffer only costs speed.
                let _ = rustix::net::sockopt::set_socket_send_buffer_size(&unix, ENGINE_SNDBUF);
                Ok(Stream::Unix(unix))
            }
            Target::Tcp { addr, tls } => {
                let tcp = TcpStream::connect(addr.as_str()).await?;
                tcp.set_nodelay(true)?;
                match tls {
                    None => Ok(Stream::Tcp(tcp)),
                    Some((config, name)) => {
                        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                        let tls = connector.connect(name.clone(), tcp).await?;
                        Ok(Stream::ClientTls(Box::new(tls)))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_engine_connections_get_a_larger_send_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        let upstream = Upstream::parse(&format!("unix://{}", path.display()), None).unwrap();
        let Stream::Unix(unix) = upstream.connect().await.unwrap() else {
            panic!("not a unix stream");
        };
        let size = rustix::net::sockopt::socket_send_buffer_size(&unix).unwrap();
        let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The kernel doubles what it grants, and grants at most wmem_max.
        assert_eq!(size, 2 * ENGINE_SNDBUF.min(wmem_max));
    }
}
