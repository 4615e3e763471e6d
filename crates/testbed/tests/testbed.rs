//! Starts the real components and talks to them. Every test here needs the programs that
//! `scripts/setup.sh` installs and fails (never skips) without them.

// Helpers outside #[test] fns count as non-test code for clippy; a panic here is still a test
// failure with a location, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vch_testbed::{HttpClient, TestImage};

/// Processes (other than this test binary) whose command line mentions `needle`.
fn processes_naming(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid = e.ok()?.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, s)| s.starts_with('Z'));
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid != me && !zombie && text.contains(&needle)).then(|| format!("{pid} {text}"))
        })
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, st)| !st.starts_with('Z'))
    })
}

/// A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with the openssl
/// CLI.
struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=vch test CA"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(d, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "vch test client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        let (key, csr, crt, extf) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN={cn}");
        let mut req = vec!["req", "-new", "-subj", &subj];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(d, &req);
        std::fs::write(d.join(&extf), ext).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &extf,
                "-out",
                &crt,
            ],
        );
    }
    Certs {
        ca: d.join("ca.pem"),
        cert: d.join("server.pem"),
        key: d.join("server-key.pem"),
        client_cert: d.join("client.pem"),
        client_key: d.join("client-key.pem"),
        _dir: dir,
    }
}

mod dockerd {
    use super::*;
    use vch_testbed::{Dockerd, DockerdTls};

    #[test]
    fn ping_import_run_and_clean_stop() {
        let dockerd = Dockerd::start().unwrap();
        let ping = dockerd.api().get("http://docker/_ping").unwrap();
        assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
        assert!(dockerd.socket_path().as_os_str().len() < 108);
        assert!(dockerd.host().starts_with("unix:///tmp/"));

        let image = TestImage::busybox(&dockerd).unwrap();
        assert_eq!(image, "vch-test/busybox:latest");
        let out = dockerd
            .docker_ok(["run", "--rm", &image, "echo", "hi"])
            .unwrap();
        assert_eq!(out, "hi\n");
        // --rm removed it.
        let left = dockerd.docker_ok(["ps", "--all", "--quiet"]).unwrap();
        assert_eq!(left.trim(), "", "containers left: {left}");

        // Leave a container running: dropping the daemon must still leave nothing behind.
        let id = dockerd
            .docker_ok(["run", "--detach", &image, "sleep", "300"])
            .unwrap();
        assert_eq!(id.trim().len(), 64, "container id: {id}");
        let dir = dockerd.dir().to_owned();
        let pid = dockerd.pid().unwrap();
        let before = processes_naming(&dir);
        assert!(
            before.iter().any(|p| p.contains("containerd-shim")),
            "a shim runs for the container: {before:#?}"
        );
        drop(dockerd);
        assert!(!pid_alive(pid));
        let after = processes_naming(&dir);
        assert!(after.is_empty(), "left behind: {after:#?}");
        assert!(!dir.exists(), "temp dir removed");
    }

    #[test]
    fn two_daemons_in_parallel() {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(Dockerd::start);
            let b = s.spawn(Dockerd::start);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        assert_ne!(a.socket_path(), b.socket_path());
        let id = |d: &Dockerd| d.docker_ok(["info", "--format", "{{.ID}}"]).unwrap();
        let (ia, ib) = (id(&a), id(&b));
        assert!(!ia.trim().is_empty());
        assert_ne!(ia, ib, "two distinct daemons");
        // Each has its own image store.
        TestImage::busybox(&a).unwrap();
        let images_b = b.docker_ok(["images", "--quiet"]).unwrap();
        assert_eq!(images_b.trim(), "");
    }

    #[test]
    fn plain_tcp_listener() {
        let dockerd = Dockerd::builder().tcp_listener().start().unwrap();
        let addr = dockerd.tcp_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let ping = HttpClient::plain()
            .get(&format!("http://{addr}/_ping"))
            .unwrap();
        assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
        assert!(dockerd.log().contains("without --tlsverify"));
    }

    #[test]
    fn tls_listener_requires_client_certificate() {
        let certs = make_certs();
        let dockerd = Dockerd::builder()
            .tls(DockerdTls {
                ca: certs.ca.clone(),
                cert: certs.cert.clone(),
                key: certs.key.clone(),
            })
            .start()
            .unwrap();
        let url = format!("https://{}/_ping", dockerd.tcp_addr().unwrap());
        let mtls =
            HttpClient::tls_client_auth(&certs.ca, &certs.client_cert, &certs.client_key).unwrap();
        let ping = mtls.get(&url).unwrap();
        assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
        // Without a client certificate the handshake is refused.
        let anonymous = HttpClient::tls(&certs.ca).unwrap();
        assert!(anonymous.get(&url).is_err());
    }
}

mod registry {
    use super::*;
    use vch_testbed::{Registry, TokenAuth, sha256_digest};

    const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

