//! `vch-admin client add|ls|revoke`: client certificates issued from a VCH's CA, each for one
//! project, and their revocation.
//!
//! | command | writes |
//! |---|---|
//! | `client add DIR NAME [--project P]` | `OUT/ca.pem`, `OUT/cert.pem`, `OUT/key.pem` (0600), `OUT/NAME.env` (default `OUT` = `DIR/clients/NAME`); a `[[client]]` entry in `vch.toml` |
//! | `client ls DIR [--json]` | nothing |
//! | `client revoke DIR NAME\|SHA256` | the entry's `revoked` time in `vch.toml`, then `DIR/crl.pem` listing every revoked entry, signed by the CA |
//!
//! The project is the certificate's subject OU (`OU=team-a, CN=alice`), so the endpoint reads it
//! from the certificate and needs no table. `serve` loads `crl.pem` when it exists, at start and
//! on SIGHUP, and refuses a revoked certificate at the TLS handshake. `add` and `revoke` need
//! the CA key (`ca-key.pem`), which `create` writes when it made the CA.
//!
//! A name may be added again once its certificate is revoked; while it is valid, `--force`
//! revokes the old certificate (and rewrites `crl.pem`) before issuing the new one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vch_pki::{
    Bundle, CertificateAuthority, InspectOptions, KeyType, Layout, LeafOptions, Overwrite,
    PlannedFile, Revocation, TlsMode, inspect_pem, write_files,
};

use crate::config::{ClientEntry, VchConfig, write_atomic};

/// The CRL file `client revoke` writes and `serve` reads, in the VCH directory.
pub(crate) const CRL_FILE: &str = "crl.pem";
/// The CA key file `create` writes when it made the CA.
const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a CRL is valid (its `nextUpdate`): openssl refuses an expired one, and every
/// `client revoke` writes a new one.
const CRL_DAYS: u32 = 3650;

/// Arguments of `vch-admin client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// The `client` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Issue a client certificate from the VCH's CA, for a project, as a DOCKER_CERT_PATH
    /// directory with an env file.
    Add(AddArgs),
    /// List the client certificates issued: name, project, fingerprint, expiry, revoked.
    Ls(LsArgs),
    /// Revoke a client certificate: write crl.pem; `serve` refuses it after a SIGHUP.
    Revoke(RevokeArgs),
}

/// Arguments of `vch-admin client add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The VCH directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The client's name (the certificate's common name): letters, digits, '.', '-', '_'.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The project the client acts for (written as the certificate's subject OU).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = vch_pki::DEFAULT_LEAF_DAYS)]
    pub days: u32,
    /// Key type: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, value_name = "T", default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Directory to write the certificate to (default DIR/clients/NAME).
    #[arg(long, value_name = "DIR2")]
    pub out: Option<PathBuf>,
    /// Replace a valid certificate of the same name (the old one is revoked) and overwrite
    /// files in the output directory.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `vch-admin client ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The VCH directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// JSON on stdout: an array of objects.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vch-admin client revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The VCH directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The client's name, or its SHA-256 fingerprint (hex, colons allowed).
    #[arg(value_name = "NAME|FINGERPRINT")]
    pub client: String,
}

/// Runs `vch-admin client …`.
pub(crate) fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ClientCommand::Add(args) => add(&args),
        ClientCommand::Ls(args) => ls(&args),
        ClientCommand::Revoke(args) => revoke(&args),
    }
}

