//! `vch-admin check`: decide images under a registry policy, as a VCH would.
//!
//! Which list decides:
//!
//! | action | push list (`[registry] push`, `--push-registry`) | decided by |
//! |---|---|---|
//! | pull | — | the whitelist in force (and the insecure list) |
//! | push (`--push`) | absent | the whitelist in force, as a pull |
//! | push | entries | the push list alone (exact: the insecure list does not extend it) |
//! | push | empty (`push = []`, `--no-push`) | nothing: every push is denied |
//!
//! With `--config`, the lists in force are the narrowed ones `vch-admin update` wrote, when
//! there are; flags add to the lists in force. With `--project NAME` (which needs `--config`),
//! an image the list above allows is decided by the project's `[projects.NAME]` list too, as the
//! VCH decides for that project's clients; a denial names the project.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use vch_policy::{
    Decision, DnsConfig, HickoryResolver, ImageRef, Policy, PushRule, Reason, RegistryConfig,
    ReverseDns, ReverseDnsMode, Transport,
};

/// Arguments of `vch-admin check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Read the `[registry]` section of a VCH config file (vch.toml); flags add to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Whitelist entry: host, host:port, CIDR, *.domain, optionally with a scheme or /namespace.
    #[arg(
        long = "whitelist-registry",
        visible_alias = "wr",
        value_name = "ENTRY"
    )]
    pub whitelist: Vec<String>,
    /// Insecure registry entry (same forms); in whitelist mode it is whitelisted too.
    #[arg(
        long = "insecure-registry",
        visible_alias = "dir",
        value_name = "ENTRY"
    )]
    pub insecure: Vec<String>,
    /// PEM file of a registry CA.
    #[arg(long = "registry-ca", visible_alias = "rc", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// How IP-literal registries are checked against wildcard entries.
    #[arg(long, value_name = "MODE", value_parser = ["confirmed", "ptr-only", "off"])]
    pub reverse_dns: Option<String>,
    /// DNS server for reverse lookups (default: the system's).
    #[arg(long, value_name = "IP:PORT")]
    pub dns_server: Vec<std::net::SocketAddr>,
    /// Decide the images as `docker push`es: against the push list, or the whitelist when there
    /// is none.
    #[arg(long)]
    pub push: bool,
    /// Push-list entry (same forms as the whitelist); adds to the config file's push list.
    #[arg(long = "push-registry", value_name = "ENTRY")]
    pub push_registry: Vec<String>,
    /// No pushes at all (an empty push list), whatever the config file says.
    #[arg(long, conflicts_with = "push_registry")]
    pub no_push: bool,
    /// Decide as the VCH does for this project's clients: its `[projects.NAME]` list narrows
    /// the lists in force.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub project: Option<String>,
    /// One JSON object per image on stdout.
    #[arg(long)]
    pub json: bool,
    /// Image references, as given to `docker pull`.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// One image's outcome, as printed.
#[derive(Debug, serde::Serialize)]
struct Row<'a> {
    image: &'a str,
    /// `pull` or `push`.
    action: &'static str,
    reference: Option<String>,
    registry: Option<String>,
    allowed: bool,
    transport: Option<&'static str>,
    /// The list that decided: `whitelist` or `push`.
    list: &'static str,
    entry: Option<String>,
    reason: String,
}

/// What decides the images of one run.
enum Decider<'a> {
    /// Pulls, and pushes without a push list.
    Whitelist(&'a Policy),
    /// Pushes, against a push list; the whitelist only says how the registry is reached.
    PushList(&'a Policy, &'a Policy),
    /// Pushes, with an empty push list.
    Nowhere,
}

