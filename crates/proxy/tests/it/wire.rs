//! Raw bytes over real sockets: refusals, framing, limits, upstream failures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Mode, Vch, dockerd};

/// Sends raw bytes and reads until the server closes or 5 s pass.
fn exchange(vch: &Vch, request: &[u8]) -> String {
    let mut s = TcpStream::connect(vch.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn request(vch: &Vch, method: &str, target: &str, extra: &str) -> String {
    exchange(
        vch,
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

#[test]
fn refusals_are_docker_shaped() {
    let dockerd = dockerd();
    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.allowed.example"]);

    // dockerd 20.10 serves up to 1.41: so does the VCH.
    let r = request(&vch, "GET", "/v1.42/info", "");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains(
            r#"{"message":"client version 1.42 is too new. Maximum supported API version is 1.41"}"#
        ),
        "{r}"
    );

    let r = request(&vch, "POST", "/v1.25/session", "Content-Length: 0\r\n");
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("not part of Docker API v1.25"),
        "{r}"
    );

    // Unversioned paths are served at the ceiling, and every answer says so.
    let r = request(&vch, "GET", "/_ping", "");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.to_ascii_lowercase().contains("api-version: 1.41"),
        "{r}"
    );
    let r = request(&vch, "GET", "/version", "");
    assert!(r.contains(r#""ApiVersion":"1.41""#), "{r}");
    assert!(r.contains(r#""MinAPIVersion":"1.24""#), "{r}");

    // h2c upgrades and HTTP/2 prior knowledge are refused.
    let r = request(
        &vch,
        "GET",
        "/_ping",
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = exchange(&vch, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(!r.contains("200 OK"), "{r}");

    // Pull gate: denial text, 403; parameters read as dockerd reads them.
    let r = request(
        &vch,
        "POST",
        "/v1.25/images/create?fromImage=evil.example%2Fx&tag=1",
        "Content-Length: 0\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(
        r.contains(
            "Access denied to unauthorized registry (evil.example) while VCH is in whitelist mode"
        ),
        "{r}"
    );
    // dockerd uses the first fromImage: a second, allowed one must not launder the first.
    let r = request(
        &vch,
        "POST",
        "/images/create?fromImage=evil.example/x&fromImage=reg.allowed.example/x",
        "Content-Length: 0\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // A form body would be merged into dockerd's parameters: refused.
    let body = "fromImage=evil.example/x";
    let r = request(
        &vch,
        "POST",
        "/images/create?fromImage=reg.allowed.example/x",
        &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Non-canonical paths cannot route around the gate.
    for path in [
        "//images/create?fromImage=evil.example/x",
        "/v1.25/images/./create?fromImage=evil.example/x",
        "/v1.25/x/../images/create?fromImage=evil.example/x",
    ] {
        let r = request(&vch, "POST", path, "Content-Length: 0\r\n");
        assert!(r.starts_with("HTTP/1.1 400"), "{path}: {r}");
    }
    let r = request(
        &vch,
        "POST",
        "/v1.25/%69mages/create?fromImage=evil.example/x",
        "Content-Length: 0\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");

    // Login gate by serveraddress.
    let body = r#"{"username":"u","password":"p","serveraddress":"https://evil.example/v1/"}"#;
    let r = request(
        &vch,
        "POST",
        "/v1.25/auth",
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("(evil.example)"),
        "{r}"
    );
    assert!(!dockerd.log().contains("evil.example"));
}

#[test]
fn slow_headers_are_cut_off() {
    let dockerd = dockerd();
    let vch = Vch::start(&dockerd, Mode::Plain, &[]);
    let mut s = TcpStream::connect(vch.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n").unwrap();
    // The test server's header timeout is 2 s: the connection must be closed, not kept waiting.
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let _ = s.read_to_end(&mut out);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a slow client held the connection"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("200 OK"), "{text}");
}

#[test]
fn an_unreachable_engine_is_a_502_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/nothing.sock", dir.path().display());
    let vch = Vch::start_with(host.clone(), dir.path(), Mode::Plain, &[]);
    let r = request(&vch, "GET", "/v1.25/info", "");
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(r.contains(&host), "{r}");
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unix-socket relay in front of the real dockerd that counts the proxy's open engine
/// connections exactly (counting dockerd's own sockets races with its containerd traffic).
struct EngineRelay {
    host: String,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EngineRelay {
    fn start(dir: &std::path::Path, engine: std::path::PathBuf) -> EngineRelay {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let path = dir.join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = open.clone();
        std::thread::spawn(move || {
            for proxy_side in listener.incoming() {
                let Ok(proxy_side) = proxy_side else { return };
                let Ok(engine_side) = UnixStream::connect(&engine) else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let (mut from_proxy, mut to_engine) = (
                    proxy_side.try_clone().unwrap(),
                    engine_side.try_clone().unwrap(),
                );
                let (mut from_engine, mut to_proxy) = (engine_side, proxy_side);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_engine, &mut to_proxy);
                    let _ = to_proxy.shutdown(std::net::Shutdown::Write);
                });
                let counter = counter.clone();
                std::thread::spawn(move || {
                    // The proxy closing its side ends this copy: that is the close we count.
                    let _ = std::io::copy(&mut from_proxy, &mut to_engine);
                    let _ = to_engine.shutdown(std::net::Shutdown::Both);
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        EngineRelay {
            host: format!("unix://{}", path.display()),
            open,
        }
    }

    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_client_disconnect_closes_the_engine_connection() {
    let dockerd = dockerd();
    let dir = tempfile::tempdir().unwrap();
    let relay = EngineRelay::start(dir.path(), dockerd.socket_path().to_path_buf());
    let vch = Vch::start_with(
        relay.host.clone(),
        dockerd.docker_config_dir(),
        Mode::Plain,
        &[],
    );
    let mut s = TcpStream::connect(vch.addr).unwrap();
    s.write_all(b"GET /v1.25/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(
        relay.open(),
        1,
        "the events stream goes over one engine connection"
    );
    drop(s);
    wait_for("the engine connection to close", || relay.open() == 0);
    wait_for("the proxy to forget the connection", || {
        vch.handle.live_connections() == 0
    });
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let dockerd = dockerd();
    let options = vch_proxy::Options {
        max_connections: 2,
        ..vch_proxy::Options::default()
    };
    let upstream = vch_proxy::Upstream::parse(&dockerd.host(), None).unwrap();
    let vch = Vch::start_opts(
        upstream,
        dockerd.docker_config_dir(),
        Mode::Plain,
        &[],
        options,
    );
    let ping = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n";
    let first = TcpStream::connect(vch.addr).unwrap();
    let mut second = TcpStream::connect(vch.addr).unwrap();
    second.write_all(ping).unwrap();
    let mut buf = [0u8; 12];
    second.read_exact(&mut buf).unwrap();
    wait_for("two live connections", || {
        vch.handle.live_connections() == 2
    });
    let mut third = TcpStream::connect(vch.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    third.write_all(ping).unwrap();
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection was served beyond the limit"
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[test]
fn audit_records_count_bytes_and_time() {
    let dockerd = dockerd();
    let vch = Vch::start(&dockerd, Mode::Plain, &[]);
    let body = r#"{"Image":"none-such-image","Cmd":["true"]}"#;
    let r = request(
        &vch,
        "POST",
        "/v1.25/containers/create?name=vch-audit-bytes",
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    wait_for("the audit record", || {
        crate::support::audit_records()
            .iter()
            .any(|rec| rec["path"] == "/v1.25/containers/create?name=vch-audit-bytes")
    });
    let rec = crate::support::audit_records()
        .into_iter()
        .find(|rec| rec["path"] == "/v1.25/containers/create?name=vch-audit-bytes")
        .unwrap();
    assert_eq!(rec["method"], "POST");
    assert_eq!(rec["status"], 404);
    assert_eq!(rec["api_version"], "1.25");
    assert_eq!(rec["bytes_in"], body.len());
    assert!(rec["bytes_out"].as_u64().unwrap() > 10);
    assert!(rec["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(rec["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(rec["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn an_engine_behind_mutual_tls_is_reached_with_a_client_certificate() {
    let certs = crate::support::Certs::new("vch-proxy-to-engine");
    let dockerd = vch_testbed::Dockerd::builder()
        .tls(vch_testbed::DockerdTls {
            ca: certs.path("ca.pem"),
            cert: certs.path("server-cert.pem"),
            key: certs.path("server-key.pem"),
        })
        .start()
        .expect("dockerd from the testbed must start (apt-get install docker.io)");
    let engine = dockerd.tcp_addr().unwrap();
    let client = vch_pki::client_config(
        &certs.path("ca.pem"),
        Some((&certs.path("cert.pem"), &certs.path("key.pem"))),
    )
    .unwrap();
    let info_via = |client: rustls::ClientConfig| {
        let tls = Some(std::sync::Arc::new(client));
        let upstream = vch_proxy::Upstream::parse(&format!("tcp://{engine}"), tls).unwrap();
        let options = vch_proxy::Options::default();
        let vch = Vch::start_opts(
            upstream,
            dockerd.docker_config_dir(),
            Mode::Plain,
            &[],
            options,
        );
        request(&vch, "GET", "/v1.25/info", "")
    };
    let r = info_via(client);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("ServerVersion"),
        "{r}"
    );
    // Without a client certificate the engine refuses the proxy: a 502 naming it.
    let r = info_via(vch_pki::client_config(&certs.path("ca.pem"), None).unwrap());
    assert!(
        r.starts_with("HTTP/1.1 502") && r.contains(&engine.to_string()),
        "{r}"
    );
}

/// Reads from a stream until `needle` shows up; the stream ending first is a failure.
fn read_until(stream: &mut TcpStream, needle: &str, what: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(n > 0, "{what}: closed before `{needle}`");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn reload_keeps_live_streams_and_applies_to_new_requests() {
    let dockerd = dockerd();
    let image = vch_testbed::TestImage::busybox(&dockerd).unwrap();
    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.before.example"]);
    let mut events = TcpStream::connect(vch.addr).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    events.write_all(b"GET /v1.25/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    events.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let policy = vch_policy::PolicyBuilder::new()
        .whitelist("reg.after.example")
        .build()
        .unwrap();
    let upstream = vch_proxy::Upstream::parse(&dockerd.host(), None).unwrap();
    vch.handle
        .reload(vch_proxy::Settings::new(upstream, policy));

    // The stream opened before the reload still delivers events.
    dockerd
        .docker_ok(["run", "--rm", "--name", "vch-reload-event", &image, "true"])
        .unwrap();
    read_until(
        &mut events,
        "vch-reload-event",
        "the events stream across the reload",
    );
    // New requests use the new policy.
    let r = request(
        &vch,
        "POST",
        "/images/create?fromImage=reg.before.example/x",
        "Content-Length: 0\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
}

#[test]
fn shutdown_stops_accepting_and_lets_requests_finish() {
    let dockerd = dockerd();
    let image = vch_testbed::TestImage::busybox(&dockerd).unwrap();
    let id = dockerd
        .docker_ok(["run", "-d", &image, "sleep", "2"])
        .unwrap();
    let id = id.trim();
    let vch = Vch::start(&dockerd, Mode::Plain, &[]);
    // A request in flight: wait for the container to exit (about 2 s).
    let mut waiting = TcpStream::connect(vch.addr).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    waiting
        .write_all(
            format!(
                "POST /v1.25/containers/{id}/wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    wait_for("the request to reach the proxy", || {
        vch.handle.live_connections() == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    vch.handle.shutdown();
    std::thread::sleep(Duration::from_millis(200));
    // No new connections are served.
    let refused = match TcpStream::connect(vch.addr) {
        Err(_) => true,
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut b = [0u8; 1];
            !matches!(s.read(&mut b), Ok(1))
        }
    };
    assert!(refused, "a new connection was served after shutdown");
    // The request in flight still gets its answer.
    let answer = read_until(&mut waiting, "StatusCode", "the in-flight request");
    assert!(answer.starts_with("HTTP/1.1 200"));
}

/// An engine that answers one request per connection and then closes it: the proxy's kept
/// connection is stale at the next request. A body-less GET is sent again on a new connection;
/// anything else gets a 502 (dockerd may have acted on it).
#[test]
fn a_stale_engine_connection_is_retried_for_gets_only() {
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            // The proxy's own question for the engine's API versions is not a client request.
            if !head.starts_with(b"GET /version ") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
            // Dropped: closed right after its one answer.
        }
    });
    let vch = Vch::start_with(
        format!("unix://{}", socket.display()),
        dir.path(),
        Mode::Plain,
        &[],
    );

    let mut client = TcpStream::connect(vch.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut ask = |request: &str| {
        client.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Each answer here is one short read away from complete: head and a 2-byte body, or a
        // 502's JSON message.
        while !(answer.ends_with(b"OK") || answer.ends_with(b"}\n") || answer.ends_with(b"}")) {
            let n = client.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "connection closed: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let get = "GET /v1.25/info HTTP/1.1\r\nHost: x\r\n\r\n";
    let first = ask(get);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = ask(get);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "no new engine connection for the retry"
    );
    let post =
        ask("POST /v1.25/containers/abc/start HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 502"), "{post}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a POST was sent again");
}

#[test]
fn audit_mode_decides_logs_and_lets_through() {
    let dockerd = dockerd();
    let config = vch_policy::RegistryConfig {
        whitelist: vec!["reg.allowed.example".to_owned()],
        mode: vch_policy::EnforcementMode::Audit,
        ..vch_policy::RegistryConfig::default()
    };
    let vch = Vch::start_config(&dockerd, Mode::Plain, &config);
    // The pull is denied by the policy, yet forwarded: dockerd answers it (with its own error,
    // as the name does not resolve).
    let r = request(
        &vch,
        "POST",
        "/v1.25/images/create?fromImage=audit-mode.invalid%2Fx&tag=1",
        "Content-Length: 0\r\n",
    );
    assert!(!r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(dockerd.log().contains("audit-mode.invalid"));
    let records = crate::support::audit_records();
    let record = records
        .iter()
        .find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains("audit-mode.invalid"))
        })
        .expect("an audit record for the pull");
    assert_eq!(record["allowed"], false);
    assert_eq!(record["would_deny"], true);
    assert_eq!(record["mode"], "audit");
    assert_eq!(record["route"], "images/create");
    assert_eq!(record["action"], "pull");
    assert_eq!(record["registry"], "audit-mode.invalid");
    // /info shows the mode.
    let r = request(&vch, "GET", "/v1.25/info", "");
    assert!(r.contains("vch.registry.policy-mode=audit"), "{r}");
    assert!(
        r.contains("vch.registry.whitelist=reg.allowed.example"),
        "{r}"
    );
}

/// Routes that v1.25 does not have stay refused there, and BuildKit's doors at every version, so no
/// later change lets one through unnoticed: one row per route.
#[test]
fn routes_newer_than_the_api_are_refused() {
    let dockerd = dockerd();
    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.allowed.example"]);
    for (method, path) in [
        ("GET", "/v1.25/distribution/reg.allowed.example/x/json"),
        ("POST", "/v1.25/session"),
        ("POST", "/session"),
        ("POST", "/v1.25/grpc"),
        ("POST", "/grpc"),
        ("GET", "/v1.25/configs"),
        ("POST", "/v1.25/configs/create"),
        ("GET", "/v1.25/configs/abc"),
        ("POST", "/v1.25/build/prune"),
        ("POST", "/v1.25/build/cancel"),
        ("GET", "/v1.25/tasks/abc/logs"),
        ("POST", "/v1.25/swarm/ca"),
        ("GET", "/v1.25/swarm/join-tokens"),
        ("PUT", "/v1.25/volumes/abc"),
        ("GET", "/v1.25/images/busybox/attestations"),
    ] {
        let r = request(&vch, method, path, "Content-Length: 0\r\n");
        assert!(
            r.starts_with("HTTP/1.1 404") && r.contains("is not part of Docker API v1."),
            "{method} {path}: {r}"
        );
    }
    let log = dockerd.log();
    for needle in [
        "/distribution",
        "/session",
        "/grpc",
        "/configs",
        "/build/",
        "/swarm/ca",
    ] {
        assert!(
            !log.lines()
                .any(|l| l.contains("Calling") && l.contains(needle)),
            "{needle} reached dockerd"
        );
    }
}

/// Joining another swarm would let its managers schedule services here whose images never pass
/// this endpoint: refused in whitelist mode, forwarded with whitelist mode off.
#[test]
fn swarm_join_is_refused_in_whitelist_mode() {
    let dockerd = dockerd();
    let body = r#"{"ListenAddr":"127.0.0.1:1","RemoteAddrs":["127.0.0.1:2"],"JoinToken":"x"}"#;
    let join = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.allowed.example"]);
    let r = request(&vch, "POST", "/v1.25/swarm/join", &join);
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("Joining a swarm (docker swarm join)"),
        "{r}"
    );
    assert!(!dockerd.log().contains("Calling POST /v1.25/swarm/join"));
    drop(vch);
    let open = Vch::start(&dockerd, Mode::Plain, &[]);
    let r = request(&open, "POST", "/v1.25/swarm/join", &join);
    assert!(!r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(dockerd.log().contains("Calling POST /v1.25/swarm/join"));
}
