//! `POST /build` (the classic builder) through the VCH, driven by the real docker CLI
//! (`DOCKER_BUILDKIT=0`) and by raw requests, against a real dockerd and real registries: every
//! image a build can pull (`FROM`, `COPY --from`, the `ONBUILD` triggers of its bases) is decided
//! before dockerd receives the context.
//!
//! Each test has a whitelisted registry A holding the images its builds use, and a running
//! registry D that is not whitelisted. A denied build is shown three ways: the client gets the
//! denial text, dockerd's debug log has no `Calling POST …/build` line, and D's access log has no
//! request at all. Allowed variants of the same forms build through the same VCH, so a VCH that
//! denied every build would fail too.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use vch_policy::{EnforcementMode, RegistryConfig};
use vch_testbed::{Dockerd, Registry, TestImage};

use crate::support::{Mode, Vch, audit_records, dockerd};

/// The start of the whitelist's denial for `host`; the VCH adds where the Dockerfile names it.
fn unauthorized(host: &str) -> String {
    format!("Access denied to unauthorized registry ({host}) while VCH is in whitelist mode")
}

/// What the VCH says when it cannot read a build.
const UNEVALUABLE: &str = "the VCH cannot evaluate this build, so it is denied";

/// One entry of a tar written by [`tar`].
pub(crate) enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// A ustar archive of `entries`, in order, duplicates kept: GNU tar will not write a context
/// whose entries repeat or link as dockerd's untar takes them without a detour through the file
/// system.
pub(crate) fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let (name, kind, link, data): (&str, u8, &str, &[u8]) = match *entry {
            Entry::File(name, data) => (name, b'0', "", data),
            Entry::Symlink(name, target) => (name, b'2', target, &[]),
            Entry::HardLink(name, target) => (name, b'1', target, &[]),
        };
        assert!(name.len() < 100 && link.len() < 100, "{name} -> {link}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(
            &mut header[100..108],
            if kind == b'2' { 0o777 } else { 0o644 },
        );
        put_octal(&mut header[108..116], 0);
        put_octal(&mut header[116..124], 0);
        put_octal(&mut header[124..136], data.len() as u64);
        put_octal(&mut header[136..148], 1_700_000_000);
        header[156] = kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        // Six digits and a NUL; the eighth byte stays a space.
        put_octal(&mut header[148..155], u64::from(sum));
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// `value` in octal, zero-padded, NUL-terminated, filling `field`.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert_eq!(text.len(), digits, "{value} does not fit");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// 20 files of 1 MiB of pseudo-random bytes (incompressible), to put before a Dockerfile.
fn blobs() -> Vec<(String, Vec<u8>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..20)
        .map(|i| {
            let data = (0..1024 * 1024 / 8)
                .flat_map(|_| {
                    // xorshift64
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()
                })
                .collect();
            (format!("data/blob-{i:02}"), data)
        })
        .collect()
}

