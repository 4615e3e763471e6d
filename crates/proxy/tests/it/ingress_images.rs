//! The ingress gate on image routes, driven by the real docker CLI through the VCH to a real
//! dockerd and real registries: push, search, load, import, remote builds, pulls, and what is not
//! decided (tag, commit, run; a build's base is); audit mode, audit records and `docker info`.
//!
//! Each denial is shown three ways: the CLI prints the spec's exact message, dockerd's debug log
//! has no `Calling …` line for the request, and the denied registry (or HTTP server) was never
//! contacted. Each allowed form is shown working through the same VCH.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use vch_policy::{EnforcementMode, RegistryConfig};
use vch_testbed::{Dockerd, Registry, TestImage};

use crate::support::{Mode, Vch, audit_records, dockerd};

const IMPORT_DENIED: &str = "Image import (fromSrc) is not allowed while VCH is in whitelist mode: \
                             the content comes from no registry";
const LOAD_DENIED: &str = "Image load (docker load) is not allowed while VCH is in whitelist mode: \
                           the content comes from no registry";
const BUILD_REMOTE_DENIED: &str = "Builds from a remote context (remote=…) are not allowed while \
                                   VCH is in whitelist mode: the context comes from no registry \
                                   and cannot be inspected before the Docker engine fetches it";
const PUSHES_DISABLED: &str = "Access denied: pushes are disabled on this VCH";

/// The whitelist's denial (pulls, searches, and pushes without a push list).
fn unauthorized(host: &str) -> String {
    format!("Access denied to unauthorized registry ({host}) while VCH is in whitelist mode")
}

/// The push list's denial.
fn not_in_push_list(host: &str) -> String {
    format!("Access denied to unauthorized registry ({host}) for push: not in the VCH's push list")
}

/// Runs the docker CLI through `vch` and expects it to fail with the daemon error `message`.
fn docker_denied(vch: &Vch, args: &[&str], message: &str) {
    let out = vch.docker().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "docker {args:?} was not refused: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let expected = format!("Error response from daemon: {message}");
    assert!(
        stderr.contains(&expected),
        "docker {args:?}:\n expected: {expected}\n      got: {stderr}"
    );
}

/// Where dockerd's log ends now: [`calls_since`] reads what came after.
fn mark(dockerd: &Dockerd) -> usize {
    dockerd.log().len()
}

