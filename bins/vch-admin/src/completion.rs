//! `completion SHELL`: a completion script for this command, from its clap definitions.

use std::io::Write as _;

use clap::{Args, CommandFactory as _};

/// `completion SHELL`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh or fish (also elvish, powershell).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script for `shell` on stdout.
pub(crate) fn run(args: &CompletionArgs) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    let name = cmd.get_name().to_owned();
    // Into a buffer first: `generate` panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name.clone(), &mut script);
    if args.shell == clap_complete::Shell::Bash {
        script = bash_hyphen_fix(&String::from_utf8_lossy(&script), &name).into_bytes();
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// clap_complete's bash script for a hyphenated name (clap-rs/clap#6421, open in 4.6.12)
/// names the subcommand states `vch__subcmd__admin__subcmd__client` where its loop
/// computes `vch__admin__subcmd__client`, so nothing after a subcommand completes. The
/// states are respelled as the loop spells them (a no-op once clap_complete is fixed).
fn bash_hyphen_fix(script: &str, name: &str) -> String {
    let loop_spelling = name.replace('-', "__");
    let state_spelling = name.replace('-', "__subcmd__");
    if loop_spelling == state_spelling {
        return script.to_owned();
    }
    script.replace(
        &format!("{state_spelling}__subcmd__"),
        &format!("{loop_spelling}__subcmd__"),
    )
}
