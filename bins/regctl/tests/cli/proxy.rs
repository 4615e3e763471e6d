//! `regctl` through an `https://` proxy from `HTTPS_PROXY`: haproxy terminates TLS (an
//! OpenSSL server, where the library's own tests use rustls) in front of a small `CONNECT`
//! proxy, which alone resolves the registry's name, so reaching it proves the proxy was used.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vch_pki::{CaOptions, CertificateAuthority, LeafOptions};
use vch_testbed::{HttpClient, Registry, TestImage};

use crate::Home;

/// A `CONNECT`-only forward proxy; `registry.test` resolves to 127.0.0.1 here. Logs the
/// first line of every connection.
struct ConnectProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        // The accept loop ends with the test process.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = log2.clone();
                std::thread::spawn(move || {
                    let _ = tunnel(conn, &log);
                });
            }
        });
        Self { addr, log }
    }
}

fn tunnel(mut conn: TcpStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!("{method} {target}"));
    let port = target
        .strip_prefix("registry.test:")
        .and_then(|p| p.parse::<u16>().ok());
    let (Some(port), "CONNECT") = (port, method) else {
        return conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
    };
    let upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut c2, mut u2) = (conn.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let (mut u3, mut c3) = (upstream, conn);
    let _ = std::io::copy(&mut u3, &mut c3);
    let _ = c3.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// haproxy terminating TLS with `pem` (certificate and key) and relaying to `target`.
struct HaproxyTls {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaproxyTls {
    fn start(cert_pem: &str, key_pem: &str, target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("proxy.pem");
        std::fs::write(&pem, format!("{cert_pem}{key_pem}")).unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, vch_testbed::free_port().unwrap()));
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 256\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1m\n  timeout server 1m\n\
                 frontend tls\n  bind {addr} ssl crt {}\n  default_backend proxy\n\
                 backend proxy\n  server proxy {target}\n",
                pem.display()
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (with OpenSSL) is needed for this test");
        let mut me = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                me.child.try_wait().unwrap().is_none(),
                "haproxy exited before listening on {addr}"
            );
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }
}

impl Drop for HaproxyTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn regctl_reaches_a_registry_through_an_https_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(&CaOptions::new("regctl proxy test CA")).unwrap();
    let registry_cert = ca
        .issue(&LeafOptions::server(["registry.test", "127.0.0.1"]))
        .unwrap();
    let proxy_cert = ca.issue(&LeafOptions::server(["127.0.0.1"])).unwrap();
    let (ca_path, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("reg-cert.pem"),
        dir.path().join("reg-key.pem"),
    );
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    std::fs::write(&cert, registry_cert.cert_pem()).unwrap();
    std::fs::write(&key, registry_cert.key().to_pem()).unwrap();
    let reg = Registry::builder().tls(&cert, &key).start().unwrap();
    let pushed = TestImage::random("team/app", "v1")
        .push(&HttpClient::tls(&ca_path).unwrap(), reg.url())
        .unwrap();
    let proxy = ConnectProxy::start();
    let front = HaproxyTls::start(
        &proxy_cert.cert_pem(),
        proxy_cert.key().to_pem(),
        proxy.addr,
    );
    let port = reg.socket_addr().port();
    let host = format!("registry.test:{port}");

    let home = Home::new();
    let regctl = |args: &[&str], proxy_ca: Option<&std::path::Path>| {
        let mut cmd = home.cmd();
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "https_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HTTPS_PROXY", format!("https://{}", front.addr));
        match proxy_ca {
            Some(p) => cmd.env("VCH_PROXY_CA_FILE", p),
            None => cmd.env_remove("VCH_PROXY_CA_FILE"),
        };
        cmd.args(args).output().unwrap()
    };
    let ok = |args: &[&str]| {
        let out = regctl(args, Some(&ca_path));
        assert!(
            out.status.success(),
            "regctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&[
        "registry",
        "set",
        &host,
        "--cacert",
        ca_path.to_str().unwrap(),
    ]);
    assert_eq!(ok(&["tag", "ls", &format!("{host}/team/app")]), "v1\n");
    assert_eq!(
        ok(&["image", "digest", &format!("{host}/team/app:v1")]).trim(),
        pushed.manifest_digest
    );
    let lines = proxy.log.lock().unwrap().clone();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| *l == format!("CONNECT {host}")),
        "{lines:?}"
    );

    // Without the proxy's CA (the registry's --cacert does not count for the proxy): one
    // line saying what to set.
    let out = regctl(&["tag", "ls", &format!("{host}/team/app")], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("VCH_PROXY_CA_FILE"), "{stderr}");
}
