//! The real docker CLI through the proxy to a real dockerd, in all three TLS modes.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vch_testbed::{Dockerd, Registry, TestImage};

use crate::support::{Mode, Vch, audit_records, dockerd};

/// Runs a command with stdin, failing if it does not end within `limit`.
fn run_with_stdin(mut cmd: Command, stdin: &[u8], limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "{cmd:?}: {err}");
            return (out, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {limit:?}: stdin EOF was not passed on");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scenario(mode: Mode) {
    let dockerd = dockerd();
    let image = TestImage::busybox(&dockerd).unwrap();
    let registry = Registry::start().expect("docker-registry from the testbed must start");
    let vch = Vch::start(
        &dockerd,
        mode,
        &[registry.addr().as_str(), "*.allowed.example"],
    );

    // The engine's 1.41 (dockerd 20.10), negotiated from /_ping by the CLI.
    let versions = vch.docker_ok(&[
        "version",
        "--format",
        "{{.Client.APIVersion}} {{.Server.APIVersion}}",
    ]);
    assert_eq!(versions.trim(), "1.41 1.41", "{mode:?}");
    assert!(
        !vch.docker_ok(&["info", "--format", "{{.ServerVersion}}"])
            .trim()
            .is_empty()
    );

    // Push and pull through the proxy with a registry on the whitelist.
    let remote = format!("{}/vch/busybox:{mode:?}", registry.addr()).to_lowercase();
    vch.docker_ok(&["tag", &image, &remote]);
    vch.docker_ok(&["push", &remote]);
    vch.docker_ok(&["rmi", &remote]);
    vch.docker_ok(&["pull", &remote]);

    // A pull from outside the whitelist is refused with the denial text and never reaches dockerd.
    let denied = vch
        .docker()
        .args(["pull", "denied.example.net/team/app:1"])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("Access denied to unauthorized registry (denied.example.net) while VCH is in whitelist mode"),
        "{stderr}"
    );
    let log = dockerd.log();
    assert!(
        !log.contains("denied.example.net"),
        "dockerd saw the denied pull"
    );
    assert!(
        log.contains("fromImage="),
        "dockerd's debug log should show the allowed pull"
    );

    // Containers: run, stdin EOF (also over TLS), exec, logs -f.
    assert_eq!(
        vch.docker_ok(&["run", "--rm", &image, "echo", "hi"]),
        "hi\n"
    );
    let mut cat = vch.docker();
    cat.args(["run", "-i", "--rm", &image, "cat"]);
    // A hang would mean stdin EOF (over TLS: close_notify) was not passed on; measured: well
    // under 1 s in every mode.
    let (out, _took) = run_with_stdin(cat, b"data\n", Duration::from_secs(20));
    assert_eq!(out, "data\n");

    let id = vch.docker_ok(&[
        "run",
        "-d",
        &image,
        "sh",
        "-c",
        "echo one; sleep 1; echo two; sleep 300",
    ]);
    let id = id.trim();
    assert_eq!(vch.docker_ok(&["exec", id, "echo", "in-exec"]), "in-exec\n");
    let mut exec_cat = vch.docker();
    exec_cat.args(["exec", "-i", id, "cat"]);
    assert_eq!(
        run_with_stdin(exec_cat, b"via exec\n", Duration::from_secs(20)).0,
        "via exec\n"
    );
    let short = vch.docker_ok(&["run", "-d", &image, "sh", "-c", "echo a; sleep 1; echo b"]);
    assert_eq!(vch.docker_ok(&["logs", "-f", short.trim()]), "a\nb\n");

    // events stays open and streams.
    let mut events = vch
        .docker()
        .args([
            "events",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let name = format!("vch-events-{mode:?}").to_lowercase();
    vch.docker_ok(&["run", "--rm", "--name", &name, &image, "true"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        events.try_wait().unwrap().is_none(),
        "docker events ended by itself"
    );
    events.kill().unwrap();
    let mut seen = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = events.wait();
    assert!(seen.contains(&format!("start {name}")), "{seen}");

    // cp 64 MiB both ways, byte-identical.
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..64u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &big).unwrap();
    vch.docker_ok(&["cp", src.to_str().unwrap(), &format!("{id}:/tmp/big.bin")]);
    let back = dir.path().join("back.bin");
    vch.docker_ok(&["cp", &format!("{id}:/tmp/big.bin"), back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == big,
        "cp round trip changed the bytes"
    );

    // build (classic builder), save, ps, rm.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    // The base is decided: the local image under the whitelisted registry's name.
    let base = format!("{}/vch-cli/base:1", registry.addr());
    vch.docker_ok(&["tag", &image, &base]);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo built > /built\n"),
    )
    .unwrap();
    let built = format!("vch-built-{mode:?}").to_lowercase();
    vch.docker_ok(&["build", "-q", "-t", &built, ctx.to_str().unwrap()]);
    assert_eq!(
        vch.docker_ok(&["run", "--rm", &built, "cat", "/built"]),
        "built\n"
    );
    let saved = dir.path().join("saved.tar");
    vch.docker_ok(&["save", "-o", saved.to_str().unwrap(), &built]);
    assert!(std::fs::metadata(&saved).unwrap().len() > 100_000);
    assert!(
        vch.docker_ok(&["ps", "--format", "{{.ID}}"])
            .contains(&id[..12])
    );
    vch.docker_ok(&["rm", "-f", id, short.trim()]);
    assert!(
        !vch.docker_ok(&["ps", "-a", "--format", "{{.ID}}"])
            .contains(&id[..12])
    );

    // The audit log has the denied pull with its decision.
    let records = audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["image"] == "denied.example.net/team/app:1"
                && r["allowed"] == false
                && r["status"] == 403)
    );
    drop(vch);
}

