//! Docker API versions (issue 12): `create --api-version` (VIC's strict mode) into `vch.toml`
//! and the env file, the range `serve` serves and prints for the testbed's dockerd 20.10 (API
//! 1.12 to 1.41), `/version` through the VCH, the docker CLI against a pinned VCH with the env
//! file's settings, `inspect --connect`, and the warnings for an engine whose minimum is higher.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use vch_admin::config::VchConfig;
use vch_testbed::Dockerd;

use super::create::{create, inspect_json, run_ok, vch_admin};
use super::serve::{Serving, docker_with_env, signal};

/// `vch-admin serve DIR` with its stderr lines on a channel; returns once the start line (which
/// says the range) is out, with it.
fn serve(dir: &Path) -> (Serving, String, Receiver<String>) {
    let mut child = vch_admin()
        .arg("serve")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serving = Serving(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(banner.contains("serves Docker API"), "{banner}");
    (serving, banner, rx)
}

/// The stderr lines that follow within a moment.
fn more_lines(rx: &Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    lines
}

/// `GET path` over plain TCP: the head and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// `ApiVersion` and `MinAPIVersion` of `GET /version` through the VCH.
fn version_through(port: u16) -> (String, String) {
    let (head, body) = get(port, "/version");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    // The JSON object, whatever the framing (chunk sizes are outside the braces).
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    let field = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    (field("ApiVersion"), field("MinAPIVersion"))
}

/// A plain-TCP VCH on a free loopback port in front of `docker_host`.
fn plain_vch(parent: &Path, name: &str, docker_host: &str, extra: &[&str]) -> (PathBuf, u16) {
    let port = vch_testbed::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--no-tls",
        "--no-registry-probe",
        "--listen",
        &listen,
        "--docker-host",
        docker_host,
    ];
    args.extend_from_slice(extra);
    (create(parent, name, &args), port)
}

#[test]
fn create_api_version_pins_vch_toml_and_the_env_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vic");
    let out = run_ok(&[
        "create",
        "--name",
        "vic",
        "--tls-cname",
        "127.0.0.1",
        "--no-registry-probe",
        "--api-version",
        "1.25",
        "--cert-path",
        dir.to_str().unwrap(),
    ]);
    for want in [
        "Docker API: 1.24 to 1.25 (pinned; the env file sets DOCKER_API_VERSION=1.25)\n",
        "  DOCKER_API_VERSION=1.25 docker -H tcp://127.0.0.1:2376 --tlsverify",
        "  export DOCKER_API_VERSION=1.25\n",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let text = std::fs::read_to_string(dir.join("vch.toml")).unwrap();
    assert!(text.contains("\n[api]\nversion = \"1.25\"\n"), "{text}");
    let config = VchConfig::from_toml(&text, Path::new("vch.toml")).unwrap();
    assert_eq!(config.api.version, Some(vch_proxy::VIC_API_VERSION));
    assert_eq!(
        config.to_toml().unwrap(),
        text,
        "a round trip changes nothing"
    );
    let env = std::fs::read_to_string(dir.join("vic.env")).unwrap();
    assert!(
        env.starts_with("DOCKER_HOST=tcp://127.0.0.1:2376\nDOCKER_TLS_VERIFY=1\n")
            && env.ends_with("COMPOSE_TLS_VERSION=TLSv1_2\nDOCKER_API_VERSION=1.25\n"),
        "{env}"
    );
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["config"]["api"]["version"], "1.25");
    let text = run_ok(&["inspect", dir.to_str().unwrap()]);
    assert!(
        text.contains(
            "  API version: 1.24 to 1.25 (pinned; clients set DOCKER_API_VERSION=1.25)\n"
        ),
        "{text}"
    );

    // Every mode's env file carries it; the top of the audited range is accepted.
    let dir = create(
        tmp.path(),
        "plain",
        &["--no-tls", "--no-registry-probe", "--api-version", "1.55"],
    );
    let env = std::fs::read_to_string(dir.join("plain.env")).unwrap();
    assert_eq!(
        env,
        "DOCKER_HOST=tcp://127.0.0.1:2375\nDOCKER_API_VERSION=1.55\n"
    );

    // Not pinned: no [api] section, no DOCKER_API_VERSION, clients negotiate.
    let dir = tmp.path().join("free");
    let out = run_ok(&[
        "create",
        "--name",
        "free",
        "--no-tls",
        "--no-registry-probe",
        "--cert-path",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.contains("Docker API: 1.24 up to the engine's newest (at most 1.55)"),
        "{out}"
    );
    assert!(!out.contains("DOCKER_API_VERSION"), "{out}");
    let text = std::fs::read_to_string(dir.join("vch.toml")).unwrap();
    assert!(!text.contains("[api]"), "{text}");
    let env = std::fs::read_to_string(dir.join("free.env")).unwrap();
    assert!(!env.contains("DOCKER_API_VERSION"), "{env}");
    let (_, json) = inspect_json(&dir, &[]);
    assert!(json["config"].get("api").is_none(), "{json:#}");
}