/// `tar` compressed by the CLI `tool` (`gzip`, `bzip2`, `xz`).
fn compress(tool: &str, tar: &[u8], dir: &Path) -> Vec<u8> {
    let file = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::fs::write(file.path(), tar).unwrap();
    let out = std::process::Command::new(tool)
        .arg("-c")
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{tool} must run: {e}"));
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A directory context with these files (parents made as needed).
fn dir_context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// `docker build ARGS -` through `vch` with `context` (a tar, maybe compressed) on stdin: the
/// CLI passes an archive on stdin as it is.
fn build_stdin(vch: &Vch, dir: &Path, args: &[&str], context: &[u8]) -> Output {
    let file = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::fs::write(file.path(), context).unwrap();
    vch.docker()
        .arg("build")
        .args(args)
        .arg("-")
        .stdin(File::open(file.path()).unwrap())
        .output()
        .unwrap()
}

/// `docker build ARGS .` through `vch`, in `dir` (the CLI takes `-f` relative to its working
/// directory).
fn build_dir(vch: &Vch, args: &[&str], dir: &Path) -> Output {
    vch.docker()
        .current_dir(dir)
        .arg("build")
        .args(args)
        .arg(".")
        .output()
        .unwrap()
}

/// The stderr of a CLI run that must have failed.
fn failed(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what}: the build was not refused:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Asserts that a CLI build succeeded.
fn succeeded(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: the build failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One raw `POST target` to the plain-HTTP `vch` with `body`, read until the server closes:
/// the status and the whole answer.
fn raw_post(vch: &Vch, target: &str, body: &[u8]) -> (u16, String) {
    assert_eq!(vch.mode, Mode::Plain);
    let mut stream = TcpStream::connect(vch.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The answer may come before the body is read: write it from another thread.
    let mut writer = stream.try_clone().unwrap();
    let body = body.to_vec();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let _ = sending.join();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The one audit record of the build tagged `tag` (`t=` is unique in this binary), waited for:
/// records are written just after the response is flushed, so the client may be done first.
fn build_record(tag: &str) -> Value {
    let wanted = format!("t={tag}");
    let of_tag = |r: &Value| {
        r["route"] == "build"
            && r["path"]
                .as_str()
                .and_then(|p| p.split_once('?'))
                .is_some_and(|(_, query)| query.split('&').any(|kv| kv == wanted))
    };
    let started = Instant::now();
    loop {
        let records: Vec<Value> = audit_records().into_iter().filter(of_tag).collect();
        match records.len() {
            0 if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            1 => return records.into_iter().next().unwrap(),
            _ => panic!("{tag}: not one build record: {records:#?}"),
        }
    }
}

/// A dockerd with debug logging, the whitelisted registry A holding `vch-build/base:1`
/// (busybox) and `vch-build/other:1` (busybox with `/x`), and the running registry D that is not
/// whitelisted. Neither image is left in the engine: the builds pull them.
struct Bed {
    dockerd: Dockerd,
    a: Registry,
    d: Registry,
    /// D's log length once it was up (its readiness probe is before).
    d_from: usize,
    busybox: String,
    dir: tempfile::TempDir,
}

impl Bed {
    fn start() -> Bed {
        let dockerd = dockerd();
        let a = Registry::start().expect("docker-registry from the testbed must start");
        let d = Registry::start().expect("docker-registry from the testbed must start");
        let busybox = TestImage::busybox(&dockerd).unwrap();
        let bed = Bed {
            d_from: d.log().len(),
            dockerd,
            a,
            d,
            busybox,
            dir: tempfile::tempdir().unwrap(),
        };
        let (base, other) = (bed.base(), bed.other());
        bed.dockerd.docker_ok(["tag", &bed.busybox, &base]).unwrap();
        bed.direct_build(
            &other,
            &[
                ("Dockerfile", &format!("FROM {}\nCOPY x /x\n", bed.busybox)),
                ("x", "other\n"),
            ],
        );
        for name in [&base, &other] {
            bed.dockerd.docker_ok(["push", name]).unwrap();
            bed.dockerd.docker_ok(["rmi", name]).unwrap();
        }
        bed
    }

    /// A classic build straight on dockerd (not through a VCH).
    fn direct_build(&self, tag: &str, files: &[(&str, &str)]) {
        let ctx = dir_context(files);
        let out = self
            .dockerd
            .docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        succeeded(&format!("the direct build of {tag}"), &out);
    }

    fn a_image(&self, repo: &str) -> String {
        format!("{}/vch-build/{repo}:1", self.a.addr())
    }

    fn base(&self) -> String {
        self.a_image("base")
    }

    fn other(&self) -> String {
        self.a_image("other")
    }

    fn d_image(&self, repo: &str) -> String {
        format!("{}/vch-denied/{repo}:1", self.d.addr())
    }

    /// The VCH with only A whitelisted.
    fn vch(&self) -> Vch {
        Vch::start(&self.dockerd, Mode::Plain, &[&self.a.addr()])
    }

    /// Where dockerd's log ends now.
    fn mark(&self) -> usize {
        self.dockerd.log().len()
    }

    /// dockerd's `Calling POST …/build` lines after `from`.
    fn builds_since(&self, from: usize) -> Vec<String> {
        self.calls_since(from, "/build")
    }

    /// dockerd's `Calling METHOD PATH` lines after `from` whose path (without the query) ends
    /// with `endpoint`.
    fn calls_since(&self, from: usize, endpoint: &str) -> Vec<String> {
        let log = self.dockerd.log();
        let tail = String::from_utf8_lossy(&log.as_bytes()[from.min(log.len())..]).into_owned();
        tail.lines()
            .filter(|l| {
                l.split_once("Calling ")
                    .and_then(|(_, call)| call.split_whitespace().nth(1))
                    .is_some_and(|target| {
                        let path = target.split('?').next().unwrap_or(target);
                        path.ends_with(endpoint)
                    })
            })
            .map(str::to_owned)
            .collect()
    }

    /// D's access log since it came up.
    fn d_log(&self) -> String {
        let log = self.d.log();
        String::from_utf8_lossy(&log.as_bytes()[self.d_from.min(log.len())..]).into_owned()
    }

    /// Asserts a denial naming D: the text in `answer`, no request to D, and, unless the upload
    /// had been released to dockerd before a later entry was denied, no build call in dockerd
    /// since `from`.
    fn assert_denied(&self, what: &str, answer: &str, from: usize, released: bool) {
        let expected = unauthorized(&self.d.addr());
        assert!(
            answer.contains(&expected),
            "{what}:\n expected: {expected}\n      got: {answer}"
        );
        assert!(
            !self.d_log().contains("/v2/"),
            "{what}: the denied registry was contacted:\n{}",
            self.d_log()
        );
        if !released {
            assert_eq!(self.builds_since(from), Vec::<String>::new(), "{what}");
        }
    }

    /// Whether the engine has `image`, asked directly.
    fn has_image(&self, image: &str) -> bool {
        self.dockerd
            .docker()
            .args(["image", "inspect", image])
            .output()
            .unwrap()
            .status
            .success()
    }
}

/// Scenario 1 and the audit record: a multi-stage build whose bases and `COPY --from` image are
/// all on A builds and runs; the record lists every image decided, and no stage as an image.
#[test]
fn an_allowed_multi_stage_build_runs_and_is_recorded() {
    let bed = Bed::start();
    let vch = bed.vch();
    let (base, other) = (bed.base(), bed.other());
    let ctx = dir_context(&[(
        "Dockerfile",
        &format!(
            "ARG BASE={base}\nFROM $BASE AS build\nRUN echo hi > /out\n\
             FROM {base}\nCOPY --from=build /out /out\nCOPY --from={other} /x /x\n"
        ),
    )]);
    let from = bed.mark();
    vch.docker_ok(&["build", "-t", "vchb-multi", ctx.path().to_str().unwrap()]);
    assert_eq!(bed.builds_since(from).len(), 1);
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "vchb-multi", "cat", "/out"]),
        "hi\n"
    );
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "vchb-multi", "cat", "/x"]),
        "other\n"
    );
    let a_log = bed.a.log();
    for repo in ["base", "other"] {
        assert!(
            a_log.contains(&format!("/v2/vch-build/{repo}/manifests/1")),
            "A served no {repo}:\n{a_log}"
        );
    }

    let record = build_record("vchb-multi");
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["mode"], "enforce", "{record}");
    assert_eq!(record["allowed"], true, "{record}");
    assert_eq!(record["would_deny"], false, "{record}");
    let items = record["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {record}"));
    let mut images: Vec<&str> = items.iter().map(|i| i["image"].as_str().unwrap()).collect();
    images.sort_unstable();
    images.dedup();
    assert_eq!(images, [base.as_str(), other.as_str()], "{record}");
    for item in items {
        assert_eq!(item["allowed"], true, "{record}");
        assert_eq!(item["registry"], bed.a.addr().as_str(), "{record}");
    }
    let build = &record["build"];
    assert_eq!(build["dockerfile"], "Dockerfile", "{record}");
    assert_eq!(build["compression"], "none", "{record}");
    assert!(
        build["context_bytes"].as_u64().is_some_and(|n| n >= 1024),
        "{record}"
    );
}

