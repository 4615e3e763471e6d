//! `vch-admin inspect`: a VCH's configuration and certificates, with lints and a live check.
//!
//! `--connect ADDR` completes a TLS handshake with the VCH's client certificate, reads the status
//! of `GET /_ping`, then asks `GET /version` over a second session for the Docker API versions
//! the endpoint serves (`MinAPIVersion` to `ApiVersion`: through a VCH, the range it serves
//! clients, a client negotiating the newest one its own version allows). A handshake failure is
//! an error (exit 1); an endpoint that does not answer `/version` is reported, not an error (the
//! TLS check passed; the engine behind the VCH may be down).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use vch_pki::{
    CertificateDer, Handshake, InspectOptions, Inspection, certificates_from_pem, check_connection,
    client_config, inspect_pem,
};

use vch_policy::{EnforcementMode, RegistryConfig};
use vch_proxy::{EngineApi, Upstream, probe_engine};

use crate::config::{
    ResolvedPaths, VchConfig, describe_mode, describe_push, describe_whitelist, push_in_force,
    whitelist_in_force,
};
use crate::registry::{REGISTRY_CA, REGISTRY_CERT, REGISTRY_KEY};

/// How long the live check may take per step.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `vch-admin inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A VCH directory (made by `create`), or a PEM certificate or chain file.
    pub path: PathBuf,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Perform a live TLS handshake (with the client certificate) against HOST:PORT, and ask it
    /// which Docker API versions it serves.
    #[arg(long, value_name = "ADDR")]
    pub connect: Option<String>,
    /// The host clients dial (default: from NAME.env, else the listen address).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// For a certificate file: the CA file to verify it against.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For a certificate file: its private key, to check they match.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// One inspected certificate file.
#[derive(Debug, Serialize)]
struct FileReport {
    role: &'static str,
    file: PathBuf,
    #[serde(flatten)]
    inspection: Inspection,
}

