#![doc = include_str!("../README.md")]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command line prints its start-up lines"
)]

mod certs;
mod command;
mod flags;
mod supervise;

use std::process::ExitCode;

use anyhow::Context as _;

// The API: what `main` and the tests use.
pub use certs::{
    CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY, Incomplete, Mode, Plan, Present, RESOLVE_BUDGET,
    Report, SERVER_CERT, SERVER_KEY, TlsFiles, host_addresses, plan, prepare, server_names,
};
pub use command::{DEFAULT_SOCKET, display, dockerd_args, engine_socket, extra_unix_sockets};
pub use flags::{
    DEFAULT_CERTS, DEFAULT_DOCKERD, DEFAULT_STORAGE, EXIT_USAGE, FlagError, Flags, Parsed, parse,
    usage,
};
pub use supervise::{FRONT_GRACE, STOP_GRACE, exit_code};

/// Whether `DEBUG` is set in the environment (to anything, as the original tested it).
pub fn debug_from_env() -> bool {
    std::env::var_os("DEBUG").is_some()
}

/// Refuses flag combinations that cannot work, as a usage error.
pub fn check(flags: &Flags) -> Result<(), FlagError> {
    if flags.local && !flags.whitelist_registries.is_empty() {
        return Err(FlagError(
            "-whitelist-registry serves the TCP port, which -local turns off".to_owned(),
        ));
    }
    Ok(())
}

/// Logs on stderr: `info`, or `debug` for dinv and our crates with `DEBUG`; `RUST_LOG`
/// overrides both.
pub fn init_tracing(debug: bool) {
    let default = if debug {
        "info,dinv=debug,vch_proxy=debug,vch_pki=debug,vch_policy=debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

/// Runs dinv until dockerd exits; the exit code is dockerd's.
pub fn run(flags: Flags, debug: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(supervise::supervise(flags, debug))
}