/// dockerd's `Calling METHOD …` lines after `from` whose request line contains `needle`.
fn calls_since(dockerd: &Dockerd, from: usize, method: &str, needle: &str) -> Vec<String> {
    let log = dockerd.log();
    let tail = String::from_utf8_lossy(&log.as_bytes()[from.min(log.len())..]).into_owned();
    let calling = format!("Calling {method} ");
    tail.lines()
        .filter(|l| l.contains(&calling) && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The registry's log after `from` bytes.
fn registry_log_since(registry: &Registry, from: usize) -> String {
    let log = registry.log();
    String::from_utf8_lossy(&log.as_bytes()[from.min(log.len())..]).into_owned()
}

/// dockerd's image list (`repo:tag` sorted), read directly from dockerd.
fn images(dockerd: &Dockerd) -> Vec<String> {
    let out = dockerd
        .docker_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .unwrap();
    let mut list: Vec<String> = out.lines().map(str::to_owned).collect();
    list.sort();
    list
}

/// Tags `image` as `name` and saves it to `file`, directly on dockerd, then removes the tag: a
/// `docker load` of the file brings `name` back.
fn save_as(dockerd: &Dockerd, image: &str, name: &str, file: &Path) {
    dockerd.docker_ok(["tag", image, name]).unwrap();
    dockerd
        .docker_ok(["save", "-o", file.to_str().unwrap(), name])
        .unwrap();
    dockerd.docker_ok(["rmi", name]).unwrap();
}

/// A tar holding one `Dockerfile` with `text` (made with the system `tar`).
fn context_tar(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), text).unwrap();
    let tar = dir.path().join("ctx.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .arg("Dockerfile")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(tar).unwrap()
}

/// Percent-escapes all but unreserved characters, for a URL in a query value.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One raw `POST` to the VCH (as `wire.rs` does), read until the server closes.
fn raw_post(vch: &Vch, target: &str, limit: Duration) -> String {
    let mut s = TcpStream::connect(vch.addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    write!(
        s,
        "POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-tar\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The `message` of the JSON object in a raw answer.
fn json_message(answer: &str) -> String {
    let (start, end) = (answer.find('{'), answer.rfind('}'));
    let (Some(start), Some(end)) = (start, end) else {
        panic!("no JSON in {answer}");
    };
    let body: Value = serde_json::from_str(&answer[start..=end]).unwrap();
    body["message"].as_str().unwrap_or_default().to_owned()
}

/// A one-file HTTP server on 127.0.0.1: answers every request with `body` and records each
/// request line, to prove whether anyone fetched the file.
struct FileServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(body: Vec<u8>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(mut conn) = conn {
                        serve_file(&mut conn, &body, &requests);
                    }
                }
            })
        };
        FileServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_file(conn: &mut TcpStream, body: &[u8], requests: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let head_only = line.starts_with("HEAD ");
    requests.lock().unwrap().push(line);
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        let _ = conn.write_all(body);
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The audit records of `vch`'s client. `vch` must be a mutual-TLS VCH: each has a fresh client
/// certificate, so its fingerprint sets its records apart from those of tests running in parallel.
fn records_of(vch: &Vch) -> Vec<Value> {
    assert_eq!(
        vch.mode,
        Mode::MutualTls,
        "records_of needs client certificates"
    );
    let der = CertificateDer::from_pem_file(vch.certs.path("cert.pem")).unwrap();
    let digest = vch_testbed::sha256_digest(&der);
    let fingerprint = digest.trim_start_matches("sha256:");
    audit_records()
        .into_iter()
        .filter(|r| r["client_sha256"] == fingerprint)
        .collect()
}

/// `vch`'s record that `pick` selects, waited for: records are written just after the response
/// is flushed, so the CLI may have exited a moment before.
fn record_of(vch: &Vch, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Some(r) = records_of(vch).into_iter().find(|r| pick(r)) {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no audit record for {what}: {:#?}",
            records_of(vch)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn str_of<'a>(r: &'a Value, key: &str) -> &'a str {
    r[key].as_str().unwrap_or_default()
}

/// `docker push`: the whitelist decides where images may go, unless a push list does; an empty
/// push list refuses every push. Refused pushes reach neither dockerd nor the registry.
#[test]
fn push_is_decided_by_the_whitelist_or_the_push_list() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let vch = Vch::start(&dockerd, Mode::Plain, &[&a_addr]);

    // Allowed: tagged through the VCH (tags are not decided), pushed to the whitelisted A.
    let to_a = format!("{a_addr}/vch-push/app:1");
    vch.docker_ok(&["tag", &image, &to_a]);
    let from = mark(&dockerd);
    vch.docker_ok(&["push", &to_a]);
    // dockerd logs the push it got, so the checks for none below can fail.
    assert_eq!(calls_since(&dockerd, from, "POST", "/push").len(), 1);
    assert!(
        a.log().contains("/v2/vch-push/app/manifests/1"),
        "A got no manifest: {}",
        a.log()
    );

    // Denied: B is not whitelisted, though the image is tagged for it.
    let to_b = format!("{b_addr}/vch-push/app:1");
    vch.docker_ok(&["tag", &image, &to_b]);
    let from = mark(&dockerd);
    docker_denied(&vch, &["push", &to_b], &unauthorized(&b_addr));
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/push"),
        Vec::<String>::new()
    );
    assert!(!b.log().contains("/v2/vch-push/"), "B was contacted");

    // A push list [A] with the whitelist [A, B]: B may be pulled from, not pushed to.
    let listed = Vch::start_config(
        &dockerd,
        Mode::Plain,
        &RegistryConfig {
            whitelist: vec![a_addr.clone(), b_addr.clone()],
            push: Some(vec![a_addr.clone()]),
            ..RegistryConfig::default()
        },
    );
    let a_from = a.log().len();
    listed.docker_ok(&["push", &to_a]);
    assert!(registry_log_since(&a, a_from).contains("/v2/vch-push/app/manifests/1"));
    let from = mark(&dockerd);
    docker_denied(&listed, &["push", &to_b], &not_in_push_list(&b_addr));
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/push"),
        Vec::<String>::new()
    );
    assert!(!b.log().contains("/v2/vch-push/"), "B was pushed to");
    // B is whitelisted for pulls: a pull (of nothing there) reaches it.
    let absent = format!("{b_addr}/vch-absent/app:1");
    let out = listed.docker().args(["pull", &absent]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Access denied"), "{stderr}");
    assert!(
        b.log().contains("/v2/vch-absent/app/manifests/1"),
        "the pull did not reach B: {stderr}"
    );

    // An empty push list refuses every push, even to A.
    let closed = Vch::start_config(
        &dockerd,
        Mode::Plain,
        &RegistryConfig {
            whitelist: vec![a_addr.clone(), b_addr.clone()],
            push: Some(vec![]),
            ..RegistryConfig::default()
        },
    );
    let (from, a_from) = (mark(&dockerd), a.log().len());
    docker_denied(&closed, &["push", &to_a], PUSHES_DISABLED);
    docker_denied(&closed, &["push", &to_b], PUSHES_DISABLED);
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/push"),
        Vec::<String>::new()
    );
    assert!(!registry_log_since(&a, a_from).contains("/v2/vch-push/"));
    assert!(!b.log().contains("/v2/vch-push/"));
}

