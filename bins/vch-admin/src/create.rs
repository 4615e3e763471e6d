//! `vch-admin create`: a VCH directory with certificates, an env file and `vch.toml`.
//!
//! `--api-version 1.25` is VIC's strict mode: the VCH serves no Docker API newer than 1.25
//! (`[api] version` in `vch.toml`) and the env file sets `DOCKER_API_VERSION=1.25`, so that a
//! docker CLI that will not negotiate that low (29 and later) speaks it anyway. Without it the
//! VCH serves 1.24 up to its engine's version and clients negotiate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use vch_pki::{
    Bundle, CaOptions, CertificateAuthority, DockerEnv, KeyType, Layout, LeafOptions, Overwrite,
    PlannedFile, TlsMode, certificates_from_pem, check_server_certificate, shell_quote,
    write_files,
};
use vch_policy::{EnforcementMode, PushRule, RegistryConfig};
use vch_proxy::ApiVersion;

use crate::config::{
    ApiConfig, BuildConfig, CONFIG_FILE, DEFAULT_DOCKER_HOST, TlsConfig, VchConfig, describe_mode,
    describe_push, describe_whitelist, parse_api_version,
};

/// Arguments of `vch-admin create`.
///
/// Default: mutual TLS with a new CA (10 years) and new server and client certificates
/// (825 days, `--days`). Without `--tls-cname` the server certificate names `localhost`,
/// `127.0.0.1` and `::1`; a specific `--listen` address is always added.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Name of the VCH (letters, digits, '.', '-', '_').
    #[arg(long)]
    pub name: String,
    /// Directory to write (default ./NAME).
    #[arg(long, value_name = "DIR")]
    pub cert_path: Option<PathBuf>,
    /// Host name or IP address clients dial; each becomes a subjectAltName. Repeatable.
    #[arg(long = "tls-cname", value_name = "HOST")]
    pub tls_cnames: Vec<String>,
    /// Server TLS only: do not require client certificates.
    #[arg(long, conflicts_with = "no_tls")]
    pub no_tlsverify: bool,
    /// No TLS at all (plain TCP on port 2375).
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_server_cert", "tls_server_key"])]
    pub no_tls: bool,
    /// An existing CA certificate (PEM) instead of a new CA.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The key of `--tls-ca` (PKCS#1, PKCS#8 or SEC1), to issue the server and client
    /// certificates from it. Without it, `--tls-ca` only verifies clients and a server
    /// certificate must be given.
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    pub tls_ca_key: Option<PathBuf>,
    /// Your own server certificate (PEM, chain allowed); needs `--tls-server-key`.
    #[arg(long, value_name = "FILE", requires = "tls_server_key")]
    pub tls_server_cert: Option<PathBuf>,
    /// The key of `--tls-server-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_server_cert")]
    pub tls_server_key: Option<PathBuf>,
    /// Key type of new keys: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, value_name = "T", default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Validity of the server and client certificates in days.
    #[arg(long, value_name = "N", default_value_t = vch_pki::DEFAULT_LEAF_DAYS)]
    pub days: u32,
    /// Whitelist entry for registries (host, host:port, CIDR, *.domain). Repeatable.
    #[arg(long = "whitelist-registry", visible_alias = "wr", value_name = "E")]
    pub whitelist_registry: Vec<String>,
    /// Insecure registry entry (plain HTTP or unverified TLS allowed). Repeatable.
    #[arg(long = "insecure-registry", visible_alias = "dir", value_name = "E")]
    pub insecure_registry: Vec<String>,
    /// Where `docker push` may go (same entry forms as the whitelist). Repeatable. Without it
    /// the whitelist decides pushes as it decides pulls.
    #[arg(long = "push-registry", value_name = "E")]
    pub push_registry: Vec<String>,
    /// Refuse every push (writes `push = []`).
    #[arg(long, conflicts_with = "push_registry")]
    pub no_push: bool,
    /// `enforce` refuses what the policy denies; `audit` only logs it (for rolling a whitelist
    /// out without breaking builds).
    #[arg(long, value_name = "MODE", default_value = "enforce", value_parser = parse_mode)]
    pub policy_mode: EnforcementMode,
    /// CA file (PEM) trusted for registries. Repeatable.
    #[arg(long = "registry-ca", visible_alias = "rc", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Do not ping the whitelisted and insecure registries (by default each plain-host entry is
    /// probed and a warning printed when it does not answer as a registry, as vic-machine did).
    #[arg(long)]
    pub no_registry_probe: bool,
    /// The Docker daemon the VCH forwards to.
    #[arg(long, value_name = "URL", default_value = DEFAULT_DOCKER_HOST)]
    pub docker_host: String,
    /// Address to listen on (default 0.0.0.0:2376, or :2375 with --no-tls).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Serve no Docker API newer than this (1.24 up to the audited 1.55; 1.25 is VIC's strict
    /// mode) and set DOCKER_API_VERSION to it in the env file. Default: what the engine serves,
    /// negotiated by each client.
    #[arg(long, value_name = "1.N", value_parser = parse_api_version)]
    pub api_version: Option<ApiVersion>,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

