//! `vch-admin update DIR`: narrow a VCH's whitelist or push list after deployment (content
//! trust), or return to the deploy-time lists.
//!
//! The deploy-time lists (`[registry] whitelist` and `push`, written by `create`) stay in
//! `vch.toml`; an update writes `[registry.narrowed]` beside them, and every update is checked
//! against the deploy-time lists, never against an earlier update, so updates can only narrow:
//!
//! | update | accepted when | written |
//! |---|---|---|
//! | `--whitelist-registry E…` | each entry is contained in a deploy-time whitelist or insecure entry (any entry when the VCH has no whitelist) | `narrowed.whitelist` |
//! | `--push-registry E…` | each entry is contained in a deploy-time push-list entry, or in the whitelist when there is no push list; never when pushes are refused (`push = []`) | `narrowed.push` |
//! | `--no-push` | always | `narrowed.push = []` |
//! | `--reset` | always | `[registry.narrowed]` removed |
//!
//! A refused update writes nothing and exits 1, naming the entry. A file whose narrowed lists
//! were widened by hand is refused too (and `serve` will not load it); `--reset` repairs it. The
//! deploy-time lists themselves are trusted as they are: whoever can edit `vch.toml` can widen
//! them, so keep its permissions tight. The file is replaced atomically, keeping its
//! permissions; a running `vch-admin serve` picks the change up on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use vch_policy::RegistryConfig;

use crate::config::{
    VchConfig, describe_mode, describe_push, describe_whitelist, push_in_force, whitelist_in_force,
    write_atomic,
};

/// Arguments of `vch-admin update`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["whitelist_registry", "push_registry", "no_push", "reset"]),
))]
pub struct UpdateArgs {
    /// The VCH directory written by `vch-admin create`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Whitelist entry now in force; each must be contained in the deploy-time whitelist.
    /// Repeatable; the entries replace the whitelist in force.
    #[arg(long = "whitelist-registry", visible_alias = "wr", value_name = "E")]
    pub whitelist_registry: Vec<String>,
    /// Push-list entry now in force; each must be contained in the deploy-time push list (or
    /// whitelist, without one). Repeatable; the entries replace the push list in force.
    #[arg(long = "push-registry", value_name = "E")]
    pub push_registry: Vec<String>,
    /// Refuse every push from now on (a narrowed push list that is empty).
    #[arg(long, conflicts_with = "push_registry")]
    pub no_push: bool,
    /// Return to the deploy-time lists (removes `[registry.narrowed]`).
    #[arg(long, conflicts_with_all = ["whitelist_registry", "push_registry", "no_push"])]
    pub reset: bool,
}

/// Runs `vch-admin update`: exit 0 when written (or unchanged), 1 when the update (or the file)
/// would broaden a deploy-time list, 2 for usage and configuration errors.
pub(crate) fn run(args: UpdateArgs) -> anyhow::Result<ExitCode> {
    let (config, config_file) = VchConfig::read(&args.dir)?;
    let registry = &config.registry;
    let next = if args.reset {
        registry.reset()
    } else {
        // An update starts from a file that holds: a narrowed list widened by hand is reported,
        // not silently replaced.
        if let Err(e) = registry.compile_rules(&args.dir) {
            if is_broadening(&e) {
                eprintln!(
                    "vch-admin: refused: {} is not a narrowing of its deploy-time lists ({e}); \
                     run `vch-admin update {} --reset` to return to them; nothing was written",
                    config_file.display(),
                    args.dir.display()
                );
                return Ok(ExitCode::from(1));
            }
            return Err(e).with_context(|| format!("[registry] in {}", config_file.display()));
        }
        let whitelist = (!args.whitelist_registry.is_empty()).then_some(&args.whitelist_registry);
        let push = crate::create::push_list(&args.push_registry, args.no_push);
        match registry.narrow(whitelist.map(Vec::as_slice), push.as_deref(), &args.dir) {
            Ok(next) => next,
            Err(e) if is_broadening(&e) => {
                eprintln!("vch-admin: refused: {e}; nothing was written");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e).context("invalid update; nothing was written"),
        }
    };
    // The result is exactly what `serve` will load.
    let rules = next
        .compile_rules(&args.dir)
        .with_context(|| format!("[registry] in {}", config_file.display()))?;

    let changed = next != *registry;
    if changed {
        let text = VchConfig {
            registry: next.clone(),
            ..config.clone()
        }
        .to_toml()?;
        write_atomic(&config_file, text.as_bytes())?;
        println!("Updated {}:", config_file.display());
    } else {
        println!("{} already holds these lists:", config_file.display());
    }
    print_in_force(&next, rules.narrowed);
    if changed {
        println!("A running `vch-admin serve` picks it up on SIGHUP (kill -HUP <pid>).");
    }
    Ok(ExitCode::SUCCESS)
}

fn is_broadening(e: &vch_policy::Error) -> bool {
    matches!(
        e,
        vch_policy::Error::Broadening { .. } | vch_policy::Error::PushBroadening { .. }
    )
}

fn print_in_force(registry: &RegistryConfig, narrowed: bool) {
    let source = if narrowed {
        "narrowed by `vch-admin update`"
    } else {
        "the deploy-time lists"
    };
    println!("  in force:    {source}");
    println!(
        "  whitelist:   {}",
        describe_whitelist(whitelist_in_force(registry))
    );
    println!("  push:        {}", describe_push(push_in_force(registry)));
    println!("  policy mode: {}", describe_mode(registry.mode));
}
