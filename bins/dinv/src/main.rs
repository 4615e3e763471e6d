//! `dinv`: Docker-in-VIC, a Docker engine from a handful of Go-style flags.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the usage and the one error line"
)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv
        .next()
        .map_or_else(|| "dinv".to_owned(), |p| p.to_string_lossy().into_owned());
    let mut args = Vec::new();
    for arg in argv {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => return usage_error(&program, &format!("argument is not UTF-8: {arg:?}")),
        }
    }
    let flags = match dinv::parse(args) {
        Ok(dinv::Parsed::Help) => {
            print!("{}", dinv::usage(&program));
            return ExitCode::SUCCESS;
        }
        Ok(dinv::Parsed::Run(flags)) => flags,
        Err(e) => return usage_error(&program, &e.to_string()),
    };
    if let Err(e) = dinv::check(&flags) {
        return usage_error(&program, &e.to_string());
    }
    let debug = dinv::debug_from_env();
    dinv::init_tracing(debug);
    match dinv::run(flags, debug) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("dinv: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Go's `flag.ExitOnError`: the error, the usage, exit 2.
fn usage_error(program: &str, message: &str) -> ExitCode {
    eprint!("{message}\n{}", dinv::usage(program));
    ExitCode::from(dinv::EXIT_USAGE)
}
