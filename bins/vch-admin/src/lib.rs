//! The `vch-admin` command line: argument structs and `run()`, here so tests can reach them.
//!
//! Exit codes: 0 success, 1 the operation found a problem (an image denied, a lint error),
//! 2 usage or configuration error.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command line prints"
)]

mod check;
pub mod config;
mod create;
mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

/// Create, serve, check, update and inspect a VCH.
#[derive(Debug, Parser)]
#[command(name = "vch-admin", version, about)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decide whether images may be pulled under a registry policy.
    Check(check::CheckArgs),
    /// Create a VCH directory: certificates, an env file and vch.toml.
    Create(create::CreateArgs),
    /// Show a VCH's configuration and certificates with lints; exit 1 on errors.
    Inspect(inspect::InspectArgs),
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Create(args) => create::run(args),
        Command::Inspect(args) => inspect::run(args),
    }
}

/// Sets up `tracing` on stderr; `RUST_LOG` overrides the verbosity flag.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints an error as one line on stderr and returns the usage/configuration exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("vch-admin: {err:#}");
    ExitCode::from(EXIT_USAGE)
}
