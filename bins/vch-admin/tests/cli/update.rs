//! `vch-admin update`: narrowing only (content trust), refusals that write nothing, `--reset`,
//! atomic writes that keep the file's mode, and a running `serve` taking an update on SIGHUP.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use vch_admin::config::VchConfig;

use super::create::{create, inspect_json, run, vch_admin};

/// A VCH (no TLS) whose deploy-time whitelist is `*.example.com` and `10.0.0.0/8`, with the
/// insecure registry `insecure.example.com` and the push list `*.push.example.com`.
pub(crate) fn deployed(parent: &Path) -> PathBuf {
    create(
        parent,
        "vch",
        &[
            "--no-tls",
            "--no-registry-probe",
            "--wr",
            "*.example.com",
            "--wr",
            "10.0.0.0/8",
            "--dir",
            "insecure.example.com",
            "--push-registry",
            "*.push.example.com",
        ],
    )
}

/// `vch-admin update DIR EXTRA…`.
pub(crate) fn update(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["update", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn config(dir: &Path) -> VchConfig {
    VchConfig::load(dir).unwrap().0
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `check --config DIR/vch.toml [--push] IMAGE`: allowed?
fn allowed(dir: &Path, push: bool, image: &str) -> bool {
    let config = dir.join("vch.toml");
    let mut args = vec!["check", "--config", config.to_str().unwrap()];
    if push {
        args.push("--push");
    }
    args.push(image);
    match run(&args).status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("check {image}: exit {other:?}"),
    }
}

#[test]
fn update_narrows_the_whitelist_and_the_push_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    assert!(allowed(&dir, false, "b.example.com/x"));

    let out = update(&dir, &["--wr", "a.example.com", "--wr", "10.1.0.0/16"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for want in [
        "Updated ",
        "  whitelist:   a.example.com, 10.1.0.0/16\n",
        "  push:        *.push.example.com\n",
        "a running `vch-admin serve` picks it up on SIGHUP (kill -HUP <pid>)",
    ] {
        assert!(
            text.to_lowercase().contains(&want.to_lowercase()),
            "{want}: {text}"
        );
    }
    let registry = config(&dir).registry;
    assert_eq!(registry.whitelist, ["*.example.com", "10.0.0.0/8"], "kept");
    let narrowed = registry.narrowed.unwrap();
    assert_eq!(
        narrowed.whitelist.as_deref(),
        Some(&["a.example.com".to_owned(), "10.1.0.0/16".to_owned()][..])
    );
    assert_eq!(narrowed.push, None);
    assert!(allowed(&dir, false, "a.example.com/x"));
    assert!(allowed(&dir, false, "10.1.2.3/x"));
    assert!(!allowed(&dir, false, "b.example.com/x"));
    assert!(!allowed(&dir, false, "10.2.2.3/x"));
    // The insecure registry stays allowed: it is not part of the whitelist.
    assert!(allowed(&dir, false, "insecure.example.com/x"));

    // The push list narrows on its own; the narrowed whitelist stays.
    let out = update(&dir, &["--push-registry", "a.push.example.com"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("  push:        a.push.example.com\n"),
        "{out:?}"
    );
    assert!(allowed(&dir, true, "a.push.example.com/x"));
    assert!(!allowed(&dir, true, "b.push.example.com/x"));
    assert!(!allowed(&dir, false, "b.example.com/x"));

    // A second update starts from the deploy-time list, not from the first update.
    let out = update(&dir, &["--wr", "b.example.com"]);
    assert!(out.status.success(), "{out:?}");
    assert!(allowed(&dir, false, "b.example.com/x"));
    assert!(!allowed(&dir, false, "a.example.com/x"));

    // No pushes at all.
    let out = update(&dir, &["--no-push"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("  push:        none (every push is refused)\n"),
        "{out:?}"
    );
    assert!(!allowed(&dir, true, "a.push.example.com/x"));

    // The same update again changes nothing and says so.
    let before = std::fs::read(dir.join("vch.toml")).unwrap();
    let out = update(&dir, &["--no-push"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("already holds"), "{out:?}");
    assert_eq!(std::fs::read(dir.join("vch.toml")).unwrap(), before);
}

#[test]
fn a_broadening_entry_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    assert!(update(&dir, &["--wr", "a.example.com"]).status.success());
    let file = dir.join("vch.toml");
    let before = std::fs::read(&file).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--wr", "other.org"],
            "`other.org` would broaden the whitelist",
        ),
        (
            &["--wr", "a.example.com", "--wr", "*.example.org"],
            "`*.example.org` would broaden the whitelist",
        ),
        (&["--wr", "11.0.0.0/8"], "`11.0.0.0/8`"),
        (&["--wr", "*"], "`*` would broaden"),
        (
            &["--push-registry", "a.example.com"],
            "`a.example.com` would broaden the push list",
        ),
        (
            &["--wr", "a.example.com", "--push-registry", "push.other.org"],
            "`push.other.org` would broaden the push list",
        ),
    ];
    for (extra, want) in cases {
        let out = update(&dir, extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {out:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(err.contains("nothing was written"), "{err}");
        assert!(stdout(&out).is_empty(), "{extra:?}: {out:?}");
        assert_eq!(std::fs::read(&file).unwrap(), before, "{extra:?}");
    }
    // A bad entry is a usage error, and writes nothing either.
    let out = update(&dir, &["--wr", "reg:99999"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("reg:99999"), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "no temporaries"
    );

    // A VCH that refuses pushes cannot be given a push list by an update.
    let no_push = create(
        tmp.path(),
        "nopush",
        &[
            "--no-tls",
            "--no-registry-probe",
            "--wr",
            "*.example.com",
            "--no-push",
        ],
    );
    let out = update(&no_push, &["--push-registry", "a.example.com"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("`a.example.com`"), "{out:?}");
}

#[test]
fn a_hand_widened_file_is_refused_until_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    assert!(update(&dir, &["--wr", "a.example.com"]).status.success());
    let file = dir.join("vch.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("whitelist = [\"a.example.com\"]", "whitelist = [\"*.org\"]");
    assert!(text.contains("*.org"), "{text}");
    std::fs::write(&file, &text).unwrap();

    // Even an update that would replace the widened list: the file is not to be trusted.
    let out = update(&dir, &["--wr", "a.example.com"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`*.org`") && err.contains("--reset"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // inspect reports it as an error.
    let (code, json) = inspect_json(&dir, &[]);
    assert_eq!(code, 1, "{json:#}");
    assert!(
        json["registry_in_force"]["error"]
            .as_str()
            .unwrap()
            .contains("*.org"),
        "{json:#}"
    );

    // --reset repairs it.
    let out = update(&dir, &["--reset"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(config(&dir).registry.narrowed, None);
    assert!(update(&dir, &["--wr", "a.example.com"]).status.success());
}

#[test]
fn reset_returns_to_the_deploy_time_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    let deploy = std::fs::read_to_string(dir.join("vch.toml")).unwrap();
    assert!(
        update(
            &dir,
            &[
                "--wr",
                "a.example.com",
                "--push-registry",
                "a.push.example.com"
            ]
        )
        .status
        .success()
    );
    assert!(!allowed(&dir, false, "b.example.com/x"));
    let out = update(&dir, &["--reset"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("  whitelist:   *.example.com, 10.0.0.0/8\n")
            && text.contains("  push:        *.push.example.com\n")
            && text.contains("the deploy-time lists"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("vch.toml")).unwrap(),
        deploy,
        "back to what create wrote"
    );
    assert!(allowed(&dir, false, "b.example.com/x"));
    assert!(allowed(&dir, true, "b.push.example.com/x"));
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    let before = std::fs::read(dir.join("vch.toml")).unwrap();
    for extra in [
        &[][..],
        &["--reset", "--wr", "a.example.com"],
        &["--reset", "--push-registry", "a.push.example.com"],
        &["--reset", "--no-push"],
        &["--no-push", "--push-registry", "a.push.example.com"],
    ] {
        let out = update(&dir, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        assert!(!stderr(&out).is_empty(), "{extra:?}");
        assert_eq!(std::fs::read(dir.join("vch.toml")).unwrap(), before);
    }
    let out = update(&tmp.path().join("missing"), &["--wr", "a.example.com"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("vch.toml"), "{out:?}");
}

#[test]
fn the_file_keeps_its_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = deployed(tmp.path());
    let file = dir.join("vch.toml");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for wanted in [0o640, 0o600] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(wanted)).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
        let entry = if wanted == 0o640 {
            "a.example.com"
        } else {
            "b.example.com"
        };
        assert!(update(&dir, &["--wr", entry]).status.success());
        assert_eq!(mode(&file), wanted);
        let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
        assert_ne!(inode, after, "replaced by a rename, not rewritten in place");
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["vch.env", "vch.toml"], "no temporaries left");
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `POST /v1.25/images/create?fromImage=IMAGE&tag=1` over a raw TCP connection: the status and
/// the body as text.
fn pull_raw(port: u16, image: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1.25/images/create?fromImage={image}&tag=1 HTTP/1.1\r\nHost: x\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    (status, answer)
}

#[test]
fn update_and_sighup_refuse_a_pull_that_was_allowed() {
    let dockerd = vch_testbed::Dockerd::start()
        .expect("dockerd from the testbed must start (apt-get install docker.io)");
    let tmp = tempfile::tempdir().unwrap();
    let port = vch_testbed::free_port().unwrap();
    // Two registries on closed loopback ports: dockerd's pull fails fast, and not with a 403.
    let kept = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    let dropped = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    let dir = create(
        tmp.path(),
        "vch",
        &[
            "--no-tls",
            "--no-registry-probe",
            "--wr",
            &kept,
            "--wr",
            &dropped,
            "--docker-host",
            &dockerd.host(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let mut child = vch_admin()
        .arg("serve")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let serving = Serving(child);
    let mut lines = BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let image = format!("{dropped}/x");
    // dockerd's own answer (500: connection refused), not our 403.
    let (status, answer) = pull_raw(port, &image);
    assert!(
        status != 403 && answer.contains("server: Docker/"),
        "refused before the update: {answer}"
    );

    let out = update(&dir, &["--wr", &kept]);
    assert!(out.status.success(), "{out:?}");
    // Until the signal, the running endpoint keeps its settings.
    let (status, _) = pull_raw(port, &image);
    assert_ne!(status, 403);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &serving.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let reloaded = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(reloaded.contains("reloaded"), "{reloaded}");

    let (status, answer) = pull_raw(port, &image);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains(&format!(
            "Access denied to unauthorized registry ({dropped}) while VCH is in whitelist mode"
        )),
        "{answer}"
    );
    let (status, answer) = pull_raw(port, &format!("{kept}/x"));
    assert_ne!(status, 403, "{answer}");
}
