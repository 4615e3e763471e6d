//! rustls configurations from the files this crate writes, and a live handshake check.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{Error, Result};
use crate::inspect::spki_matches;
use crate::key::is_encrypted_key_pem;
use crate::pem::certificates_from_pem;

/// The crypto provider every configuration here uses: aws-lc-rs, explicitly, so the result
/// does not depend on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads every certificate from a PEM file (leaf first for a chain).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    certificates_from_pem(&pem, &path.display().to_string())
}

/// Reads the private key from a PEM file (PKCS#1, PKCS#8 or SEC1; encrypted keys refused).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    if is_encrypted_key_pem(&pem) {
        return Err(Error::EncryptedKey { source_name: name });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::NoKey { source_name: name },
        other => Error::Pem {
            source_name: name,
            reason: other.to_string(),
        },
    })
}

/// Reads every certificate revocation list (`X509 CRL` section) from a PEM file; a file with
/// none is an error.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            source_name: name.clone(),
            reason: e.to_string(),
        })?;
    if crls.is_empty() {
        return Err(Error::NoCrl { source_name: name });
    }
    Ok(crls)
}

fn root_store(ca_path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(ca_path)? {
        roots.add(cert).map_err(|source| Error::Tls {
            what: ca_path.display().to_string(),
            source,
        })?;
    }
    Ok(roots)
}

/// Who may connect to a server built by [`server_config`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ClientAuth<'a> {
    /// Clients must present a certificate issued by a CA in this PEM file (mutual TLS).
    Required {
        /// The CA file (`ca.pem`).
        ca: &'a Path,
        /// A PEM file of certificate revocation lists (`crl.pem`) issued by that CA: a client
        /// certificate listed there is refused at the handshake (alert `certificate_revoked`).
        /// Only end-entity certificates are checked, and a client certificate whose issuer has
        /// no CRL in the file is refused, so a CRL file from another CA locks every client out
        /// rather than letting revoked ones in. An expired CRL is still used.
        crl: Option<&'a Path>,
    },
    /// Any client may connect (server-only TLS, `--no-tlsverify`).
    None,
}

/// A rustls server configuration from a certificate chain and key file, with client
/// certificate verification as `client_auth` says. TLS 1.2 and 1.3, aws-lc-rs.
///
/// Refuses a key that does not belong to the certificate, naming both files.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    client_auth: ClientAuth<'_>,
) -> Result<ServerConfig> {
    let chain = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    check_pair(&chain, &key, cert_path, key_path)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "the aws-lc-rs provider".to_owned(),
            source,
        })?;
    let builder = match client_auth {
        ClientAuth::Required { ca, crl } => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider);
            if let Some(crl) = crl {
                verifier = verifier
                    .with_crls(load_crls(crl)?)
                    .only_check_end_entity_revocation();
            }
            let verifier = verifier.build().map_err(|e| Error::ClientVerifier {
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|source| Error::Tls {
            what: format!("{} and {}", cert_path.display(), key_path.display()),
            source,
        })
}