/// The Dockerfile is found as dockerd finds it: the last of duplicate entries, the lowercase
/// fallback, symlinks and hard links inside the context, a normalised `dockerfile` parameter, and
/// in spite of a `.dockerignore` naming it. Each denied form names D; the allowed ones build.
#[test]
fn the_dockerfile_is_found_as_dockerd_finds_it() {
    let bed = Bed::start();
    let vch = bed.vch();
    let dir = bed.dir.path();
    let allowed = format!("FROM {}\nLABEL vch.case=allowed\n", bed.base());
    let denied = format!("FROM {}\n", bed.d_image("located"));
    let (allowed, denied) = (allowed.as_bytes(), denied.as_bytes());
    let blobs = blobs();

    let mut late = vec![Entry::File("Dockerfile", allowed)];
    late.extend(blobs.iter().map(|(n, d)| Entry::File(n, d)));
    late.push(Entry::File("Dockerfile", denied));
    let ignore = b"Dockerfile\n.dockerignore\n";
    let tars: Vec<(&str, Vec<Entry<'_>>, &[&str], bool)> = vec![
        (
            "a second Dockerfile entry",
            vec![
                Entry::File("Dockerfile", allowed),
                Entry::File("Dockerfile", denied),
            ],
            &[],
            false,
        ),
        ("a second Dockerfile entry after 20 MiB", late, &[], true),
        (
            "the lowercase fallback",
            vec![Entry::File("dockerfile", denied)],
            &[],
            false,
        ),
        (
            "a symlink",
            vec![
                Entry::File("real/df", denied),
                Entry::Symlink("Dockerfile", "real/df"),
            ],
            &[],
            false,
        ),
        (
            "a symlink before its target",
            vec![
                Entry::Symlink("Dockerfile", "real/df"),
                Entry::File("real/df", denied),
            ],
            &[],
            false,
        ),
        (
            "an absolute symlink (resolved in the context)",
            vec![
                Entry::File("real/df", denied),
                Entry::Symlink("Dockerfile", "/real/df"),
            ],
            &[],
            false,
        ),
        (
            "a chain of symlinks",
            vec![
                Entry::File("real/df", denied),
                Entry::Symlink("mid", "real"),
                Entry::Symlink("Dockerfile", "mid/df"),
            ],
            &[],
            false,
        ),
        (
            "a hard link",
            vec![
                Entry::File("real/df", denied),
                Entry::HardLink("Dockerfile", "real/df"),
            ],
            &[],
            false,
        ),
        (
            "a .dockerignore naming it",
            vec![
                Entry::File(".dockerignore", ignore),
                Entry::File("Dockerfile", denied),
            ],
            &[],
            false,
        ),
        (
            "-f sub/../Dockerfile",
            vec![Entry::File("Dockerfile", denied)],
            &["-f", "sub/../Dockerfile"],
            false,
        ),
        (
            "-f sub/Dockerfile",
            vec![
                Entry::File("Dockerfile", allowed),
                Entry::File("sub/Dockerfile", denied),
            ],
            &["-f", "sub/Dockerfile"],
            false,
        ),
    ];
    for (i, (what, entries, args, released)) in tars.iter().enumerate() {
        let tag = format!("vchb-where-{i}");
        let mut all = vec!["-t", tag.as_str()];
        all.extend_from_slice(args);
        let from = bed.mark();
        let out = build_stdin(&vch, dir, &all, &tar(entries));
        let stderr = failed(what, &out);
        bed.assert_denied(what, &stderr, from, *released);
        assert!(!bed.has_image(&tag), "{what}: dockerd built {tag}");
        let record = build_record(&tag);
        assert_eq!(record["status"], 403, "{what}: {record}");
        assert_eq!(record["allowed"], false, "{what}: {record}");
    }

    // A context without the Dockerfile cannot be evaluated: denied, though dockerd would only
    // fail.
    let from = bed.mark();
    let out = build_stdin(
        &vch,
        dir,
        &["-t", "vchb-where-none"],
        &tar(&[Entry::File("Containerfile", allowed)]),
    );
    let stderr = failed("no Dockerfile", &out);
    assert!(
        stderr.contains(&format!(
            "{UNEVALUABLE}: Cannot locate specified Dockerfile: Dockerfile"
        )),
        "{stderr}"
    );
    assert_eq!(bed.builds_since(from), Vec::<String>::new());

    // The same forms from a directory: the CLI resolves the fallback and symlinks itself and
    // sends the path; it keeps a Dockerfile that .dockerignore names.
    let dirs: Vec<(&str, tempfile::TempDir, &[&str])> = vec![
        (
            "dir: the lowercase fallback",
            dir_context(&[("dockerfile", &String::from_utf8_lossy(denied))]),
            &[],
        ),
        (
            "dir: a .dockerignore naming it",
            dir_context(&[
                ("Dockerfile", &String::from_utf8_lossy(denied)),
                (".dockerignore", "Dockerfile\n.dockerignore\n"),
            ]),
            &[],
        ),
        (
            "dir: -f sub/../Dockerfile",
            dir_context(&[
                ("Dockerfile", &String::from_utf8_lossy(denied)),
                ("sub/keep", ""),
            ]),
            &["-f", "sub/../Dockerfile"],
        ),
        ("dir: a symlink", symlinked(denied), &[]),
    ];
    for (i, (what, ctx, args)) in dirs.iter().enumerate() {
        let tag = format!("vchb-where-dir-{i}");
        let mut all = vec!["-t", tag.as_str()];
        all.extend_from_slice(args);
        let from = bed.mark();
        let out = build_dir(&vch, &all, ctx.path());
        let stderr = failed(what, &out);
        bed.assert_denied(what, &stderr, from, false);
    }

    // Raw requests with a `dockerfile` parameter dockerd normalises.
    let context = tar(&[Entry::File("Dockerfile", denied)]);
    for param in ["x%2F..%2FDockerfile", ".%2FDockerfile", "%2FDockerfile"] {
        let what = format!("raw dockerfile={param}");
        let from = bed.mark();
        let (status, answer) = raw_post(
            &vch,
            &format!("/v1.41/build?dockerfile={param}&t=vchb-raw"),
            &context,
        );
        assert_eq!(status, 403, "{what}: {answer}");
        bed.assert_denied(&what, &answer, from, false);
    }

    // Allowed: dockerd takes `Dockerfile` over the lowercase one, and normalises the parameter.
    let out = build_stdin(
        &vch,
        dir,
        &["-t", "vchb-where-ok-0"],
        &tar(&[
            Entry::File("Dockerfile", allowed),
            Entry::File("dockerfile", denied),
        ]),
    );
    succeeded("Dockerfile before the lowercase fallback", &out);
    let (status, answer) = raw_post(
        &vch,
        "/v1.41/build?dockerfile=x%2F..%2FDockerfile&t=vchb-where-ok-1",
        &tar(&[
            Entry::File("Dockerfile", allowed),
            Entry::File("x/Dockerfile", denied),
        ]),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains("Successfully tagged vchb-where-ok-1"),
        "{answer}"
    );
    // The allowed builds' first Dockerfile after 20 MiB.
    let mut entries: Vec<Entry<'_>> = blobs.iter().map(|(n, d)| Entry::File(n, d)).collect();
    entries.push(Entry::File("Dockerfile", allowed));
    let out = build_stdin(&vch, dir, &["-t", "vchb-where-ok-2"], &tar(&entries));
    succeeded("a Dockerfile after 20 MiB", &out);
    for tag in ["vchb-where-ok-0", "vchb-where-ok-1", "vchb-where-ok-2"] {
        let label = bed
            .dockerd
            .docker_ok([
                "image",
                "inspect",
                "--format",
                "{{index .Config.Labels \"vch.case\"}}",
                tag,
            ])
            .unwrap();
        assert_eq!(label, "allowed\n", "{tag}");
    }
    assert!(!bed.d_log().contains("/v2/"), "{}", bed.d_log());
}

