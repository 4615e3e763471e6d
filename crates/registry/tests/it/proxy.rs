//! Proxies: plain-HTTP registries through absolute-form requests, TLS registries through
//! CONNECT tunnels, proxy credentials, NO_PROXY bypass, and `https://` proxies, with a real
//! forward proxy ([`ForwardProxy`](vch_testbed::ForwardProxy), behind a rustls [`TlsFront`] for `https://`) in front of
//! real Distribution registries. The registry is named
//! `registry.test`, which only the proxy resolves: reaching it proves the proxy was used.

use bytes::Bytes;
use vch_registry::{Client, Error, HostSettings, PlainHttp, ProxyConfig};
use vch_testbed::{ForwardProxy, HttpClient, TestImage};

use crate::support::{Pki, TlsFront, fetch_verified, plain_registry_with, runtime, tls_registry};

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().1
}

fn plain_via(host: &str, proxy: ProxyConfig) -> Client {
    let settings = HostSettings::builder(host)
        .proxy(proxy)
        .dangerous()
        .plain_http(PlainHttp::Only)
        .build()
        .unwrap();
    Client::builder(host).settings(settings).build().unwrap()
}

#[test]
fn plain_registry_through_an_http_proxy_with_credentials() {
    let (reg, pushed) = plain_registry_with(
        TestImage::random("proxied/app", "v1")
            .layers(2)
            .layer_size(300_000),
    );
    let proxy = ForwardProxy::start(&["registry.test"], Some(("pu", "p@ss"))).unwrap();
    let host = format!("registry.test:{}", port_of(&reg.addr()));
    let with_creds = ProxyConfig::new(
        Some(&format!("http://pu:p%40ss@{}", proxy.addr())),
        None,
        "",
    )
    .unwrap();
    let client = plain_via(&host, with_creds);
    runtime().block_on(async {
        let m = client.manifest_get("proxied/app", "v1").await.unwrap();
        assert_eq!(m.digest.as_str(), pushed.manifest_digest);
        fetch_verified(&client, "proxied/app", &pushed.layer_digests[1]).await;
        // An upload follows the registry's Location (named registry.test) through the proxy.
        let d = client
            .push_blob("proxied/other", Bytes::from_static(b"through the proxy"))
            .await
            .unwrap();
        assert_eq!(
            client.blob_head("proxied/other", &d).await.unwrap(),
            Some(17)
        );
    });
    let lines = proxy.lines();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.contains(&format!(" http://{host}/v2/")),
            "not an absolute-form request to the registry: {l}"
        );
    }
    // Without credentials the proxy answers 407, and the error says what to do.
    let without = ProxyConfig::new(Some(&proxy.url()), None, "").unwrap();
    let err = runtime()
        .block_on(plain_via(&host, without).manifest_get("proxied/app", "v1"))
        .unwrap_err();
    assert_eq!(err.status(), Some(407), "{err}");
    assert!(err.to_string().contains("proxy wants credentials"), "{err}");
}

#[test]
fn tls_registry_through_a_connect_tunnel_and_no_proxy_bypasses_it() {
    let pki = Pki::with_names(&["registry.test", "127.0.0.1"]);
    let reg = tls_registry(&pki);
    let pushed = TestImage::random("tunnel/app", "v1")
        .push(&HttpClient::tls(&pki.ca_path()).unwrap(), reg.url())
        .unwrap();
    let proxy = ForwardProxy::start(&["registry.test"], None).unwrap();
    let port = port_of(&reg.addr()).to_owned();
    let host = format!("registry.test:{port}");
    let via = |proxy: &ForwardProxy, host: &str, no_proxy: &str| {
        let settings = HostSettings::builder(host)
            .ca_file(pki.ca_path())
            .proxy(ProxyConfig::new(None, Some(&proxy.url()), no_proxy).unwrap())
            .build()
            .unwrap();
        Client::builder(host).settings(settings).build().unwrap()
    };
    let rt = runtime();
    rt.block_on(async {
        let client = via(&proxy, &host, "other.example, 10.0.0.0/8");
        let ping = client.ping().await.unwrap();
        assert_eq!((ping.scheme, ping.status), ("https", 200));
        let m = client.manifest_get("tunnel/app", "v1").await.unwrap();
        assert_eq!(m.digest.as_str(), pushed.manifest_digest);
    });
    let lines = proxy.lines();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| *l == format!("CONNECT {host}")),
        "{lines:?}"
    );
    // A proxy of its own: the pool of the client above may still open (and log) a spare
    // connection through the first one in the background.
    let bypassed = ForwardProxy::start(&["registry.test"], None).unwrap();
    rt.block_on(async {
        // NO_PROXY names the registry (with its port): dialled directly, where the name does
        // not resolve, and the proxy sees nothing.
        for no_proxy in [host.clone(), ".test".to_owned(), "*".to_owned()] {
            let err = via(&bypassed, &host, &no_proxy).ping().await.unwrap_err();
            assert!(
                matches!(&err, Error::Connect { .. }),
                "NO_PROXY={no_proxy}: {err}"
            );
        }
        // Loopback addresses are never proxied (as in Go).
        let direct = via(&bypassed, &reg.addr(), "");
        assert!(direct.manifest_get("tunnel/app", "v1").await.is_ok());
    });
    assert!(bypassed.lines().is_empty(), "{:?}", bypassed.lines());

    // A proxy that wants credentials refuses the tunnel: a proxy error naming 407.
    let strict = ForwardProxy::start(&["registry.test"], Some(("u", "p"))).unwrap();
    let settings = HostSettings::builder(&host)
        .ca_file(pki.ca_path())
        .proxy(ProxyConfig::new(None, Some(&strict.url()), "").unwrap())
        .build()
        .unwrap();
    let client = Client::builder(&host).settings(settings).build().unwrap();
    let err = rt.block_on(client.ping()).unwrap_err();
    assert!(matches!(&err, Error::Proxy { .. }), "{err}");
    assert!(err.to_string().contains("407"), "{err}");
}