#[test]
fn docker_cli_plain() {
    scenario(Mode::Plain);
}

#[test]
fn docker_cli_tls() {
    scenario(Mode::Tls);
}

#[test]
fn docker_cli_mutual_tls() {
    scenario(Mode::MutualTls);
}

#[test]
fn mutual_tls_refuses_clients_without_the_right_certificate() {
    let dockerd: Dockerd = dockerd();
    let vch = Vch::start(&dockerd, Mode::MutualTls, &[]);
    let ping = |extra: &[&str]| {
        Command::new("docker")
            .env("DOCKER_CONFIG", dockerd.docker_config_dir())
            .env_remove("DOCKER_HOST")
            .args(["-H", &format!("tcp://{}", vch.addr)])
            .args(extra)
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .output()
            .unwrap()
    };
    let ca = vch.certs.path("ca.pem");
    let ca = ca.to_str().unwrap();
    // No client certificate.
    let out = ping(&["--tlsverify", "--tlscacert", ca]);
    assert!(
        !out.status.success(),
        "accepted a client without a certificate"
    );
    // A client certificate from another CA.
    let other = crate::support::Certs::new("intruder");
    let (cert, key) = (other.path("cert.pem"), other.path("key.pem"));
    let out = ping(&[
        "--tlsverify",
        "--tlscacert",
        ca,
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "accepted a certificate from another CA"
    );
    // Plain HTTP on the TLS port.
    let out = ping(&[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP request to an HTTPS server"),
        "{stderr}"
    );
    // The right certificate works, and the audit log names its subject.
    assert_eq!(
        vch.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"])
            .trim(),
        "1.41"
    );
    // Records are written just after the response is flushed: give the last one a moment.
    let names_the_client = |records: &[serde_json::Value]| {
        records.iter().any(|r| {
            r["client_subject"]
                .as_str()
                .is_some_and(|s| s.contains("vch-test-client"))
                && r["client_sha256"].as_str().is_some_and(|s| s.len() == 64)
        })
    };
    let started = Instant::now();
    while !names_the_client(&audit_records()) && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let records = audit_records();
    assert!(names_the_client(&records), "{records:?}");
}
