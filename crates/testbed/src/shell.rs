//! Real shells and a pseudo-terminal for command-line tests: does bash, zsh or fish accept a
//! completion script, what does bash's completion offer, what does a command draw on a
//! terminal.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::process::find_binary;

/// A shell a completion script is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

impl Shell {
    /// All three, for tests that cover each.
    pub const ALL: [Self; 3] = [Self::Bash, Self::Zsh, Self::Fish];

    /// The program (and Debian package) name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Zsh => "zsh",
            Self::Fish => "fish",
        }
    }
}

/// Runs a command and turns a failure into [`Error::Command`] with its output.
fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|source| Error::Io {
        what: what.to_owned(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(Error::Command {
            command: what.to_owned(),
            status: out.status.to_string(),
            output: if stderr.is_empty() { stdout } else { stderr },
        });
    }
    Ok(stdout)
}

/// Whether `shell` parses the script at `path` without running it (`-n`).
///
/// # Errors
/// [`Error::MissingBinary`] when the shell is not installed; [`Error::Command`] with the
/// shell's complaint when it refuses the script.
pub fn syntax_check(shell: Shell, path: &Path) -> Result<()> {
    let bin = find_binary(shell.name(), shell.name())?;
    output(
        Command::new(bin).arg("-n").arg(path),
        &format!("{} -n {}", shell.name(), path.display()),
    )
    .map(drop)
}

/// What bash's completion for `words[0]` offers for the last of `words`: the script at
/// `path` is sourced, and the function it registered (`complete -F`) called as bash would
/// after the user typed `words` and pressed Tab.
///
/// # Errors
/// [`Error::MissingBinary`] without bash; [`Error::Command`] when the script registers no
/// function for the command or the function fails.
pub fn bash_complete(path: &Path, words: &[&str]) -> Result<Vec<String>> {
    let bash = find_binary("bash", "bash")?;
    // COMP_* as bash sets them; `compopt` complains outside real completion, harmlessly.
    let script = r#"
source "$1"; shift
spec=$(complete -p "$1") || exit 3
func=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMP_TYPE=9
"$func" "$1" "${!#}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = output(
        Command::new(bash)
            .args(["--norc", "--noprofile", "-c", script, "bash"])
            .arg(path)
            .args(words),
        &format!("bash completion of {words:?}"),
    )?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs `command` (a shell command line) with a pseudo-terminal as its stdin, stdout and
/// stderr (util-linux `script`), and returns what it drew there, escape sequences and all.
/// Redirect stdout inside `command` to keep it apart.
///
/// # Errors
/// [`Error::MissingBinary`] without `script`; [`Error::Command`] when the command fails.
pub fn run_in_pty(command: &str) -> Result<String> {
    let script = find_binary("script", "bsdutils")?;
    output(
        Command::new(script)
            .args(["-q", "-e", "-c", command, "/dev/null"])
            .env("TERM", "xterm-256color")
            .stdin(std::process::Stdio::null()),
        &format!("script -qec {command:?}"),
    )
}