/// Runs `vch-admin check`: exit 0 if all allowed, 1 if any denied, 2 for a bad image reference.
pub(crate) fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = effective_config(&args)?;
    let rules = config.compile_rules(Path::new("."))?;
    let project = match &args.project {
        Some(name) => Some((name.as_str(), read_project(&args, name, &rules.pull)?)),
        None => None,
    };
    for warning in rules.pull.warnings() {
        eprintln!("vch-admin: warning: {warning}");
    }
    let action = if args.push { "push" } else { "pull" };
    let decider = match (&rules.push, args.push) {
        (_, false) | (PushRule::SameAsPull, true) => Decider::Whitelist(&rules.pull),
        (PushRule::List(push), true) => {
            for warning in push.warnings() {
                eprintln!("vch-admin: warning: push list: {warning}");
            }
            Decider::PushList(push, &rules.pull)
        }
        (PushRule::Nowhere, true) => Decider::Nowhere,
    };
    let config = config.dns;
    let images: Vec<_> = args
        .images
        .iter()
        .map(|i| (i, ImageRef::parse(i)))
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rows = runtime.block_on(async {
        let mut dns: Option<ReverseDns<HickoryResolver>> = None;
        let mut rows = Vec::with_capacity(images.len());
        for (image, parsed) in &images {
            let row = match parsed {
                Err(err) => Row {
                    image,
                    action,
                    reference: None,
                    registry: None,
                    allowed: false,
                    transport: None,
                    list: decider.list(),
                    entry: None,
                    reason: err.to_string(),
                },
                Ok(reference) => {
                    match decider {
                        Decider::Whitelist(policy) => {
                            let mut decision = decide(policy, reference, &mut dns, &config).await?;
                            if let (true, Some((_, list))) = (decision.is_allowed(), &project) {
                                let narrowed = decide(list, reference, &mut dns, &config).await?;
                                if !narrowed.is_allowed() {
                                    decision = narrowed;
                                }
                            }
                            row(image, action, reference, &decision)
                        }
                        Decider::PushList(push, pull) => {
                            let mut decision = decide(push, reference, &mut dns, &config).await?;
                            if let (true, Some((_, list))) = (decision.is_allowed(), &project) {
                                let narrowed = decide(list, reference, &mut dns, &config).await?;
                                if !narrowed.is_allowed() {
                                    decision = narrowed;
                                }
                            }
                            // A push list is exact, but the insecure list still says how the
                            // registry is reached.
                            let insecure = decision.is_allowed()
                                && pull.decide(reference).transport() == Some(Transport::Insecure);
                            push_row(image, reference, &decision, insecure)
                        }
                        Decider::Nowhere => nowhere_row(image, reference),
                    }
                }
            };
            let mut row = row;
            if let (false, Some((name, _))) = (row.allowed, &project) {
                row.reason = format!("{} (project {name})", row.reason);
            }
            rows.push(row);
        }
        Ok::<_, vch_policy::Error>(rows)
    })?;

    let mut code = 0u8;
    for (row, (_, parsed)) in rows.iter().zip(&images) {
        if args.json {
            println!("{}", serde_json::to_string(row)?);
        } else if !args.push && row.allowed {
            println!(
                "{}: allowed ({}): {}",
                row.image,
                row.transport.unwrap_or("secure"),
                row.reason
            );
        } else if !args.push {
            println!("{}: denied: {}", row.image, row.reason);
        } else if row.allowed {
            println!(
                "{}: push allowed ({}) by the {}: {}",
                row.image,
                row.transport.unwrap_or("secure"),
                decider.list_text(),
                row.reason
            );
        } else {
            println!(
                "{}: push denied by the {}: {}",
                row.image,
                decider.list_text(),
                row.reason
            );
        }
        code = code.max(match parsed {
            Err(err) => {
                eprintln!("vch-admin: {err}");
                crate::EXIT_USAGE
            }
            Ok(_) if !row.allowed => 1,
            Ok(_) => 0,
        });
    }
    Ok(ExitCode::from(code))
}

/// A policy's decision, with a reverse lookup when the policy wants one (the resolver is made
/// on first use).
async fn decide<'a>(
    policy: &'a Policy,
    reference: &'a ImageRef,
    dns: &mut Option<ReverseDns<HickoryResolver>>,
    config: &DnsConfig,
) -> Result<Decision<'a>, vch_policy::Error> {
    let direct = policy.decide(reference);
    if policy.wants_reverse_dns(&direct).is_none() {
        return Ok(direct);
    }
    let dns = match dns {
        Some(dns) => dns,
        None => dns.insert(ReverseDns::new(HickoryResolver::new(
            &config.servers,
            config.timeout(),
        )?)),
    };
    Ok(policy.decide_resolving(reference, dns).await)
}

impl Decider<'_> {
    /// The `list` field.
    fn list(&self) -> &'static str {
        match self {
            Decider::Whitelist(_) => "whitelist",
            Decider::PushList(..) | Decider::Nowhere => "push",
        }
    }

    /// The list's name in a push line of the text output.
    fn list_text(&self) -> &'static str {
        match self {
            Decider::Whitelist(_) => "whitelist (no push list)",
            Decider::PushList(..) => "push list",
            Decider::Nowhere => "empty push list",
        }
    }
}

/// A decision by the whitelist (a pull, or a push without a push list).
fn row<'a>(
    image: &'a str,
    action: &'static str,
    reference: &ImageRef,
    decision: &Decision<'_>,
) -> Row<'a> {
    Row {
        image,
        action,
        reference: Some(reference.to_string()),
        registry: Some(decision.registry().to_string()),
        allowed: decision.is_allowed(),
        transport: decision.transport().map(|t| t.as_str()),
        list: "whitelist",
        entry: decision.entry().map(|e| e.to_string()),
        reason: decision.to_string(),
    }
}