/// The outcome of `--connect`.
#[derive(Debug, Serialize)]
struct ConnectReport {
    addr: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    handshake: Option<Handshake>,
    /// The Docker API versions `GET /version` answered (after a successful handshake).
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<ApiReport>,
    /// Why `GET /version` gave no versions; not an error of the inspection.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The Docker API versions an endpoint serves, from its `GET /version`.
#[derive(Debug, Serialize)]
struct ApiReport {
    /// `MinAPIVersion`: the oldest it accepts (1.24 through a VCH, unless its engine's is higher).
    min: String,
    /// `ApiVersion`: the newest, and the one its `/_ping` `Api-Version` header offers clients.
    max: String,
}

impl From<EngineApi> for ApiReport {
    fn from(api: EngineApi) -> Self {
        ApiReport {
            min: api.min.to_string(),
            max: api.max.to_string(),
        }
    }
}

/// The registry lists a VCH enforces now: the narrowed ones when `update` wrote them.
#[derive(Debug, Serialize)]
struct InForce {
    whitelist: Vec<String>,
    /// `null`: the whitelist decides pushes; `[]`: every push is refused.
    push: Option<Vec<String>>,
    mode: EnforcementMode,
    narrowed: bool,
    /// Why `serve` would refuse the `[registry]` section (a bad entry or CA file, a narrowed
    /// list widened by hand); an error of the inspection.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl InForce {
    fn of(registry: &RegistryConfig, dir: &Path) -> Self {
        let compiled = registry.compile_rules(dir);
        InForce {
            whitelist: whitelist_in_force(registry).to_vec(),
            push: push_in_force(registry).map(<[String]>::to_vec),
            mode: registry.mode,
            narrowed: compiled.as_ref().is_ok_and(|r| r.narrowed),
            error: compiled.err().map(|e| e.to_string()),
        }
    }
}

/// Everything `inspect` prints.
#[derive(Debug, Serialize)]
struct Report {
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<VchConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_in_force: Option<InForce>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    files: Vec<FileReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<ConnectReport>,
    errors: bool,
}

/// Runs `vch-admin inspect`.
pub(crate) fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let report = if args.path.is_dir() && is_registry_dir(&args.path) {
        inspect_registry_dir(&args)?
    } else if args.path.is_dir() {
        inspect_dir(&args)?
    } else {
        inspect_file(&args)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.errors {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn inspect_dir(args: &InspectArgs) -> anyhow::Result<Report> {
    let (config, paths) = VchConfig::load(&args.path)?;
    let host = args.host.clone().or_else(|| dial_host(&config, &paths));
    let roots: Vec<CertificateDer<'static>> = match &paths.ca {
        Some(ca) => certificates_from_pem(&read(ca)?, &ca.display().to_string())?,
        None => Vec::new(),
    };
    let mut files = Vec::new();
    if let Some(ca) = &paths.ca {
        files.push(inspect_one("ca", ca, None, &roots, None)?);
    }
    if let (Some(cert), Some(key)) = (&paths.cert, &paths.key) {
        files.push(inspect_one(
            "server",
            cert,
            Some(key),
            &roots,
            host.as_deref(),
        )?);
    }
    let client = client_pair(&paths);
    if let Some((cert, key)) = &client {
        files.push(inspect_one("client", cert, Some(key), &roots, None)?);
    }
    let connect = args.connect.as_ref().map(|addr| {
        let identity = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        live_check(addr, args.host.as_deref(), paths.ca.as_deref(), identity)
    });
    let in_force = InForce::of(&config.registry, &paths.dir);
    let mut report = finish(args.path.clone(), Some(config), host, files, connect);
    report.errors |= in_force.error.is_some();
    report.registry_in_force = Some(in_force);
    Ok(report)
}

/// A directory written by `vch-admin registry cert`: no `vch.toml`, a `registry.pem`.
fn is_registry_dir(dir: &Path) -> bool {
    !dir.join(crate::config::CONFIG_FILE).exists() && dir.join(REGISTRY_CERT).is_file()
}

/// Lints a `registry cert` directory as a VCH's: the CA, the served chain with its key for
/// every name in `certs.d/` (or `--host`), and each client pair there.
fn inspect_registry_dir(args: &InspectArgs) -> anyhow::Result<Report> {
    let dir = &args.path;
    let ca = dir.join(REGISTRY_CA);
    let roots: Vec<CertificateDer<'static>> = if ca.is_file() {
        certificates_from_pem(&read(&ca)?, &ca.display().to_string())?
    } else {
        Vec::new()
    };
    let mut files = Vec::new();
    if ca.is_file() {
        files.push(inspect_one("ca", &ca, None, &roots, None)?);
    }
    // The names clients dial: the certs.d directories, each without its port.
    let mut certs_d: Vec<PathBuf> = match std::fs::read_dir(dir.join("certs.d")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    certs_d.sort();
    let mut hosts: Vec<String> = certs_d
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .map(host_of_certs_d_name)
        .collect();
    if let Some(host) = &args.host {
        hosts = vec![host.clone()];
    }
    hosts.dedup();
    let cert = dir.join(REGISTRY_CERT);
    let key = dir.join(REGISTRY_KEY);
    let key = key.is_file().then_some(key);
    let mut server = inspect_one(
        "registry",
        &cert,
        key.as_deref(),
        &roots,
        hosts.first().map(String::as_str),
    )?;
    for host in hosts.iter().skip(1) {
        let more = inspect_one("registry", &cert, key.as_deref(), &roots, Some(host))?;
        for lint in more.inspection.lints {
            let known = server
                .inspection
                .lints
                .iter()
                .any(|l| l.code == lint.code && l.message == lint.message);
            if !known {
                server.inspection.lints.push(lint);
            }
        }
    }
    files.push(server);
    for sub in &certs_d {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(sub)
            .with_context(|| format!("cannot read {}", sub.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let sub_ca = sub.join("ca.crt");
        let sub_roots = if sub_ca.is_file() {
            certificates_from_pem(&read(&sub_ca)?, &sub_ca.display().to_string())?
        } else {
            roots.clone()
        };
        for path in entries {
            if path.extension().is_some_and(|e| e == "cert") {
                let key = path.with_extension("key");
                let key = key.is_file().then_some(key);
                files.push(inspect_one(
                    "client",
                    &path,
                    key.as_deref(),
                    &sub_roots,
                    None,
                )?);
            }
        }
    }
    Ok(finish(
        args.path.clone(),
        None,
        hosts.first().cloned(),
        files,
        None,
    ))
}

/// `host` from a certs.d directory name: `host`, `host:port` or `[v6]:port`.
fn host_of_certs_d_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h).to_owned();
    }
    if name.parse::<std::net::Ipv6Addr>().is_ok() {
        return name.to_owned();
    }
    name.rsplit_once(':').map_or(name, |(h, _)| h).to_owned()
}

fn inspect_file(args: &InspectArgs) -> anyhow::Result<Report> {
    let roots = match &args.ca {
        Some(ca) => certificates_from_pem(&read(ca)?, &ca.display().to_string())?,
        None => Vec::new(),
    };
    let file = inspect_one(
        "certificate",
        &args.path,
        args.key.as_deref(),
        &roots,
        args.host.as_deref(),
    )?;
    let connect = args
        .connect
        .as_ref()
        .map(|addr| live_check(addr, args.host.as_deref(), args.ca.as_deref(), None));
    Ok(finish(
        args.path.clone(),
        None,
        args.host.clone(),
        vec![file],
        connect,
    ))
}

fn finish(
    path: PathBuf,
    config: Option<VchConfig>,
    host: Option<String>,
    files: Vec<FileReport>,
    connect: Option<ConnectReport>,
) -> Report {
    let errors =
        files.iter().any(|f| f.inspection.has_errors()) || connect.as_ref().is_some_and(|c| !c.ok);
    Report {
        path,
        config,
        registry_in_force: None,
        host,
        files,
        connect,
        errors,
    }
}

fn inspect_one(
    role: &'static str,
    file: &Path,
    key: Option<&Path>,
    roots: &[CertificateDer<'_>],
    host: Option<&str>,
) -> anyhow::Result<FileReport> {
    let pem = read(file)?;
    let key_pem = key.map(read).transpose()?;
    let opts = InspectOptions {
        host,
        roots,
        key_pem: key_pem.as_deref(),
        ..InspectOptions::default()
    };
    let inspection = inspect_pem(&pem, &file.display().to_string(), &opts)?;
    Ok(FileReport {
        role,
        file: file.to_owned(),
        inspection,
    })
}

/// The client trio's certificate and key, when the directory has them.
fn client_pair(paths: &ResolvedPaths) -> Option<(PathBuf, PathBuf)> {
    let cert = paths.dir.join("cert.pem");
    let key = paths.dir.join("key.pem");
    (cert.is_file() && key.is_file()).then_some((cert, key))
}

/// The host clients dial: `DOCKER_HOST` in `NAME.env`, else a specific listen address.
fn dial_host(config: &VchConfig, paths: &ResolvedPaths) -> Option<String> {
    let env = std::fs::read_to_string(paths.dir.join(format!("{}.env", config.name))).ok();
    let from_env = env.as_deref().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("DOCKER_HOST="))
            .and_then(|v| v.trim().strip_prefix("tcp://"))
            .and_then(|hp| hp.rsplit_once(':').map(|(h, _)| h))
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
    });
    from_env.or_else(|| {
        let ip = config.listen_addr().ip();
        (!ip.is_unspecified()).then(|| ip.to_string())
    })
}