/// A rustls client configuration trusting the CAs in `ca_path`, presenting the client
/// certificate and key in `identity` when given (the `cert.pem` / `key.pem` pair).
pub fn client_config(ca_path: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientConfig> {
    let roots = root_store(ca_path)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "the aws-lc-rs provider".to_owned(),
            source,
        })?
        .with_root_certificates(roots);
    match identity {
        Some((cert_path, key_path)) => {
            let chain = load_certificates(cert_path)?;
            let key = load_private_key(key_path)?;
            check_pair(&chain, &key, cert_path, key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| Error::Tls {
                    what: format!("{} and {}", cert_path.display(), key_path.display()),
                    source,
                })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn check_pair(
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<()> {
    let mismatch = || Error::KeyMismatch {
        certificate: cert_path.display().to_string(),
        key: key_path.display().to_string(),
    };
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| Error::Key {
            source_name: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
    let Some(spki) = signing.public_key() else {
        // A key type whose public half aws-lc-rs cannot report; rustls checks the pair later.
        return Ok(());
    };
    let leaf = chain.first().ok_or_else(|| Error::NoCertificate {
        source_name: cert_path.display().to_string(),
    })?;
    let (_, x509) =
        <x509_parser::certificate::X509Certificate<'_> as x509_parser::prelude::FromDer<
            '_,
            x509_parser::error::X509Error,
        >>::from_der(leaf)
        .map_err(|e| Error::Certificate {
            source_name: cert_path.display().to_string(),
            index: 0,
            reason: e.to_string(),
        })?;
    if spki_matches(x509.public_key().raw, spki.as_ref()) {
        Ok(())
    } else {
        Err(mismatch())
    }
}

#[cfg(feature = "connect")]
pub use connect::{Handshake, check_connection};

#[cfg(feature = "connect")]
mod connect {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::{ClientConfig, ClientConnection, StreamOwned};
    use rustls_pki_types::ServerName;

    use crate::error::{Error, Result};

    /// What a successful live check saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize))]
    #[non_exhaustive]
    pub struct Handshake {
        /// The address dialled.
        pub addr: String,
        /// Negotiated protocol version (`TLSv1_3`).
        pub protocol: String,
        /// Negotiated cipher suite.
        pub cipher_suite: String,
        /// Subject of the server's leaf certificate.
        pub server_subject: String,
        /// The status line the server answered `GET /_ping` with (Docker's health endpoint);
        /// reading it proves the server accepted our client certificate, which TLS 1.3
        /// servers only reject after the handshake.
        pub ping_status: String,
    }

    /// Connects to `addr` (`host:port`), completes a TLS handshake with `config` verifying the
    /// server as `server_name`, then sends `GET /_ping` and reads the status line.
    ///
    /// Every step is bounded by `timeout`. Blocking; run it off an async runtime's workers.
    pub fn check_connection(
        addr: &str,
        server_name: &str,
        config: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Handshake> {
        let fail = |reason: String| Error::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let sock_addr = addr
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| fail("resolves to no address".to_owned()))?;
        let sock = TcpStream::connect_timeout(&sock_addr, timeout)
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        sock.set_read_timeout(Some(timeout))
            .and_then(|()| sock.set_write_timeout(Some(timeout)))
            .map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| fail(format!("bad server name {server_name:?}: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(|e| fail(e.to_string()))?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| fail(format!("handshake: {e}")))?;
        }
        let protocol = tls
            .conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let cipher_suite = tls
            .conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let server_subject = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| {
                x509_parser::parse_x509_certificate(der)
                    .ok()
                    .map(|(_, x)| x.subject().to_string())
            })
            .unwrap_or_default();
        let request =
            format!("GET /_ping HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .and_then(|()| tls.flush())
            .map_err(|e| fail(format!("after the handshake: {e}")))?;
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        // Read until the end of the status line; the server's verdict on our certificate
        // arrives here as an alert when it rejects it.
        while !response.contains(&b'\n') && response.len() < 8192 {
            let n = tls
                .read(&mut buf)
                .map_err(|e| fail(format!("the server refused the session: {e}")))?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        let ping_status = String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if ping_status.is_empty() {
            return Err(fail(
                "the server closed the connection without answering".to_owned(),
            ));
        }
        Ok(Handshake {
            addr: addr.to_owned(),
            protocol,
            cipher_suite,
            server_subject,
            ping_status,
        })
    }
}

#[cfg(test)]
#[cfg(feature = "connect")]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::ca::{CaOptions, CertificateAuthority, LeafOptions};
    use crate::layout::{Bundle, Layout, Overwrite, write_files};

    /// Writes a VCH layout for a fresh CA into a temp dir.
    fn vch_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate(&CaOptions::new("TLS test CA")).unwrap();
        let server = ca
            .issue(&LeafOptions::server(["localhost", "127.0.0.1"]))
            .unwrap();
        let client = ca.issue(&LeafOptions::client("client")).unwrap();
        let bundle = Bundle {
            ca_cert: Some(ca.cert_pem()),
            ca_key: Some(ca.key().to_pem().to_owned()),
            server: Some((server.cert_pem(), server.key().to_pem().to_owned())),
            client: Some((client.cert_pem(), client.key().to_pem().to_owned())),
        };
        write_files(
            tmp.path(),
            &bundle.files(&Layout::Vch).unwrap(),
            Overwrite::Never,
        )
        .unwrap();
        tmp
    }

    /// A one-connection TLS server answering `/_ping` with 200 OK.
    fn serve_once(config: ServerConfig) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = Arc::new(config);
        let handle = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut buf = [0u8; 1024];
            // A rejected client makes this read fail; that is the point of those tests.
            if let Ok(n) = tls.read(&mut buf)
                && n > 0
            {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (addr, handle)
    }

    /// One handshake and `/_ping` against a one-connection server with `config`, from a client
    /// trusting `ca` with the certificate and key `client`, dialling `host`.
    fn handshake(
        config: ServerConfig,
        ca: &Path,
        client: Option<(&Path, &Path)>,
        host: &str,
    ) -> std::result::Result<Handshake, Error> {
        let (addr, h) = serve_once(config);
        let client = client_config(ca, client).unwrap();
        let result = check_connection(&addr, host, Arc::new(client), Duration::from_secs(5));
        h.join().unwrap();
        result
    }

    #[test]
    fn mutual_tls_accepts_our_client_and_rejects_others() {
        let dir = vch_dir();
        let d = dir.path();
        let server = || {
            server_config(
                &d.join("server-cert.pem"),
                &d.join("server-key.pem"),
                ClientAuth::Required {
                    ca: &d.join("ca.pem"),
                    crl: None,
                },
            )
            .unwrap()
        };
        let ca = d.join("ca.pem");
        let ours = (d.join("cert.pem"), d.join("key.pem"));
        let ours = Some((ours.0.as_path(), ours.1.as_path()));

        let hs = handshake(server(), &ca, ours, "localhost").unwrap();
        assert_eq!(hs.ping_status, "HTTP/1.1 200 OK");
        assert_eq!(hs.server_subject, "CN=localhost");
        assert_eq!(hs.protocol, "TLSv1_3");

        // No client certificate.
        let err = handshake(server(), &ca, None, "localhost").unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");

        // A client certificate from another CA.
        let other = vch_dir();
        let (cert, key) = (other.path().join("cert.pem"), other.path().join("key.pem"));
        let err = handshake(server(), &ca, Some((&cert, &key)), "localhost").unwrap_err();
        assert!(
            err.to_string().contains("refused") || err.to_string().contains("handshake"),
            "{err}"
        );

        // The server certificate does not name the host dialled.
        let err = handshake(server(), &ca, ours, "elsewhere.example").unwrap_err();
        assert!(err.to_string().contains("handshake"), "{err}");
    }

    #[test]
    fn a_crl_refuses_the_revoked_client_at_the_handshake_and_no_other() {
        use crate::ca::Revocation;
        use crate::inspect::{InspectOptions, inspect_pem};

        let dir = vch_dir();
        let d = dir.path();
        let ca = CertificateAuthority::from_pem(
            &std::fs::read_to_string(d.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(d.join("ca-key.pem")).unwrap(),
        )
        .unwrap();
        let mut revoked = LeafOptions::client("mallory");
        revoked.organizational_unit = Some("team-a".to_owned());
        let revoked = ca.issue(&revoked).unwrap();
        std::fs::write(d.join("mallory.pem"), revoked.cert_pem()).unwrap();
        std::fs::write(d.join("mallory-key.pem"), revoked.key().to_pem()).unwrap();
        let info = inspect_pem(
            revoked.cert_pem().as_bytes(),
            "mallory.pem",
            &InspectOptions::default(),
        )
        .unwrap();
        assert_eq!(info.certificates[0].subject, "OU=team-a, CN=mallory");
        let entry =
            Revocation::from_serial_hex(&info.certificates[0].serial, std::time::SystemTime::now())
                .unwrap();
        let crl = ca.revocation_list(&[entry], 30).unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
        std::fs::write(d.join("crl.pem"), crl).unwrap();

        let server = || {
            server_config(
                &d.join("server-cert.pem"),
                &d.join("server-key.pem"),
                ClientAuth::Required {
                    ca: &d.join("ca.pem"),
                    crl: Some(&d.join("crl.pem")),
                },
            )
            .unwrap()
        };
        let ca = d.join("ca.pem");
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        let hs = handshake(server(), &ca, Some((&cert, &key)), "localhost").unwrap();
        assert_eq!(hs.ping_status, "HTTP/1.1 200 OK");

        let (cert, key) = (d.join("mallory.pem"), d.join("mallory-key.pem"));
        let err = handshake(server(), &ca, Some((&cert, &key)), "localhost").unwrap_err();
        assert!(err.to_string().contains("CertificateRevoked"), "{err}");
    }

    #[test]
    fn a_crl_file_without_a_crl_is_refused() {
        let dir = vch_dir();
        let d = dir.path();
        let err = server_config(
            &d.join("server-cert.pem"),
            &d.join("server-key.pem"),
            ClientAuth::Required {
                ca: &d.join("ca.pem"),
                crl: Some(&d.join("ca.pem")),
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::NoCrl { .. }), "{err}");
    }

    #[test]
    fn server_only_tls_accepts_anonymous_clients() {
        let dir = vch_dir();
        let d = dir.path();
        let config = server_config(
            &d.join("server-cert.pem"),
            &d.join("server-key.pem"),
            ClientAuth::None,
        )
        .unwrap();
        let hs = handshake(config, &d.join("ca.pem"), None, "127.0.0.1").unwrap();
        assert_eq!(hs.ping_status, "HTTP/1.1 200 OK");
    }

    #[test]
    fn mismatched_pair_and_missing_files_are_named() {
        let dir = vch_dir();
        let d = dir.path();
        let err = server_config(
            &d.join("server-cert.pem"),
            &d.join("key.pem"),
            ClientAuth::None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::KeyMismatch { key, .. } if key.ends_with("key.pem")),
            "{err}"
        );
        let err = client_config(&d.join("nope.pem"), None).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