/// Runs `vch-admin create`.
pub(crate) fn run(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Never
    };
    let written = write_files(&plan.dir, &plan.files, overwrite)?;
    print_summary(&plan, &written);
    Ok(ExitCode::SUCCESS)
}

/// Everything `create` will write, decided and validated before anything is written.
#[derive(Debug)]
struct Plan {
    dir: PathBuf,
    name: String,
    mode: TlsMode,
    registry: RegistryConfig,
    api_version: Option<ApiVersion>,
    env: DockerEnv,
    files: Vec<PlannedFile>,
    has_ca: bool,
    has_client: bool,
    notes: Vec<String>,
}

fn plan(args: &CreateArgs) -> anyhow::Result<Plan> {
    crate::config::validate_name("VCH name", &args.name)?;
    validate_docker_host(&args.docker_host)?;
    let mode = if args.no_tls {
        TlsMode::None
    } else if args.no_tlsverify {
        TlsMode::Tls
    } else {
        TlsMode::TlsVerify
    };
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), mode.default_port()));
    let dir = args
        .cert_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let dir =
        std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;

    // The policy first: a bad entry fails before any key is generated or file written.
    let registry = RegistryConfig {
        whitelist: args.whitelist_registry.clone(),
        insecure: args.insecure_registry.clone(),
        ca: args
            .registry_ca
            .iter()
            .map(|p| {
                std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?,
        push: push_list(&args.push_registry, args.no_push),
        mode: args.policy_mode,
        ..RegistryConfig::default()
    };
    let rules = registry
        .compile_rules(&dir)
        .context("invalid registry policy; nothing was written")?;
    for warning in rules.pull.warnings() {
        eprintln!("vch-admin: warning: {warning}");
    }
    if let PushRule::List(push) = &rules.push {
        for warning in push.warnings() {
            eprintln!("vch-admin: warning: push list: {warning}");
        }
    }
    if !args.no_registry_probe {
        // Push-list registries are probed as secure ones, as the whitelist's are.
        let mut secure = args.whitelist_registry.clone();
        for entry in &args.push_registry {
            if !secure.contains(entry) {
                secure.push(entry.clone());
            }
        }
        let warnings = crate::probe::probe_registries_blocking(
            &secure,
            &args.insecure_registry,
            &args.registry_ca,
        );
        for warning in warnings {
            eprintln!("vch-admin: warning: {warning}");
        }
    }

    let mut hosts: Vec<String> = if args.tls_cnames.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        args.tls_cnames.clone()
    };
    if !listen.ip().is_unspecified() && !hosts.contains(&listen.ip().to_string()) {
        hosts.push(listen.ip().to_string());
    }
    // The address clients dial: the first name given, else the listen address, else loopback.
    let dial = args
        .tls_cnames
        .iter()
        .find(|h| !h.starts_with('*'))
        .cloned()
        .or_else(|| (!listen.ip().is_unspecified()).then(|| listen.ip().to_string()))
        .unwrap_or_else(|| "127.0.0.1".to_owned());

    let mut env = DockerEnv::new(&dial, listen.port(), mode, &dir)?;
    if let Some(version) = args.api_version {
        env = env.with_api_version(version.to_string());
    }
    let env_text = env.env_file()?;

    let mut notes = Vec::new();
    let mut clients = Vec::new();
    let (mut files, tls, has_ca, has_client) = if mode == TlsMode::None {
        let tls = TlsConfig {
            mode,
            ca: None,
            cert: None,
            key: None,
        };
        (Vec::new(), tls, false, false)
    } else {
        let bundle = certificates(args, mode, &hosts, &mut notes)?;
        let has_client = bundle.client.is_some();
        // The client certificate made here is listed like those of `client add`, so that
        // `client revoke` can take it back too.
        if let Some((cert, _)) = &bundle.client {
            clients.push(listed_client(cert)?);
        }
        let tls = TlsConfig {
            mode,
            ca: bundle.ca_cert.as_ref().map(|_| "ca.pem".into()),
            cert: Some("server-cert.pem".into()),
            key: Some("server-key.pem".into()),
        };
        let has_ca = bundle.ca_cert.is_some();
        (bundle.files(&Layout::Vch)?, tls, has_ca, has_client)
    };

    let config = VchConfig {
        name: args.name.clone(),
        listen: Some(listen),
        docker_host: args.docker_host.clone(),
        tls,
        registry: registry.clone(),
        api: ApiConfig {
            version: args.api_version,
        },
        build: BuildConfig::default(),
        docker_tls: None,
        serve: crate::config::ServeConfig::default(),
        clients,
        projects: std::collections::BTreeMap::new(),
    };
    files.push(PlannedFile::public(format!("{}.env", args.name), env_text));
    files.push(PlannedFile::public(CONFIG_FILE, config.to_toml()?));
    Ok(Plan {
        dir,
        name: args.name.clone(),
        mode,
        registry,
        api_version: args.api_version,
        env,
        files,
        has_ca,
        has_client,
        notes,
    })
}