/// A directory whose `Dockerfile` is a symlink to `real/df` holding `text`.
fn symlinked(text: &[u8]) -> tempfile::TempDir {
    let ctx = dir_context(&[("real/df", &String::from_utf8_lossy(text))]);
    std::os::unix::fs::symlink("real/df", ctx.path().join("Dockerfile")).unwrap();
    ctx
}

/// The Dockerfile is read as the classic builder reads it: parser directives, continuations,
/// ARG scopes and build args, stage names and indexes, `COPY --from` images. BuildKit is refused.
#[test]
fn the_dockerfile_is_read_as_the_classic_builder_reads_it() {
    let bed = Bed::start();
    let vch = bed.vch();
    let (base, d_addr) = (bed.base(), bed.d.addr());
    let d = bed.d_image("read");
    let ba = format!("B={d}");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("FROM D", format!("FROM {d}\n"), vec![]),
        ("from D, lower case", format!("from {d}\n"), vec![]),
        (
            "FROM --platform D",
            format!("FROM --platform=linux/amd64 {d}\n"),
            vec![],
        ),
        (
            "FROM D in a second stage",
            format!("FROM {base} AS one\nRUN true\nFROM {d}\n"),
            vec![],
        ),
        (
            "# escape=` with a continued FROM",
            format!("# escape=`\nFROM {d_addr}/vch-denied/`\nread:1\n"),
            vec![],
        ),
        (
            "a comment inside a continuation",
            format!("# escape=`\nFROM `\n# between\n{d}\n"),
            vec![],
        ),
        (
            "a backslash continuation",
            format!("FROM \\\n  {d}\n"),
            vec![],
        ),
        (
            "a build arg over an allowed default",
            format!("ARG B={base}\nFROM $B\n"),
            vec!["--build-arg", &ba],
        ),
        (
            "a build arg filling an ARG without default",
            "ARG B\nFROM $B\n".to_owned(),
            vec!["--build-arg", &ba],
        ),
        (
            "a build arg over ${B:-default}",
            format!("ARG B\nFROM ${{B:-{base}}}\n"),
            vec!["--build-arg", &ba],
        ),
        (
            "COPY --from=D",
            format!("FROM {base}\nCOPY --from={d} / /\n"),
            vec![],
        ),
        (
            "COPY --from=D in a later stage",
            format!(
                "FROM {base} AS one\nFROM scratch\nCOPY --from=one /bin /bin\nCOPY --from={d} /x /x\n"
            ),
            vec![],
        ),
    ];
    for (i, (what, dockerfile, args)) in cases.iter().enumerate() {
        let tag = format!("vchb-read-{i}");
        let ctx = dir_context(&[("Dockerfile", dockerfile)]);
        let mut all = vec!["-t", tag.as_str()];
        all.extend_from_slice(args);
        let from = bed.mark();
        let out = build_dir(&vch, &all, ctx.path());
        let stderr = failed(what, &out);
        bed.assert_denied(what, &stderr, from, false);
        if i == 0 {
            let record = build_record(&tag);
            assert_eq!(record["status"], 403, "{record}");
            assert_eq!(record["allowed"], false, "{record}");
            assert_eq!(record["image"], d.as_str(), "{record}");
            assert_eq!(record["registry"], d_addr.as_str(), "{record}");
            assert_eq!(record["entry"], Value::Null, "{record}");
            assert_eq!(record["build"]["dockerfile"], "Dockerfile", "{record}");
        }
    }

    // Allowed: an ARG declared in a stage does not reach a later FROM; a build arg for an ARG
    // not declared is not substituted in FROM; stage names and indexes are not images (a Hub
    // `busybox` or `0` would be denied: Docker Hub is not whitelisted); FROM scratch pulls
    // nothing.
    let allowed: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "an ARG of a stage",
            format!("ARG B={base}\nFROM $B\nARG B={d}\nFROM $B\nLABEL vch.case=allowed\n"),
            vec![],
        ),
        (
            "a build arg for an undeclared ARG",
            format!("FROM ${{B:-{base}}}\nLABEL vch.case=allowed\n"),
            vec!["--build-arg", &ba],
        ),
        (
            "stage names and indexes",
            format!(
                "FROM {base} AS busybox\nRUN echo s > /s\nFROM scratch\n\
                 COPY --from=busybox /s /s\nCOPY --from=0 /bin/busybox /busybox\n\
                 LABEL vch.case=allowed\n"
            ),
            vec![],
        ),
    ];
    for (i, (what, dockerfile, args)) in allowed.iter().enumerate() {
        let tag = format!("vchb-read-ok-{i}");
        let ctx = dir_context(&[("Dockerfile", dockerfile)]);
        let mut all = vec!["-t", tag.as_str()];
        all.extend_from_slice(args);
        succeeded(what, &build_dir(&vch, &all, ctx.path()));
        let label = bed
            .dockerd
            .docker_ok([
                "image",
                "inspect",
                "--format",
                "{{index .Config.Labels \"vch.case\"}}",
                &tag,
            ])
            .unwrap();
        assert_eq!(label, "allowed\n", "{what}");
    }
    assert!(!bed.d_log().contains("/v2/"), "{}", bed.d_log());

    // BuildKit: its build parameters and its doors are refused, and never reach dockerd.
    let from = bed.mark();
    let context = tar(&[Entry::File(
        "Dockerfile",
        format!("FROM {base}\n").as_bytes(),
    )]);
    for target in [
        "/v1.41/build?version=2&t=vchb-bk",
        "/v1.41/build?session=vch-session&t=vchb-bk",
        "/v1.41/build?buildid=vch-build&t=vchb-bk",
    ] {
        let (status, answer) = raw_post(&vch, target, &context);
        assert_eq!(status, 400, "{target}: {answer}");
        assert!(
            answer.contains("BuildKit is not available through this VCH")
                && answer.contains("DOCKER_BUILDKIT=0"),
            "{target}: {answer}"
        );
    }
    for target in ["/session", "/v1.41/session", "/grpc", "/v1.41/grpc"] {
        let (status, answer) = raw_post(&vch, target, b"");
        assert!((400..500).contains(&status), "{target}: {answer}");
    }
    for door in ["/build", "/session", "/grpc"] {
        assert_eq!(bed.calls_since(from, door), Vec::<String>::new());
    }
}