/// `docker search`: the registry of the term decides (`busybox` is Docker Hub's).
#[test]
fn search_is_decided_by_the_registry_of_the_term() {
    let dockerd = dockerd();
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let vch = Vch::start(&dockerd, Mode::Plain, &[&a_addr]);

    let from = mark(&dockerd);
    docker_denied(
        &vch,
        &["search", &format!("{b_addr}/vch-search")],
        &unauthorized(&b_addr),
    );
    assert!(!b.log().contains("/v1/"), "B was searched: {}", b.log());
    // Docker Hub is not whitelisted: refused before any network is needed.
    docker_denied(&vch, &["search", "busybox"], &unauthorized("docker.io"));
    assert_eq!(
        calls_since(&dockerd, from, "GET", "/images/search"),
        Vec::<String>::new()
    );

    // A is whitelisted: dockerd searches it. Registry 2.8 has no v1 search (404), so the CLI
    // fails with dockerd's error, not ours.
    let out = vch
        .docker()
        .args(["search", &format!("{a_addr}/vch-search")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Error response from daemon: Unexpected status code 404"),
        "{stderr}"
    );
    assert_eq!(
        calls_since(&dockerd, from, "GET", "/images/search").len(),
        1,
        "{stderr}"
    );
    assert!(
        a.log().contains("/v1/search"),
        "A was not searched: {stderr}\n{}",
        a.log()
    );
}

/// `docker load` brings in images from no registry: refused in whitelist mode, fine without.
#[test]
fn load_is_refused_in_whitelist_mode() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    save_as(&dockerd, &image, "vch-load/saved:1", &saved);
    let saved = saved.to_str().unwrap();
    let before = images(&dockerd);

    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.allowed.example"]);
    let from = mark(&dockerd);
    docker_denied(&vch, &["load", "-i", saved], LOAD_DENIED);
    // From stdin (`docker load < file`), the same request.
    let out = vch
        .docker()
        .arg("load")
        .stdin(std::fs::File::open(saved).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(LOAD_DENIED),
        "{stderr}"
    );
    // A body far larger than the refusal: the CLI is still sending when the 403 comes, and must
    // read it rather than fail on a reset connection ("write: broken pipe"). A sparse file: the
    // content is never looked at.
    let big = dir.path().join("big.tar");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(256 * 1024 * 1024)
        .unwrap();
    docker_denied(&vch, &["load", "-i", big.to_str().unwrap()], LOAD_DENIED);
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/images/load"),
        Vec::<String>::new()
    );
    assert_eq!(images(&dockerd), before);

    let open = Vch::start(&dockerd, Mode::Plain, &[]);
    let out = open.docker_ok(&["load", "-i", saved]);
    assert!(out.contains("Loaded image: vch-load/saved:1"), "{out}");
    // The allowed load shows in dockerd's log, so the check above could have seen one.
    assert_eq!(calls_since(&dockerd, from, "POST", "/images/load").len(), 1);
    assert!(images(&dockerd).contains(&"vch-load/saved:1".to_owned()));
}

