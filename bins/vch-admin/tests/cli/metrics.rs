//! `vch-admin serve --metrics`: scraped while the real docker CLI pulls through the VCH from a
//! testbed registry, is refused a pull, and runs a container (a hijacked attach); and against an
//! engine that is not there. Every scrape is checked by `promtool check metrics` where the
//! `prometheus` package is installed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use vch_testbed::{Dockerd, Registry, TestImage};

use crate::serve::{Serving, line_with, signal};

fn vch_admin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
}

/// `vch-admin create` of a plain-HTTP VCH (no TLS: the metrics, not the handshake, are tested).
fn create(dir: &Path, listen: &str, docker_host: &str, whitelist: &[&str]) {
    let mut cmd = vch_admin();
    cmd.args(["create", "--name", "m", "--no-tls", "--no-registry-probe"])
        .args(["--listen", listen, "--docker-host", docker_host]);
    for entry in whitelist {
        cmd.args(["--wr", entry]);
    }
    let out = cmd.arg("--cert-path").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `vch-admin serve DIR ARGS` with the audit log discarded.
fn serve(dir: &Path, args: &[&str]) -> (Serving, Receiver<String>) {
    let mut args = args.to_vec();
    args.extend(["--audit-log", "/dev/null"]);
    Serving::spawn(dir, &args, &[])
}

/// The address in `vch-admin: metrics on http://ADDR/metrics`.
fn metrics_addr(rx: &Receiver<String>) -> String {
    let line = line_with(rx, "metrics on http://");
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned()
}

/// One HTTP/1.1 exchange over a fresh connection: (status, head, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_owned(), body.to_owned()))
}

/// A scrape: every sample by its name and labels as written (`vch_requests_total{kind="ping",
/// status="2xx"}`), checked by promtool.
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

