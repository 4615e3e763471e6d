//! API versions end to end: the range a VCH accepts (1.24 up to the lower of the engine's
//! `ApiVersion`, the audited ceiling and an optional pin), routes added after 1.25 served from
//! their own version, BuildKit refused at every version, and real clients at each version: the
//! docker CLI pinned with `DOCKER_API_VERSION` and negotiating, and docker-py with
//! `version="auto"` over mutual TLS.
//!
//! dockerd here is 20.10 (API 1.12 to 1.41), so the range is 1.24 to 1.41. Its debug log
//! (`Calling METHOD TARGET`) shows the version every forwarded request arrived at, and proves
//! that refused requests never reached it: raw requests carry a token of their own (`vt=…`).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::Location;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vch_policy::{EnforcementMode, RegistryConfig};
use vch_testbed::{Dockerd, Registry, TestImage};

use crate::support::{Mode, Vch, dockerd};

/// The ceiling against dockerd 20.10: its `ApiVersion`, below the audited 1.55.
const CEILING: &str = "1.41";
/// The ceiling's minor version.
const CEILING_MINOR: u16 = 41;
/// The floor: 1.24, above dockerd 20.10's `MinAPIVersion` 1.12.
const FLOOR: &str = "1.24";

const BUILDKIT_REFUSED: &str = "BuildKit is not available through this VCH";

/// The whitelist's denial.
fn unauthorized(host: &str) -> String {
    format!("Access denied to unauthorized registry ({host}) while VCH is in whitelist mode")
}

fn too_new(version: &str, ceiling: &str) -> String {
    format!("client version {version} is too new. Maximum supported API version is {ceiling}")
}

fn too_old(version: &str, floor: &str) -> String {
    format!(
        "client version {version} is too old. Minimum supported API version is {floor}, please \
         upgrade your client to a newer version"
    )
}

fn not_found(method: &str, path: &str, version: &str) -> String {
    format!("page not found: {method} {path} is not part of Docker API v{version}")
}

/// `/v1.N`, or nothing for an unversioned request.
fn prefix(minor: Option<u16>) -> String {
    minor.map_or(String::new(), |m| format!("/v1.{m}"))
}

// ---------------------------------------------------------------------------------------------
// Running clients, reading dockerd's log.

/// Runs `cmd`, failing the test if it does not end within `limit`.
fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Where dockerd's log ends now: [`calls_since`] reads what came after.
fn mark(dockerd: &Dockerd) -> usize {
    dockerd.log().len()
}

/// The `METHOD TARGET` of every `Calling …` line of dockerd's log after `from`.
fn calls_since(dockerd: &Dockerd, from: usize) -> Vec<String> {
    let log = dockerd.log();
    let tail = String::from_utf8_lossy(&log.as_bytes()[from.min(log.len())..]).into_owned();
    tail.lines()
        .filter_map(|l| l.split_once("msg=\"Calling ").map(|(_, call)| call))
        .map(|call| call.trim_end().trim_end_matches('"').to_owned())
        .collect()
}

/// The calls that are not at `/v{version}/` (nor the unversioned `/_ping`).
fn calls_off_version(calls: &[String], version: &str) -> Vec<String> {
    let at = format!("/v{version}/");
    calls
        .iter()
        .filter(|call| {
            let target = call.split_once(' ').map_or("", |(_, t)| t);
            !(target.starts_with(&at) || target == "/_ping" || target.starts_with("/_ping?"))
        })
        .cloned()
        .collect()
}

