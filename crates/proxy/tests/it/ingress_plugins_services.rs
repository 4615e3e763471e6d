//! The ingress gate on plugins and swarm services: the real docker CLI and raw requests through
//! the proxy to a real dockerd, with real registries on loopback (plain HTTP: dockerd treats
//! 127.0.0.0/8 as insecure). Each denial is shown with its exact text, never reaching dockerd
//! (its debug log has no `Calling …` line for it) nor the denied registry (its access log stays
//! silent); each allowed form is shown working.
//!
//! The proxy is pinned to VIC's API v1.25 here while the setup done directly against dockerd uses
//! the CLI's own version (v1.41), so `Calling POST /v1.25/…` lines are exactly those the proxy
//! forwarded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vch_testbed::{Dockerd, Registry, TestImage};

use crate::support::{Mode, Vch, audit_records, dockerd};

/// The pull denial text for a registry.
fn pull_denial(registry: &str) -> String {
    format!("Access denied to unauthorized registry ({registry}) while VCH is in whitelist mode")
}

const PLUGIN_CREATE_DENIAL: &str = "Plugin creation from an archive (docker plugin create) is not allowed while VCH is in whitelist mode: the content comes from no registry";
const PLUGIN_RUNTIME_DENIAL: &str = "Services with the plugin runtime are not allowed while VCH is in whitelist mode: plugins come from no whitelisted pull";

/// Runs a command, killing it if it does not end within `limit`.
fn bounded(cmd: &mut Command, limit: Duration) -> Output {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The docker CLI through the proxy, expected to fail with `message` on stderr.
fn docker_denied(vch: &Vch, args: &[&str], message: &str) {
    let out = bounded(vch.docker().args(args), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "docker {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&format!("Error response from daemon: {message}")),
        "docker {args:?}: expected {message:?}, got: {stderr}"
    );
}

/// Writes raw bytes (from a thread, so an early answer and close cannot block the writer) and
/// reads until the server closes or `limit` passes.
fn exchange(vch: &Vch, request: Vec<u8>, limit: Duration) -> String {
    let s = TcpStream::connect(vch.addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut out = Vec::new();
    let _ = (&s).read_to_end(&mut out);
    let _ = sender.join();
    String::from_utf8_lossy(&out).into_owned()
}

/// One request with `Connection: close`, `extra` header lines (each ending in CRLF) and a body
/// framed by Content-Length.
fn request(vch: &Vch, method: &str, target: &str, extra: &str, body: &[u8]) -> String {
    let mut bytes = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    exchange(vch, bytes, Duration::from_secs(30))
}

/// `POST /v1.25/services/create` with a JSON body.
fn create_service(vch: &Vch, body: &str) -> String {
    request(
        vch,
        "POST",
        "/v1.25/services/create",
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    )
}

/// The same body, sent chunked in `pieces` pieces of about equal size.
fn create_service_chunked(vch: &Vch, body: &str, pieces: usize) -> String {
    let mut bytes = b"POST /v1.25/services/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let size = body.len().div_ceil(pieces);
    for chunk in body.as_bytes().chunks(size) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    exchange(vch, bytes, Duration::from_secs(30))
}

fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"))
}

/// The `message` of the JSON body of a (single, non-chunked) response.
fn message(response: &str) -> String {
    let body = &response[response.find("\r\n\r\n").expect("a complete head") + 4..];
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("no JSON body ({e}) in {response:?}"));
    value["message"].as_str().unwrap_or_default().to_owned()
}

/// A raw answer that must be a 403 denial with exactly `text` as its message.
#[track_caller]
fn assert_denied(response: &str, text: &str) {
    assert_eq!(status(response), 403, "{response}");
    assert_eq!(message(response), text, "{response}");
}

/// How many API calls dockerd logged whose line contains every one of `needles`.
fn calls(dockerd: &Dockerd, needles: &[&str]) -> usize {
    dockerd
        .log()
        .lines()
        .filter(|l| l.contains("Calling ") && needles.iter().all(|n| l.contains(n)))
        .count()
}

