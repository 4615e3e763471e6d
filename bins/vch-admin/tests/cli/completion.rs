//! Issue 14: `vch-admin completion SHELL` prints a script the shell accepts and that
//! completes.

use std::process::Command;

use vch_testbed::{Shell, bash_complete, syntax_check};

#[test]
fn completion_scripts_parse_in_each_shell_and_bash_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in Shell::ALL {
        let out = Command::new(env!("CARGO_BIN_EXE_vch-admin"))
            .args(["completion", shell.name()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{shell:?}: {out:?}");
        let path = dir.path().join(format!("vch-admin.{}", shell.name()));
        std::fs::write(&path, &out.stdout).unwrap();
        syntax_check(shell, &path).unwrap();
    }
    let bash = dir.path().join("vch-admin.bash");
    let top = bash_complete(&bash, &["vch-admin", ""]).unwrap();
    for sub in ["create", "serve", "check", "inspect", "completion"] {
        assert!(top.iter().any(|w| w == sub), "{sub} not in {top:?}");
    }
    let client = bash_complete(&bash, &["vch-admin", "client", ""]).unwrap();
    for sub in ["add", "ls", "revoke"] {
        assert!(client.iter().any(|w| w == sub), "{sub} not in {client:?}");
    }
    // clap-rs/clap#6421: with a hyphen in the name, nothing after a subcommand completed.
    let add = bash_complete(&bash, &["vch-admin", "client", "add", "--proj"]).unwrap();
    assert_eq!(add, ["--project"]);
    let shells = bash_complete(&bash, &["vch-admin", "completion", ""]).unwrap();
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == s), "{s} not in {shells:?}");
    }
}