#[test]
fn serve_serves_the_engines_range_and_a_pin_after_a_reload() {
    let dockerd =
        Dockerd::start().expect("dockerd from the testbed must start (apt-get install docker.io)");
    let tmp = tempfile::tempdir().unwrap();
    let (dir, port) = plain_vch(tmp.path(), "range", &dockerd.host(), &[]);
    let (serving, banner, rx) = serve(&dir);
    assert!(
        banner.contains("serves Docker API 1.24 to 1.41 (engine 1.12 to 1.41) on 127.0.0.1:"),
        "{banner}"
    );
    // dockerd 20.10's minimum is 1.12: nothing to warn about.
    assert_eq!(more_lines(&rx), Vec::<String>::new());
    assert_eq!(version_through(port), ("1.41".into(), "1.24".into()));
    let (head, _) = get(port, "/_ping");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\napi-version: 1.41\r\n"),
        "{head}"
    );

    // VIC's strict mode, set by hand and reloaded: the pin is read again.
    let config = dir.join("vch.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[api]\nversion = \"1.25\"\n");
    std::fs::write(&config, text).unwrap();
    signal(&serving.0, "-HUP");
    let reloaded = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        reloaded.contains("reloaded")
            && reloaded
                .ends_with("serves Docker API 1.24 to 1.25 (pinned to 1.25; engine 1.12 to 1.41)"),
        "{reloaded}"
    );
    assert_eq!(version_through(port), ("1.25".into(), "1.24".into()));
    let (head, _) = get(port, "/_ping");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\napi-version: 1.25\r\n"),
        "{head}"
    );

    // A version outside the range in the file: the reload is refused, the pin stays.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("version = \"1.25\"", "version = \"1.23\"");
    std::fs::write(&config, text).unwrap();
    signal(&serving.0, "-HUP");
    let failed = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(failed.contains("reload failed"), "{failed}");
    // TOML's error spans lines: the snippet, then the reason.
    let reason = more_lines(&rx).join("\n");
    assert!(
        reason.contains("API version 1.23 is older than the oldest a VCH serves"),
        "{failed}\n{reason}"
    );
    assert_eq!(version_through(port), ("1.25".into(), "1.24".into()));
}

#[test]
fn docker_cli_speaks_a_pinned_vch_with_the_env_file() {
    let dockerd =
        Dockerd::start().expect("dockerd from the testbed must start (apt-get install docker.io)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vic");
    let port = vch_testbed::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    run_ok(&[
        "create",
        "--name",
        "vic",
        "--tls-cname",
        "127.0.0.1",
        "--no-registry-probe",
        "--api-version",
        "1.25",
        "--listen",
        &addr,
        "--docker-host",
        &dockerd.host(),
        "--cert-path",
        dir.to_str().unwrap(),
    ]);
    let (_serving, banner, _rx) = serve(&dir);
    assert!(
        banner.contains("serves Docker API 1.24 to 1.25 (pinned to 1.25; engine 1.12 to 1.41)"),
        "{banner}"
    );

    // Only the env file's variables (DOCKER_HOST, the TLS trio, DOCKER_API_VERSION).
    let env_file = dir.join("vic.env");
    let out = docker_with_env(
        &env_file,
        dockerd.docker_config_dir(),
        &[
            "version",
            "--format",
            "{{.Client.APIVersion}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1.25 1.25 1.24"
    );

    // inspect --connect reads the same range through the VCH.
    let (code, json) = inspect_json(&dir, &["--connect", &addr]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["connect"]["ok"], true);
    assert_eq!(
        json["connect"]["api"],
        serde_json::json!({"min": "1.24", "max": "1.25"}),
        "{json:#}"
    );
    let text = run_ok(&["inspect", dir.to_str().unwrap(), "--connect", &addr]);
    assert!(
        text.contains("  Docker API: 1.24 to 1.25 (GET /version"),
        "{text}"
    );
}

/// A stand-in engine on a unix socket whose `/version` says `min` to `max`, as Docker 29 does
/// (`MinAPIVersion` 1.44). The testbed's dockerd 20.10 cannot stand in: its minimum is fixed at
/// 1.12 (it predates `DOCKER_MIN_API_VERSION`, moby#46887 in Docker 25.0), and the testbed
/// starts it without a way to set its environment.
fn fake_engine(dir: &Path, min: &str, max: &str) -> String {
    let path = dir.join("engine.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let body =
        format!("{{\"Version\":\"29.0.0\",\"ApiVersion\":\"{max}\",\"MinAPIVersion\":\"{min}\"}}");
    let max = max.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let (body, max) = (body.clone(), max.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nApi-Version: {max}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("unix://{}", path.display())
}

#[test]
fn an_engine_that_refuses_old_clients_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = fake_engine(tmp.path(), "1.44", "1.52");

    let (dir, _) = plain_vch(tmp.path(), "new", &engine, &[]);
    let (_serving, banner, rx) = serve(&dir);
    assert!(
        banner.contains("serves Docker API 1.44 to 1.52 (engine 1.44 to 1.52)"),
        "{banner}"
    );
    let lines = more_lines(&rx);
    assert_eq!(lines.len(), 1, "{lines:?}");
    for want in [
        "vch-admin: warning: the Docker engine refuses API versions below 1.44",
        "DOCKER_MIN_API_VERSION=1.24 in dockerd's environment",
        "\"min-api-version\": \"1.24\" in /etc/docker/daemon.json",
    ] {
        assert!(lines[0].contains(want), "{want}: {lines:?}");
    }

    // Pinned to VIC's 1.25 below the engine's minimum: nothing can be served.
    let (dir, _) = plain_vch(tmp.path(), "vic", &engine, &["--api-version", "1.25"]);
    let (_serving, banner, rx) = serve(&dir);
    assert!(
        banner.contains("serves Docker API none (pinned to 1.25; engine 1.44 to 1.52)"),
        "{banner}"
    );
    let lines = more_lines(&rx);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "vch-admin: error: [api] version = \"1.25\" is below the Docker engine's minimum \
             API version 1.44: every request will be refused; set DOCKER_MIN_API_VERSION=1.24"
        ),
        "{lines:?}"
    );
}