/// `https://` proxies: TLS to the proxy, then `CONNECT` inside it and TLS to the registry
/// within that (TLS in TLS), or absolute-form requests for a plain registry; the proxy's
/// certificate is checked against the proxy CA, not the registry's.
#[test]
fn https_proxy_tunnels_tls_and_carries_plain_requests() {
    let reg_pki = Pki::with_names(&["registry.test", "127.0.0.1"]);
    let reg = tls_registry(&reg_pki);
    let pushed = TestImage::random("tls/proxied", "v1")
        .push(&HttpClient::tls(&reg_pki.ca_path()).unwrap(), reg.url())
        .unwrap();
    let (plain, plain_pushed) = plain_registry_with(TestImage::random("plain/proxied", "v1"));
    let proxy = ForwardProxy::start(&["registry.test"], Some(("pu", "pw"))).unwrap();
    let proxy_pki = Pki::new();
    let front = TlsFront::start(&proxy_pki, proxy.addr());
    let host = format!("registry.test:{}", port_of(&reg.addr()));
    let plain_host = format!("registry.test:{}", port_of(&plain.addr()));
    let url = front.url("pu:pw@");
    let config = ProxyConfig::new(Some(&url), Some(&url), "")
        .unwrap()
        .proxy_ca_file(proxy_pki.ca_path());
    let rt = runtime();

    let settings = HostSettings::builder(&host)
        .ca_file(reg_pki.ca_path())
        .proxy(config.clone())
        .build()
        .unwrap();
    let client = Client::builder(&host).settings(settings).build().unwrap();
    let via_plain = plain_via(&plain_host, config);
    rt.block_on(async {
        let m = client.manifest_get("tls/proxied", "v1").await.unwrap();
        assert_eq!(m.digest.as_str(), pushed.manifest_digest);
        let d = client
            .push_blob("tls/other", Bytes::from_static(b"tls in tls"))
            .await
            .unwrap();
        assert_eq!(client.blob_head("tls/other", &d).await.unwrap(), Some(10));
        let m = via_plain.manifest_get("plain/proxied", "v1").await.unwrap();
        assert_eq!(m.digest.as_str(), plain_pushed.manifest_digest);
    });
    let lines = proxy.lines();
    assert!(lines.contains(&format!("CONNECT {host}")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("GET http://{plain_host}/v2/"))),
        "{lines:?}"
    );
    for l in &lines {
        assert!(
            *l == format!("CONNECT {host}") || l.contains(&format!(" http://{plain_host}/v2/")),
            "{l}"
        );
    }
    // Every connection to the proxy went through the TLS front.
    assert!(front.handshakes.load(std::sync::atomic::Ordering::SeqCst) >= lines.len());

    // The registry's CA does not vouch for the proxy: without the proxy CA the handshake
    // with the proxy fails, and the error says how to trust it.
    let untrusted = ProxyConfig::new(None, Some(&url), "").unwrap();
    let settings = HostSettings::builder(&host)
        .ca_file(reg_pki.ca_path())
        .ca_file(proxy_pki.ca_path())
        .proxy(untrusted)
        .build()
        .unwrap();
    let client = Client::builder(&host).settings(settings).build().unwrap();
    let err = rt.block_on(client.ping()).unwrap_err();
    assert!(matches!(&err, Error::Proxy { .. }), "{err}");
    assert!(err.to_string().contains("VCH_PROXY_CA_FILE"), "{err}");
}