/// `docker import` of a file (the body) or a URL (dockerd fetches it): refused in whitelist mode
/// before dockerd or the URL's server hears of it; fine without.
#[test]
fn import_from_a_file_or_a_url_is_refused_in_whitelist_mode() {
    let dockerd = dockerd();
    let rootfs = TestImage::busybox_rootfs().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rootfs.tar");
    std::fs::write(&file, &rootfs).unwrap();
    let file = file.to_str().unwrap();
    let server = FileServer::start(rootfs);
    let url = server.url("rootfs.tar");
    let before = images(&dockerd);

    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.allowed.example"]);
    let from = mark(&dockerd);
    docker_denied(&vch, &["import", file, "vch-import/file:1"], IMPORT_DENIED);
    docker_denied(&vch, &["import", &url, "vch-import/url:1"], IMPORT_DENIED);
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/images/create"),
        Vec::<String>::new()
    );
    assert_eq!(server.requests(), Vec::<String>::new());
    assert_eq!(images(&dockerd), before);

    let open = Vch::start(&dockerd, Mode::Plain, &[]);
    open.docker_ok(&["import", file, "vch-import/file:1"]);
    open.docker_ok(&["import", &url, "vch-import/url:1"]);
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/images/create").len(),
        2
    );
    assert_eq!(
        server.requests(),
        vec!["GET /rootfs.tar HTTP/1.1".to_owned()]
    );
    for imported in ["vch-import/file:1", "vch-import/url:1"] {
        assert_eq!(
            open.docker_ok(&["run", "--rm", imported, "/bin/echo", "ok"]),
            "ok\n"
        );
    }
}

/// `POST /build?remote=URL`: dockerd would fetch the context itself, so it cannot be inspected:
/// refused in whitelist mode, the URL's server never contacted; fine without.
///
/// The docker CLI 28 never sends `remote=`: for `docker build http://…` it downloads the context
/// itself (`build.GetContextFromURL`) and uploads it as the body, an ordinary build. So the
/// remote form is sent raw, and the CLI form is shown to be a body build.
#[test]
fn build_from_a_remote_context_is_refused_in_whitelist_mode() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let server = FileServer::start(context_tar(&format!(
        "FROM {image}\nLABEL vch.remote=yes\n"
    )));
    let url = server.url("ctx.tar");
    let target = format!("/v1.25/build?remote={}&t=vch-remote%3A1", escape(&url));
    let limit = Duration::from_secs(60);

    let vch = Vch::start(&dockerd, Mode::Plain, &["reg.allowed.example"]);
    let from = mark(&dockerd);
    let answer = raw_post(&vch, &target, limit);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(json_message(&answer), BUILD_REMOTE_DENIED);
    assert_eq!(server.requests(), Vec::<String>::new());
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/build"),
        Vec::<String>::new()
    );

    // The CLI form: the CLI fetches the URL and sends the context as the body, without
    // `remote=`: the build gate reads it, and its `FROM` (a Docker Hub name) is decided.
    docker_denied(
        &vch,
        &["build", "-q", "-t", "vch-remote:cli", &url],
        &unauthorized("docker.io"),
    );
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/build"),
        Vec::<String>::new()
    );

    // Whitelist mode off: dockerd fetches the context.
    let open = Vch::start(&dockerd, Mode::Plain, &[]);
    let answer = raw_post(&open, &target, limit);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("Successfully tagged vch-remote:1"),
        "{answer}"
    );
    assert_eq!(server.requests().len(), 2);
    let label = dockerd
        .docker_ok([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"vch.remote\"}}",
            "vch-remote:1",
        ])
        .unwrap();
    assert_eq!(label, "yes\n");
}

