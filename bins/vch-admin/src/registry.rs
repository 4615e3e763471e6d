//! `vch-admin registry cert` and `vch-admin registry trust`: certificates for a private
//! Distribution registry served over TLS, and Docker's `certs.d` trust for it.
//!
//! `cert` writes, in `--out` (default `./HOST`):
//!
//! | file | what |
//! |---|---|
//! | `registry.pem` | the leaf, then any intermediates (what the registry serves) |
//! | `registry-key.pem` | its key, 0600 |
//! | `ca.crt` | the CA clients trust |
//! | `ca-key.pem` | the CA key, 0600, only with `--new-ca` |
//! | `registry.env` | `REGISTRY_HTTP_TLS_CERTIFICATE`, `REGISTRY_HTTP_TLS_KEY` (and, with `--client`, `REGISTRY_HTTP_TLS_CLIENTCAS_0` and the list form `REGISTRY_HTTP_TLS_CLIENTCAS`, which is what docker-registry 2.8 reads) |
//! | `certs.d/<name>/ca.crt` | one directory per name the certificate covers, as dockerd looks it up |
//! | `certs.d/<name>/<client>.cert`, `.key` | each `--client`'s certificate and key |
//!
//! `trust` copies a CA (and a client pair) into a `certs.d` root for each name, atomically and
//! idempotently; a different `ca.crt` is only replaced with `--force`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use vch_pki::{
    CaOptions, CertificateAuthority, InspectOptions, KeyType, LeafOptions, Lint, Overwrite,
    PlannedFile, certificates_from_pem, certs_d_dir_name, der_to_pem, inspect_pem, write_files,
};

/// The Docker daemon's `certs.d` root.
pub(crate) const DAEMON_CERTS_D: &str = "/etc/docker/certs.d";
/// The served certificate chain in a `registry cert` directory.
pub(crate) const REGISTRY_CERT: &str = "registry.pem";
/// Its key.
pub(crate) const REGISTRY_KEY: &str = "registry-key.pem";
/// The CA clients trust.
pub(crate) const REGISTRY_CA: &str = "ca.crt";
/// The registry's environment.
pub(crate) const REGISTRY_ENV: &str = "registry.env";

/// Arguments of `vch-admin registry`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// The `registry` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Issue a TLS certificate for a Distribution registry, its env file and a certs.d tree.
    Cert(CertArgs),
    /// Make dockerd (and regctl) trust a registry's CA through certs.d; no restart needed.
    Trust(TrustArgs),
}

/// Arguments of `vch-admin registry cert`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("ca").required(true).args(["ca_dir", "ca_cert", "new_ca"])
))]
pub struct CertArgs {
    /// The registry's host name or IP address (the certificate's first name).
    #[arg(long, value_name = "HOST")]
    pub name: String,
    /// Another DNS name the registry is reached by. Repeatable.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address the registry is reached by. Repeatable.
    #[arg(long = "ip", value_name = "IP")]
    pub ip: Vec<IpAddr>,
    /// The port clients dial (part of the certs.d directory names unless 443).
    #[arg(long, value_name = "P", default_value_t = 443)]
    pub port: u16,
    /// A directory holding `ca.pem` and `ca-key.pem`: a VCH directory, or docker-machine's
    /// `~/.docker/machine/certs`.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// A CA certificate (PEM; an intermediate may be followed by its issuers).
    #[arg(long, value_name = "F", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The key of `--ca-cert`.
    #[arg(long, value_name = "F", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Generate a new CA (written as `ca.crt` and `ca-key.pem`).
    #[arg(long)]
    pub new_ca: bool,
    /// Issue a client certificate NAME and make the registry require client certificates.
    /// Repeatable.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Key type of new keys: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, value_name = "T", default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Validity of the registry and client certificates in days.
    #[arg(long, value_name = "N", default_value_t = vch_pki::DEFAULT_LEAF_DAYS)]
    pub days: u32,
    /// Directory to write (default ./HOST).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `vch-admin registry trust`.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// The registry as clients name it: HOST, HOST:PORT, IP, IP:PORT or [IPv6]:PORT.
    #[arg(value_name = "HOST[:PORT]", required = true)]
    pub hosts: Vec<String>,
    /// The CA certificate that issued the registry's certificate.
    #[arg(long, value_name = "F")]
    pub ca: PathBuf,
    /// A client certificate to present to the registry (named `.cert` in certs.d).
    #[arg(long, value_name = "F", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The key of `--client-cert`.
    #[arg(long, value_name = "F", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// The certs.d root (default /etc/docker/certs.d; ~/.docker/certs.d for rootless Docker).
    #[arg(long, value_name = "DIR", default_value = DAEMON_CERTS_D)]
    pub certs_d: PathBuf,
    /// Replace a different ca.crt or client pair that is already there.
    #[arg(long)]
    pub force: bool,
}