/// The registry's requests logged after `mark` (a length of its log text).
fn requests_since(registry: &Registry, mark: usize) -> Vec<String> {
    registry.log()[mark..]
        .lines()
        .filter(|l| l.contains("/v2/"))
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) for an audit record matching `pred`: records are written just after the
/// response is flushed.
fn wait_audit(what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let started = Instant::now();
    while !audit_records().iter().any(&pred) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no audit record for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A managed-plugin directory: `config.json` (a volume driver that would run `sleep`, host
/// network) and a `rootfs/` holding a static busybox.
fn plugin_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("plugin");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"description":"vch test","documentation":"https://example.com","entrypoint":["/bin/sh","-c","sleep 1000"],"interface":{"types":["docker.volumedriver/1.0"],"socket":"vch.sock"},"network":{"type":"host"}}"#,
    )
    .unwrap();
    let tar = TestImage::busybox_rootfs().expect("busybox-static must be installed");
    let mut untar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&rootfs)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    untar.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(untar.wait().unwrap().success());
    assert!(rootfs.join("bin/sh").exists());
    dir
}

/// Plugins: installs (privileges, then pull) and upgrades decided by the remote's registry.
///
/// Managed plugins work on the testbed dockerd (vfs storage, no bridge): they are created,
/// pushed and installed disabled, never run. `docker plugin upgrade` is a v1.26 command the CLI
/// will not send to a v1.25 engine, so upgrades are sent raw.
#[test]
fn plugins_come_only_from_whitelisted_registries() {
    let started = Instant::now();
    let dockerd = dockerd();
    let a = Registry::start().expect("docker-registry from the testbed must start");
    let b = Registry::start().expect("docker-registry from the testbed must start");
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let b_port = b_addr.rsplit(':').next().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path());
    let dir = dir.to_str().unwrap();

    // The same plugin in both registries, built and pushed directly against dockerd.
    let on_a = format!("{a_addr}/vch/plugin:1");
    let on_b = format!("{b_addr}/vch/plugin:1");
    for name in [&on_a, &on_b] {
        dockerd.docker_ok(["plugin", "create", name, dir]).unwrap();
        dockerd.docker_ok(["plugin", "push", name]).unwrap();
        dockerd.docker_ok(["plugin", "rm", name]).unwrap();
    }
    let b_mark = b.log().len();
    // The proxy's calls naming B (the CLI URL-encodes `:` in remotes; raw requests do not),
    // but for one allowed request below that names A first.
    let a_then_b = format!("remote={on_a}&remote={on_b}");
    let reached_about_b = |dockerd: &Dockerd| -> Vec<String> {
        dockerd
            .log()
            .lines()
            .filter(|l| {
                l.contains("Calling ")
                    && l.contains("/v1.25/")
                    && l.contains(&b_port)
                    && !l.contains(&a_then_b)
            })
            .map(str::to_owned)
            .collect()
    };

    let vch = Vch::start_vic(&dockerd, Mode::Plain, &[a_addr.as_str()]);

    // Allowed: install from A (GET /plugins/privileges, then POST /plugins/pull).
    vch.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        &on_a,
    ]);
    let names = vch.docker_ok(&["plugin", "ls", "--format", "{{.Name}}"]);
    assert!(names.lines().any(|l| l == on_a), "{names}");
    assert_eq!(calls(&dockerd, &["GET /v1.25/plugins/privileges?"]), 1);
    assert_eq!(calls(&dockerd, &["POST /v1.25/plugins/pull?"]), 1);

    // Denied: the same plugin from B, refused at its first request (privileges).
    docker_denied(
        &vch,
        &[
            "plugin",
            "install",
            "--grant-all-permissions",
            "--disable",
            &on_b,
        ],
        &pull_denial(&b_addr),
    );
    // Each plugin route is decided on its own, with Go's reading of the query (the first of a
    // repeated key wins).
    let r = request(
        &vch,
        "POST",
        &format!("/v1.25/plugins/pull?remote={on_b}&name=from-b"),
        "",
        b"[]",
    );
    assert_denied(&r, &pull_denial(&b_addr));
    let r = request(
        &vch,
        "POST",
        &format!("/v1.25/plugins/pull?remote={on_b}&remote={on_a}&name=from-b"),
        "",
        b"[]",
    );
    assert_denied(&r, &pull_denial(&b_addr));
    let r = request(
        &vch,
        "GET",
        &format!("/v1.25/plugins/privileges?remote={on_b}"),
        "",
        b"",
    );
    assert_denied(&r, &pull_denial(&b_addr));
    let r = request(
        &vch,
        "GET",
        &format!("/v1.25/plugins/privileges?{a_then_b}"),
        "",
        b"",
    );
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains(r#""Name":"network""#), "{r}");

    // Upgrades: the CLI will not send one to a v1.25 engine ...
    let out = bounded(
        vch.docker()
            .args(["plugin", "upgrade", "--grant-all-permissions", &on_a, &on_b]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires API version 1.26"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... but dockerd serves `/v1.25/plugins/{name}/upgrade` all the same: sent raw, a remote
    // on B is refused, one on A goes through (the plugin is disabled, as an upgrade requires).
    let privileges = br#"[{"Name":"network","Description":"","Value":["host"]}]"#;
    let json = "Content-Type: application/json\r\n";
    let r = request(
        &vch,
        "POST",
        &format!("/v1.25/plugins/{on_a}/upgrade?remote={on_b}"),
        json,
        privileges,
    );
    assert_denied(&r, &pull_denial(&b_addr));
    assert_eq!(calls(&dockerd, &["/upgrade"]), 0);
    let r = request(
        &vch,
        "POST",
        &format!("/v1.25/plugins/{on_a}/upgrade?remote={on_a}"),
        json,
        privileges,
    );
    assert_eq!(status(&r), 200, "{r}");
    assert!(!r.contains("errorDetail"), "{r}");
    assert_eq!(
        calls(
            &dockerd,
            &[&format!("POST /v1.25/plugins/{on_a}/upgrade?remote={on_a}")]
        ),
        1
    );

    // Nothing about B reached dockerd or B.
    assert_eq!(reached_about_b(&dockerd), Vec::<String>::new());
    assert_eq!(calls(&dockerd, &[&a_then_b]), 1);
    assert_eq!(requests_since(&b, b_mark), Vec::<String>::new());

    wait_audit("the refused plugin pull from B", |r| {
        r["action"] == "pull"
            && r["allowed"] == false
            && r["image"].as_str().is_some_and(|i| i.contains(&b_addr))
    });

    // With whitelist mode off, an install from anywhere works.
    let open = Vch::start_vic(&dockerd, Mode::Plain, &[]);
    open.docker_ok(&[
        "plugin",
        "install",
        "--grant-all-permissions",
        "--disable",
        &on_b,
    ]);
    let names = open.docker_ok(&["plugin", "ls", "--format", "{{.Name}}"]);
    for name in [&on_a, &on_b] {
        assert!(names.lines().any(|l| l == name), "{name} in {names}");
    }
    assert!(!requests_since(&b, b_mark).is_empty());
    eprintln!("plugins test: {:?}", started.elapsed());
}

/// `docker plugin create` (the plugin's rootfs and config as a tar body from the client) comes
/// from no registry: refused in whitelist mode, allowed with whitelist mode off.
#[test]
fn plugin_create_needs_whitelist_mode_off() {
    let started = Instant::now();
    let dockerd = dockerd();
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path());
    let dir = dir.to_str().unwrap();
    let creates = |dockerd: &Dockerd| calls(dockerd, &["POST /v1.25/plugins/create"]);
    let vch = Vch::start_vic(&dockerd, Mode::Plain, &["reg.allowed.example"]);

    // The decision, raw (a small body: the answer does not depend on reading it).
    let r = request(
        &vch,
        "POST",
        "/v1.25/plugins/create?name=vch/raw:1",
        "Content-Type: application/x-tar\r\n",
        &[0u8; 1024],
    );
    assert_denied(&r, PLUGIN_CREATE_DENIAL);
    assert_eq!(creates(&dockerd), 0);
    wait_audit("the refused plugin create", |r| {
        r["action"] == "plugin-create" && r["allowed"] == false && r["status"] == 403
    });

    // Whitelist mode off: the CLI creates it.
    let open = Vch::start_vic(&dockerd, Mode::Plain, &[]);
    open.docker_ok(&["plugin", "create", "vch/local:1", dir]);
    assert_eq!(creates(&dockerd), 1);
    let names = open.docker_ok(&["plugin", "ls", "--format", "{{.Name}}"]);
    assert!(names.lines().any(|l| l == "vch/local:1"), "{names}");

    // Whitelist mode on: the CLI (sending a 2 MB tar) is told why, and dockerd sees nothing.
    docker_denied(
        &vch,
        &["plugin", "create", "vch/other:1", dir],
        PLUGIN_CREATE_DENIAL,
    );
    assert_eq!(creates(&dockerd), 1);
    eprintln!("plugin create test: {:?}", started.elapsed());
}

/// A ServiceSpec whose task runs `image`.
fn spec(image: &str) -> String {
    format!(r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image}"}}}}}}"#)
}

/// Creates a service directly on dockerd and returns the image it recorded.
fn image_dockerd_records(dockerd: &Dockerd, body: &str) -> String {
    let api = dockerd.api();
    let r = api
        .request(
            "POST",
            "http://docker/v1.25/services/create",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{body}: {}", r.text());
    let id: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = id["ID"].as_str().unwrap();
    let r = api
        .get(&format!("http://docker/v1.25/services/{id}"))
        .unwrap();
    let service: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Services: the task image decided as a pull on create and update, the plugin runtime refused,
/// and the JSON body read as dockerd's Go decoder reads it.
///
/// `docker swarm init` works on the testbed dockerd (`--bridge=none --iptables=false`, vfs):
/// with its own listen and data-path ports, so parallel swarms do not clash (the gossip port,
/// 7946, is fixed; a second swarm on the host only logs that it could not bind it). Services
/// are created for real; their tasks cannot pull (the images do not exist), which is not
/// looked at.
#[test]
fn services_run_only_whitelisted_images() {
    let started = Instant::now();
    let dockerd = dockerd();
    let a = Registry::start().expect("docker-registry from the testbed must start");
    let b = Registry::start().expect("docker-registry from the testbed must start");
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let port = vch_testbed::free_port().unwrap();
    let data_port = vch_testbed::free_port().unwrap().to_string();
    let swarm_addr = format!("127.0.0.1:{port}");
    dockerd
        .docker_ok([
            "swarm",
            "init",
            "--advertise-addr",
            &swarm_addr,
            "--listen-addr",
            &swarm_addr,
            "--data-path-port",
            &data_port,
        ])
        .expect("swarm init on the testbed dockerd");
    let b_mark = b.log().len();
    let creates = |dockerd: &Dockerd| calls(dockerd, &["POST /v1.25/services/create"]);
    let updates = |dockerd: &Dockerd| calls(dockerd, &["POST /v1.25/services/", "/update"]);

    let vch = Vch::start_vic(&dockerd, Mode::Plain, &[a_addr.as_str()]);
    let denied = pull_denial(&b_addr);

    // The CLI: create from A works; from B refused; an update to B refused, to A works.
    let image_a = format!("{a_addr}/x:1");
    let image_b = format!("{b_addr}/x:1");
    let id = vch.docker_ok(&["service", "create", "--name", "s1", &image_a]);
    assert!(!id.trim().is_empty());
    let listed = vch.docker_ok(&["service", "ls", "--format", "{{.Name}} {{.Image}}"]);
    assert!(listed.contains(&format!("s1 {image_a}")), "{listed}");
    assert_eq!(creates(&dockerd), 1);
    docker_denied(&vch, &["service", "create", &image_b], &denied);
    docker_denied(
        &vch,
        &[
            "service",
            "update",
            "--image",
            &format!("{b_addr}/x:2"),
            "s1",
        ],
        &denied,
    );
    assert_eq!((creates(&dockerd), updates(&dockerd)), (1, 0));
    vch.docker_ok(&[
        "service",
        "update",
        "--image",
        &format!("{a_addr}/x:2"),
        "s1",
    ]);
    assert_eq!(updates(&dockerd), 1);

    // Raw: the plugin runtime, by PluginSpec or Runtime, is refused whatever the image.
    for body in [
        format!(
            r#"{{"TaskTemplate":{{"PluginSpec":{{"Name":"p","Remote":"{a_addr}/vch/plugin:1"}},"Runtime":"plugin"}}}}"#
        ),
        format!(r#"{{"TaskTemplate":{{"PluginSpec":{{"Remote":"{a_addr}/vch/plugin:1"}}}}}}"#),
        format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}},"PluginSpec":{{"Name":"p"}}}}}}"#
        ),
        format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}},"Runtime":"plugin"}}}}"#
        ),
        format!(
            r#"{{"taskTemplate":{{"containerSpec":{{"image":"{image_a}"}},"runtime":"plugin"}}}}"#
        ),
    ] {
        assert_denied(&create_service(&vch, &body), PLUGIN_RUNTIME_DENIAL);
    }
    for runtime in ["weird", "PLUGIN"] {
        let body = format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}},"Runtime":"{runtime}"}}}}"#
        );
        assert_denied(
            &create_service(&vch, &body),
            &format!(
                r#"Services with runtime "{runtime}" are not allowed while VCH is in whitelist mode"#
            ),
        );
    }
    assert_eq!(creates(&dockerd), 1);
    wait_audit("a refused plugin-runtime service", |r| {
        r["action"] == "service-runtime" && r["allowed"] == false && r["status"] == 403
    });

    // Go's decoding: keys fold case (also ſ = s, K (U+212A) = k), `\u` escapes in keys, the
    // last duplicate wins and objects merge. Each body below makes dockerd run B's image
    // (checked directly against dockerd at the end), so each must be refused.
    let b_wins = [
        // The last duplicate wins, across a case difference.
        format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}}}},"taskTemplate":{{"containerSpec":{{"image":"{image_b}"}}}}}}"#
        ),
        // Objects merge: the second TaskTemplate does not drop the first one's image.
        format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_b}"}}}},"TaskTemplate":{{"ContainerSpec":{{"Env":["A=1"]}},"Runtime":"container"}}}}"#
        ),
        // ſ (U+017F) folds to s.
        format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}}}},"TaſkTemplate":{{"ContainerSpec":{{"Image":"{image_b}"}}}}}}"#
        ),
        // The Kelvin sign (U+212A) folds to k.
        format!(
            "{{\"TaskTemplate\":{{\"ContainerSpec\":{{\"Image\":\"{image_a}\"}}}},\"Tas\u{212A}Template\":{{\"ContainerSpec\":{{\"Image\":\"{image_b}\"}}}}}}"
        ),
        // An escaped key.
        format!(
            r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}","\u0049mage":"{image_b}"}}}}}}"#
        ),
        format!(
            r#"{{"TaskTemplate":{{"\u0043ontainer\u0053pec":{{"Image":"{image_a}","IMAGE":"{image_b}"}}}}}}"#
        ),
    ];
    for body in &b_wins {
        assert_denied(&create_service(&vch, body), &denied);
    }
    // An update is read the same way.
    let r = request(
        &vch,
        "POST",
        "/v1.25/services/s1/update?version=1",
        "Content-Type: application/json\r\n",
        b_wins[0].as_bytes(),
    );
    assert_denied(&r, &denied);
    // The other order: A is decided, and dockerd creates the service with A's image.
    let a_wins = format!(
        r#"{{"taskTemplate":{{"containerSpec":{{"image":"{image_b}"}}}},"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}}}}}}"#
    );
    let r = create_service(&vch, &a_wins);
    assert_eq!(status(&r), 201, "{r}");
    assert_eq!(creates(&dockerd), 2);

    // Bodies: chunked is decided as a plain body is (here cut inside the keys and values).
    assert_denied(&create_service_chunked(&vch, &spec(&image_b), 7), &denied);
    assert_denied(&create_service_chunked(&vch, &b_wins[0], 13), &denied);
    let r = create_service_chunked(&vch, &spec(&image_a), 7);
    assert_eq!(status(&r), 201, "{r}");
    assert_eq!(creates(&dockerd), 3);
    // Over 1 MiB: 413, by Content-Length or chunked.
    let big = format!(
        r#"{{"Labels":{{"pad":"{}"}},"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}}}}}}"#,
        "x".repeat(1024 * 1024 + 16)
    );
    let r = create_service(&vch, &big);
    assert_eq!(status(&r), 413, "{}", &r[..r.len().min(600)]);
    let r = create_service_chunked(&vch, &big, 40);
    assert_eq!(status(&r), 413, "{}", &r[..r.len().min(600)]);
    // A form body would be merged into dockerd's parameters: 400, whatever the body says.
    for content_type in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-URLEncoded; charset=utf-8",
        "multipart/form-data; boundary=x",
    ] {
        let r = request(
            &vch,
            "POST",
            "/v1.25/services/create",
            &format!("Content-Type: {content_type}\r\n"),
            spec(&image_a).as_bytes(),
        );
        assert_eq!(status(&r), 400, "{content_type}: {r}");
    }
    // Unparsable or wrong-typed: 400.
    for body in [
        format!(r#"{{"TaskTemplate":{{"ContainerSpec":{{"Image":"{image_a}"}}"#),
        r#"{"TaskTemplate":[]}"#.to_owned(),
        r#"{"TaskTemplate":{"ContainerSpec":{"Image":7}}}"#.to_owned(),
    ] {
        let r = create_service(&vch, &body);
        assert_eq!(status(&r), 400, "{body}: {r}");
    }
    assert_eq!(creates(&dockerd), 3);

    // Pipelined requests are each decided: A created, then B refused.
    let mut two = Vec::new();
    for (body, last) in [(spec(&image_a), false), (spec(&image_b), true)] {
        two.extend_from_slice(
            format!(
                "POST /v1.25/services/create HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                if last { "Connection: close\r\n" } else { "" },
                body.len()
            )
            .as_bytes(),
        );
    }
    let r = exchange(&vch, two, Duration::from_secs(30));
    let (created, refused) = (
        r.find("HTTP/1.1 201").expect(&r),
        r.find("HTTP/1.1 403").expect(&r),
    );
    assert!(created < refused, "{r}");
    assert!(r.contains(&denied), "{r}");
    assert_eq!(creates(&dockerd), 4);

    // Nothing about B reached dockerd or B.
    assert_eq!(updates(&dockerd), 1);
    assert_eq!(requests_since(&b, b_mark), Vec::<String>::new());
    wait_audit("a refused service image from B", |r| {
        r["action"] == "pull"
            && r["allowed"] == false
            && r["image"].as_str().is_some_and(|i| i.contains(&b_addr))
    });

    // The oracle: dockerd itself reads each refused body as B's image, and the allowed one as
    // A's.
    for body in &b_wins {
        let image = image_dockerd_records(&dockerd, body);
        assert!(image.starts_with(&image_b), "{body} ran {image}");
    }
    let image = image_dockerd_records(&dockerd, &a_wins);
    assert!(image.starts_with(&image_a), "{a_wins} ran {image}");

    // A rollback deploys the previous spec, whatever the body says: it is decided again. s2 was
    // created with B's image directly on dockerd (not through the VCH), then moved to A's.
    dockerd
        .docker_ok(["service", "create", "--detach", "--name", "s2", &image_b])
        .unwrap();
    dockerd
        .docker_ok(["service", "update", "--detach", "--image", &image_a, "s2"])
        .unwrap();
    // The CLI sends the current spec along; dockerd checks it even though it deploys the
    // previous one.
    let rollback = |name: &str| {
        let inspect = |format: &str| {
            dockerd
                .docker_ok(["service", "inspect", "--format", format, name])
                .unwrap()
        };
        let version = inspect("{{.Version.Index}}");
        let spec = inspect("{{json .Spec}}");
        let target = format!(
            "/v1.25/services/{name}/update?version={}&rollback=previous",
            version.trim()
        );
        request(
            &vch,
            "POST",
            &target,
            "Content-Type: application/json\r\n",
            spec.trim().as_bytes(),
        )
    };
    let before = updates(&dockerd);
    assert_denied(&rollback("s2"), &denied);
    assert_eq!(
        updates(&dockerd),
        before,
        "the refused rollback reached dockerd"
    );
    // s1's previous spec is A's first image: its rollback goes through.
    let r = rollback("s1");
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(updates(&dockerd), before + 1);
    eprintln!("services test: {:?}", started.elapsed());
}