    #[test]
    fn plain_push_and_read_back() {
        let registry = Registry::start().unwrap();
        assert!(registry.addr().starts_with("127.0.0.1:"));
        let client = HttpClient::plain();
        let v2 = client.get(&format!("{}/v2/", registry.url())).unwrap();
        assert_eq!(v2.status, 200);

        let pushed = TestImage::random("team/app", "1")
            .layers(3)
            .layer_size(100_000)
            .push(&client, registry.url())
            .unwrap();
        assert_eq!(pushed.layer_digests.len(), 3);
        assert!(pushed.total_bytes > 300_000);

        let url = format!("{}/v2/team/app/manifests/1", registry.url());
        let got = client
            .request("GET", &url, &[("Accept", MANIFEST_V2)], &[])
            .unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body, pushed.manifest);
        assert_eq!(
            got.header("docker-content-digest"),
            Some(pushed.manifest_digest.as_str())
        );
        let manifest: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);

        let layer = &pushed.layer_digests[1];
        let blob = client
            .get(&format!("{}/v2/team/app/blobs/{layer}", registry.url()))
            .unwrap();
        assert_eq!(blob.status, 200);
        assert_eq!(&sha256_digest(&blob.body), layer);

        let tags = client
            .get(&format!("{}/v2/team/app/tags/list", registry.url()))
            .unwrap();
        assert!(tags.text().contains("\"1\""), "{}", tags.text());

        // Deletes are enabled.
        let del = client
            .request(
                "DELETE",
                &format!(
                    "{}/v2/team/app/manifests/{}",
                    registry.url(),
                    pushed.manifest_digest
                ),
                &[],
                &[],
            )
            .unwrap();
        assert_eq!(del.status, 202, "{}", del.text());
    }

    #[test]
    fn tls_registry() {
        let certs = make_certs();
        let registry = Registry::builder()
            .tls(&certs.cert, &certs.key)
            .start()
            .unwrap();
        assert!(registry.url().starts_with("https://127.0.0.1:"));
        let client = HttpClient::tls(&certs.ca).unwrap();
        let v2 = client.get(&format!("{}/v2/", registry.url())).unwrap();
        assert_eq!(v2.status, 200);
        TestImage::random("tls/app", "latest")
            .push(&client, registry.url())
            .unwrap();
        // A client that does not trust the CA fails the handshake.
        let other = make_certs();
        let untrusting = HttpClient::tls(&other.ca).unwrap();
        assert!(untrusting.get(&format!("{}/v2/", registry.url())).is_err());
        // Plain HTTP to the TLS port: Go's TLS server answers 400 "HTTP request to an HTTPS
        // server".
        let plain_url = format!("http://{}/v2/", registry.addr());
        assert_eq!(HttpClient::plain().get(&plain_url).unwrap().status, 400);
    }

    #[test]
    fn htpasswd_registry() {
        let registry = Registry::builder()
            .htpasswd_user("alice", "s3cret")
            .htpasswd_user("bob", "hunter2")
            .start()
            .unwrap();
        let v2 = format!("{}/v2/", registry.url());
        let anon = HttpClient::plain().get(&v2).unwrap();
        assert_eq!(anon.status, 401);
        assert!(
            anon.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Basic")),
            "{:?}",
            anon.headers
        );
        let wrong = HttpClient::plain().basic_auth("alice", "nope").get(&v2);
        assert_eq!(wrong.unwrap().status, 401);
        for (user, password) in [("alice", "s3cret"), ("bob", "hunter2")] {
            let client = HttpClient::plain().basic_auth(user, password);
            assert_eq!(client.get(&v2).unwrap().status, 200, "{user}");
        }
        let alice = HttpClient::plain().basic_auth("alice", "s3cret");
        TestImage::random("private/app", "1")
            .layers(2)
            .push(&alice, registry.url())
            .unwrap();
    }

    #[test]
    fn token_auth_registry_challenges() {
        let certs = make_certs();
        let registry = Registry::builder()
            .token_auth(TokenAuth {
                realm: "https://127.0.0.1:1/token".into(),
                service: "vch-test-registry".into(),
                issuer: "vch-test-issuer".into(),
                rootcertbundle: certs.ca.clone(),
            })
            .start()
            .unwrap();
        let resp = HttpClient::plain()
            .get(&format!("{}/v2/", registry.url()))
            .unwrap();
        assert_eq!(resp.status, 401);
        let challenge = resp.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer ")
                && challenge.contains("realm=\"https://127.0.0.1:1/token\"")
                && challenge.contains("service=\"vch-test-registry\""),
            "{challenge}"
        );
    }

    #[test]
    fn docker_pushes_and_pulls_through_the_registry() {
        let registry = Registry::start().unwrap();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(vch_testbed::Dockerd::start);
            let b = s.spawn(vch_testbed::Dockerd::start);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        let image = TestImage::busybox(&a).unwrap();
        let remote = format!("{}/test/busybox:1", registry.addr());
        a.docker_ok(["tag", &image, &remote]).unwrap();
        // 127.0.0.0/8 registries are insecure (plain HTTP) by default in dockerd.
        a.docker_ok(["push", &remote]).unwrap();
        b.docker_ok(["pull", &remote]).unwrap();
        let out = b
            .docker_ok(["run", "--rm", &remote, "echo", "pulled"])
            .unwrap();
        assert_eq!(out, "pulled\n");

        // A random-layer image pushed through the API is pullable too.
        TestImage::random("test/random", "2")
            .layers(2)
            .layer_size(4096)
            .push(&HttpClient::plain(), registry.url())
            .unwrap();
        b.docker_ok(["pull", &format!("{}/test/random:2", registry.addr())])
            .unwrap();
    }
}