fn live_check(
    addr: &str,
    host: Option<&str>,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> ConnectReport {
    let result = (|| -> anyhow::Result<_> {
        let ca = ca.context("a live check needs a CA file to verify the server (--ca)")?;
        let config = Arc::new(client_config(ca, identity)?);
        let server_name = match host {
            Some(h) => h.to_owned(),
            None => addr
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(addr)
                .to_owned(),
        };
        let handshake = check_connection(addr, &server_name, Arc::clone(&config), CONNECT_TIMEOUT)?;
        // The same client identity for the API request.
        let upstream =
            Upstream::parse(&format!("tcp://{addr}"), Some(config)).map_err(|e| e.to_string());
        Ok((handshake, upstream))
    })();
    match result {
        Ok((handshake, upstream)) => {
            let (api, api_error) = match upstream.and_then(|u| api_versions(&u)) {
                Ok(api) => (Some(api.into()), None),
                Err(e) => (None, Some(e)),
            };
            ConnectReport {
                addr: addr.to_owned(),
                ok: true,
                handshake: Some(handshake),
                api,
                api_error,
                error: None,
            }
        }
        Err(e) => ConnectReport {
            addr: addr.to_owned(),
            ok: false,
            handshake: None,
            api: None,
            api_error: None,
            error: Some(format!("{e:#}")),
        },
    }
}

/// `MinAPIVersion` and `ApiVersion` from `GET /version` at `upstream` (the `--connect` address).
///
/// The server is verified as the address's host: `--host`, which the handshake verifies the
/// server as, cannot be given to this request, so a certificate that names only `--host` fails
/// here (reported, not an error).
fn api_versions(upstream: &Upstream) -> Result<EngineApi, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    // The timer is made inside the runtime, which it needs.
    runtime.block_on(async {
        match tokio::time::timeout(CONNECT_TIMEOUT, probe_engine(upstream)).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer to /version within {CONNECT_TIMEOUT:?}")),
        }
    })
}

