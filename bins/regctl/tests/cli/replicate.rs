//! `regctl replicate` between real Distribution registries: filters, namespaces, flattening,
//! incremental re-runs checked in the destination's access log, deletions, retries across a
//! destination restart, notifications to `serve`, and docker pulling the result.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vch_testbed::{Dockerd, HttpClient, PushedImage, Registry, TestImage};

use crate::Home;

const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn push(reg: &Registry, repo: &str, tag: &str) -> PushedImage {
    TestImage::random(repo, tag)
        .layers(2)
        .layer_size(64 << 10)
        .push(&HttpClient::plain(), reg.url())
        .unwrap()
}

/// The digest `repo:tag` names at `reg`, or `None`.
fn digest_at(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let url = format!("{}/v2/{repo}/manifests/{tag}", reg.url());
    let r = HttpClient::plain()
        .request("HEAD", &url, &[("Accept", MANIFEST_V2)], &[])
        .unwrap();
    match r.status {
        200 => Some(r.header("docker-content-digest").unwrap().to_owned()),
        404 => None,
        s => panic!("HEAD {url}: {s}"),
    }
}

/// `(method, uri, status)` of each access-log line of a registry log.
fn requests(log: &str) -> Vec<(String, String, u16)> {
    log.lines()
        .filter_map(|line| {
            let start = line.find("] \"")? + 3;
            let rest = &line[start..];
            let (req, after) = rest.split_once("\" ")?;
            let mut parts = req.split(' ');
            let (method, uri) = (parts.next()?, parts.next()?);
            let status = after.split(' ').next()?.parse().ok()?;
            Some((method.to_owned(), uri.to_owned(), status))
        })
        .collect()
}

