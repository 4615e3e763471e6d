//! `vch-admin`: create, serve, check, update and inspect a VCH.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = vch_admin::Cli::parse();
    if let Err(err) = vch_admin::init_tracing(&cli) {
        return vch_admin::report(&err);
    }
    match vch_admin::run(cli) {
        Ok(code) => code,
        Err(err) => vch_admin::report(&err),
    }
}