fn print_text(report: &Report) {
    if let Some(config) = &report.config {
        println!("VCH {} ({})", config.name, report.path.display());
        println!("  listen:      {}", config.listen_addr());
        println!("  tls mode:    {}", config.tls.mode);
        println!("  docker host: {}", config.docker_host);
        if let Some(host) = &report.host {
            println!("  clients dial: {host}");
        }
        let reg = &config.registry;
        if reg.whitelist.is_empty() {
            println!("  registries:  any (no whitelist)");
        } else {
            println!("  whitelist:   {}", reg.whitelist.join(", "));
        }
        if !reg.insecure.is_empty() {
            println!("  insecure:    {}", reg.insecure.join(", "));
        }
        println!("  push:        {}", describe_push(reg.push.as_deref()));
        println!("  policy mode: {}", describe_mode(reg.mode));
        match config.api.version {
            Some(v) => println!(
                "  API version: {} to {v} (pinned; clients set DOCKER_API_VERSION={v})",
                vch_proxy::MIN_API_VERSION
            ),
            None => println!(
                "  API version: {} up to the engine's newest (at most {})",
                vch_proxy::MIN_API_VERSION,
                vch_proxy::AUDITED_API_VERSION
            ),
        }
        for ca in &reg.ca {
            println!("  registry CA: {}", ca.display());
        }
        if let Some(narrowed) = &reg.narrowed {
            println!(
                "  narrowed by `vch-admin update` (in force; the lists above are the deploy-time ones):"
            );
            if let Some(list) = &narrowed.whitelist {
                println!("    whitelist: {}", describe_whitelist(list));
            }
            if let Some(list) = &narrowed.push {
                println!("    push:      {}", describe_push(Some(list)));
            }
        }
        if let Some(error) = report
            .registry_in_force
            .as_ref()
            .and_then(|f| f.error.as_ref())
        {
            println!("  error[registry]: {error}");
            println!(
                "    fix: correct [registry] in vch.toml, or run `vch-admin update {} --reset` \
                 when a narrowed list was widened by hand",
                report.path.display()
            );
        }
        println!();
    }
    for file in &report.files {
        println!("{} certificate: {}", file.role, file.file.display());
        for (i, c) in file.inspection.certificates.iter().enumerate() {
            let indent = if i == 0 { "  " } else { "    " };
            if i > 0 {
                println!("  chain certificate {i}:");
            }
            println!("{indent}subject:     {}", c.subject);
            println!("{indent}issuer:      {}", c.issuer);
            let mut sans: Vec<String> = c.dns_names.iter().map(|d| format!("DNS:{d}")).collect();
            sans.extend(c.ip_addresses.iter().map(|ip| format!("IP:{ip}")));
            sans.extend(c.other_names.iter().cloned());
            if !sans.is_empty() {
                println!("{indent}names:       {}", sans.join(", "));
            }
            println!(
                "{indent}valid:       {} to {} ({} days left)",
                c.not_before, c.not_after, c.days_left
            );
            println!("{indent}key:         {}", c.key);
            if c.is_ca {
                let path_len = c
                    .path_len
                    .map(|p| format!(", path length {p}"))
                    .unwrap_or_default();
                println!("{indent}CA:          yes{path_len}");
            }
            if !c.key_usage.is_empty() {
                println!("{indent}key usage:   {}", c.key_usage.join(", "));
            }
            if !c.extended_key_usage.is_empty() {
                println!("{indent}ext. usage:  {}", c.extended_key_usage.join(", "));
            }
            println!("{indent}serial:      {}", c.serial);
            println!("{indent}SHA-256:     {}", c.sha256);
            println!("{indent}SHA-1:       {}", c.sha1);
        }
        if let Some(chain) = &file.inspection.chain {
            if chain.trusted {
                println!("  chain:       trusted ({})", chain.path.join(" <- "));
            } else {
                println!(
                    "  chain:       NOT trusted: {}",
                    chain.error.as_deref().unwrap_or("unknown reason")
                );
            }
        }
        for lint in &file.inspection.lints {
            println!("  {}[{}]: {}", lint.severity, lint.code, lint.message);
            println!("    fix: {}", lint.fix);
        }
        println!();
    }
    if let Some(c) = &report.connect {
        match (&c.handshake, &c.error) {
            (Some(h), _) => {
                println!(
                    "connect {}: ok, {} {}, server {}, /_ping: {}",
                    c.addr, h.protocol, h.cipher_suite, h.server_subject, h.ping_status
                );
                match (&c.api, &c.api_error) {
                    (Some(api), _) => println!(
                        "  Docker API: {} to {} (GET /version: MinAPIVersion to ApiVersion)",
                        api.min, api.max
                    ),
                    (None, Some(e)) => println!("  Docker API: unknown: {e}"),
                    (None, None) => {}
                }
            }
            (None, Some(e)) => println!("connect {}: FAILED: {e}", c.addr),
            (None, None) => println!("connect {}: FAILED", c.addr),
        }
    }
    if report.errors {
        println!("result: errors found");
    } else {
        println!("result: ok");
    }
}