fn add(args: &AddArgs) -> anyhow::Result<ExitCode> {
    crate::config::validate_name("client name", &args.name)?;
    if let Some(project) = &args.project {
        crate::config::validate_name("project name", project)?;
    }
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let (mut config, config_file) = VchConfig::read(&dir)?;
    if config.tls.mode != TlsMode::TlsVerify {
        bail!(
            "{}: tls.mode is \"{}\"; client certificates need a mutual TLS VCH (tlsverify)",
            config_file.display(),
            config.tls.mode
        );
    }
    let ca = load_ca(&dir, &config)?;
    if let Some(project) = &args.project
        && !config.projects.contains_key(project)
    {
        eprintln!(
            "vch-admin: warning: project {project:?} is not in {}: the VCH refuses its \
             clients every registry until `vch-admin project set {} {project} --registry …` \
             defines it",
            config_file.display(),
            dir.display()
        );
    }
    let active = config
        .clients
        .iter()
        .position(|c| c.name == args.name && c.revoked.is_none());
    if let Some(i) = active
        && !args.force
    {
        bail!(
            "client {:?} already has a valid certificate ({}); revoke it first, or pass \
             --force to revoke and replace it",
            args.name,
            config.clients.get(i).map_or("", |c| c.sha256.as_str())
        );
    }

    let out = match &args.out {
        Some(p) => {
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?
        }
        None => dir.join("clients").join(&args.name),
    };
    let mut opts = LeafOptions::client(args.name.clone());
    opts.organizational_unit.clone_from(&args.project);
    opts.days = args.days;
    opts.key_type = args.key_type;
    let leaf = ca.issue(&opts)?;
    let cert_pem = leaf.cert_pem();
    let info = inspect_pem(cert_pem.as_bytes(), "cert.pem", &InspectOptions::default())?
        .certificates
        .into_iter()
        .next()
        .context("internal error: the issued certificate cannot be read back")?;
    let ca_pem = std::fs::read_to_string(ca_path(&dir, &config))
        .with_context(|| format!("cannot read {}", ca_path(&dir, &config).display()))?;
    let bundle = Bundle {
        ca_cert: Some(ca_pem),
        client: Some((cert_pem, leaf.key().to_pem().to_owned())),
        ..Bundle::default()
    };
    let mut files = bundle.files(&Layout::Vch)?;
    files.push(PlannedFile::public(
        format!("{}.env", args.name),
        env_file(&dir, &config, &out)?,
    ));

    // Revoke the certificate being replaced before the new one exists, so a failure leaves
    // the old one revoked rather than two valid ones.
    if let Some(entry) = active.and_then(|i| config.clients.get_mut(i)) {
        let now = now_rfc3339()?;
        entry.revoked = Some(now);
        let old = entry.sha256.clone();
        write_atomic(&config_file, config.to_toml()?.as_bytes())?;
        write_crl(&dir, &ca, &config)?;
        println!("Revoked the previous certificate of {} ({old})", args.name);
    }
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Never
    };
    let written = write_files(&out, &files, overwrite)?;
    config.clients.push(ClientEntry {
        name: args.name.clone(),
        project: args.project.clone(),
        sha256: info.sha256.replace(':', "").to_ascii_lowercase(),
        serial: info.serial.clone(),
        expires: info.not_after.clone(),
        revoked: None,
    });
    write_atomic(&config_file, config.to_toml()?.as_bytes())?;

    println!(
        "Issued client certificate {} (project {}) in {}:",
        info.subject,
        args.project.as_deref().unwrap_or("none"),
        out.display()
    );
    for path in written {
        println!("  {}", path.display());
    }
    println!("Connect with:");
    println!(
        "  set -a; . {}; set +a",
        vch_pki::shell_quote(&out.join(format!("{}.env", args.name)).display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// One row of `client ls`.
#[derive(Debug, Serialize)]
struct Row<'a> {
    name: &'a str,
    project: Option<&'a str>,
    sha256: &'a str,
    serial: &'a str,
    expires: &'a str,
    revoked: bool,
    revoked_at: Option<&'a str>,
}

fn ls(args: &LsArgs) -> anyhow::Result<ExitCode> {
    let (config, _) = VchConfig::read(&args.dir)?;
    let rows: Vec<Row<'_>> = config
        .clients
        .iter()
        .map(|c| Row {
            name: &c.name,
            project: c.project.as_deref(),
            sha256: &c.sha256,
            serial: &c.serial,
            expires: &c.expires,
            revoked: c.revoked.is_some(),
            revoked_at: c.revoked.as_deref(),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No client certificates; issue one with `vch-admin client add DIR NAME`.");
        return Ok(ExitCode::SUCCESS);
    }
    let width = |f: fn(&Row<'_>) -> usize, title: &str| {
        rows.iter().map(f).chain([title.len()]).max().unwrap_or(0)
    };
    let name_w = width(|r| r.name.len(), "NAME");
    let project_w = width(|r| r.project.map_or(1, str::len), "PROJECT");
    println!(
        "{:name_w$}  {:project_w$}  {:64}  {:20}  REVOKED",
        "NAME", "PROJECT", "SHA256", "EXPIRES"
    );
    for r in &rows {
        println!(
            "{:name_w$}  {:project_w$}  {:64}  {:20}  {}",
            r.name,
            r.project.unwrap_or("-"),
            r.sha256,
            r.expires,
            r.revoked_at.unwrap_or("no")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let (mut config, config_file) = VchConfig::read(&dir)?;
    let ca = load_ca(&dir, &config)?;
    let fingerprint = args.client.replace(':', "").to_ascii_lowercase();
    let by_fp = config.clients.iter().position(|c| c.sha256 == fingerprint);
    // By name: the valid certificate, else the latest (revoking it again rewrites the CRL).
    let by_name = || {
        config
            .clients
            .iter()
            .position(|c| c.name == args.client && c.revoked.is_none())
            .or_else(|| config.clients.iter().rposition(|c| c.name == args.client))
    };
    let Some(i) = by_fp.or_else(by_name) else {
        bail!(
            "no client {:?} in {}: give a name or SHA-256 fingerprint that `vch-admin client \
             ls {}` lists",
            args.client,
            config_file.display(),
            dir.display()
        );
    };
    let entry = config
        .clients
        .get_mut(i)
        .context("internal error: the client entry vanished")?;
    let name = entry.name.clone();
    let already = entry.revoked.is_some();
    if !already {
        entry.revoked = Some(now_rfc3339()?);
        // vch.toml first: it is the record the CRL is made from, and `revoke` again rewrites
        // the CRL should writing it fail.
        write_atomic(&config_file, config.to_toml()?.as_bytes())?;
    }
    let crl = write_crl(&dir, &ca, &config)?;
    if already {
        println!(
            "Client {name} was already revoked; rewrote {}",
            crl.display()
        );
    } else {
        println!("Revoked client {name}; wrote {}", crl.display());
    }
    println!(
        "A running `vch-admin serve {}` refuses it after a SIGHUP (kill -HUP PID).",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `DIR/crl.pem` listing every revoked entry of `config`.
fn write_crl(dir: &Path, ca: &CertificateAuthority, config: &VchConfig) -> anyhow::Result<PathBuf> {
    let revoked = config
        .clients
        .iter()
        .filter_map(|c| c.revoked.as_deref().map(|at| (c, at)))
        .map(|(c, at)| {
            let at: SystemTime = OffsetDateTime::parse(at, &Rfc3339)
                .with_context(|| format!("client {}: revoked = {at:?} is not RFC 3339", c.name))?
                .into();
            Revocation::from_serial_hex(&c.serial, at)
                .with_context(|| format!("client {} in vch.toml", c.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pem = ca.revocation_list(&revoked, CRL_DAYS)?;
    let path = dir.join(CRL_FILE);
    write_atomic(&path, pem.as_bytes())?;
    Ok(path)
}

fn ca_path(dir: &Path, config: &VchConfig) -> PathBuf {
    dir.join(config.tls.ca.as_deref().unwrap_or(Path::new("ca.pem")))
}

/// The VCH's CA with its key, or an error saying why client certificates cannot be issued.
fn load_ca(dir: &Path, config: &VchConfig) -> anyhow::Result<CertificateAuthority> {
    let cert_path = ca_path(dir, config);
    let key_path = dir.join(CA_KEY_FILE);
    if !key_path.is_file() {
        bail!(
            "{} does not exist: this VCH's CA key is kept elsewhere (create --tls-ca), so \
             client certificates must be issued and revoked with that CA's own tools, or copy \
             the key there (mode 0600)",
            key_path.display()
        );
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    Ok(CertificateAuthority::from_pem_named(
        &read(&cert_path)?,
        &cert_path.display().to_string(),
        &read(&key_path)?,
        &key_path.display().to_string(),
    )?)
}

/// The client's env file: `DOCKER_HOST` and `DOCKER_API_VERSION` as in the VCH's own
/// (`DIR/NAME.env`, which an admin may have edited to the address clients dial), else from
/// `vch.toml`; `DOCKER_CERT_PATH` is `out`.
fn env_file(dir: &Path, config: &VchConfig, out: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(dir.join(format!("{}.env", config.name))).unwrap_or_default();
    let var = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let listen = config.listen_addr();
    let (host, port) = var("DOCKER_HOST")
        .and_then(|url| {
            let (host, port) = url.strip_prefix("tcp://")?.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse().ok()?))
        })
        .unwrap_or_else(|| {
            let ip = listen.ip();
            let host = if ip.is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                ip.to_string()
            };
            (host, listen.port())
        });
    let mut env = vch_pki::DockerEnv::new(&host, port, TlsMode::TlsVerify, out)?;
    if let Some(version) =
        var("DOCKER_API_VERSION").or_else(|| config.api.version.map(|v| v.to_string()))
    {
        env = env.with_api_version(version);
    }
    Ok(env.env_file()?)
}

fn now_rfc3339() -> anyhow::Result<String> {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("internal error: zero nanoseconds")?
        .format(&Rfc3339)
        .context("internal error: cannot format the time")
}

#[cfg(test)]
mod tests {
    use crate::config::validate_name;

    #[test]
    fn names_are_dns_like() {
        for ok in ["alice", "team-a", "a.b_c", "x1"] {
            assert!(validate_name("n", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é"] {
            assert!(validate_name("n", bad).is_err(), "{bad}");
        }
    }
}