fn count_calls(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

/// The registry's log after `from` bytes.
fn registry_log_since(registry: &Registry, from: usize) -> String {
    let log = registry.log();
    String::from_utf8_lossy(&log.as_bytes()[from.min(log.len())..]).into_owned()
}

/// Pushes `image` to `registry` as `vch-versions/app:1` directly through dockerd (not the VCH)
/// and removes the tag, so a pull through the VCH has to fetch it; returns the reference.
fn seed_registry(dockerd: &Dockerd, registry: &Registry, image: &str) -> String {
    let remote = format!("{}/vch-versions/app:1", registry.addr());
    dockerd.docker_ok(["tag", image, &remote]).unwrap();
    dockerd.docker_ok(["push", &remote]).unwrap();
    dockerd.docker_ok(["rmi", &remote]).unwrap();
    remote
}

// ---------------------------------------------------------------------------------------------
// 1. The docker CLI at each version.

/// The docker CLI through `vch`, pinned to `pin` with `DOCKER_API_VERSION` or negotiating.
fn cli(vch: &Vch, pin: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = vch.docker();
    match pin {
        Some(v) => cmd.env("DOCKER_API_VERSION", v),
        None => cmd.env_remove("DOCKER_API_VERSION"),
    };
    cmd.args(args);
    run_bounded(
        cmd,
        &format!("docker {args:?} (DOCKER_API_VERSION={pin:?})"),
        Duration::from_secs(30),
    )
}

fn cli_ok(vch: &Vch, pin: Option<&str>, args: &[&str]) -> String {
    let out = cli(vch, pin, args);
    assert!(
        out.status.success(),
        "docker {args:?} with DOCKER_API_VERSION={pin:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The docker CLI 28 pinned to 1.24, 1.25, 1.30 and 1.41 and unpinned: `version`, a whitelisted
/// pull and `run`, a denied pull and a classic build all work, and every request reaches dockerd
/// at the version the CLI asked for (unpinned: the ceiling it negotiated from `/_ping`).
#[test]
fn docker_cli_at_every_version() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let registry = Registry::start().expect("docker-registry from the testbed must start");
    let remote = seed_registry(&dockerd, &registry, &image);
    let vch = Vch::start(&dockerd, Mode::Plain, &[registry.addr().as_str()]);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    // The base is decided: the local image under the whitelisted registry's name.
    let base = format!("{}/vch-versions/base:1", registry.addr());
    dockerd.docker_ok(["tag", &image, &base]).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {base}\nRUN true\n")).unwrap();
    let ctx = ctx.to_str().unwrap();

    for pin in [
        Some("1.24"),
        Some("1.25"),
        Some("1.30"),
        Some(CEILING),
        None,
    ] {
        let at = pin.unwrap_or(CEILING);
        let from = mark(&dockerd);

        // The client speaks the pin (or negotiates the ceiling); the server reports the range.
        let versions = cli_ok(
            &vch,
            pin,
            &[
                "version",
                "--format",
                "{{.Client.APIVersion}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
            ],
        );
        assert_eq!(
            versions.trim(),
            format!("{at} {CEILING} {FLOOR}"),
            "docker version with DOCKER_API_VERSION={pin:?}"
        );

        // A pull from the whitelisted registry, then a container of the pulled image.
        cli_ok(&vch, pin, &["pull", &remote]);
        cli_ok(&vch, pin, &["run", "--rm", &remote, "true"]);

        // Docker Hub is not whitelisted: refused with the whitelist's text before any network.
        let denied = cli(&vch, pin, &["pull", "busybox"]);
        let stderr = String::from_utf8_lossy(&denied.stderr);
        assert!(
            !denied.status.success(),
            "pull busybox at {pin:?} was not refused"
        );
        assert!(
            stderr.contains(&format!(
                "Error response from daemon: {}",
                unauthorized("docker.io")
            )),
            "pull busybox at {pin:?}: {stderr}"
        );

        // A classic build (DOCKER_BUILDKIT=0) from a local image on a whitelisted name.
        let tag = format!("vch-versions-built:{}", at.replace('.', "-"));
        cli_ok(&vch, pin, &["build", "-q", "-t", &tag, ctx]);

        let calls = calls_since(&dockerd, from);
        assert_eq!(
            calls_off_version(&calls, at),
            Vec::<String>::new(),
            "requests of the CLI at {pin:?} reached dockerd at another version: {calls:#?}"
        );
        for (what, call, expected) in [
            ("version", format!("GET /v{at}/version"), 1),
            ("allowed pull", format!("POST /v{at}/images/create?"), 1),
            ("run", format!("POST /v{at}/containers/create"), 1),
            ("build", format!("POST /v{at}/build?"), 1),
        ] {
            assert_eq!(
                count_calls(&calls, &call),
                expected,
                "{what} at {pin:?}: `Calling {call}…` in {calls:#?}"
            );
        }
        assert!(
            !calls.iter().any(|c| c.contains("busybox")),
            "the denied pull reached dockerd: {calls:#?}"
        );

        dockerd.docker_ok(["rmi", &remote, &tag]).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 2. docker-py.

/// docker-py's `DockerClient(version="auto")` against the VCH over mutual TLS; prints what it
/// saw as one JSON object.
const DOCKER_PY: &str = r#"
import json, os, sys
try:
    import docker
except ImportError as e:
    sys.exit(f"the docker module (docker-py) is required: {e}")
certs = os.environ["VCH_CERTS"]
tls = docker.tls.TLSConfig(
    client_cert=(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem")),
    ca_cert=os.path.join(certs, "ca.pem"),
    verify=True,
)
client = docker.DockerClient(
    base_url="tcp://127.0.0.1:" + os.environ["VCH_PORT"], version="auto", tls=tls, timeout=30
)
out = {"negotiated": client.api.api_version, "library": docker.__version__}
version = client.version()
out["api_version"] = version.get("ApiVersion")
out["min_api_version"] = version.get("MinAPIVersion")
out["tags"] = sorted(t for image in client.images.list() for t in image.tags)
try:
    client.images.pull("busybox", tag="latest")
    out["denied"] = None
except docker.errors.APIError as e:
    out["denied"] = {"status": e.status_code, "explanation": e.explanation}
# Builds (docker-py speaks only the classic builder): a Dockerfile from a file object, denied;
# a gzip-compressed context from a directory, allowed (FROM scratch pulls nothing).
import io, tempfile
try:
    client.images.build(fileobj=io.BytesIO(b"FROM busybox\n"), tag="vch-py-denied", rm=True)
    out["build_denied"] = None
except docker.errors.APIError as e:
    out["build_denied"] = {"status": e.status_code, "explanation": e.explanation}
with tempfile.TemporaryDirectory() as ctx:
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nLABEL vch=docker-py\n")
    built, _ = client.images.build(path=ctx, tag="vch-py-built", gzip=True, rm=True)
    out["built_label"] = built.labels.get("vch")
print(json.dumps(out))
"#;

#[test]
fn docker_py_negotiates_over_mutual_tls() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let vch = Vch::start(&dockerd, Mode::MutualTls, &["reg.allowed.example"]);
    let from = mark(&dockerd);
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(DOCKER_PY)
        .env("VCH_PORT", vch.addr.port().to_string())
        .env("VCH_CERTS", vch.certs.dir.path())
        // requests would verify against these instead of the CA given.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    let out = run_bounded(
        cmd,
        "python3 with docker-py (apt-get install python3-docker, or pip install docker)",
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docker-py through the VCH failed ({}): {stderr}",
        out.status
    );
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("docker-py printed no JSON ({e}): {stderr}"));
    assert_eq!(seen["negotiated"], CEILING, "{seen}");
    assert_eq!(seen["api_version"], CEILING, "{seen}");
    assert_eq!(seen["min_api_version"], FLOOR, "{seen}");
    assert!(
        seen["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == image.as_str()),
        "images.list() lacks {image}: {seen}"
    );
    assert_eq!(seen["build_denied"]["status"], 403, "{seen}");
    assert!(
        seen["build_denied"]["explanation"]
            .as_str()
            .is_some_and(|e| e.starts_with(&unauthorized("docker.io"))),
        "{seen}"
    );
    assert_eq!(seen["built_label"], "docker-py", "{seen}");
    assert_eq!(seen["denied"]["status"], 403, "{seen}");
    assert_eq!(
        seen["denied"]["explanation"],
        unauthorized("docker.io"),
        "{seen}"
    );
    let calls = calls_since(&dockerd, from);
    assert_eq!(
        calls_off_version(&calls, CEILING),
        Vec::<String>::new(),
        "docker-py's requests reached dockerd at another version: {calls:#?}"
    );
    assert!(
        count_calls(&calls, "GET /v1.41/images/json") == 1,
        "{calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("images/create")),
        "the denied pull reached dockerd: {calls:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Raw HTTP: the route table by version, the range, BuildKit.

/// One HTTP response read off the wire.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The first JSON value of the body (chunked or not).
    fn json(&self) -> Option<Value> {
        let start = self.body.find(['{', '['])?;
        serde_json::Deserializer::from_str(&self.body[start..])
            .into_iter::<Value>()
            .next()?
            .ok()
    }

    /// The `message` of a JSON error body.
    fn message(&self) -> Option<String> {
        self.json()?["message"].as_str().map(str::to_owned)
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(600).collect();
        write!(f, "{}\n\n{body}", self.head)
    }
}

/// A VCH in front of a dockerd; raw requests, each with a token; failed cases collected and
/// reported together by [`Raw::finish`].
struct Raw<'a> {
    addr: SocketAddr,
    dockerd: &'a Dockerd,
    /// What every answer's `Api-Version` says.
    ceiling: &'static str,
    /// Tokens of refused requests: dockerd's log must never show them.
    refused: RefCell<Vec<(String, String)>>,
    /// Answers without `Api-Version: <ceiling>`.
    header_misses: RefCell<Vec<String>>,
    failures: RefCell<Vec<String>>,
}

impl<'a> Raw<'a> {
    fn new(addr: SocketAddr, dockerd: &'a Dockerd, ceiling: &'static str) -> Raw<'a> {
        Raw {
            addr,
            dockerd,
            ceiling,
            refused: RefCell::new(Vec::new()),
            header_misses: RefCell::new(Vec::new()),
            failures: RefCell::new(Vec::new()),
        }
    }

    #[track_caller]
    fn check(&self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            let at = Location::caller();
            self.failures
                .borrow_mut()
                .push(format!("line {}: {}", at.line(), what()));
        }
        ok
    }

    /// A new token, `vt=000042`, unique in this test binary: fixed width, so no token is a
    /// prefix of another.
    fn token(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        format!("vt={:06}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `method path?query&vt=…` with `headers` and `body`; returns the answer and the
    /// request target sent.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &str,
        body: &str,
    ) -> (Answer, String) {
        let token = self.token();
        let target = if query.is_empty() {
            format!("{path}?{token}")
        } else {
            format!("{path}?{query}&{token}")
        };
        let length = if method == "GET" || method == "HEAD" {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n{headers}{length}\r\n{body}"
        );
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A refusal may close the connection before every byte is taken.
        let _ = s.write_all(request.as_bytes());
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        (Answer::parse(&raw), target)
    }

    /// Every answer says the ceiling in `Api-Version` (misses are reported together, once).
    fn check_header(&self, request: &str, answer: &Answer) {
        let header = answer.header("Api-Version");
        if header != Some(self.ceiling) {
            self.header_misses.borrow_mut().push(format!(
                "{request} ({} {:?}): Api-Version {header:?}",
                answer.status,
                answer
                    .message()
                    .unwrap_or_default()
                    .chars()
                    .take(50)
                    .collect::<String>()
            ));
        }
    }

    /// Refused with `status` and exactly `message` (or a message starting with it when
    /// `prefix_only`), never reaching dockerd.
    #[track_caller]
    #[allow(
        clippy::too_many_arguments,
        reason = "one request and what it must get"
    )]
    fn refused(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &str,
        status: u16,
        message: &str,
        prefix_only: bool,
    ) {
        let (answer, target) = self.send(method, path, query, headers, "");
        let request = format!("{method} {target}");
        let got = answer.message().unwrap_or_default();
        let message_ok = if prefix_only {
            got.starts_with(message)
        } else {
            got == message
        };
        self.check(answer.status == status && message_ok, || {
            format!("{request}: expected {status} {message:?}\ngot: {answer}")
        });
        self.check_header(&request, &answer);
        let token = target.rsplit_once('?').map_or("", |(_, q)| q);
        let token = token.rsplit('&').next().unwrap_or_default().to_owned();
        self.refused.borrow_mut().push((token, request));
    }

    /// Forwarded to dockerd as `METHOD forward_path?query&vt=…` (dockerd's log says so), with
    /// none of the VCH's refusals; returns the answer.
    #[track_caller]
    fn forwarded(
        &self,
        method: &str,
        path: &str,
        forward_path: &str,
        query: &str,
        body: &str,
    ) -> Answer {
        let headers = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        let (answer, target) = self.send(method, path, query, headers, body);
        let request = format!("{method} {target}");
        let forwarded_target = format!("{forward_path}{}", &target[path.len()..]);
        let expected = format!("{method} {forwarded_target}");
        let calls = calls_since(self.dockerd, 0);
        let seen = calls.contains(&expected);
        let token = target.rsplit('&').next().unwrap_or_default();
        let token = token.rsplit('?').next().unwrap_or_default();
        self.check(seen, || {
            let near: Vec<&String> = calls.iter().filter(|c| c.contains(token)).collect();
            format!(
                "{request}: expected dockerd to log `Calling {expected}`; calls with {token}: \
                 {near:?}\n{answer}"
            )
        });
        let vch_refusal = answer.message().is_some_and(|m| {
            m.contains("is not part of Docker API")
                || m.contains("Maximum supported API version")
                || m.contains("Minimum supported API version")
                || m.starts_with("Access denied")
        });
        self.check(answer.status != 0 && !vch_refusal, || {
            format!("{request}: expected forwarded, got {answer}")
        });
        self.check_header(&request, &answer);
        answer
    }

    /// Panics with every failed case (see [`Raw::into_failures`]).
    fn finish(self) {
        report(self.into_failures());
    }

    /// Every failed case, after checking that no refused request reached dockerd.
    fn into_failures(self) -> Vec<String> {
        let log = self.dockerd.log();
        for (token, request) in self.refused.borrow().iter() {
            self.check(!log.contains(token.as_str()), || {
                format!("{request} was refused, yet dockerd's log shows it ({token})")
            });
        }
        let misses = self.header_misses.take();
        self.check(misses.is_empty(), || {
            format!(
                "{} answer(s) without the header Api-Version: {}:\n  {}",
                misses.len(),
                self.ceiling,
                misses.join("\n  ")
            )
        });
        self.failures.take()
    }
}