/// A context compressed with gzip, bzip2 or xz is read to its Dockerfile, and one whose
/// Dockerfile comes after 20 MiB of other files: the denial comes, the allowed variants build, and
/// the records tell the compression and the size.
#[test]
fn compressed_and_large_contexts_are_read_to_the_dockerfile() {
    let bed = Bed::start();
    let vch = bed.vch();
    let dir = bed.dir.path();
    let allowed = format!("FROM {}\nLABEL vch.case=allowed\n", bed.base());
    let denied = format!("FROM {}\n", bed.d_image("packed"));
    let denied_tar = tar(&[
        Entry::File("app/main.sh", b"echo app\n"),
        Entry::File("Dockerfile", denied.as_bytes()),
    ]);
    let allowed_tar = tar(&[
        Entry::File("app/main.sh", b"echo app\n"),
        Entry::File("Dockerfile", allowed.as_bytes()),
    ]);
    for tool in ["gzip", "bzip2", "xz"] {
        let tag = format!("vchb-{tool}-denied");
        let from = bed.mark();
        let packed = compress(tool, &denied_tar, dir);
        let out = build_stdin(&vch, dir, &["-t", &tag], &packed);
        let what = format!("a {tool} context");
        let stderr = failed(&what, &out);
        bed.assert_denied(&what, &stderr, from, false);
        let record = build_record(&tag);
        assert_eq!(record["build"]["compression"], tool, "{record}");
        assert_eq!(record["build"]["dockerfile"], "Dockerfile", "{record}");
        assert_eq!(record["status"], 403, "{record}");

        let tag = format!("vchb-{tool}-ok");
        let packed = compress(tool, &allowed_tar, dir);
        let out = build_stdin(&vch, dir, &["-t", &tag], &packed);
        succeeded(&format!("an allowed {tool} context"), &out);
        assert!(bed.has_image(&tag), "{tag}");
        let record = build_record(&tag);
        assert_eq!(record["build"]["compression"], tool, "{record}");
        assert_eq!(
            record["build"]["context_bytes"].as_u64(),
            Some(packed.len() as u64),
            "{record}"
        );
        assert_eq!(record["status"], 200, "{record}");
    }

    let blobs = blobs();
    let mut entries: Vec<Entry<'_>> = blobs.iter().map(|(n, d)| Entry::File(n, d)).collect();
    entries.push(Entry::File("Dockerfile", denied.as_bytes()));
    let big = tar(&entries);
    let from = bed.mark();
    let out = build_stdin(&vch, dir, &["-t", "vchb-big-denied"], &big);
    let stderr = failed("a Dockerfile after 20 MiB", &out);
    bed.assert_denied("a Dockerfile after 20 MiB", &stderr, from, false);
    let record = build_record("vchb-big-denied");
    assert_eq!(record["status"], 403, "{record}");
    assert!(
        record["build"]["context_bytes"]
            .as_u64()
            .is_some_and(|n| n >= 20 * 1024 * 1024),
        "{record}"
    );

    entries.pop();
    entries.push(Entry::File("Dockerfile", allowed.as_bytes()));
    let packed = compress("gzip", &tar(&entries), dir);
    let out = build_stdin(&vch, dir, &["-t", "vchb-big-ok"], &packed);
    succeeded("an allowed Dockerfile after 20 MiB, gzipped", &out);
    assert!(bed.has_image("vchb-big-ok"));
    let record = build_record("vchb-big-ok");
    assert_eq!(record["build"]["compression"], "gzip", "{record}");
    assert!(
        record["build"]["tar_bytes"]
            .as_u64()
            .is_some_and(|n| n >= 20 * 1024 * 1024),
        "{record}"
    );
}