/// Tag, commit and run use images already in the engine: not decided, so they work with a
/// whitelist that does not hold Docker Hub (where their unqualified names would be from). A
/// build's base is decided, local or not.
#[test]
fn tag_commit_and_run_are_not_decided_build_bases_are() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let a = Registry::start().unwrap();
    let vch = Vch::start(&dockerd, Mode::Plain, &[&a.addr()]);
    // A pull of the same name is decided, and refused.
    docker_denied(&vch, &["pull", &image], &unauthorized("docker.io"));

    vch.docker_ok(&["tag", &image, "vch-local/tagged:1"]);
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "vch-local/tagged:1", "true"]),
        ""
    );

    vch.docker_ok(&[
        "run",
        "--name",
        "vch-commit-src",
        &image,
        "sh",
        "-c",
        "echo committed > /marker",
    ]);
    vch.docker_ok(&["commit", "vch-commit-src", "vch-local/committed:1"]);
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "vch-local/committed:1", "cat", "/marker"]),
        "committed\n"
    );

    // A build's base is decided even when the engine has it (the classic builder pulls a base
    // it no longer finds): a local image under a Docker Hub name is refused, the same image
    // tagged with the whitelisted registry's name builds without a pull.
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {image}\nRUN echo built > /built\n"),
    )
    .unwrap();
    docker_denied(
        &vch,
        &["build", "-q", "-t", "myapp", ctx],
        &unauthorized("docker.io"),
    );
    let base = format!("{}/vch-local/base:1", a.addr());
    vch.docker_ok(&["tag", &image, &base]);
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo built > /built\n"),
    )
    .unwrap();
    vch.docker_ok(&["build", "-q", "-t", "myapp", ctx]);
    assert_eq!(vch.docker_ok(&["run", "--rm", "myapp", "true"]), "");
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "myapp", "cat", "/built"]),
        "built\n"
    );
}

/// Pulls are decided as before: an image on the whitelisted A comes in, the same on B does not.
#[test]
fn pull_is_decided_by_the_whitelist() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    // Both registries hold the image, pushed directly by dockerd.
    let on_a = format!("{a_addr}/vch-pull/app:1");
    let on_b = format!("{b_addr}/vch-pull/app:1");
    for name in [&on_a, &on_b] {
        dockerd.docker_ok(["tag", &image, name]).unwrap();
        dockerd.docker_ok(["push", name]).unwrap();
        dockerd.docker_ok(["rmi", name]).unwrap();
    }
    let vch = Vch::start(&dockerd, Mode::Plain, &[&a_addr]);

    let (from, a_from) = (mark(&dockerd), a.log().len());
    vch.docker_ok(&["pull", &on_a]);
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/images/create").len(),
        1
    );
    assert!(registry_log_since(&a, a_from).contains("/v2/vch-pull/app/manifests/1"));
    assert!(images(&dockerd).contains(&on_a));

    let (from, b_from) = (mark(&dockerd), b.log().len());
    docker_denied(&vch, &["pull", &on_b], &unauthorized(&b_addr));
    assert_eq!(
        calls_since(&dockerd, from, "POST", "/images/create"),
        Vec::<String>::new()
    );
    assert!(!registry_log_since(&b, b_from).contains("/v2/vch-pull/"));
    assert!(!images(&dockerd).contains(&on_b));
}

