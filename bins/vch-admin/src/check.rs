//! `vch-admin check`: decide images under a registry policy, as a VCH would.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use vch_policy::{Decision, HickoryResolver, ImageRef, RegistryConfig, ReverseDns, ReverseDnsMode};

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
    reference: Option<String>,
    registry: Option<String>,
    allowed: bool,
    transport: Option<&'static str>,
    entry: Option<String>,
    reason: String,
}

/// Runs `vch-admin check`: exit 0 if all allowed, 1 if any denied, 2 for a bad image reference.
pub(crate) fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = effective_config(&args)?;
    let policy = config.compile(Path::new("."))?;
    for warning in policy.warnings() {
        eprintln!("vch-admin: warning: {warning}");
    }
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
                    reference: None,
                    registry: None,
                    allowed: false,
                    transport: None,
                    entry: None,
                    reason: err.to_string(),
                },
                Ok(reference) => {
                    let direct = policy.decide(reference);
                    let decision = if policy.wants_reverse_dns(&direct).is_some() {
                        if dns.is_none() {
                            dns = Some(ReverseDns::new(HickoryResolver::new(
                                &config.servers,
                                config.timeout(),
                            )?));
                        }
                        match &dns {
                            Some(dns) => policy.decide_resolving(reference, dns).await,
                            None => direct,
                        }
                    } else {
                        direct
                    };
                    row(image, reference, &decision)
                }
            };
            rows.push(row);
        }
        Ok::<_, vch_policy::Error>(rows)
    })?;

    let mut code = 0u8;
    for (row, (_, parsed)) in rows.iter().zip(&images) {
        if args.json {
            println!("{}", serde_json::to_string(row)?);
        } else if row.allowed {
            println!(
                "{}: allowed ({}): {}",
                row.image,
                row.transport.unwrap_or("secure"),
                row.reason
            );
        } else {
            println!("{}: denied: {}", row.image, row.reason);
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

fn row<'a>(image: &'a str, reference: &ImageRef, decision: &Decision<'_>) -> Row<'a> {
    Row {
        image,
        reference: Some(reference.to_string()),
        registry: Some(decision.registry().to_string()),
        allowed: decision.is_allowed(),
        transport: decision.transport().map(|t| t.as_str()),
        entry: decision.entry().map(|e| e.to_string()),
        reason: decision.to_string(),
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
    config.whitelist.extend(args.whitelist.iter().cloned());
    config.insecure.extend(args.insecure.iter().cloned());
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
