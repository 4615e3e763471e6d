//! Issue 14: progress of `image copy` and `blob get` on stderr, as JSON lines, on a terminal,
//! or not at all; stdout never changes.

use std::collections::BTreeMap;

use vch_testbed::{HttpClient, PushedImage, Registry, TestImage};

use crate::Home;

/// The JSON lines of `--progress=json`; every line must parse.
fn events(stderr: &[u8]) -> Vec<serde_json::Value> {
    let text = String::from_utf8(stderr.to_vec()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// Digest → outcome of every `blob_done`, after checking each had a `blob_started` before it.
fn outcomes(events: &[serde_json::Value]) -> BTreeMap<String, String> {
    let mut started = std::collections::BTreeSet::new();
    let mut done = BTreeMap::new();
    for e in events {
        let digest = e["digest"].as_str().unwrap_or_default().to_owned();
        match e["event"].as_str().unwrap() {
            "blob_started" => {
                assert!(e["size"].as_u64().is_some(), "{e}");
                started.insert(digest);
            }
            "blob_progress" => {
                assert!(started.contains(&digest), "progress before start: {e}");
                assert!(e["bytes"].as_u64().is_some(), "{e}");
            }
            "blob_done" => {
                assert!(started.contains(&digest), "done before start: {e}");
                let outcome = e["outcome"].as_str().unwrap().to_owned();
                assert!(done.insert(digest, outcome).is_none(), "done twice: {e}");
            }
            "manifest_pushed" | "done" | "blob_resumed" => {}
            other => panic!("unknown event {other}: {e}"),
        }
    }
    done
}

fn all_blobs(pushed: &PushedImage, outcome: &str) -> BTreeMap<String, String> {
    std::iter::once(&pushed.config_digest)
        .chain(&pushed.layer_digests)
        .map(|d| (d.clone(), outcome.to_owned()))
        .collect()
}

fn setup() -> (Registry, Registry, PushedImage, Home) {
    let src = Registry::start().unwrap();
    let dst = Registry::start().unwrap();
    let pushed = TestImage::random("src/app", "v1")
        .layers(3)
        .layer_size(3 << 20)
        .push(&HttpClient::plain(), src.url())
        .unwrap();
    let home = Home::new();
    home.ok(&["registry", "set", &src.addr(), "--tls", "disabled"]);
    home.ok(&["registry", "set", &dst.addr(), "--tls", "disabled"]);
    (src, dst, pushed, home)
}

#[test]
fn progress_json_covers_every_blob_and_stdout_is_unchanged() {
    let (src, dst, pushed, home) = setup();
    let s = format!("{}/src/app:v1", src.addr());
    let d = format!("{}/dst/app:v1", dst.addr());

    // Copied: one JSON line per event, every blob done as copied, the manifest, a summary.
    let out = home.run(&["image", "copy", &s, &d, "--progress=json"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = out.stdout.clone();
    assert_eq!(
        String::from_utf8_lossy(&stdout).trim(),
        pushed.manifest_digest
    );
    let ev = events(&out.stderr);
    assert_eq!(outcomes(&ev), all_blobs(&pushed, "copied"));
    assert!(
        ev.iter()
            .any(|e| e["event"] == "manifest_pushed"
                && e["digest"] == pushed.manifest_digest.as_str())
    );
    let last = ev.last().unwrap();
    assert_eq!(
        (
            &last["event"],
            last["copied"].as_u64(),
            last["bytes"].as_u64()
        ),
        (&"done".into(), Some(4), Some(pushed.total_bytes)),
        "{last}"
    );
    // Each copied blob reports its last byte before it is done.
    for (i, done) in ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "blob_done")
    {
        let last = ev[..i]
            .iter()
            .rev()
            .find(|e| e["event"] == "blob_progress" && e["digest"] == done["digest"]);
        assert_eq!(
            last.map(|e| &e["bytes"]),
            Some(&done["size"]),
            "last progress of {done}"
        );
    }

    // Again: skipped; stdout the same as with progress, and as without it (stderr is a
    // pipe here: no display, nothing on stderr).
    let out = home.run(&["image", "copy", &s, &d, "--progress", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, stdout);
    assert_eq!(
        outcomes(&events(&out.stderr)),
        all_blobs(&pushed, "skipped")
    );
    let plain = home.run(&["image", "copy", &s, &d]);
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(plain.stdout, stdout);
    assert_eq!(String::from_utf8_lossy(&plain.stderr), "");

    // Another repository of the same registry: mounted.
    let d2 = format!("{}/other/app:v1", dst.addr());
    let out = home.run(&["image", "copy", &d, &d2, "--progress=json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, stdout);
    assert_eq!(
        outcomes(&events(&out.stderr)),
        all_blobs(&pushed, "mounted")
    );

    // --quiet: nothing on stderr, even where JSON was the alternative; --json's report on
    // stdout stays what it was.
    let d3 = format!("{}/third/app:v1", dst.addr());
    let out = home.run(&["image", "copy", &s, &d3, "--quiet", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mounted"], 0);
    assert_eq!(report["digest"], pushed.manifest_digest.as_str());
    // --quiet and --progress contradict each other: a usage error.
    let out = home.run(&["image", "copy", &s, &d3, "-q", "--progress=json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn blob_get_progress_never_touches_the_blob_on_stdout() {
    let (src, _dst, pushed, home) = setup();
    let repo = format!("{}/src/app", src.addr());
    let layer = &pushed.layer_digests[1];

    let out = home.run(&["blob", "get", &repo, layer, "--progress=json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vch_testbed::sha256_digest(&out.stdout), *layer);
    let ev = events(&out.stderr);
    assert_eq!(
        outcomes(&ev),
        BTreeMap::from([(layer.clone(), "downloaded".to_owned())])
    );
    let size = out.stdout.len() as u64;
    assert_eq!(ev[0]["size"].as_u64(), Some(size), "{}", ev[0]);
    let last = ev.last().unwrap();
    assert_eq!(
        (&last["event"], last["bytes"].as_u64()),
        (&"done".into(), Some(size))
    );

    for quiet in [&["--quiet"][..], &[]] {
        let out = home.run(&[&["blob", "get", &repo, layer][..], quiet].concat());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(vch_testbed::sha256_digest(&out.stdout), *layer);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{quiet:?}");
    }
}

/// The live display, on a real pseudo-terminal: it names each blob with its outcome and the
/// totals; stdout (redirected to a file) holds only the result.
#[test]
fn terminal_display_names_the_blobs_and_totals() {
    let (src, dst, pushed, home) = setup();
    let s = format!("{}/src/app:v1", src.addr());
    let d = format!("{}/dst/app:v1", dst.addr());
    let stdout = home.path().join("stdout");
    let regctl = |args: &str| {
        format!(
            "HOME={home} REGCTL_CONFIG={home}/regctl.json DOCKER_CONFIG={home}/.docker {exe} {args} >{out}",
            home = home.path().display(),
            exe = env!("CARGO_BIN_EXE_regctl"),
            out = stdout.display(),
        )
    };
    let shown = vch_testbed::run_in_pty(&regctl(&format!("image copy {s} {d}"))).unwrap();
    assert_eq!(
        std::fs::read_to_string(&stdout).unwrap().trim(),
        pushed.manifest_digest
    );
    // Drawn lines fill the terminal's width and rely on its wrapping (no newlines), so
    // the checks look for each printed line's own text.
    for digest in std::iter::once(&pushed.config_digest).chain(&pushed.layer_digests) {
        let line = format!("{} copied ", &digest[..19]);
        assert!(shown.contains(&line), "{line:?} not in {shown:?}");
    }
    let manifest = format!("{} manifest pushed", &pushed.manifest_digest[..19]);
    assert!(shown.contains(&manifest), "{shown:?}");
    // The total bar while it runs, the summary at the end.
    assert!(shown.contains(" total ["), "{shown:?}");
    assert!(
        shown.contains("total 4 copied, 0 mounted, 0 skipped; "),
        "{shown:?}"
    );

    // A second copy shows the blobs skipped.
    let shown = vch_testbed::run_in_pty(&regctl(&format!("image copy {s} {d}"))).unwrap();
    let line = format!("{} skipped ", &pushed.layer_digests[0][..19]);
    assert!(shown.contains(&line), "{shown:?}");
    assert!(
        shown.contains("total 0 copied, 0 mounted, 4 skipped; "),
        "{shown:?}"
    );

    // blob get: the blob alone in the file, the display on the terminal.
    let layer = &pushed.layer_digests[0];
    let shown =
        vch_testbed::run_in_pty(&regctl(&format!("blob get {}/src/app {layer}", src.addr())))
            .unwrap();
    assert_eq!(
        vch_testbed::sha256_digest(&std::fs::read(&stdout).unwrap()),
        *layer
    );
    let line = format!("{} downloaded ", &layer[..19]);
    assert!(shown.contains(&line), "{shown:?}");
    assert!(shown.contains("total 1 downloaded; "), "{shown:?}");

    // --quiet on a terminal: nothing drawn.
    let shown = vch_testbed::run_in_pty(&regctl(&format!("image copy --quiet {s} {d}"))).unwrap();
    assert_eq!(shown.trim(), "", "{shown:?}");
}
