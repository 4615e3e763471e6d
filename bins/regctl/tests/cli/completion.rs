//! Issue 14: `regctl completion SHELL` prints a script the shell accepts and that completes.

use vch_testbed::{Shell, bash_complete, syntax_check};

use crate::Home;

#[test]
fn completion_scripts_parse_in_each_shell_and_bash_completes_subcommands() {
    let home = Home::new();
    for shell in Shell::ALL {
        let script = home.ok(&["completion", shell.name()]);
        assert!(script.contains("regctl"), "{shell:?}: {script}");
        let path = home.path().join(format!("regctl.{}", shell.name()));
        std::fs::write(&path, &script).unwrap();
        syntax_check(shell, &path).unwrap();
    }
    let bash = home.path().join("regctl.bash");
    let top = bash_complete(&bash, &["regctl", ""]).unwrap();
    for sub in ["image", "blob", "manifest", "completion"] {
        assert!(top.iter().any(|w| w == sub), "{sub} not in {top:?}");
    }
    let image = bash_complete(&bash, &["regctl", "image", ""]).unwrap();
    assert!(image.iter().any(|w| w == "copy"), "{image:?}");
    let copy = bash_complete(&bash, &["regctl", "image", "copy", "--pro"]).unwrap();
    assert_eq!(copy, ["--progress"]);
    let shells = bash_complete(&bash, &["regctl", "completion", ""]).unwrap();
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == s), "{s} not in {shells:?}");
    }
    // An unknown shell is a usage error.
    assert_eq!(home.run(&["completion", "tcsh"]).status.code(), Some(2));
}