/// The `[registry] push` value: `None` without flags (the whitelist decides), empty with
/// `--no-push`.
pub(crate) fn push_list(entries: &[String], no_push: bool) -> Option<Vec<String>> {
    if no_push {
        Some(Vec::new())
    } else if entries.is_empty() {
        None
    } else {
        Some(entries.to_vec())
    }
}

/// Parses `--policy-mode`.
pub(crate) fn parse_mode(text: &str) -> Result<EnforcementMode, String> {
    text.parse()
}

fn validate_docker_host(url: &str) -> anyhow::Result<()> {
    let ok = match (url.strip_prefix("unix://"), url.strip_prefix("tcp://")) {
        (Some(path), _) => path.starts_with('/'),
        (_, Some(addr)) => addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0)),
        _ => false,
    };
    if !ok {
        bail!("invalid --docker-host {url:?}: use unix:///absolute/path.sock or tcp://HOST:PORT");
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The CA, server and client certificates for a TLS mode.
fn certificates(
    args: &CreateArgs,
    mode: TlsMode,
    hosts: &[String],
    notes: &mut Vec<String>,
) -> anyhow::Result<Bundle> {
    // The CA: loaded (with or without its key) or new.
    let (ca_cert, ca_key_out, issuer) = match (&args.tls_ca, &args.tls_ca_key) {
        (Some(ca_path), Some(key_path)) => {
            let ca = CertificateAuthority::from_pem_named(
                &read(ca_path)?,
                &ca_path.display().to_string(),
                &read(key_path)?,
                &key_path.display().to_string(),
            )?;
            // The CA key stays where it is; the VCH directory gets only the certificate.
            (Some(read(ca_path)?), None, Some(ca))
        }
        (Some(ca_path), None) => {
            let text = read(ca_path)?;
            certificates_from_pem(text.as_bytes(), &ca_path.display().to_string())?;
            (Some(text), None, None)
        }
        (None, _) if args.tls_server_cert.is_some() => {
            if mode == TlsMode::TlsVerify {
                bail!(
                    "mutual TLS with your own server certificate needs --tls-ca: the CA that \
                     issued it, which clients use to verify the server (add --tls-ca-key to \
                     issue client certificates too), or use --no-tlsverify"
                );
            }
            // Server-only TLS with a certificate from elsewhere: no CA of ours is involved.
            (None, None, None)
        }
        (None, _) => {
            let mut opts = CaOptions::new(format!("{} CA", args.name));
            opts.organization = Some("vch".into());
            opts.key_type = args.key_type;
            let ca = CertificateAuthority::generate(&opts)?;
            (
                Some(ca.cert_pem()),
                Some(ca.key().to_pem().to_owned()),
                Some(ca),
            )
        }
    };

    let server = match (&args.tls_server_cert, &args.tls_server_key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read(cert_path)?;
            let key = read(key_path)?;
            let roots = match (&args.tls_ca, &ca_cert) {
                (Some(p), Some(text)) => {
                    certificates_from_pem(text.as_bytes(), &p.display().to_string())?
                }
                _ => Vec::new(),
            };
            check_server_certificate(
                cert.as_bytes(),
                &key,
                &key_path.display().to_string(),
                &roots,
                &args.tls_cnames,
            )
            .with_context(|| format!("refusing server certificate {}", cert_path.display()))?;
            (cert, key)
        }
        _ => {
            let Some(ca) = &issuer else {
                bail!(
                    "--tls-ca without --tls-ca-key cannot issue a server certificate: give \
                     --tls-ca-key, or your own --tls-server-cert and --tls-server-key"
                );
            };
            let mut opts = LeafOptions::server(hosts.iter().cloned());
            opts.key_type = args.key_type;
            opts.days = args.days;
            let leaf = ca.issue(&opts)?;
            (leaf.cert_pem(), leaf.key().to_pem().to_owned())
        }
    };

    let client = match (mode, &issuer) {
        (TlsMode::TlsVerify, Some(ca)) => {
            let mut opts = LeafOptions::client(format!("{}-client", args.name));
            opts.key_type = args.key_type;
            opts.days = args.days;
            let leaf = ca.issue(&opts)?;
            Some((leaf.cert_pem(), leaf.key().to_pem().to_owned()))
        }
        (TlsMode::TlsVerify, None) => {
            notes.push(
                "no client certificate was issued (no CA key): issue cert.pem/key.pem for your \
                 clients from your CA"
                    .to_owned(),
            );
            None
        }
        _ => None,
    };

    Ok(Bundle {
        ca_cert,
        ca_key: ca_key_out,
        server: Some(server),
        client,
    })
}