fn write_rules(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rules.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn endpoints(src: &Registry, dst: &Registry) -> String {
    format!(
        "[[endpoint]]\nname = \"src\"\nurl = \"{}\"\n\n[[endpoint]]\nname = \"dst\"\nurl = \"{}\"\n\n",
        src.url(),
        dst.url()
    )
}

fn state_json(home: &Home, rules: &Path) -> serde_json::Value {
    let out = home.ok(&[
        "replicate",
        "status",
        "--rules",
        rules.to_str().unwrap(),
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn initial_sync_with_filters_namespace_flatten_then_a_no_change_rerun_moves_nothing() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let app_v1 = push(&src, "team-a/app", "v1");
    let app_v2 = push(&src, "team-a/app", "v2");
    push(&src, "team-a/app", "v3-rc1");
    push(&src, "team-a/app", "latest");
    let tool = push(&src, "team-a/tools/lint", "v1");
    push(&src, "team-a/skip", "v1");
    let b = push(&src, "team-b/web", "v1");
    push(&src, "other/x", "v1");

    let home = Home::new();
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"team-a\"\nfrom = \"src\"\nto = \"dst\"\n\
             repositories = [\"team-a/**\"]\nexclude_repositories = [\"team-a/skip\"]\n\
             tags = [\"v*\"]\nexclude_tags = [\"*-rc*\"]\ndest_namespace = \"mirror\"\n\n\
             [[rule]]\nname = \"team-b\"\nfrom = \"src\"\nto = \"dst\"\n\
             repositories = [\"team-b/*\"]\nflatten = 1\ndest_namespace = \"flat\"\n",
            endpoints(&src, &dst)
        ),
    );
    let r = rules.to_str().unwrap();
    let out = home.ok(&["replicate", "run", "--rules", r]);
    assert!(out.contains("team-a: 2 repositories, 3 images"), "{out}");
    assert!(out.contains("team-b: 1 repositories, 1 images"), "{out}");

    assert_eq!(
        digest_at(&dst, "mirror/team-a/app", "v1"),
        Some(app_v1.manifest_digest)
    );
    assert_eq!(
        digest_at(&dst, "mirror/team-a/app", "v2"),
        Some(app_v2.manifest_digest)
    );
    assert_eq!(digest_at(&dst, "mirror/team-a/app", "v3-rc1"), None);
    assert_eq!(digest_at(&dst, "mirror/team-a/app", "latest"), None);
    assert_eq!(
        digest_at(&dst, "mirror/team-a/tools/lint", "v1"),
        Some(tool.manifest_digest)
    );
    assert_eq!(digest_at(&dst, "mirror/team-a/skip", "v1"), None);
    assert_eq!(digest_at(&dst, "flat/web", "v1"), Some(b.manifest_digest));
    let catalog = HttpClient::plain()
        .get(&format!("{}/v2/_catalog", dst.url()))
        .unwrap()
        .text();
    let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["flat/web", "mirror/team-a/app", "mirror/team-a/tools/lint"])
    );

    // The status records what was replicated.
    let st = state_json(&home, &rules);
    let app = &st["rules"]["team-a"]["repositories"]["team-a/app"];
    assert_eq!(app["result"], "ok");
    assert_eq!(app["images"], 2);
    assert_eq!(app["destination"], "mirror/team-a/app");
    assert_eq!(app["tags"].as_object().unwrap().len(), 2);
    let text = home.ok(&["replicate", "status", "--rules", r]);
    assert!(
        text.contains("team-a/app → mirror/team-a/app: ok"),
        "{text}"
    );

    // No change: nothing moves, as the destination's own access log shows.
    let before = requests(&dst.log()).len();
    let out = home.ok(&["replicate", "run", "--rules", r]);
    assert!(
        out.contains("team-a: 2 repositories, 0 images (0 bytes) replicated, 3 unchanged"),
        "{out}"
    );
    let log = requests(&dst.log());
    let rerun = &log[before..];
    assert!(
        !rerun.is_empty(),
        "the re-run asked the destination nothing?"
    );
    for (method, uri, _) in rerun {
        assert!(
            !uri.contains("/blobs/"),
            "blob request on a no-change re-run: {method} {uri}"
        );
        assert!(
            method == "HEAD" || method == "GET",
            "{method} {uri} on a no-change re-run"
        );
    }

    // A tag moved at the source moves at the destination; only that image's blobs travel.
    let moved = push(&src, "team-a/app", "v1");
    let before = requests(&dst.log()).len();
    home.ok(&["replicate", "run", "--rules", r, "team-a"]);
    assert_eq!(
        digest_at(&dst, "mirror/team-a/app", "v1"),
        Some(moved.manifest_digest.clone())
    );
    let puts: Vec<_> = requests(&dst.log())[before..]
        .iter()
        .filter(|(m, _, _)| m == "PUT")
        .map(|(_, u, _)| u.clone())
        .collect();
    assert_eq!(puts.len(), 4, "3 blobs and 1 manifest: {puts:?}");
    assert!(
        puts.iter().any(|u| u.ends_with("/manifests/v1")),
        "{puts:?}"
    );

    // Unknown rule names are usage errors naming the rule.
    let out = home.run(&["replicate", "run", "--rules", r, "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
}

#[test]
fn tag_deletions_propagate_only_when_enabled_and_only_what_the_rule_put_there() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let v1 = push(&src, "app/x", "v1");
    let v2 = push(&src, "app/x", "v2");
    let gone = push(&src, "app/gone", "v1");
    let solo = push(&src, "app/solo", "v1");
    let home = Home::new();
    home.ok(&["registry", "set", &src.addr(), "--tls", "disabled"]);
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"del\"\nfrom = \"src\"\nto = \"dst\"\ndest_namespace = \"del\"\ndeletions = true\n\n\
             [[rule]]\nname = \"keep\"\nfrom = \"src\"\nto = \"dst\"\ndest_namespace = \"keep\"\n",
            endpoints(&src, &dst)
        ),
    );
    let r = rules.to_str().unwrap();
    home.ok(&["replicate", "run", "--rules", r]);
    assert_eq!(
        digest_at(&dst, "del/app/x", "v2"),
        Some(v2.manifest_digest.clone())
    );
    // A tag the destination got from someone else, naming the same image: never deleted.
    let other = HttpClient::plain()
        .request(
            "PUT",
            &format!("{}/v2/del/app/gone/manifests/theirs", dst.url()),
            &[("Content-Type", MANIFEST_V2)],
            &gone.manifest,
        )
        .unwrap();
    assert_eq!(other.status, 201);

    // At the source: a tag deleted (the image stays by digest), and a whole manifest.
    home.ok(&["tag", "delete", &format!("{}/app/x:v2", src.addr())]);
    home.ok(&[
        "manifest",
        "delete",
        &format!("{}/app/gone@{}", src.addr(), gone.manifest_digest),
    ]);
    home.ok(&[
        "manifest",
        "delete",
        &format!("{}/app/solo@{}", src.addr(), solo.manifest_digest),
    ]);
    assert_eq!(digest_at(&src, "app/x", "v2"), None);
    let out = home.ok(&["replicate", "run", "--rules", r]);
    assert!(
        out.contains("del: 3 repositories, 0 images (0 bytes) replicated, 1 unchanged, 3 deleted"),
        "{out}"
    );
    assert_eq!(digest_at(&dst, "del/app/x", "v2"), None);
    assert_eq!(
        digest_at(&dst, "del/app/x", "v1"),
        Some(v1.manifest_digest.clone())
    );
    assert_eq!(digest_at(&dst, "del/app/gone", "v1"), None);
    // Shared with a tag the rule did not push: only our tag went, theirs stays.
    assert_eq!(
        digest_at(&dst, "del/app/gone", "theirs"),
        Some(gone.manifest_digest.clone())
    );
    // A manifest deleted at the source that no other destination tag names: deleted by
    // digest at the destination too.
    assert_eq!(digest_at(&dst, "del/app/solo", "v1"), None);
    assert_eq!(digest_at(&dst, "del/app/solo", &solo.manifest_digest), None);
    assert_eq!(
        digest_at(&dst, "keep/app/solo", &solo.manifest_digest),
        Some(solo.manifest_digest.clone())
    );
    // The tag-only deletion left the image reachable by digest.
    assert_eq!(
        digest_at(&dst, "del/app/x", &v2.manifest_digest),
        Some(v2.manifest_digest.clone())
    );
    // deletions = false: everything stays.
    assert_eq!(
        digest_at(&dst, "keep/app/x", "v2"),
        Some(v2.manifest_digest)
    );
    assert_eq!(
        digest_at(&dst, "keep/app/gone", "v1"),
        Some(gone.manifest_digest)
    );
    let st = state_json(&home, &rules);
    assert!(
        st["rules"]["del"]["repositories"]["app/x"]["tags"]
            .get("v2")
            .is_none()
    );
}

