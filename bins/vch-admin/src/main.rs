//! `vch-admin`: create, serve, check, update and inspect a VCH.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = vch_admin::Cli::parse();
    if let Err(err) = vch_admin::init_tracing(&cli) {
        return vch_admin::report(&err);
    }
    match vch_admin::run(cli) {
        Ok(code) => code,
        Err(err) => vch_admin::report(&err),
    }
}

/// `vch-admin ... | head` closes the pipe early, and std's `println!` then panics. Leave as a shell
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