fn print_summary(plan: &Plan, written: &[PathBuf]) {
    println!(
        "Created VCH {} ({} mode) in {}:",
        plan.name,
        plan.mode,
        plan.dir.display()
    );
    for path in written {
        println!("  {}", path.display());
    }
    for note in &plan.notes {
        println!("Note: {note}");
    }
    println!();
    println!("Registry policy:");
    println!(
        "  whitelist:   {}",
        describe_whitelist(&plan.registry.whitelist)
    );
    if !plan.registry.insecure.is_empty() {
        println!("  insecure:    {}", plan.registry.insecure.join(", "));
    }
    println!(
        "  push:        {}",
        describe_push(plan.registry.push.as_deref())
    );
    println!("  policy mode: {}", describe_mode(plan.registry.mode));
    println!();
    match plan.api_version {
        Some(version) => println!(
            "Docker API: {} to {version} (pinned; the env file sets DOCKER_API_VERSION={version})",
            vch_proxy::MIN_API_VERSION
        ),
        None => println!(
            "Docker API: {} up to the engine's newest (at most {}), negotiated by each client",
            vch_proxy::MIN_API_VERSION,
            vch_proxy::AUDITED_API_VERSION
        ),
    }
    let dir = &plan.dir;
    let host = plan.env.docker_host();
    // A pinned VCH serves nothing newer, and a recent CLI does not negotiate that low.
    let docker = match plan.api_version {
        Some(version) => format!("DOCKER_API_VERSION={version} docker"),
        None => "docker".to_owned(),
    };
    println!();
    println!("Connect with:");
    match plan.mode {
        TlsMode::TlsVerify if plan.has_client => println!(
            "  {docker} -H {host} --tlsverify --tlscacert {} --tlscert {} --tlskey {} info",
            shell_quote(&dir.join("ca.pem").display().to_string()),
            shell_quote(&dir.join("cert.pem").display().to_string()),
            shell_quote(&dir.join("key.pem").display().to_string()),
        ),
        TlsMode::TlsVerify | TlsMode::Tls if plan.has_ca => println!(
            "  {docker} -H {host} --tlsverify --tlscacert {} info",
            shell_quote(&dir.join("ca.pem").display().to_string()),
        ),
        TlsMode::TlsVerify | TlsMode::Tls => println!("  {docker} -H {host} --tls info"),
        _ => println!("  {docker} -H {host} info"),
    }
    let env_file = dir.join(format!("{}.env", plan.name));
    println!("or load the environment:");
    println!(
        "  set -a; . {}; set +a",
        shell_quote(&env_file.display().to_string())
    );
    print!(
        "{}",
        plan.env
            .shell_exports()
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
}

/// The `[[client]]` entry of a client certificate: its common name, fingerprint, serial, expiry.
fn listed_client(cert_pem: &str) -> anyhow::Result<crate::config::ClientEntry> {
    let info = vch_pki::inspect_pem(
        cert_pem.as_bytes(),
        "cert.pem",
        &vch_pki::InspectOptions::default(),
    )?
    .certificates
    .into_iter()
    .next()
    .context("internal error: the client certificate cannot be read back")?;
    let name = info
        .subject
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("CN="))
        .unwrap_or("client")
        .to_owned();
    Ok(crate::config::ClientEntry {
        name,
        project: None,
        sha256: info.sha256.replace(':', "").to_ascii_lowercase(),
        serial: info.serial,
        expires: info.not_after,
        revoked: None,
    })
}