#[test]
fn destination_down_during_a_run_fails_retries_and_completes_without_duplicates() {
    let src = Registry::start().unwrap();
    let mut dst = Registry::start().unwrap();
    let first = push(&src, "svc/one", "v1");
    let home = Home::new();
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"r\"\nfrom = \"src\"\nto = \"dst\"\nconcurrency = 1\n\
             dest_namespace = \"m\"\n\n[retry]\ninitial = \"1s\"\nmax = \"2s\"\nattempts = 30\n",
            endpoints(&src, &dst)
        ),
    );
    let r = rules.to_str().unwrap();
    home.ok(&["replicate", "run", "--rules", r]);
    let mut images = vec![first];
    for repo in ["svc/two", "svc/three", "svc/four"] {
        images.push(push(&src, repo, "v1"));
    }

    dst.stop();
    let child = home
        .cmd()
        .args(["replicate", "run", "--rules", r])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the state file records a failed attempt, then bring the destination back.
    let state_path = home.path().join("replication-state.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&state_path).unwrap_or_default();
        if text.contains("\"result\": \"failed\"") {
            break;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    dst.restart().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for img in &images {
        let repo = format!("m/{}", img.repository);
        assert_eq!(
            digest_at(&dst, &repo, "v1"),
            Some(img.manifest_digest.clone()),
            "{repo}"
        );
    }
    // Nothing twice: each blob and each manifest was written once over both registry lives.
    let log = requests(&dst.log());
    let mut blob_puts: Vec<String> = log
        .iter()
        .filter(|(m, u, s)| m == "PUT" && u.contains("/blobs/uploads/") && *s == 201)
        .map(|(_, u, _)| {
            let d = u.split("digest=").nth(1).unwrap();
            let repo = u.split("/blobs/").next().unwrap();
            format!("{repo} {}", d.split('&').next().unwrap())
        })
        .collect();
    let n = blob_puts.len();
    blob_puts.sort();
    blob_puts.dedup();
    assert_eq!(
        n,
        blob_puts.len(),
        "a blob was uploaded twice to one repository"
    );
    assert_eq!(n, 4 * 3, "4 images of 3 blobs each");
    let manifest_puts = log
        .iter()
        .filter(|(m, u, s)| m == "PUT" && u.contains("/manifests/") && *s == 201)
        .count();
    assert_eq!(manifest_puts, 4);
    let st = state_json(&home, &rules);
    for img in &images {
        let repo = &st["rules"]["r"]["repositories"][&img.repository];
        assert_eq!(repo["result"], "ok", "{repo}");
        assert_eq!(repo["failures"], 0);
        assert_eq!(repo["total_images"], 1, "{repo}");
    }
}

/// `regctl replicate serve` as a child; SIGTERM on drop.
struct Serve {
    child: Child,
}

impl Serve {
    fn start(home: &Home, rules: &Path, listen: &str) -> Self {
        let child = home
            .cmd()
            .args([
                "replicate",
                "serve",
                "--rules",
                rules.to_str().unwrap(),
                "--listen",
                listen,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "serve did not listen on {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn serve_replicates_pushes_and_deletions_from_real_notifications() {
    let port = vch_testbed::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let src = Registry::builder()
        .notify(format!("http://{listen}/notify/src"))
        .start()
        .unwrap();
    let dst = Registry::start().unwrap();
    let early = push(&src, "live/app", "v0");
    let home = Home::new();
    let rules_text = format!(
        "{}[[rule]]\nname = \"live\"\nfrom = \"src\"\nto = \"dst\"\nrepositories = [\"live/**\"]\n\
         trigger = \"immediate\"\ndeletions = true\ndest_namespace = \"m\"\n",
        endpoints(&src, &dst)
    );
    let rules = write_rules(home.path(), &rules_text);
    let serve = Serve::start(&home, &rules, &listen);
    // The catch-up scan at start copies what was there before.
    wait_for("catch-up", Duration::from_secs(20), || {
        digest_at(&dst, "m/live/app", "v0") == Some(early.manifest_digest.clone())
    });

    // A push at the source reaches the destination within seconds.
    let pushed = push(&src, "live/app", "v1");
    let took = wait_for("push replicated", Duration::from_secs(10), || {
        digest_at(&dst, "m/live/app", "v1") == Some(pushed.manifest_digest.clone())
    });
    eprintln!("push replicated in {took:?}");
    // Outside the rule's filter: not replicated.
    push(&src, "elsewhere/app", "v1");

    // A deletion too.
    home.ok(&["registry", "set", &src.addr(), "--tls", "disabled"]);
    home.ok(&["tag", "delete", &format!("{}/live/app:v0", src.addr())]);
    wait_for("delete replicated", Duration::from_secs(10), || {
        digest_at(&dst, "m/live/app", "v0").is_none()
    });
    assert_eq!(
        digest_at(&dst, "m/live/app", "v1"),
        Some(pushed.manifest_digest.clone())
    );

    // A broken rules file on SIGHUP: the old rules stay and keep working.
    std::fs::write(&rules, "[[rule]]\nname = 1\n").unwrap();
    serve.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let again = push(&src, "live/app", "v2");
    wait_for("push after a bad reload", Duration::from_secs(10), || {
        digest_at(&dst, "m/live/app", "v2") == Some(again.manifest_digest.clone())
    });
    // A good file disabling the rule: pushes are no longer replicated.
    std::fs::write(
        &rules,
        rules_text.replace("dest_namespace", "enabled = false\ndest_namespace"),
    )
    .unwrap();
    serve.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    push(&src, "live/app", "v3");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(digest_at(&dst, "m/live/app", "v3"), None);
    assert_eq!(digest_at(&dst, "elsewhere/app", "v1"), None);
    assert_eq!(digest_at(&dst, "m/elsewhere/app", "v1"), None);

    // Malformed notifications are refused with 400.
    let bad = HttpClient::plain()
        .request(
            "POST",
            &format!("http://{listen}/notify/src"),
            &[],
            b"{nope",
        )
        .unwrap();
    assert_eq!(bad.status, 400);

    // SIGTERM: a clean exit 0.
    serve.signal("TERM");
    let mut serve = serve;
    let status = serve.child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(serve.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("reload refused"), "{stderr}");
}

#[test]
fn replicated_images_are_pulled_and_run_by_docker() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let dockerd = Dockerd::builder()
        .insecure_registry(src.addr())
        .insecure_registry(dst.addr())
        .start()
        .unwrap();
    let image = TestImage::busybox(&dockerd).unwrap();
    let at_src = format!("{}/tools/busybox:1", src.addr());
    dockerd
        .docker_ok(["tag", image.as_str(), at_src.as_str()])
        .unwrap();
    dockerd.docker_ok(["push", at_src.as_str()]).unwrap();

    let home = Home::new();
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"r\"\nfrom = \"src\"\nto = \"dst\"\nflatten = 1\ndest_namespace = \"mirror\"\n",
            endpoints(&src, &dst)
        ),
    );
    home.ok(&["replicate", "run", "--rules", rules.to_str().unwrap()]);
    let at_dst = format!("{}/mirror/busybox:1", dst.addr());
    dockerd.docker_ok(["rmi", at_src.as_str()]).unwrap();
    dockerd.docker_ok(["pull", at_dst.as_str()]).unwrap();
    let out = dockerd
        .docker_ok(["run", "--rm", at_dst.as_str(), "echo", "replicated"])
        .unwrap();
    assert_eq!(out, "replicated\n");
}

#[test]
fn bad_rules_files_are_refused_with_the_rule_and_field() {
    let home = Home::new();
    let rules = write_rules(
        home.path(),
        "[[endpoint]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
         [[rule]]\nname = \"r\"\nfrom = \"a\"\nto = \"b\"\n",
    );
    // A rules file that does not load is wrong input, exit 2 as clap's usage errors, never the
    // exit 1 of a job that failed and may be retried; for each command.
    for cmd in ["run", "status", "serve"] {
        let mut args = vec!["replicate", cmd, "--rules", rules.to_str().unwrap()];
        if cmd == "serve" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let out = home.run(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("rule \"r\"") && err.contains("field to"),
            "{cmd}: {err}"
        );
    }
    // Usage errors are clap's exit 2.
    let out = home.run(&["replicate", "run"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn blobs_already_at_the_destination_are_mounted_not_streamed() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let same = |repo: &str| {
        TestImage::random(repo, "v1")
            .layers(2)
            .layer_size(256 << 10)
            .seed(7)
            .push(&HttpClient::plain(), src.url())
            .unwrap()
    };
    let a = same("base/a");
    let b = same("base/b");
    assert_eq!(a.layer_digests, b.layer_digests);
    let home = Home::new();
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"r\"\nfrom = \"src\"\nto = \"dst\"\nconcurrency = 1\n",
            endpoints(&src, &dst)
        ),
    );
    let out = home.ok(&["replicate", "run", "--rules", rules.to_str().unwrap()]);
    assert!(out.contains("r: 2 repositories, 2 images"), "{out}");
    assert_eq!(digest_at(&dst, "base/b", "v1"), Some(b.manifest_digest));
    let log = requests(&dst.log());
    let uploads: Vec<_> = log
        .iter()
        .filter(|(m, u, s)| m == "PUT" && u.contains("/blobs/uploads/") && *s == 201)
        .collect();
    assert_eq!(uploads.len(), 3, "3 blobs streamed once: {uploads:?}");
    let mounts = log
        .iter()
        .filter(|(m, u, s)| {
            m == "POST"
                && *s == 201
                && u.contains("mount=")
                && (u.contains("from=base%2Fa") || u.contains("from=base/a"))
        })
        .count();
    assert_eq!(mounts, 3, "{log:?}");
}

#[test]
fn with_a_policy_every_endpoint_must_be_allowed() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let img = push(&src, "p/app", "v1");
    let home = Home::new();
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"r\"\nfrom = \"src\"\nto = \"dst\"\ndest_namespace = \"m\"\n",
            endpoints(&src, &dst)
        ),
    );
    let r = rules.to_str().unwrap();
    let vch = home.path().join("vch.toml");
    let run = |policy: &str| {
        std::fs::write(&vch, policy).unwrap();
        home.run(&[
            "--policy",
            vch.to_str().unwrap(),
            "replicate",
            "run",
            "--rules",
            r,
        ])
    };
    // The destination is not on the whitelist.
    // (Whitelist mode needs a whitelist entry: 10.9.9.9 stands for "something else".)
    let out = run(&format!(
        "[registry]\nwhitelist = [\"10.9.9.9\"]\ninsecure = [\"{}\"]\n",
        src.addr()
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("unauthorized registry ({})", dst.addr())),
        "{err}"
    );
    assert!(err.contains("endpoint \"dst\""), "{err}");
    // Listed as a secure registry, but the endpoint is plain http://.
    let out = run(&format!(
        "[registry]\nwhitelist = [\"10.9.9.9\", \"{}\"]\ninsecure = [\"{}\"]\n",
        dst.addr(),
        src.addr()
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secure registry"), "{err}");
    assert_eq!(digest_at(&dst, "m/p/app", "v1"), None);
    // Both allowed (insecure: plain HTTP): it replicates.
    let out = run(&format!(
        "[registry]\nwhitelist = [\"10.9.9.9\"]\ninsecure = [\"{}\", \"{}\"]\n",
        src.addr(),
        dst.addr()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(digest_at(&dst, "m/p/app", "v1"), Some(img.manifest_digest));
}

#[test]
fn serve_runs_interval_rules_and_finishes_the_running_job_on_sigterm() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let home = Home::new();
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"tick\"\nfrom = \"src\"\nto = \"dst\"\ntrigger = \"every 2s\"\n\
             dest_namespace = \"m\"\n",
            endpoints(&src, &dst)
        ),
    );
    let listen = format!("127.0.0.1:{}", vch_testbed::free_port().unwrap());
    let serve = Serve::start(&home, &rules, &listen);
    // No notifications: the interval finds it.
    let small = push(&src, "tick/app", "v1");
    wait_for("interval pass", Duration::from_secs(15), || {
        digest_at(&dst, "m/tick/app", "v1") == Some(small.manifest_digest.clone())
    });

    // A large image; SIGTERM once its upload has begun: the job finishes, then serve exits 0.
    let big = TestImage::random("tick/big", "v1")
        .layers(3)
        .layer_size(16 << 20)
        .push(&HttpClient::plain(), src.url())
        .unwrap();
    wait_for("upload started", Duration::from_secs(15), || {
        requests(&dst.log())
            .iter()
            .any(|(m, u, _)| m == "POST" && u.starts_with("/v2/m/tick/big/blobs/uploads/"))
    });
    serve.signal("TERM");
    let mut serve = serve;
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        digest_at(&dst, "m/tick/big", "v1"),
        Some(big.manifest_digest)
    );
    let st = state_json(&home, &rules);
    assert_eq!(
        st["rules"]["tick"]["repositories"]["tick/big"]["result"], "ok",
        "{st}"
    );
}

#[test]
fn two_rules_meeting_on_one_destination_repository_are_refused_at_run_time() {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let x = push(&src, "x/app", "v1");
    push(&src, "y/app", "v2");
    let home = Home::new();
    // x/app → m/x/app and y/app → m/x/app: different namespaces and flattening, so the load
    // check lets them through; the second to claim the repository fails.
    let rules = write_rules(
        home.path(),
        &format!(
            "{}[[rule]]\nname = \"a\"\nfrom = \"src\"\nto = \"dst\"\nrepositories = [\"x/*\"]\n\
             dest_namespace = \"m\"\n\n[[rule]]\nname = \"b\"\nfrom = \"src\"\nto = \"dst\"\n\
             repositories = [\"y/*\"]\nflatten = 1\ndest_namespace = \"m/x\"\n",
            endpoints(&src, &dst)
        ),
    );
    let out = home.run(&["replicate", "run", "--rules", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("also written by rule \"a\""), "{err}");
    assert_eq!(digest_at(&dst, "m/x/app", "v1"), Some(x.manifest_digest));
    assert_eq!(digest_at(&dst, "m/x/app", "v2"), None);
}