/// A push decided by the push list. The policy's own text speaks of a whitelist; this one
/// names the push list.
fn push_row<'a>(
    image: &'a str,
    reference: &ImageRef,
    decision: &Decision<'_>,
    insecure: bool,
) -> Row<'a> {
    let registry = decision.registry();
    let reason = match (decision.entry(), decision.reason()) {
        (Some(entry), Reason::MatchedName(name)) if decision.is_allowed() => format!(
            "allowed by push-list entry `{entry}`: reverse DNS names {} `{name}`",
            registry.host()
        ),
        (Some(entry), _) if decision.is_allowed() => {
            format!("allowed by push-list entry `{entry}`")
        }
        (_, Reason::ReverseDns(why)) => format!(
            "Access denied to unauthorized registry ({registry}) for push: not in the VCH's \
             push list (reverse DNS: {why})"
        ),
        _ => format!(
            "Access denied to unauthorized registry ({registry}) for push: not in the VCH's push list"
        ),
    };
    let transport = match (decision.transport(), insecure) {
        (Some(_), true) => Some(Transport::Insecure),
        (t, _) => t,
    };
    Row {
        image,
        action: "push",
        reference: Some(reference.to_string()),
        registry: Some(registry.to_string()),
        allowed: decision.is_allowed(),
        transport: transport.map(|t| t.as_str()),
        list: "push",
        entry: decision.entry().map(|e| e.to_string()),
        reason,
    }
}

/// A push refused because the push list is empty.
fn nowhere_row<'a>(image: &'a str, reference: &ImageRef) -> Row<'a> {
    let registry = reference.registry();
    Row {
        image,
        action: "push",
        reference: Some(reference.to_string()),
        registry: Some(registry.to_string()),
        allowed: false,
        transport: None,
        list: "push",
        entry: None,
        reason: format!(
            "Access denied: pushes are disabled on this VCH (the push list is empty; {registry} \
             is refused like every registry)"
        ),
    }
}

/// The `[registry]` section from `--config` with the flags applied. Relative CA paths in the file
/// are resolved against the file's directory, those on the command line against the working
/// directory.
fn effective_config(args: &CheckArgs) -> anyhow::Result<RegistryConfig> {
    let mut config = read_config(args.config.as_deref())?;
    let base = args
        .config
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .to_owned();
    config.ca = config
        .ca
        .iter()
        .map(|p| base.join(p))
        .chain(args.registry_ca.iter().cloned())
        .collect();
    if config.narrowed.is_some() {
        // The lists `update` narrowed are the ones in force (once they are checked against
        // the deploy-time ones); the flags add to them.
        config.compile_rules(Path::new(".")).with_context(|| {
            format!(
                "[registry] in {}",
                args.config.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
        config.whitelist = crate::config::whitelist_in_force(&config).to_vec();
        config.push = crate::config::push_in_force(&config).map(<[String]>::to_vec);
        config.narrowed = None;
    }
    config.whitelist.extend(args.whitelist.iter().cloned());
    config.insecure.extend(args.insecure.iter().cloned());
    if args.no_push {
        config.push = Some(Vec::new());
    } else if !args.push_registry.is_empty() {
        config
            .push
            .get_or_insert_with(Vec::new)
            .extend(args.push_registry.iter().cloned());
    }
    if let Some(mode) = &args.reverse_dns {
        config.dns.reverse = mode.parse::<ReverseDnsMode>()?;
    }
    if !args.dns_server.is_empty() {
        config.dns.servers = args.dns_server.clone();
    }
    Ok(config)
}

/// Reads the `[registry]` section of a VCH config file; no file means an empty section.
pub(crate) fn read_config(path: Option<&Path>) -> anyhow::Result<RegistryConfig> {
    let Some(path) = path else {
        return Ok(RegistryConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    match table.remove("registry") {
        None => Ok(RegistryConfig::default()),
        Some(section) => section
            .try_into()
            .with_context(|| format!("invalid [registry] section in {}", path.display())),
    }
}

/// The `[projects.NAME]` list of the `--config` file, compiled as `serve` does; a name the file
/// does not have is a usage error.
fn read_project(args: &CheckArgs, name: &str, whitelist: &Policy) -> anyhow::Result<Policy> {
    let path = args.config.as_deref().context("--project needs --config")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    let config: std::collections::BTreeMap<String, crate::config::ProjectConfig> =
        match table.remove("projects") {
            None => Default::default(),
            Some(section) => section
                .try_into()
                .with_context(|| format!("invalid [projects] in {}", path.display()))?,
        };
    let Some(project) = config.get_key_value(name) else {
        anyhow::bail!("{} has no [projects.{name}]", path.display());
    };
    let config = std::collections::BTreeMap::from([(project.0.clone(), project.1.clone())]);
    let (projects, warnings) = crate::project::compile(&config, whitelist)?;
    for line in warnings
        .iter()
        .filter(|l| l.contains(&format!("project {name}:")))
    {
        eprintln!("{line}");
    }
    projects
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.list)
        .context("invariant: a project in the file compiles")
}
