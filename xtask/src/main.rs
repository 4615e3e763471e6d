//! Project tasks, run as `cargo xtask TASK` (the alias in `.cargo/config.toml`).
//!
//! - `man [--out DIR]`: man pages of `vch-admin` and `regctl`, one per command and
//!   subcommand (`vch-admin.1`, `vch-admin-create.1`, `regctl-image-copy.1`, …), generated
//!   from their clap definitions into DIR (default `target/man`). Nothing generated is
//!   checked in: the pages are made on request, so they never drift from `--help`.
#![allow(clippy::print_stdout, reason = "a command line prints")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Write the man pages of vch-admin and regctl.
    Man {
        /// Where to write them (created if missing) [default: target/man in the workspace].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Xtask::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[allow(clippy::print_stderr, reason = "the one error line")]
            {
                eprintln!("xtask: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(xtask: Xtask) -> anyhow::Result<()> {
    match xtask.task {
        Task::Man { out } => {
            // The default is the workspace's, wherever `cargo xtask` was started.
            let out = match out {
                Some(out) => out,
                None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .context("xtask has no parent directory")?
                    .join("target/man"),
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let date = date()?;
            for cmd in [vch_admin::Cli::command(), regctl::Cli::command()] {
                man_pages(cmd, &out, &date)
                    .with_context(|| format!("cannot write man pages to {}", out.display()))?;
            }
            let mut pages: Vec<_> = std::fs::read_dir(&out)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".1"))
                .collect();
            pages.sort();
            println!("{} man pages in {}", pages.len(), out.display());
            Ok(())
        }
    }
}

/// One page per command and (not hidden) subcommand, as `clap_mangen::generate_to` writes
/// them, but with a date and the program's name and version in the footer of every page
/// (`generate_to` leaves the date empty, which `mandoc -T lint` warns about, and gives
/// subcommands a footer without a version).
fn man_pages(cmd: clap::Command, out: &Path, date: &str) -> std::io::Result<()> {
    fn write(cmd: clap::Command, out: &Path, date: &str, source: &str) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            write(sub, out, date, source)?;
        }
        clap_mangen::Man::new(cmd)
            .date(date)
            .source(source)
            .manual("User Commands")
            .generate_to(out)
            .map(drop)
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives each subcommand its display name (`regctl-image-copy`), the page's file name.
    cmd.build();
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    write(cmd, out, date, source.trim_end())
}

/// Today as `YYYY-MM-DD`, or the day of `SOURCE_DATE_EPOCH` for reproducible pages.
fn date() -> anyhow::Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v}: not seconds"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs(),
    };
    Ok(civil_date(secs / 86_400))
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> String {
    // u64 days / 146 097 fit in i64 by a wide margin; saturate rather than panic anyway.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates_of_known_days() {
        for (secs, day) in [
            (0, "1970-01-01"),
            (951_782_400, "2000-02-29"),
            (1_798_675_200, "2026-12-31"),
            (4_107_542_400, "2100-03-01"),
        ] {
            assert_eq!(super::civil_date(secs / 86_400), day);
        }
    }
}
