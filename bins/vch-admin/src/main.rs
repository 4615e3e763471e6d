//! `vch-admin`: create, serve, check, update and inspect a VCH.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = vch_admin::Cli::parse();
    vch_admin::init_tracing(cli.verbose);
    match vch_admin::run(cli) {
        Ok(code) => code,
        Err(err) => vch_admin::report(&err),
    }
}