/// Runs `vch-admin registry`.
pub(crate) fn run(args: RegistryArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RegistryCommand::Cert(args) => cert(&args),
        RegistryCommand::Trust(args) => trust(&args),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn overwrite(force: bool) -> Overwrite {
    if force {
        Overwrite::Replace
    } else {
        Overwrite::Never
    }
}

// ---- registry cert ----

/// Everything `cert` writes, decided and checked before anything is written.
#[derive(Debug)]
struct CertPlan {
    dir: PathBuf,
    files: Vec<PlannedFile>,
    names: Vec<String>,
    sans: Vec<String>,
    lints: Vec<Lint>,
}

fn cert(args: &CertArgs) -> anyhow::Result<ExitCode> {
    let plan = plan_cert(args)?;
    for lint in &plan.lints {
        eprintln!(
            "vch-admin: {}[{}]: {}\n    fix: {}",
            lint.severity, lint.code, lint.message, lint.fix
        );
    }
    if plan.lints.iter().any(Lint::is_error) {
        bail!("the registry certificate would be rejected by clients; nothing was written");
    }
    let written = write_files(&plan.dir, &plan.files, overwrite(args.force))?;
    println!(
        "Issued a registry certificate for {} in {}:",
        plan.sans.join(", "),
        plan.dir.display()
    );
    for path in &written {
        println!("  {}", path.display());
    }
    let env = plan.dir.join(REGISTRY_ENV);
    println!();
    println!("Serve it (REGISTRY_* variables override the registry's config file):");
    println!(
        "  set -a; . {}; set +a; docker-registry serve /etc/docker/registry/config.yml",
        vch_pki::shell_quote(&env.display().to_string())
    );
    println!("Trust it on each Docker host (no daemon restart needed):");
    let ca = plan.dir.join(REGISTRY_CA);
    println!(
        "  vch-admin registry trust {} --ca {}",
        plan.names.join(" "),
        vch_pki::shell_quote(&ca.display().to_string())
    );
    println!(
        "or copy {}/<name>/ to /etc/docker/certs.d/ (~/.docker/certs.d for rootless Docker).",
        plan.dir.join("certs.d").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The CA to issue from, the PEM clients trust, and the intermediates to append to leaves.
struct Issuer {
    ca: CertificateAuthority,
    trust_pem: String,
    intermediates_pem: String,
    new_key_pem: Option<String>,
}

fn load_issuer(args: &CertArgs) -> anyhow::Result<Issuer> {
    let (cert_path, key_path) = match (&args.ca_dir, &args.ca_cert, &args.ca_key) {
        (Some(dir), _, _) => {
            let cert = dir.join("ca.pem");
            let key = dir.join("ca-key.pem");
            for file in [&cert, &key] {
                if !file.is_file() {
                    bail!(
                        "{} has no {}: --ca-dir takes a directory with ca.pem and ca-key.pem (a \
                         VCH directory whose CA was made by `vch-admin create`, or \
                         ~/.docker/machine/certs)",
                        dir.display(),
                        file.file_name().unwrap_or_default().to_string_lossy()
                    );
                }
            }
            (cert, key)
        }
        (None, Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let mut opts = CaOptions::new(format!("{} registry CA", args.name));
            opts.organization = Some("vch".into());
            opts.key_type = args.key_type;
            let ca = CertificateAuthority::generate(&opts)?;
            return Ok(Issuer {
                trust_pem: ca.cert_pem(),
                intermediates_pem: String::new(),
                new_key_pem: Some(ca.key().to_pem().to_owned()),
                ca,
            });
        }
    };
    let cert_pem = read(&cert_path)?;
    let ca = CertificateAuthority::from_pem_named(
        &cert_pem,
        &cert_path.display().to_string(),
        &read(&key_path)?,
        &key_path.display().to_string(),
    )?;
    // A CA file holding an intermediate and its issuers: the non-self-issued certificates go
    // after the leaf (Go and rustls build paths only from what the server sends), the
    // self-issued ones are what clients trust. A lone intermediate is trusted as it is.
    let name = cert_path.display().to_string();
    let ders = certificates_from_pem(cert_pem.as_bytes(), &name)?;
    let info = inspect_pem(cert_pem.as_bytes(), &name, &InspectOptions::default())?;
    let mut trust = String::new();
    let mut intermediates = String::new();
    for (der, c) in ders.iter().zip(&info.certificates) {
        if c.self_issued {
            trust.push_str(&der_to_pem(der));
        } else {
            intermediates.push_str(&der_to_pem(der));
        }
    }
    if trust.is_empty() {
        trust = ca.cert_pem();
    }
    Ok(Issuer {
        ca,
        trust_pem: trust,
        intermediates_pem: intermediates,
        new_key_pem: None,
    })
}

fn plan_cert(args: &CertArgs) -> anyhow::Result<CertPlan> {
    // Every name and address once, in the order given.
    let mut sans: Vec<String> = Vec::new();
    let candidates = std::iter::once(args.name.clone())
        .chain(args.dns.iter().cloned())
        .chain(args.ip.iter().map(IpAddr::to_string));
    for host in candidates {
        let host = host.trim().to_owned();
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !sans.contains(&bare) {
            sans.push(bare);
        }
    }
    let mut seen = BTreeSet::new();
    for client in &args.clients {
        crate::config::validate_name("--client name", client)
            .map_err(|e| anyhow::anyhow!("{e} (it names NAME.cert and NAME.key)"))?;
        if !seen.insert(client) {
            bail!("--client {client} is given twice");
        }
    }
    // Validated before any key is made: the certs.d directory of each name.
    let names = sans
        .iter()
        .map(|h| {
            if h.starts_with("*.") {
                bail!("{h}: a wildcard is not a name dockerd can look up in certs.d");
            }
            Ok(certs_d_dir_name(h, Some(args.port))?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let dir =
        std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;

    let issuer = load_issuer(args)?;
    let mut opts = LeafOptions::server(sans.iter().cloned());
    opts.key_type = args.key_type;
    opts.days = args.days;
    let leaf = issuer.ca.issue(&opts)?;
    let chain = format!("{}{}", leaf.cert_pem(), issuer.intermediates_pem);
    let key = leaf.key().to_pem().to_owned();
    let lints = lint_server(&chain, &key, &issuer.trust_pem, &sans)?;

    let mut files = vec![
        PlannedFile::public(REGISTRY_CERT, chain),
        PlannedFile::secret(REGISTRY_KEY, key),
        PlannedFile::public(REGISTRY_CA, issuer.trust_pem.clone()),
    ];
    if let Some(key) = &issuer.new_key_pem {
        files.push(PlannedFile::secret("ca-key.pem", key.clone()));
    }
    let mut env = format!(
        "# The Distribution registry's TLS settings (`set -a; . {REGISTRY_ENV}; set +a`, or \
         docker run --env-file).\n\
         REGISTRY_HTTP_TLS_CERTIFICATE={}\nREGISTRY_HTTP_TLS_KEY={}\n",
        dir.join(REGISTRY_CERT).display(),
        dir.join(REGISTRY_KEY).display()
    );
    if !args.clients.is_empty() {
        // docker-registry 2.8 ignores `_0` (its env overrides do not index lists) and takes
        // the whole list as YAML instead; both are written, so the registry requires client
        // certificates whichever form it reads. Shell sourcing drops the quotes, still YAML.
        let ca = dir.join(REGISTRY_CA).display().to_string();
        let list = serde_json::to_string(&[&ca])?;
        env.push_str(&format!(
            "REGISTRY_HTTP_TLS_CLIENTCAS_0={ca}\nREGISTRY_HTTP_TLS_CLIENTCAS={list}\n"
        ));
    }
    files.push(PlannedFile::public(REGISTRY_ENV, env));

    let mut client_pairs = Vec::new();
    for client in &args.clients {
        let mut opts = LeafOptions::client(client.clone());
        opts.key_type = args.key_type;
        opts.days = args.days;
        let issued = issuer.ca.issue(&opts)?;
        client_pairs.push((
            client.clone(),
            format!("{}{}", issued.cert_pem(), issuer.intermediates_pem),
            issued.key().to_pem().to_owned(),
        ));
    }
    for name in &names {
        let sub = Path::new("certs.d").join(name);
        files.push(PlannedFile::public(
            sub.join("ca.crt"),
            issuer.trust_pem.clone(),
        ));
        for (client, cert, key) in &client_pairs {
            files.push(PlannedFile::public(
                sub.join(format!("{client}.cert")),
                cert.clone(),
            ));
            files.push(PlannedFile::secret(
                sub.join(format!("{client}.key")),
                key.clone(),
            ));
        }
    }
    Ok(CertPlan {
        dir,
        files,
        names,
        sans,
        lints,
    })
}

/// The lints of a server chain for every host clients dial, each problem once.
pub(crate) fn lint_server(
    chain: &str,
    key: &str,
    trust_pem: &str,
    hosts: &[String],
) -> anyhow::Result<Vec<Lint>> {
    let roots = certificates_from_pem(trust_pem.as_bytes(), "ca.crt")?;
    let mut lints: Vec<Lint> = Vec::new();
    for host in hosts {
        let opts = InspectOptions {
            host: Some(host),
            roots: &roots,
            key_pem: Some(key.as_bytes()),
            ..InspectOptions::default()
        };
        let inspection = inspect_pem(chain.as_bytes(), REGISTRY_CERT, &opts)?;
        for lint in inspection.lints {
            if !lints
                .iter()
                .any(|l| l.code == lint.code && l.message == lint.message)
            {
                lints.push(lint);
            }
        }
    }
    Ok(lints)
}

// ---- registry trust ----

/// Splits `HOST[:PORT]` (`[v6]:port`, or a bare IPv6 address without a port).
fn split_host_port(text: &str) -> anyhow::Result<(String, Option<u16>)> {
    let bad = || format!("invalid registry {text:?}: use HOST, HOST:PORT or [IPv6]:PORT");
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).with_context(bad);
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').with_context(bad)?;
        return match after {
            "" => Ok((host.to_owned(), None)),
            _ => {
                let p = after.strip_prefix(':').with_context(bad)?;
                Ok((host.to_owned(), Some(port(p)?)))
            }
        };
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((text.to_owned(), None));
    }
    match text.split_once(':') {
        Some((host, p)) => Ok((host.to_owned(), Some(port(p)?))),
        None => Ok((text.to_owned(), None)),
    }
}

fn trust(args: &TrustArgs) -> anyhow::Result<ExitCode> {
    let ca = read(&args.ca)?;
    certificates_from_pem(ca.as_bytes(), &args.ca.display().to_string())?;
    let client = match (&args.client_cert, &args.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read(cert_path)?;
            let key = read(key_path)?;
            let matches = vch_pki::key_matches_certificate(
                cert.as_bytes(),
                &key,
                &key_path.display().to_string(),
            )?;
            if !matches {
                bail!(
                    "{} is not the key of {}",
                    key_path.display(),
                    cert_path.display()
                );
            }
            // Keep the name it has (certs.d/NAME/ci.cert stays ci.cert); dockerd reads any
            // `X.cert` with its `X.key`.
            let stem = cert_path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| crate::config::validate_name("--client name", s).is_ok())
                .unwrap_or("client")
                .to_owned();
            Some((stem, cert, key))
        }
        _ => None,
    };

    let mut names = Vec::new();
    for host in &args.hosts {
        let (h, port) = split_host_port(host)?;
        let name = certs_d_dir_name(&h, port)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }

    // Decide per file: already there with these bytes (nothing to do), absent (write), or
    // different (refuse without --force). Nothing is written until every name is decided.
    let mut to_write = Vec::new();
    let mut conflicts = Vec::new();
    let mut trusted = Vec::new();
    for name in &names {
        let mut wanted = vec![PlannedFile::public(
            Path::new(name).join("ca.crt"),
            ca.clone(),
        )];
        if let Some((stem, cert, key)) = &client {
            wanted.push(PlannedFile::public(
                Path::new(name).join(format!("{stem}.cert")),
                cert.clone(),
            ));
            wanted.push(PlannedFile::secret(
                Path::new(name).join(format!("{stem}.key")),
                key.clone(),
            ));
        }
        let mut all_same = true;
        for file in wanted {
            let target = args.certs_d.join(&file.path);
            match std::fs::read(&target) {
                Ok(existing) if existing == file.contents => {}
                Ok(_) => {
                    all_same = false;
                    conflicts.push(target);
                    to_write.push(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    all_same = false;
                    to_write.push(file);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", target.display()));
                }
            }
        }
        if all_same {
            trusted.push(name.clone());
        }
    }
    if !conflicts.is_empty() && !args.force {
        let list: Vec<String> = conflicts.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} already hold(s) different contents; nothing was written (--force replaces them)",
            list.join(", ")
        );
    }
    if !to_write.is_empty() {
        write_files(&args.certs_d, &to_write, overwrite(args.force))?;
    }
    for name in &names {
        let dir = args.certs_d.join(name);
        if trusted.contains(name) {
            println!("{name}: already trusted ({})", dir.display());
        } else {
            println!("{name}: trusted ({})", dir.display());
        }
    }
    println!(
        "dockerd reads certs.d on every connection to a registry, so no restart is needed; \
         regctl reads /etc/docker/certs.d and ~/.docker/certs.d too."
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        let ok = |t: &str| split_host_port(t).unwrap();
        assert_eq!(ok("reg.example"), ("reg.example".into(), None));
        assert_eq!(ok("reg.example:5000"), ("reg.example".into(), Some(5000)));
        assert_eq!(ok("10.0.0.2:5000"), ("10.0.0.2".into(), Some(5000)));
        assert_eq!(ok("[::1]:5000"), ("::1".into(), Some(5000)));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        assert_eq!(ok("fd00::2"), ("fd00::2".into(), None));
        for bad in ["reg:", "reg:x", "reg:0", "[::1", "[::1]5000", "reg:70000"] {
            assert!(split_host_port(bad).is_err(), "{bad:?}");
        }
    }
}
