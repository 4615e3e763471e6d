//! `regctl` through an `https://` proxy from `HTTPS_PROXY`: haproxy terminates TLS (an
//! OpenSSL server, where the library's own tests use rustls) in front of the testbed's forward
//! proxy, which alone resolves the registry's name, so reaching it proves the proxy was used.

use vch_pki::LeafOptions;
use vch_testbed::{ForwardProxy, Haproxy, HttpClient, Registry, TestImage};

use crate::{Home, TestPki};

#[test]
fn regctl_reaches_a_registry_through_an_https_proxy() {
    let pki = TestPki::new();
    let (cert, key) = pki.server_files("registry", &["registry.test", "127.0.0.1"]);
    let proxy_cert = pki.ca.issue(&LeafOptions::server(["127.0.0.1"])).unwrap();
    let ca_path = pki.ca_path();
    let reg = Registry::builder().tls(&cert, &key).start().unwrap();
    let pushed = TestImage::random("team/app", "v1")
        .push(&HttpClient::tls(&ca_path).unwrap(), reg.url())
        .unwrap();
    let proxy = ForwardProxy::start(&["registry.test"], None).unwrap();
    let front = Haproxy::to_tcp(proxy.addr())
        .tls(&proxy_cert.cert_pem(), proxy_cert.key().to_pem())
        .start()
        .unwrap();
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
        cmd.env("HTTPS_PROXY", format!("https://{}", front.addr()));
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
    let lines = proxy.lines();
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