/// Audit mode decides and records but refuses nothing: `would_deny` marks what enforce mode
/// would have refused. In enforce mode the refused records have `would_deny: false`.
#[test]
fn audit_mode_lets_denials_through_and_records_them() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    save_as(&dockerd, &image, "vch-audit/loaded:1", &saved);
    let saved = saved.to_str().unwrap();
    let to_b = format!("{b_addr}/vch-audit/app:1");
    dockerd.docker_ok(["tag", &image, &to_b]).unwrap();

    let audit = Vch::start_config(
        &dockerd,
        Mode::MutualTls,
        &RegistryConfig {
            whitelist: vec![a_addr.clone()],
            mode: EnforcementMode::Audit,
            ..RegistryConfig::default()
        },
    );
    let out = audit.docker_ok(&["load", "-i", saved]);
    assert!(out.contains("Loaded image: vch-audit/loaded:1"), "{out}");
    audit.docker_ok(&["push", &to_b]);
    assert!(b.log().contains("/v2/vch-audit/app/manifests/1"));

    let load = record_of(&audit, "the audited load", |r| r["route"] == "images/load");
    let push = record_of(&audit, "the audited push", |r| r["route"] == "images/push");
    for (what, r) in [("load", &load), ("push", &push)] {
        assert_eq!(r["status"], 200, "{what}: {r}");
        assert_eq!(r["mode"], "audit", "{what}: {r}");
        assert_eq!(r["allowed"], false, "{what}: {r}");
        assert_eq!(r["would_deny"], true, "{what}: {r}");
    }
    assert_eq!(load["action"], "load", "{load}");
    assert_eq!(push["action"], "push", "{push}");
    assert_eq!(push["registry"], b_addr.as_str(), "{push}");

    // Enforce mode: the same requests are refused, and the records say so.
    let enforce = Vch::start_config(
        &dockerd,
        Mode::MutualTls,
        &RegistryConfig {
            whitelist: vec![a_addr.clone()],
            ..RegistryConfig::default()
        },
    );
    docker_denied(&enforce, &["load", "-i", saved], LOAD_DENIED);
    docker_denied(&enforce, &["push", &to_b], &unauthorized(&b_addr));
    let load = record_of(&enforce, "the refused load", |r| {
        r["route"] == "images/load"
    });
    let push = record_of(&enforce, "the refused push", |r| {
        r["route"] == "images/push"
    });
    for (what, r) in [("load", &load), ("push", &push)] {
        assert_eq!(r["status"], 403, "{what}: {r}");
        assert_eq!(r["mode"], "enforce", "{what}: {r}");
        assert_eq!(r["allowed"], false, "{what}: {r}");
        assert_eq!(r["would_deny"], false, "{what}: {r}");
    }
}

