//! `regctl`: a registry command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = regctl::Cli::parse();
    regctl::init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return regctl::report(&err.into()),
    };
    match runtime.block_on(regctl::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => regctl::report(&err),
    }
}
