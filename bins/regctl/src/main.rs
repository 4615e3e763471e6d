//! `regctl`: a registry command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
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

/// `regctl ... | head` closes the pipe early, and std's `println!` then panics. Leave as a shell
/// expects of a filter instead: silently, with SIGPIPE's status (128 + 13).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
