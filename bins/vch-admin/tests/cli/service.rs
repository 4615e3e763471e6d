//! Running a VCH as a service: serve's notifications through a real datagram socket (systemd's
//! `Type=notify` protocol), the audit log rotated by the real logrotate with the shipped config
//! while requests keep coming, and systemd's own check of the shipped unit.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vch_testbed::Dockerd;

use crate::serve::{Serving, line_with, signal};

fn vch_admin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
}

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib")
        .join(path)
}

/// `vch-admin create` of a VCH named `name` in front of `docker_host`; returns its directory and
/// listen address.
fn create(tmp: &Path, name: &str, docker_host: &str) -> (PathBuf, String) {
    let dir = tmp.join(name);
    let listen = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    let out = vch_admin()
        .args(["create", "--name", name, "--tls-cname", "127.0.0.1"])
        .args(["--no-registry-probe", "--wr", "reg.allowed.example"])
        .args(["--docker-host", docker_host, "--listen", &listen])
        .arg("--cert-path")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, listen)
}

/// The next notification datagram, within 20 s.
fn next_message(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("no notification from serve within 20 s");
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

#[test]
fn serve_tells_the_service_manager_ready_reloading_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    // No engine behind it: serve still listens (the engine's versions are asked for later).
    let engine = tmp.path().join("no-engine.sock");
    let (dir, listen) = create(tmp.path(), "vchn", &format!("unix://{}", engine.display()));
    let notify = tmp.path().join("notify.sock");
    let manager = UnixDatagram::bind(&notify).unwrap();
    let (mut serving, _stderr) = Serving::spawn(&dir, &[], &[("NOTIFY_SOCKET", &notify)]);

    let ready = next_message(&manager);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("\nMAINPID={}", serving.0.id())),
        "{ready}"
    );
    assert!(
        ready.contains(&listen),
        "the status names the address: {ready}"
    );
    // Ready means listening: a connection is accepted at once.
    std::net::TcpStream::connect(&listen).expect("READY=1 came before serve listened");

    signal(&serving.0, "-HUP");
    let reloading = next_message(&manager);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading}");
    let ready = next_message(&manager);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("reloaded"), "{ready}");

    // A reload that fails still ends with READY=1 (the old settings serve), and says why.
    let config = dir.join("vch.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "this is not toml").unwrap();
    signal(&serving.0, "-HUP");
    assert!(next_message(&manager).starts_with("RELOADING=1\n"));
    let ready = next_message(&manager);
    assert!(
        ready.starts_with("READY=1\n") && ready.contains("reload failed"),
        "{ready}"
    );
    std::fs::write(&config, good).unwrap();

    signal(&serving.0, "-TERM");
    let stopping = next_message(&manager);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    assert!(serving.wait_exit().success());
}

/// One request on the plain unix listener; true when a whole HTTP response came back.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: vch\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = Vec::new();
    s.read_to_end(&mut response).is_ok() && response.starts_with(b"HTTP/1.1 200 ")
}

fn audit_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn logrotate_rotates_the_audit_log_under_load_without_losing_or_splitting_a_line() {
    let dockerd =
        Dockerd::start().expect("dockerd from the testbed must start (apt-get install docker.io)");
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _listen) = create(tmp.path(), "vchr", &dockerd.host());
    let logs = tmp.path().join("log/vchr");
    std::fs::create_dir_all(&logs).unwrap();
    let audit = logs.join("audit.jsonl");
    let unix = tmp.path().join("vch.sock");
    let (serving, stderr) = Serving::spawn(
        &dir,
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--unix",
            unix.to_str().unwrap(),
        ],
        &[],
    );
    line_with(&stderr, "serves Docker API");

    // The shipped logrotate config, aimed at this log directory and this process (instead of
    // `systemctl reload`), with a state file of its own.
    let shipped = std::fs::read_to_string(contrib("logrotate/vch")).unwrap();
    assert!(shipped.contains("/var/log/vch/*/audit.jsonl {"));
    assert!(shipped.contains("systemctl reload 'vch@*.service'"));
    let config = shipped
        .replace(
            "/var/log/vch/*/audit.jsonl",
            &format!("{}/*/audit.jsonl", tmp.path().join("log").display()),
        )
        .replace(
            "systemctl reload 'vch@*.service'",
            &format!("kill -HUP {}", serving.0.id()),
        )
        // Several rotations within the same second: dated names would collide.
        .replace("    dateext\n", "");
    let conf = tmp.path().join("logrotate.conf");
    std::fs::write(&conf, config).unwrap();
    let state = tmp.path().join("logrotate.state");

    // Load: 4 clients sending requests back to back, each one answered and audited.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered, unix) = (stop.clone(), answered.clone(), unix.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if ping(&unix) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    const ROTATIONS: usize = 4;
    for round in 1..=ROTATIONS {
        std::thread::sleep(Duration::from_millis(400));
        let out = Command::new("logrotate")
            .arg("--force")
            .arg("--state")
            .arg(&state)
            .arg(&conf)
            .output()
            .expect("logrotate must be installed (apt-get install logrotate)");
        assert!(
            out.status.success(),
            "logrotate round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        line_with(&stderr, "reopened the audit log");
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let answered = answered.load(Ordering::Relaxed);
    assert!(
        answered > 100,
        "too little load to mean anything: {answered}"
    );

    // Every file logrotate left: audit.jsonl, audit.jsonl.1 (delaycompress) and older ones
    // gzipped. An audit line is written when its exchange ends, just after the response: wait
    // for the last ones.
    let read_all = || -> Vec<String> {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(&logs).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "gz") {
                let out = Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
                assert!(out.status.success());
                lines.extend(
                    String::from_utf8(out.stdout)
                        .unwrap()
                        .lines()
                        .map(str::to_owned),
                );
            } else {
                lines.extend(audit_lines(&path));
            }
        }
        lines
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = read_all();
    while lines.len() < answered && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        lines = read_all();
    }
    let files = std::fs::read_dir(&logs).unwrap().count();
    assert_eq!(
        files,
        ROTATIONS + 1,
        "one live file and one per rotation: {:?}",
        std::fs::read_dir(&logs).unwrap().collect::<Vec<_>>()
    );
    let pings = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("a split or broken line ({e}): {l}"))
        })
        .filter(|r| r["path"] == "/_ping" && r["status"] == 200)
        .count();
    assert_eq!(
        pings, answered,
        "every answered request has exactly one audit line across the rotated files"
    );
    // Lines went to every generation: the rotations happened under load.
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 0, "{} is empty", path.display());
    }
}

#[test]
fn systemd_accepts_the_shipped_unit() {
    let unit = std::fs::read_to_string(contrib("systemd/vch@.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/etc/vch/%i",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // systemd-analyze checks that ExecStart names an executable: aim it at this build.
    let tmp = tempfile::tempdir().unwrap();
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/vch-admin ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_vch-admin")),
    );
    std::fs::write(tmp.path().join("vch@.service"), unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./vch@demo.service"])
        .current_dir(tmp.path())
        .output()
        .expect("systemd-analyze must be installed (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are warnings with exit status 0: none allowed.
    assert!(stderr.trim().is_empty(), "systemd-analyze warned: {stderr}");
}