/// The ONBUILD triggers of a base are decided: a base on A that is not in the engine is pulled
/// through dockerd first, its `ONBUILD COPY --from=D…` denies the build; the same once it is
/// local; a base whose trigger copies from A builds and runs the trigger.
#[test]
fn onbuild_triggers_of_a_base_are_decided_after_pulling_it() {
    let bed = Bed::start();
    let d = bed.d_image("trigger");
    let (onbuild, onbuild_ok) = (bed.a_image("onbuild"), bed.a_image("onbuild-ok"));
    bed.direct_build(
        &onbuild,
        &[(
            "Dockerfile",
            &format!("FROM {}\nONBUILD COPY --from={d} / /\n", bed.busybox),
        )],
    );
    bed.direct_build(
        &onbuild_ok,
        &[(
            "Dockerfile",
            &format!(
                "FROM {}\nONBUILD COPY --from={} /x /from-trigger\n",
                bed.busybox,
                bed.other()
            ),
        )],
    );
    for name in [&onbuild, &onbuild_ok] {
        bed.dockerd.docker_ok(["push", name]).unwrap();
        bed.dockerd.docker_ok(["rmi", name]).unwrap();
    }
    assert!(!bed.has_image(&onbuild));
    let vch = bed.vch();

    let ctx = dir_context(&[(
        "Dockerfile",
        &format!("FROM {onbuild}\nLABEL vch.case=child\n"),
    )]);
    for (i, what) in ["a base not in the engine", "the same base, now local"]
        .iter()
        .enumerate()
    {
        let tag = format!("vchb-onbuild-{i}");
        let from = bed.mark();
        let out = build_dir(&vch, &["-t", &tag], ctx.path());
        let stderr = failed(what, &out);
        bed.assert_denied(what, &stderr, from, false);
        assert!(
            stderr.contains(&d),
            "{what}: the denial names {d}: {stderr}"
        );
        // The VCH pulled the base through dockerd to read its triggers.
        assert!(bed.has_image(&onbuild), "{what}");
        let record = build_record(&tag);
        assert_eq!(record["status"], 403, "{record}");
        assert_eq!(record["image"], d.as_str(), "{record}");
    }
    assert!(
        bed.a.log().contains("/v2/vch-build/onbuild/manifests/1"),
        "A served no onbuild:1:\n{}",
        bed.a.log()
    );

    let ctx = dir_context(&[("Dockerfile", &format!("FROM {onbuild_ok}\n"))]);
    vch.docker_ok(&[
        "build",
        "-t",
        "vchb-onbuild-ok",
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "vchb-onbuild-ok", "cat", "/from-trigger"]),
        "other\n"
    );
    let record = build_record("vchb-onbuild-ok");
    assert_eq!(record["status"], 200, "{record}");
    let items = record["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {record}"));
    assert!(
        items.iter().any(|i| i["image"] == bed.other().as_str()),
        "the trigger's image was not decided: {record}"
    );
    assert!(!bed.d_log().contains("/v2/"), "{}", bed.d_log());
}

