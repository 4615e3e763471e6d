//! Issue 14: `cargo xtask man` writes man pages that groff and mandoc render without
//! complaint, one per command and subcommand.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic with its location"
)]

use std::path::Path;
use std::process::Command;

/// `mandoc -T lint -W warning`: no warning or error, but for a `.br` next to a `.sp`
/// (clap_mangen writes both between paragraphs of a long help; mandoc drops the `.br`).
fn lint(page: &Path) {
    let out = Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .arg(page)
        .output()
        .unwrap_or_else(|e| panic!("mandoc ({e}): apt-get install mandoc"));
    let report = String::from_utf8_lossy(&out.stdout);
    let complaints: Vec<&str> = report
        .lines()
        .filter(|l| !l.contains("WARNING: skipping paragraph macro: br "))
        .collect();
    assert!(complaints.is_empty(), "{}: {complaints:#?}", page.display());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `program` (from the Debian `package`) on a page; its stdout, after checking it
/// succeeded and said nothing on stderr.
fn render(program: &str, package: &str, args: &[&str], page: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(page)
        .output()
        .unwrap_or_else(|e| panic!("{program} ({e}): apt-get install {package}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{program} {args:?} {}: {stderr}",
        page.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_pages_render_and_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for page in [
        "vch-admin.1",
        "vch-admin-create.1",
        "vch-admin-serve.1",
        "vch-admin-client-add.1",
        "vch-admin-completion.1",
        "regctl.1",
        "regctl-image-copy.1",
        "regctl-blob-get.1",
        "regctl-completion.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("-help")), "{pages:?}");

    for page in &pages {
        let path = dir.path().join(page);
        // -k: preconv, as man(1) runs it (the help texts hold UTF-8); -ww: every warning;
        // (below, -P-cbou: plain text, no overstrike for bold and underline)
        // -z: parse and format, print nothing.
        render(
            "groff",
            "groff-base",
            &["-k", "-man", "-Tutf8", "-ww", "-z"],
            &path,
        );
        lint(&path);
    }
    let top = render(
        "groff",
        "groff-base",
        &["-k", "-man", "-Tutf8", "-P-cbou"],
        &dir.path().join("vch-admin.1"),
    );
    for sub in ["create", "serve", "check", "inspect", "completion"] {
        assert!(top.contains(&format!("vch-admin-{sub}(1)")), "{sub}: {top}");
    }
    let top = render(
        "groff",
        "groff-base",
        &["-k", "-man", "-Tutf8", "-P-cbou"],
        &dir.path().join("regctl.1"),
    );
    for sub in ["image", "blob", "completion"] {
        assert!(top.contains(&format!("regctl-{sub}(1)")), "{sub}: {top}");
    }
    let copy = render(
        "groff",
        "groff-base",
        &["-k", "-man", "-Tutf8", "-P-cbou"],
        &dir.path().join("regctl-image-copy.1"),
    );
    assert!(
        copy.contains("--progress") && copy.contains("--quiet"),
        "{copy}"
    );
}