/// `docker info` shows the registry policy: labels, and the insecure entries where the CLI lists
/// insecure registries.
#[test]
fn docker_info_shows_the_registry_policy() {
    let dockerd = dockerd();
    let a = "127.0.0.1:5000";
    let vch = Vch::start_config(
        &dockerd,
        Mode::Plain,
        &RegistryConfig {
            whitelist: vec![a.to_owned(), "*.example.com".to_owned()],
            insecure: vec![
                "10.0.0.0/8".to_owned(),
                "insecure.example.com:5000".to_owned(),
            ],
            push: Some(vec![a.to_owned()]),
            ..RegistryConfig::default()
        },
    );
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let expected = sorted(
        [
            "vch.registry.whitelist-mode=enabled",
            "vch.registry.policy-mode=enforce",
            "vch.registry.whitelist=127.0.0.1:5000",
            "vch.registry.whitelist=*.example.com",
            "vch.registry.insecure=10.0.0.0/8",
            "vch.registry.insecure=insecure.example.com:5000",
            "vch.registry.push=127.0.0.1:5000",
        ]
        .map(str::to_owned)
        .to_vec(),
    );

    // The text the CLI prints.
    let text = vch.docker_ok(&["info"]);
    let labels = sorted(
        text.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("vch.registry."))
            .map(str::to_owned)
            .collect(),
    );
    assert_eq!(labels, expected, "{text}");
    let insecure: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "Insecure Registries:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    for entry in ["insecure.example.com:5000", "10.0.0.0/8"] {
        assert!(
            insecure.contains(&entry),
            "{entry} not in {insecure:?}:\n{text}"
        );
    }

    // The JSON behind it.
    let info: Value =
        serde_json::from_str(&vch.docker_ok(&["info", "--format", "{{json .}}"])).unwrap();
    let labels = sorted(
        info["Labels"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str())
            .filter(|l| l.starts_with("vch.registry."))
            .map(str::to_owned)
            .collect(),
    );
    assert_eq!(labels, expected);
    let registry = &info["RegistryConfig"];
    let host = &registry["IndexConfigs"]["insecure.example.com:5000"];
    assert_eq!(host["Name"], "insecure.example.com:5000", "{registry}");
    assert_eq!(host["Secure"], false, "{registry}");
    assert!(
        registry["IndexConfigs"].get("10.0.0.0/8").is_none(),
        "{registry}"
    );
    let cidrs = registry["InsecureRegistryCIDRs"].as_array().unwrap();
    assert!(cidrs.iter().any(|c| c == "10.0.0.0/8"), "{registry}");
    // dockerd's own insecure default stays.
    assert!(cidrs.iter().any(|c| c == "127.0.0.0/8"), "{registry}");

    // Whitelist mode off: no list, no push label.
    let open = Vch::start(&dockerd, Mode::Plain, &[]);
    let info: Value =
        serde_json::from_str(&open.docker_ok(&["info", "--format", "{{json .Labels}}"])).unwrap();
    let labels = sorted(
        info.as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str())
            .filter(|l| l.starts_with("vch.registry."))
            .map(str::to_owned)
            .collect(),
    );
    assert_eq!(
        labels,
        [
            "vch.registry.policy-mode=enforce",
            "vch.registry.whitelist-mode=disabled"
        ]
    );

    // Audit mode, pushes refused.
    let closed = Vch::start_config(
        &dockerd,
        Mode::Plain,
        &RegistryConfig {
            whitelist: vec![a.to_owned()],
            push: Some(vec![]),
            mode: EnforcementMode::Audit,
            ..RegistryConfig::default()
        },
    );
    let info: Value =
        serde_json::from_str(&closed.docker_ok(&["info", "--format", "{{json .Labels}}"])).unwrap();
    let labels = sorted(
        info.as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str())
            .filter(|l| l.starts_with("vch.registry."))
            .map(str::to_owned)
            .collect(),
    );
    assert_eq!(
        labels,
        [
            "vch.registry.policy-mode=audit",
            "vch.registry.push=none",
            "vch.registry.whitelist-mode=enabled",
            "vch.registry.whitelist=127.0.0.1:5000",
        ]
    );
}

