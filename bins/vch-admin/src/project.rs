//! Projects: `[projects.NAME] registries = [...]` in `vch.toml`, compiled into the policies the
//! endpoint holds a project's clients to, and `vch-admin project set`.
//!
//! A client's project is its certificate subject's OU. Its effective policy is the VCH whitelist
//! ∩ its project's list:
//!
//! | client | decided by |
//! |---|---|
//! | no OU | the VCH whitelist (and push list) |
//! | OU naming a project | the VCH whitelist (or push list) and the project's list: both must allow |
//! | OU naming no project in `vch.toml` | nothing is allowed (a removed project does not widen) |
//!
//! A project entry outside the whitelist is accepted with a warning: it has no effect there, as
//! the more restrictive list wins. A project with no entries is refused (it would read as "no
//! restriction").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use vch_policy::{Entry, Policy, PolicyBuilder};

use crate::config::{ProjectConfig, VchConfig, write_atomic};

/// Arguments of `vch-admin project`.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ProjectCommand,
}

/// The `project` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectCommand {
    /// Set a project's registry list (replacing it); its clients are held to it inside the
    /// VCH whitelist.
    Set(SetArgs),
}

/// Arguments of `vch-admin project set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The VCH directory written by `vch-admin create`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The project's name (the OU of its clients' certificates).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Registry entry, in the whitelist's syntax (`reg.example.com/team-a`). Repeatable; at
    /// least one.
    #[arg(long = "registry", value_name = "E", required = true)]
    pub registries: Vec<String>,
}

/// One project, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    /// The project's name.
    pub(crate) name: String,
    /// Its list, as a policy in whitelist mode.
    pub(crate) list: Policy,
}

/// Compiles every `[projects.NAME]` of a configuration against the VCH's pull policy; returns
/// the projects and the warning lines (entries with no effect).
pub(crate) fn compile(
    config: &BTreeMap<String, ProjectConfig>,
    whitelist: &Policy,
) -> anyhow::Result<(Vec<Compiled>, Vec<String>)> {
    let mut projects = Vec::with_capacity(config.len());
    let mut warnings = Vec::new();
    for (name, project) in config {
        let list = compile_one(name, project, whitelist)?;
        for entry in list.whitelist() {
            if whitelist
                .narrowed_entries(std::slice::from_ref(entry))
                .is_empty()
            {
                warnings.push(format!(
                    "vch-admin: warning: project {name}: registry `{entry}` is outside the VCH \
                     whitelist: it has no effect there (the more restrictive list wins)"
                ));
            }
        }
        projects.push(Compiled {
            name: name.clone(),
            list,
        });
    }
    Ok((projects, warnings))
}

/// One project's list as a policy; its reverse-DNS mode is the VCH's.
fn compile_one(name: &str, project: &ProjectConfig, whitelist: &Policy) -> anyhow::Result<Policy> {
    if name.trim().is_empty() {
        bail!("[projects]: a project name must not be empty");
    }
    if project.registries.is_empty() {
        bail!(
            "[projects.{name}]: registries is empty: list the registries its clients may use \
             (or remove the project)"
        );
    }
    let mut builder = PolicyBuilder::new();
    for entry in &project.registries {
        let entry = Entry::parse(entry)
            .with_context(|| format!("[projects.{name}]: registry `{entry}`"))?;
        builder.whitelist_entry(entry);
    }
    builder.reverse_dns(whitelist.reverse_dns());
    builder
        .build()
        .with_context(|| format!("[projects.{name}]"))
}

/// The pull policy of a configuration (the whitelist in force), to compile projects against.
pub(crate) fn vch_policy(config: &VchConfig, dir: &std::path::Path) -> anyhow::Result<Policy> {
    Ok(config.registry.compile_rules(dir)?.pull)
}

/// Runs `vch-admin project`.
pub(crate) fn run(args: ProjectArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ProjectCommand::Set(args) => set(args),
    }
}

fn set(args: SetArgs) -> anyhow::Result<ExitCode> {
    let (mut config, config_file) = VchConfig::read(&args.dir)?;
    config.projects.insert(
        args.name.clone(),
        ProjectConfig {
            registries: args.registries.clone(),
        },
    );
    let whitelist = vch_policy(&config, &args.dir)
        .with_context(|| format!("[registry] in {}", config_file.display()))?;
    let (_, warnings) = compile(&config.projects, &whitelist)?;
    for line in warnings
        .iter()
        .filter(|l| l.contains(&format!("project {}:", args.name)))
    {
        eprintln!("{line}");
    }
    write_atomic(&config_file, config.to_toml()?.as_bytes())?;
    println!(
        "Project {} in {}: {}",
        args.name,
        config_file.display(),
        args.registries.join(", ")
    );
    println!("A running `vch-admin serve` picks it up on SIGHUP (kill -HUP <pid>).");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(projects: &[(&str, &[&str])]) -> VchConfig {
        let mut text =
            String::from("name = \"v\"\n[registry]\nwhitelist = [\"reg.example.com\"]\n");
        for (name, list) in projects {
            let list: Vec<String> = list.iter().map(|e| format!("\"{e}\"")).collect();
            text.push_str(&format!(
                "[projects.{name}]\nregistries = [{}]\n",
                list.join(", ")
            ));
        }
        VchConfig::from_toml(&text, std::path::Path::new("vch.toml")).unwrap()
    }

    #[test]
    fn entries_outside_the_whitelist_warn_and_empty_lists_are_refused() {
        let c = config(&[("a", &["reg.example.com/team-a", "elsewhere.example.net"])]);
        let whitelist = vch_policy(&c, std::path::Path::new(".")).unwrap();
        let (projects, warnings) = compile(&c.projects, &whitelist).unwrap();
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0].list.whitelist().len(), 2);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`elsewhere.example.net` is outside the VCH whitelist"));

        let c = config(&[("b", &[])]);
        let err = compile(&c.projects, &whitelist).unwrap_err();
        assert!(
            format!("{err:#}").contains("registries is empty"),
            "{err:#}"
        );

        let c = config(&[("c", &["not a registry!"])]);
        assert!(compile(&c.projects, &whitelist).is_err());
    }
}