/// Audit mode: a build that copies from an image on D builds, D serves it, and the record says
/// the build would have been denied.
#[test]
fn audit_mode_lets_a_denied_build_through_and_records_it() {
    let bed = Bed::start();
    // D holds an image with /x (A's other:1 pushed there too).
    let on_d = bed.d_image("src");
    bed.dockerd.docker_ok(["pull", &bed.other()]).unwrap();
    bed.dockerd.docker_ok(["tag", &bed.other(), &on_d]).unwrap();
    bed.dockerd.docker_ok(["push", &on_d]).unwrap();
    bed.dockerd.docker_ok(["rmi", &on_d, &bed.other()]).unwrap();
    let d_from = bed.d.log().len();
    let vch = Vch::start_config(
        &bed.dockerd,
        Mode::Plain,
        &RegistryConfig {
            whitelist: vec![bed.a.addr()],
            mode: EnforcementMode::Audit,
            ..RegistryConfig::default()
        },
    );
    let ctx = dir_context(&[(
        "Dockerfile",
        &format!("FROM {}\nCOPY --from={on_d} /x /y\n", bed.base()),
    )]);
    let from = bed.mark();
    vch.docker_ok(&["build", "-t", "vchb-audit", ctx.path().to_str().unwrap()]);
    assert_eq!(
        bed.builds_since(from).len(),
        1,
        "the build did not reach dockerd"
    );
    assert_eq!(
        vch.docker_ok(&["run", "--rm", "vchb-audit", "cat", "/y"]),
        "other\n"
    );
    let d_log = bed.d.log();
    let d_log = String::from_utf8_lossy(&d_log.as_bytes()[d_from.min(d_log.len())..]);
    assert!(
        d_log.contains("/v2/vch-denied/src/manifests/1"),
        "dockerd did not pull from D:\n{d_log}"
    );

    let record = build_record("vchb-audit");
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["mode"], "audit", "{record}");
    assert_eq!(record["allowed"], false, "{record}");
    assert_eq!(record["would_deny"], true, "{record}");
    assert_eq!(record["image"], on_d.as_str(), "{record}");
    let items = record["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {record}"));
    assert!(
        items
            .iter()
            .any(|i| i["image"] == bed.base().as_str() && i["allowed"] == true),
        "{record}"
    );
    assert_eq!(record["build"]["dockerfile"], "Dockerfile", "{record}");
}