/// Panics with every failed case.
fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A route added after 1.25.
struct LaterRoute {
    since: u16,
    method: &'static str,
    endpoint: String,
    query: &'static str,
    body: &'static str,
}

impl LaterRoute {
    fn new(since: u16, method: &'static str, endpoint: impl Into<String>) -> LaterRoute {
        LaterRoute {
            since,
            method,
            endpoint: endpoint.into(),
            query: "",
            body: "",
        }
    }

    fn query(mut self, query: &'static str) -> LaterRoute {
        self.query = query;
        self
    }

    fn body(mut self, body: &'static str) -> LaterRoute {
        self.body = body;
        self
    }
}

/// Every route added after 1.25, at the lowest version that has it, at the ceiling, unversioned,
/// one version below and above the ceiling; the range's edges; `/_ping` and `/version`; the
/// gates at every version; the BuildKit doors at 1.24, 1.25, 1.31, 1.39, 1.41 and unversioned in
/// every policy mode. No refused request reaches dockerd.
#[test]
fn routes_by_version_at_the_wire() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let registry = Registry::start().expect("docker-registry from the testbed must start");
    let remote = seed_registry(&dockerd, &registry, &image);
    let reg = registry.addr();
    let vch = Vch::start(&dockerd, Mode::Plain, &[reg.as_str()]);
    let raw = Raw::new(vch.addr, &dockerd, CEILING);

    // /_ping and /version: the ceiling and the floor; /_ping is forwarded unversioned.
    let ping = raw.forwarded("GET", "/_ping", "/_ping", "", "");
    raw.check(ping.status == 200, || format!("GET /_ping: {ping}"));
    let ping = raw.forwarded("GET", "/v1.24/_ping", "/v1.24/_ping", "", "");
    raw.check(ping.status == 200, || format!("GET /v1.24/_ping: {ping}"));
    for (path, forward) in [
        ("/version", "/v1.41/version"),
        ("/v1.24/version", "/v1.24/version"),
        ("/v1.41/version", "/v1.41/version"),
    ] {
        let answer = raw.forwarded("GET", path, forward, "", "");
        let version = answer.json().unwrap_or_default();
        let engine = version["Components"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["Name"] == "Engine"))
            .map(|c| c["Details"].clone())
            .unwrap_or_default();
        for (what, value) in [
            ("ApiVersion", &version["ApiVersion"]),
            ("MinAPIVersion", &version["MinAPIVersion"]),
            ("Engine ApiVersion", &engine["ApiVersion"]),
            ("Engine MinAPIVersion", &engine["MinAPIVersion"]),
        ] {
            let expected = if what.ends_with("MinAPIVersion") {
                FLOOR
            } else {
                CEILING
            };
            raw.check(*value == expected, || {
                format!("GET {path}: {what} {value}, expected {expected:?}\n{answer}")
            });
        }
    }

    // The range's edges.
    raw.forwarded("GET", "/v1.24/info", "/v1.24/info", "", "");
    raw.forwarded("GET", "/v1.41/info", "/v1.41/info", "", "");
    raw.forwarded("GET", "/info", "/v1.41/info", "", "");
    for version in ["1.42", "2.0"] {
        let path = format!("/v{version}/info");
        raw.refused("GET", &path, "", "", 400, &too_new(version, CEILING), false);
    }
    for version in ["1.23", "1.12"] {
        let path = format!("/v{version}/info");
        raw.refused("GET", &path, "", "", 400, &too_old(version, FLOOR), false);
    }

    // Routes added after 1.25.
    let routes = [
        LaterRoute::new(29, "GET", "/tasks/vch-task/logs").query("stdout=1"),
        LaterRoute::new(30, "GET", "/configs"),
        LaterRoute::new(30, "POST", "/configs/create").body(r#"{"Name":"vch-config","Data":""}"#),
        LaterRoute::new(30, "GET", "/configs/vch-config"),
        LaterRoute::new(30, "DELETE", "/configs/vch-config"),
        LaterRoute::new(30, "POST", "/configs/vch-config/update")
            .query("version=1")
            .body(r#"{"Name":"vch-config"}"#),
        LaterRoute::new(30, "GET", format!("/distribution/{remote}/json")),
        LaterRoute::new(31, "POST", "/build/prune"),
        LaterRoute::new(42, "PUT", "/volumes/vch-volume").body("{}"),
        LaterRoute::new(55, "GET", "/images/vch-test/busybox/attestations"),
    ];
    let registry_from = registry.log().len();
    for route in &routes {
        let tries = vec![
            Some(route.since),
            Some(CEILING_MINOR),
            None,
            Some(route.since - 1),
            Some(CEILING_MINOR + 1),
        ];
        let mut tried = Vec::new();
        for minor in tries {
            if tried.contains(&minor) {
                continue;
            }
            tried.push(minor);
            let path = format!("{}{}", prefix(minor), route.endpoint);
            match minor {
                Some(m) if m > CEILING_MINOR => raw.refused(
                    route.method,
                    &path,
                    route.query,
                    "",
                    400,
                    &too_new(&format!("1.{m}"), CEILING),
                    false,
                ),
                _ => {
                    let at = minor.unwrap_or(CEILING_MINOR);
                    if at < route.since {
                        raw.refused(
                            route.method,
                            &path,
                            route.query,
                            "",
                            404,
                            &not_found(route.method, &path, &format!("1.{at}")),
                            false,
                        );
                    } else {
                        let forward = format!("/v1.{at}{}", route.endpoint);
                        let answer =
                            raw.forwarded(route.method, &path, &forward, route.query, route.body);
                        if route.endpoint.starts_with("/distribution/") {
                            raw.check(answer.status == 200, || {
                                format!("GET {path}: the manifest's descriptor\n{answer}")
                            });
                        }
                    }
                }
            }
        }
    }
    // The allowed distribution requests were answered by the registry, through dockerd.
    let asked = registry_log_since(&registry, registry_from);
    raw.check(asked.contains("/v2/vch-versions/app/manifests/1"), || {
        format!("the registry was not asked for the manifest: {asked}")
    });

    // Refused at every version: cancel and debug.
    for minor in [Some(24), Some(31), Some(CEILING_MINOR), None] {
        let at = format!("1.{}", minor.unwrap_or(CEILING_MINOR));
        for (method, endpoint) in [("POST", "/build/cancel"), ("GET", "/debug/vars")] {
            let path = format!("{}{endpoint}", prefix(minor));
            let message = not_found(method, &path, &at);
            raw.refused(method, &path, "id=x", "", 404, &message, false);
        }
    }

    // The gates at every version: pull, distribution, search, push, plugin upgrade.
    let evil = unauthorized("evil.example");
    for minor in [Some(24), Some(25), Some(30), Some(CEILING_MINOR), None] {
        let p = prefix(minor);
        let at = minor.unwrap_or(CEILING_MINOR);
        let forward = format!("/v1.{at}/images/create");
        let pull = format!("fromImage={reg}%2Fvch-versions%2Fapp&tag=1");
        let answer = raw.forwarded("POST", &format!("{p}/images/create"), &forward, &pull, "");
        raw.check(answer.status == 200, || {
            format!("the allowed pull at {p:?}: {answer}")
        });
        let create = format!("{p}/images/create");
        let query = "fromImage=evil.example%2Fx&tag=1";
        raw.refused("POST", &create, query, "", 403, &evil, false);
        let search = format!("{p}/images/search");
        raw.refused("GET", &search, "term=evil.example/x", "", 403, &evil, false);
        let push = format!("{p}/images/evil.example/x/push");
        raw.refused("POST", &push, "tag=1", "", 403, &evil, false);
        let upgrade = format!("{p}/plugins/evil.example/p:1/upgrade");
        let remote = "remote=evil.example/p:2";
        raw.refused("POST", &upgrade, remote, "", 403, &evil, false);
        for (name, denial) in [
            ("evil.example/x:1", evil.clone()),
            ("busybox", unauthorized("docker.io")),
        ] {
            let path = format!("{p}/distribution/{name}/json");
            if at >= 30 {
                raw.refused("GET", &path, "", "", 403, &denial, false);
            } else {
                let message = not_found("GET", &path, &format!("1.{at}"));
                raw.refused("GET", &path, "", "", 404, &message, false);
            }
        }
    }

    let dockerd_log = dockerd.log();
    raw.check(!dockerd_log.contains("evil.example"), || {
        "dockerd saw evil.example".to_owned()
    });
    let mut failures = raw.into_failures();

    // BuildKit in every policy mode: whitelist enforced, no whitelist, audit.
    let open = Vch::start(&dockerd, Mode::Plain, &[]);
    let audit = Vch::start_config(
        &dockerd,
        Mode::Plain,
        &RegistryConfig {
            whitelist: vec![reg.clone()],
            mode: EnforcementMode::Audit,
            ..RegistryConfig::default()
        },
    );
    for (mode, vch) in [("whitelist", &vch), ("open", &open), ("audit", &audit)] {
        let raw = Raw::new(vch.addr, &dockerd, CEILING);
        buildkit_doors(&raw, mode);
        failures.extend(
            raw.into_failures()
                .into_iter()
                .map(|f| format!("[{mode}] {f}")),
        );
    }
    report(failures);
}

/// `/session`, `/grpc`, BuildKit's `/build` parameters, h2c and the HTTP/2 preface: refused at
/// 1.24, 1.25, 1.31, 1.39, 1.41 and unversioned; `Builder-Version` is 1 when present.
fn buildkit_doors(raw: &Raw<'_>, mode: &str) {
    let tar = "Content-Type: application/x-tar\r\n";
    let h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
               HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n";
    for minor in [
        Some(24),
        Some(25),
        Some(31),
        Some(39),
        Some(CEILING_MINOR),
        None,
    ] {
        let p = prefix(minor);
        let at = format!("1.{}", minor.unwrap_or(CEILING_MINOR));
        for endpoint in ["/session", "/grpc"] {
            let path = format!("{p}{endpoint}");
            // The refusal says why, as the build gate's does.
            let message = format!("{}: {BUILDKIT_REFUSED}", not_found("POST", &path, &at));
            raw.refused("POST", &path, "", "", 404, &message, true);
        }
        let build = format!("{p}/build");
        for query in [
            "version=2",
            "session=vch-session",
            "buildid=vch-build",
            "outputs=%5B%7B%22Type%22%3A%22local%22%7D%5D",
            "t=vch-bk&version=2",
        ] {
            raw.refused("POST", &build, query, tar, 400, BUILDKIT_REFUSED, true);
        }
        // h2c on any route, BuildKit's gRPC door included.
        for (method, path) in [
            ("GET", format!("{p}/_ping")),
            ("POST", format!("{p}/grpc")),
            ("POST", format!("{p}/session")),
        ] {
            let (answer, target) = raw.send(method, &path, "", h2c, "");
            raw.check(answer.status == 400, || {
                format!("{mode}: {method} {target} with Upgrade: h2c: expected 400\n{answer}")
            });
            raw.check_header(&format!("{method} {target} (h2c)"), &answer);
            let token = target.rsplit_once('?').map_or("", |(_, q)| q).to_owned();
            raw.refused
                .borrow_mut()
                .push((token, format!("{method} {target} (h2c)")));
        }
        // The builder is the classic one.
        let ping = format!("{p}/_ping");
        let forward = if minor.is_some() { &ping } else { "/_ping" };
        let answer = raw.forwarded("GET", &ping, forward, "", "");
        let builder = answer.header("Builder-Version");
        raw.check(builder.is_none_or(|b| b == "1"), || {
            format!("{mode}: GET {ping}: Builder-Version {builder:?}\n{answer}")
        });
    }
    // HTTP/2 prior knowledge.
    let mut s = TcpStream::connect(raw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let answer = Answer::parse(&out);
    raw.check(out.is_empty() || answer.status >= 400, || {
        format!(
            "{mode}: the HTTP/2 preface was not refused: {:?}",
            String::from_utf8_lossy(&out)
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 4. A pinned VCH.

/// Pinned to 1.25 (VIC's version): `/_ping` and `/version` say 1.25, 1.26 is too new,
/// unversioned requests are forwarded as `/v1.25/…`, and the docker CLI negotiates 1.25.
#[test]
fn a_pinned_vch_serves_its_pin() {
    let dockerd = dockerd();
    // Whitelist mode off: this test is about versions.
    let vch = Vch::start_vic(&dockerd, Mode::Plain, &[]);
    let raw = Raw::new(vch.addr, &dockerd, "1.25");

    let ping = raw.forwarded("GET", "/_ping", "/_ping", "", "");
    raw.check(ping.status == 200, || format!("GET /_ping: {ping}"));
    let version = raw.forwarded("GET", "/version", "/v1.25/version", "", "");
    let body = version.json().unwrap_or_default();
    raw.check(
        body["ApiVersion"] == "1.25" && body["MinAPIVersion"] == FLOOR,
        || format!("GET /version: expected ApiVersion 1.25, MinAPIVersion 1.24\n{version}"),
    );
    raw.forwarded("GET", "/info", "/v1.25/info", "", "");
    raw.forwarded("GET", "/containers/json", "/v1.25/containers/json", "", "");
    raw.forwarded("GET", "/v1.24/info", "/v1.24/info", "", "");
    raw.forwarded("GET", "/v1.25/info", "/v1.25/info", "", "");
    for version in ["1.26", "1.41", "1.42"] {
        let path = format!("/v{version}/info");
        raw.refused("GET", &path, "", "", 400, &too_new(version, "1.25"), false);
    }
    raw.refused(
        "GET",
        "/v1.23/info",
        "",
        "",
        400,
        &too_old("1.23", FLOOR),
        false,
    );
    // Unversioned requests use the pin: a 1.30 route is not there.
    let message = not_found("GET", "/configs", "1.25");
    raw.refused("GET", "/configs", "", "", 404, &message, false);

    // The docker CLI, unpinned, negotiates the pin.
    let from = mark(&dockerd);
    let versions = vch.docker_ok(&[
        "version",
        "--format",
        "{{.Client.APIVersion}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
    ]);
    raw.check(versions.trim() == format!("1.25 1.25 {FLOOR}"), || {
        format!("docker version: client, server, minimum: {versions}")
    });
    vch.docker_ok(&["ps"]);
    let calls = calls_since(&dockerd, from);
    let off = calls_off_version(&calls, "1.25");
    raw.check(off.is_empty(), || {
        format!("the CLI's requests reached dockerd at another version: {off:#?}")
    });
    for call in ["GET /v1.25/version", "GET /v1.25/containers/json"] {
        raw.check(count_calls(&calls, call) == 1, || {
            format!("expected one `Calling {call}`: {calls:#?}")
        });
    }
    raw.finish();
}
