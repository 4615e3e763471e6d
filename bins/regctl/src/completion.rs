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
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}