fn scrape(addr: &str) -> Scrape {
    let (status, head, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    promtool_check(&text);
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    Scrape { samples, text }
}

/// `promtool check metrics` on a scrape. Without promtool the check cannot run: under CI that
/// fails the test; elsewhere it says so on stderr in capitals, never silently.
#[allow(
    clippy::print_stderr,
    reason = "a check that could not run says so in the test's output"
)]
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let message = "promtool not found (apt-get install prometheus, or scripts/setup.sh): \
                           the metrics were NOT validated by promtool";
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("WARNING: {message}");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scraped:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls until `ok` holds for a scrape (streams close a moment after the CLI exits).
fn eventually(addr: &str, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(addr);
        if ok(&scraped) {
            return scraped;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held; last scrape:\n{}",
            scraped.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The docker CLI aimed at the VCH.
fn docker(listen: &str, config_dir: &Path, args: &[&str]) -> Output {
    Command::new("docker")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env("DOCKER_HOST", format!("tcp://{listen}"))
        .env("DOCKER_CONFIG", config_dir)
        .args(args)
        .output()
        .unwrap()
}

const REQUESTS: &str = "vch_requests_total";
const DECISIONS: &str = "vch_policy_decisions_total";

#[test]
fn metrics_count_a_real_pull_a_denied_pull_and_a_hijacked_run() {
    let dockerd =
        Dockerd::start().expect("dockerd from the testbed must start (apt-get install docker.io)");
    let registry = Registry::start().expect("docker-registry from the testbed must start");
    let image = TestImage::busybox(&dockerd).unwrap();
    let remote = format!("{}/metrics/busybox:1", registry.addr());
    dockerd.docker_ok(["tag", &image, &remote]).unwrap();
    dockerd.docker_ok(["push", &remote]).unwrap();
    dockerd.docker_ok(["rmi", &remote]).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let listen = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    create(&dir, &listen, &dockerd.host(), &[&registry.addr()]);
    let from_config = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    let config = dir.join("vch.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[serve]\nmetrics = \"{from_config}\"\n"));
    std::fs::write(&config, text).unwrap();

    // The flag wins over vch.toml.
    {
        let (_serving, rx) = serve(&dir, &["--metrics", "127.0.0.1:0"]);
        let addr = metrics_addr(&rx);
        assert_ne!(addr, from_config);
        let scraped = scrape(&addr);
        // Label sets appear once used; unlabelled metrics from the start.
        assert!(
            scraped
                .text
                .contains("# TYPE vch_connections_total counter"),
            "{}",
            scraped.text
        );
        assert!(
            TcpStream::connect(&from_config).is_err(),
            "vch.toml's metrics address is served although --metrics was given"
        );
        // Only /metrics is served.
        assert_eq!(http_get(&addr, "/").unwrap().0, 404);
    }

    // vch.toml alone.
    let (serving, rx) = serve(&dir, &[]);
    let addr = metrics_addr(&rx);
    assert_eq!(addr, from_config);
    let config_dir = dockerd.docker_config_dir();
    let before = scrape(&addr);
    assert_eq!(before.get("vch_connections_active"), 0.0, "{}", before.text);

    // A whitelisted pull.
    let out = docker(&listen, config_dir, &["pull", &remote]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = scrape(&addr);
    let allowed = format!(
        "{DECISIONS}{{result=\"allowed\",registry=\"{}\",route=\"images/create\"}}",
        registry.addr()
    );
    assert_eq!(pulled.get(&allowed), 1.0, "{}", pulled.text);
    let policed_ok = format!("{REQUESTS}{{kind=\"policed\",status=\"2xx\"}}");
    assert_eq!(pulled.get(&policed_ok), 1.0, "{}", pulled.text);
    assert_eq!(
        pulled.get("vch_request_duration_seconds_count{kind=\"policed\"}"),
        1.0
    );
    assert_eq!(
        pulled.get("vch_request_duration_seconds_bucket{kind=\"policed\",le=\"+Inf\"}"),
        1.0
    );
    assert!(pulled.get("vch_request_duration_seconds_sum{kind=\"policed\"}") > 0.0);
    // The CLI's /_ping, and the pull's progress stream out to it.
    assert!(pulled.get(&format!("{REQUESTS}{{kind=\"ping\",status=\"2xx\"}}")) >= 1.0);
    let out_bytes = "vch_transfer_bytes_total{direction=\"out\"}";
    assert!(
        pulled.get(out_bytes) > before.get(out_bytes),
        "{}",
        pulled.text
    );
    assert!(pulled.get("vch_connections_total") >= 1.0);

    // A pull the whitelist refuses: counted as denied, its registry not a label of its own.
    let out = docker(&listen, config_dir, &["pull", "reg.denied.example/app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Access denied to unauthorized registry (reg.denied.example)"),
        "{stderr}"
    );
    let denied = scrape(&addr);
    let denied_series =
        format!("{DECISIONS}{{result=\"denied\",registry=\"other\",route=\"images/create\"}}");
    assert_eq!(denied.get(&denied_series), 1.0, "{}", denied.text);
    assert_eq!(denied.get(&allowed), 1.0);
    assert_eq!(
        denied.get(&format!("{REQUESTS}{{kind=\"policed\",status=\"4xx\"}}")),
        1.0
    );
    assert_eq!(denied.get(&policed_ok), 1.0);
    assert!(
        !denied.text.contains("reg.denied.example"),
        "a refused registry became a label:\n{}",
        denied.text
    );

    // A run: its attach is a hijacked stream, spliced and then closed.
    let out = docker(
        &listen,
        config_dir,
        &["run", "--rm", &remote, "echo", "through the vch"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the vch\n");
    let ran = eventually(&addr, "the hijack and the CLI's connections closed", |s| {
        s.get("vch_hijacks_total") >= 1.0
            && s.get("vch_hijacks_active") == 0.0
            && s.get("vch_connections_active") == 0.0
    });
    assert!(ran.get(&format!("{REQUESTS}{{kind=\"hijack\",status=\"1xx\"}}")) >= 1.0);
    let in_bytes = "vch_transfer_bytes_total{direction=\"in\"}";
    assert!(ran.get(in_bytes) > 0.0, "{}", ran.text);
    assert_eq!(ran.get("vch_upstream_connect_errors_total"), 0.0);
    // Nothing of the client's choosing is a label: no image names, no addresses.
    assert!(!ran.text.contains("busybox") && !ran.text.contains("peer"));

    signal(&serving.0, "-TERM");
}

#[test]
fn metrics_count_an_engine_that_cannot_be_reached_and_refuse_a_bad_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let listen = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    let gone = format!("unix://{}/no-engine.sock", tmp.path().display());
    create(&dir, &listen, &gone, &["reg.example.com"]);

    let (serving, rx) = serve(&dir, &["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&rx);
    let (status, _, body) = http_get(&listen, "/v1.41/containers/json").unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot reach the Docker engine"), "{body}");
    let (status, _, _) = http_get(&listen, "/v1.41/no/such/route").unwrap();
    assert_eq!(status, 404);
    let scraped = scrape(&addr);
    assert_eq!(
        scraped.get("vch_upstream_connect_errors_total"),
        1.0,
        "{}",
        scraped.text
    );
    assert_eq!(
        scraped.get(&format!("{REQUESTS}{{kind=\"other\",status=\"5xx\"}}")),
        1.0
    );
    assert_eq!(
        scraped.get(&format!("{REQUESTS}{{kind=\"unrouted\",status=\"4xx\"}}")),
        1.0
    );

    // The same address again (taken by the server above), and one that is no address: serve
    // refuses to start, saying why.
    let busy = vch_admin()
        .arg("serve")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--metrics", &addr])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains("cannot serve metrics") && stderr.contains(&addr),
        "{stderr}"
    );
    let bad = vch_admin()
        .arg("serve")
        .arg(&dir)
        .args(["--metrics", "localhost"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--metrics") && stderr.contains("socket address"),
        "{stderr}"
    );
    drop(serving);
}