/// Each decided request's audit line names the route, the action, what was decided, the
/// registry, the entry that matched (null when none did), the verdict and its reason.
#[test]
fn audit_records_name_what_was_decided() {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    save_as(&dockerd, &image, "vch-fields/loaded:1", &saved);
    let vch = Vch::start(&dockerd, Mode::MutualTls, &[&a_addr]);

    let to_a = format!("{a_addr}/vch-fields/app:1");
    let to_b = format!("{b_addr}/vch-fields/app:1");
    vch.docker_ok(&["tag", &image, &to_a]);
    vch.docker_ok(&["tag", &image, &to_b]);
    vch.docker_ok(&["push", &to_a]);
    docker_denied(&vch, &["push", &to_b], &unauthorized(&b_addr));
    docker_denied(&vch, &["search", "busybox"], &unauthorized("docker.io"));
    docker_denied(&vch, &["load", "-i", saved.to_str().unwrap()], LOAD_DENIED);

    let push_b = record_of(&vch, "the refused push", |r| {
        r["route"] == "images/push" && str_of(r, "image").contains(&b_addr)
    });
    assert_eq!(push_b["method"], "POST", "{push_b}");
    assert_eq!(push_b["status"], 403, "{push_b}");
    assert_eq!(push_b["action"], "push", "{push_b}");
    assert_eq!(push_b["image"], to_b.as_str(), "{push_b}");
    assert_eq!(push_b["registry"], b_addr.as_str(), "{push_b}");
    assert_eq!(push_b["entry"], Value::Null, "{push_b}");
    assert_eq!(push_b["allowed"], false, "{push_b}");
    assert_eq!(push_b["mode"], "enforce", "{push_b}");
    assert_eq!(push_b["would_deny"], false, "{push_b}");
    assert!(
        str_of(&push_b, "decision").contains(&b_addr),
        "the decision should name the registry: {push_b}"
    );

    let push_a = record_of(&vch, "the allowed push", |r| {
        r["route"] == "images/push" && str_of(r, "image").contains(&a_addr)
    });
    assert_eq!(push_a["status"], 200, "{push_a}");
    assert_eq!(push_a["action"], "push", "{push_a}");
    assert_eq!(push_a["image"], to_a.as_str(), "{push_a}");
    assert_eq!(push_a["registry"], a_addr.as_str(), "{push_a}");
    assert_eq!(push_a["entry"], a_addr.as_str(), "{push_a}");
    assert_eq!(push_a["allowed"], true, "{push_a}");
    assert_eq!(push_a["would_deny"], false, "{push_a}");
    assert!(!str_of(&push_a, "decision").is_empty(), "{push_a}");

    let search = record_of(&vch, "the refused search", |r| {
        r["route"] == "images/search"
    });
    assert_eq!(search["status"], 403, "{search}");
    assert_eq!(search["action"], "search", "{search}");
    assert_eq!(search["registry"], "docker.io", "{search}");
    assert_eq!(search["entry"], Value::Null, "{search}");
    assert_eq!(search["allowed"], false, "{search}");
    assert!(!str_of(&search, "decision").is_empty(), "{search}");

    let load = record_of(&vch, "the refused load", |r| r["route"] == "images/load");
    assert_eq!(load["status"], 403, "{load}");
    assert_eq!(load["action"], "load", "{load}");
    assert_eq!(load["entry"], Value::Null, "{load}");
    assert_eq!(load["allowed"], false, "{load}");
    assert!(!str_of(&load, "decision").is_empty(), "{load}");
}

/// `docker login` is decided by the registry it logs in to: to a whitelisted registry it
/// succeeds (the registry checks the password), to another the CLI shows the whitelist's text and
/// that registry never sees the attempt.
#[test]
fn login_is_decided_by_the_registry() {
    let dockerd = dockerd();
    let allowed = Registry::builder()
        .htpasswd_user("vch", "s3cret")
        .start()
        .expect("docker-registry from the testbed must start (apt-get install docker-registry)");
    let denied = Registry::builder()
        .htpasswd_user("vch", "s3cret")
        .start()
        .expect("docker-registry from the testbed must start");
    let vch = Vch::start(&dockerd, Mode::Plain, &[&allowed.addr()]);
    let out = vch.docker_ok(&[
        "login",
        "--username",
        "vch",
        "--password",
        "s3cret",
        &allowed.addr(),
    ]);
    assert!(out.contains("Login Succeeded"), "{out}");
    assert!(
        allowed.log().contains("/v2/"),
        "the allowed registry saw the login"
    );

    let from = mark(&dockerd);
    let before = denied.log().len();
    docker_denied(
        &vch,
        &[
            "login",
            "--username",
            "vch",
            "--password",
            "s3cret",
            &denied.addr(),
        ],
        &unauthorized(&denied.addr()),
    );
    assert!(calls_since(&dockerd, from, "POST", "/auth").is_empty());
    assert!(
        !registry_log_since(&denied, before).contains("/v2/"),
        "the denied registry saw a login attempt"
    );
}
