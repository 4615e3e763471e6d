//! `vch-admin check`: decide images under a registry policy.

use std::process::ExitCode;

/// Arguments of `vch-admin check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Images to decide.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Runs `vch-admin check`.
pub(crate) fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
