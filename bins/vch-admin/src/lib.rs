//! The `vch-admin` command line: argument structs and `run()`, here so tests can reach them.
//!
//! | command | what |
//! |---|---|
//! | `create` | a VCH directory: certificates, `NAME.env`, `vch.toml` (whitelist, push list, policy mode, `--api-version` pin) |
//! | `serve DIR` | the Docker API endpoint (1.24 up to the engine's version, or the pin) in front of the VCH's engine; SIGHUP reloads `vch.toml` |
//! | `check IMAGE…` | decide images as pulls, or with `--push` as pushes, as a VCH would |
//! | `update DIR` | narrow the whitelist or push list after deployment (content trust), or `--reset` |
//! | `project set DIR NAME` | a project's registry list: its clients (certificate OU) are held to it inside the whitelist |
//! | `client add\|ls\|revoke DIR` | client certificates from the VCH's CA, one project each (subject OU); revocation writes `crl.pem` |
//! | `inspect DIR` | configuration, lists in force and certificates, with lints |
//! | `registry cert` / `registry trust` | a private registry's TLS certificate, env file and `certs.d` trust |
//! | `completion SHELL` | a bash, zsh or fish completion script on stdout |
//!
//! Exit codes: 0 success, 1 the operation found a problem (an image denied, a lint error),
//! 2 usage or configuration error.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command line prints"
)]

mod check;
mod client;
mod completion;
pub mod config;
mod create;
mod inspect;
mod notify;
mod probe;
mod project;
mod registry;
mod serve;
mod update;

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
    /// Decide whether images may be pulled (or, with --push, pushed) under a registry policy.
    Check(check::CheckArgs),
    /// Client certificates for a VCH: add (for a project), ls, revoke.
    Client(client::ClientArgs),
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    Completion(completion::CompletionArgs),
    /// Create a VCH directory: certificates, an env file and vch.toml.
    Create(create::CreateArgs),
    /// Show a VCH's configuration and certificates with lints; exit 1 on errors.
    Inspect(inspect::InspectArgs),
    /// Per-project registry lists: a project's clients are held to its list inside the whitelist.
    Project(project::ProjectArgs),
    /// Certificates and certs.d trust for a private registry served over TLS.
    Registry(registry::RegistryArgs),
    /// Serve a VCH: the Docker API endpoint (1.24 up to its engine's version) in front of its
    /// engine.
    Serve(serve::ServeArgs),
    /// Narrow a VCH's whitelist or push list (never widen), or --reset to the deploy-time lists.
    Update(update::UpdateArgs),
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Client(args) => client::run(args),
        Command::Completion(args) => completion::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Create(args) => create::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Project(args) => project::run(args),
        Command::Registry(args) => registry::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Update(args) => update::run(args),
    }
}

/// Sets up `tracing`: logs on stderr (`RUST_LOG` overrides the verbosity flag) and, for
/// `serve`, the audit log. Fails only when the audit log cannot be opened.
pub fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let is_audit = |m: &tracing::Metadata<'_>| m.target() == vch_proxy::AUDIT_TARGET;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| !is_audit(m)));
    let audit = match &cli.command {
        Command::Serve(args) => Some(
            serve::AuditLayer::new(serve::AuditSink::open(args)?)
                .with_filter(tracing_subscriber::filter::filter_fn(is_audit)),
        ),
        _ => None,
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(audit)
        .try_init();
    Ok(())
}

/// Prints an error as one line on stderr and returns the usage/configuration exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("vch-admin: {}", one_line(err));
    ExitCode::from(EXIT_USAGE)
}

/// The error and its causes joined by `: `, leaving out a cause whose text the line already
/// holds (many errors print their source in their own message too).
pub fn one_line(err: &anyhow::Error) -> String {
    err.chain().skip(1).fold(err.to_string(), |line, cause| {
        let cause = cause.to_string();
        if line.contains(&cause) {
            line
        } else {
            format!("{line}: {cause}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn one_line_leaves_out_causes_already_printed() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let err =
            anyhow::Error::new(io).context("cannot listen on 127.0.0.1:1: Address already in use");
        assert_eq!(
            one_line(&err),
            "cannot listen on 127.0.0.1:1: Address already in use"
        );
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("cannot write x");
        assert_eq!(one_line(&err), "cannot write x: disk full");
    }
}
