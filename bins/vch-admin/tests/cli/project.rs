//! `vch-admin project set` and `vch-admin check --project` (issue 16): a project's list in
//! `vch.toml`, and decisions as the VCH makes them for the project's clients.

use std::path::Path;
use std::process::{Command, Output};

fn vch_admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
        .args(args)
        .output()
        .expect("run vch-admin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A VCH directory holding only `vch.toml`, with this whitelist.
fn vch_dir(whitelist: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let list: Vec<String> = whitelist.iter().map(|e| format!("\"{e}\"")).collect();
    std::fs::write(
        dir.path().join("vch.toml"),
        format!(
            "name = \"vch1\"\n\n[registry]\nwhitelist = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    dir
}

fn set(dir: &Path, name: &str, registries: &[&str]) -> Output {
    let mut args = vec!["project", "set", dir.to_str().unwrap(), name];
    for r in registries {
        args.extend(["--registry", r]);
    }
    vch_admin(&args)
}

#[test]
fn project_set_writes_the_list_and_warns_about_entries_outside_the_whitelist() {
    let dir = vch_dir(&["reg.example.com", "other.example.com"]);
    let out = set(
        dir.path(),
        "team-a",
        &["reg.example.com/team-a", "elsewhere.example.net"],
    );
    assert!(out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "project team-a: registry `elsewhere.example.net` is outside the VCH whitelist: it \
             has no effect there"
        ),
        "{stderr}"
    );
    let toml = std::fs::read_to_string(dir.path().join("vch.toml")).unwrap();
    assert!(
        toml.contains(
            "[projects.team-a]\nregistries = [\"reg.example.com/team-a\", \"elsewhere.example.net\"]"
        ),
        "{toml}"
    );
    // Setting again replaces the list; other projects stay.
    assert!(
        set(dir.path(), "team-b", &["other.example.com"])
            .status
            .success()
    );
    let out = set(dir.path(), "team-a", &["reg.example.com"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stderr).is_empty(), "{out:?}");
    let toml = std::fs::read_to_string(dir.path().join("vch.toml")).unwrap();
    assert!(
        toml.contains("[projects.team-a]\nregistries = [\"reg.example.com\"]"),
        "{toml}"
    );
    assert!(toml.contains("[projects.team-b]"), "{toml}");

    // A bad entry is refused and nothing is written; so is no entry at all.
    let out = set(dir.path(), "team-a", &["not a registry!"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("vch.toml")).unwrap(),
        toml
    );
    let out = vch_admin(&["project", "set", dir.path().to_str().unwrap(), "team-a"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn check_project_decides_as_the_vch_does_for_the_projects_clients() {
    let dir = vch_dir(&["reg.example.com", "other.example.com"]);
    assert!(
        set(dir.path(), "team-a", &["reg.example.com/team-a"])
            .status
            .success()
    );
    let config = dir.path().join("vch.toml");
    let config = config.to_str().unwrap();

    // The VCH whitelist alone allows both.
    let out = vch_admin(&[
        "check",
        "--config",
        config,
        "reg.example.com/team-b/app",
        "other.example.com/x",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = vch_admin(&[
        "check",
        "--config",
        config,
        "--project",
        "team-a",
        "reg.example.com/team-a/app",
        "reg.example.com/team-b/app",
        "other.example.com/x",
        "docker.io/library/busybox",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("reg.example.com/team-a/app: allowed"),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "reg.example.com/team-b/app: denied: Access denied to unauthorized registry \
         (reg.example.com) while VCH is in whitelist mode (project team-a)"
    );
    assert!(lines[2].ends_with("(project team-a)"), "{stdout}");
    // Denied by the whitelist itself: the project is named too.
    assert!(lines[3].ends_with("(project team-a)"), "{stdout}");

    // A project the file does not have, and --project without --config, are usage errors.
    let out = vch_admin(&["check", "--config", config, "--project", "nope", "x/y"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("has no [projects.nope]"),
        "{out:?}"
    );
    let out = vch_admin(&["check", "--project", "team-a", "x/y"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