mod dns {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use vch_testbed::{Answer, Dns, RecordType};

    #[test]
    fn a_aaaa_and_ptr_answers() {
        let reg = Ipv4Addr::new(10, 2, 40, 40);
        let v6: Ipv6Addr = "fd00::40".parse().unwrap();
        let dns = Dns::builder()
            .a("reg.example.com", reg)
            .aaaa("reg.example.com", v6)
            .ptr(IpAddr::V4(reg), "reg.example.com")
            .host("exact.example.org", IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)))
            // A PTR that disagrees with the forward records, as a spoofing test needs.
            .ptr(IpAddr::V4(Ipv4Addr::new(10, 2, 2, 7)), "liar.example.com")
            .start()
            .unwrap();
        assert!(dns.addr().ip().is_loopback());
        assert_eq!(dns.lookup_ip("reg.example.com").unwrap(), vec![reg]);
        // --address also covers names below it.
        assert_eq!(dns.lookup_ip("x.reg.example.com").unwrap(), vec![reg]);
        assert_eq!(
            dns.query("reg.example.com", RecordType::Aaaa).unwrap(),
            vec![Answer::Addr(IpAddr::V6(v6))]
        );
        assert_eq!(
            dns.lookup_ptr(IpAddr::V4(reg)).unwrap(),
            vec!["reg.example.com".to_owned()]
        );
        assert_eq!(
            dns.lookup_ptr("10.9.9.9".parse().unwrap()).unwrap(),
            vec!["exact.example.org".to_owned()]
        );
        assert_eq!(
            dns.lookup_ip("exact.example.org").unwrap(),
            vec![Ipv4Addr::new(10, 9, 9, 9)]
        );
        // No upstream: names without any record are REFUSED.
        let refused = |name: &str| {
            let err = dns.lookup_ip(name).unwrap_err().to_string();
            assert!(err.contains("REFUSED"), "{name}: {err}");
        };
        refused("sub.exact.example.org");
        assert_eq!(
            dns.lookup_ptr("10.2.2.7".parse().unwrap()).unwrap(),
            vec!["liar.example.com".to_owned()]
        );
        refused("liar.example.com");
        refused("unknown.example.net");

        assert!(dns.log().contains("reg.example.com"));
    }

    #[test]
    fn two_servers_in_parallel_then_gone() {
        let one = Dns::builder()
            .a("one.test", Ipv4Addr::new(10, 0, 0, 1))
            .start()
            .unwrap();
        let two = Dns::builder()
            .a("one.test", Ipv4Addr::new(10, 0, 0, 2))
            .start()
            .unwrap();
        assert_ne!(one.addr(), two.addr());
        assert_eq!(
            one.lookup_ip("one.test").unwrap(),
            vec![Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert_eq!(
            two.lookup_ip("one.test").unwrap(),
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
        let pid = one.pid().unwrap();
        let addr = one.addr();
        drop(one);
        assert!(!super::pid_alive(pid));
        assert!(std::net::UdpSocket::bind(addr).is_ok(), "port released");
    }
}

mod haproxy {
    use super::*;
    use vch_testbed::{Dockerd, Haproxy, Registry};

    #[test]
    fn relays_tcp_to_dockerd_unix_socket() {
        let dockerd = Dockerd::start().unwrap();
        let relay = Haproxy::to_unix(dockerd.socket_path()).start().unwrap();
        assert!(relay.addr().ip().is_loopback());
        let url = format!("http://{}/_ping", relay.addr());
        // Several requests: each is its own relayed connection.
        for _ in 0..5 {
            let ping = HttpClient::plain().get(&url).unwrap();
            assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
        }
        let pid = relay.pid().unwrap();
        drop(relay);
        assert!(!pid_alive(pid));
    }

    #[test]
    fn relays_tcp_to_tcp() {
        let registry = Registry::start().unwrap();
        let relay = Haproxy::to_tcp(registry.socket_addr()).start().unwrap();
        let v2 = HttpClient::plain()
            .get(&format!("http://{}/v2/", relay.addr()))
            .unwrap();
        assert_eq!(v2.status, 200);
    }
}
