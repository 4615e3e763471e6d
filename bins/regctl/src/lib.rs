//! The `regctl` command line: argument structs and `run()`, here so tests can reach them.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 usage (clap's own exit code for bad
//! arguments, and a [`Usage`] error: input that is wrong before anything is tried, such as a
//! replication rules file that does not load).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command line prints"
)]

mod completion;
mod progress;
mod replicate;
mod settings;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use vch_registry::{CopyOptions, DockerConfig, Manifest, Platform, Reference, copy_image};

pub use completion::CompletionArgs;
use progress::{Event, Outcome};
pub use progress::{ProgressArgs, ProgressMode};
pub use replicate::ReplicateCmd;
use settings::{Clients, PolicyGate, encode_auth};
pub use settings::{Config, HostConfig, TlsMode};

/// Exit code for a failed operation.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for wrong input, as clap's for bad arguments.
pub const EXIT_USAGE: u8 = 2;

/// Input that is wrong before anything is tried (a rules file that does not load): exit
/// [`EXIT_USAGE`], so a script tells it from an operation that failed (exit 1) and may be retried.
#[derive(Debug)]
pub struct Usage(pub anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Usage {}

/// Inspect, copy and delete images in Registry v2 / OCI registries.
#[derive(Debug, Parser)]
#[command(name = "regctl", version, about)]
pub struct Cli {
    /// Refuse any registry this VCH config's `[registry]` policy denies, and take
    /// secure/insecure transport from it.
    #[arg(long, global = true, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Registry settings and logins.
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Repositories.
    #[command(subcommand)]
    Repo(RepoCmd),
    /// Tags.
    #[command(subcommand)]
    Tag(TagCmd),
    /// Manifests.
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// Blobs.
    #[command(subcommand)]
    Blob(BlobCmd),
    /// Images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Artifacts (OCI 1.1 referrers).
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    Completion(CompletionArgs),
    /// Replication between registries (rules file, run, serve, status).
    #[command(subcommand)]
    Replicate(ReplicateCmd),
}

/// `regctl artifact …`.
#[derive(Debug, Subcommand)]
pub enum ArtifactCmd {
    /// The manifests that refer to REF (its signatures, SBOMs, …): the registry's referrers
    /// API, or the `sha256-<hex>` tag where the registry has none.
    List {
        /// Subject reference (tag or digest).
        reference: String,
        /// Only referrers of this artifact type.
        #[arg(long)]
        filter_artifact_type: Option<String>,
    },
}

/// `regctl registry …`.
#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Store transport settings for a registry.
    Set {
        /// `host[:port]`.
        host: String,
        /// enabled (verified HTTPS), insecure (unverified, HTTP fallback), disabled (HTTP).
        #[arg(long, value_enum)]
        tls: Option<TlsMode>,
        /// A CA file to trust for this registry (repeatable).
        #[arg(long)]
        cacert: Vec<PathBuf>,
        /// Client certificate (PEM).
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// Client key (PEM).
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
    },
    /// Check and store credentials for a registry.
    Login {
        /// `host[:port]`.
        host: String,
        /// User name.
        #[arg(short, long)]
        user: String,
        /// Read the password from stdin.
        #[arg(long)]
        pass_stdin: bool,
    },
    /// Forget stored credentials.
    Logout {
        /// `host[:port]`.
        host: String,
    },
}

/// `regctl repo …`.
#[derive(Debug, Subcommand)]
pub enum RepoCmd {
    /// List repositories (the catalog).
    Ls {
        /// `host[:port]`.
        host: String,
    },
}

/// `regctl tag …`.
#[derive(Debug, Subcommand)]
pub enum TagCmd {
    /// List tags.
    Ls {
        /// `host[:port]/repository`.
        repo: String,
    },
    /// Delete a tag (the manifest stays reachable by digest).
    Delete {
        /// `host/repository:tag`.
        reference: String,
    },
}

/// Manifest output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The bytes as served.
    Raw,
    /// Indented JSON.
    #[default]
    Json,
}

/// `regctl manifest …`.
#[derive(Debug, Subcommand)]
pub enum ManifestCmd {
    /// Print a manifest.
    Get {
        /// Image reference.
        reference: String,
        /// From an index, the manifest of this platform (`os/arch[/variant]`).
        #[arg(long)]
        platform: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Digest, media type and size without the body.
    Head {
        /// Image reference.
        reference: String,
    },
    /// Delete a manifest (by digest; a tag is resolved first). A referrer (a manifest with
    /// a `subject`) is also taken out of its subject's `sha256-<hex>` tag where the registry
    /// has no referrers API.
    Delete {
        /// Image reference.
        reference: String,
    },
}

/// `regctl blob …`.
#[derive(Debug, Subcommand)]
pub enum BlobCmd {
    /// Write a blob to stdout (verified against its digest).
    Get {
        /// `host/repository`.
        repo: String,
        /// `sha256:…`.
        digest: String,
        /// Progress on stderr.
        #[command(flatten)]
        progress: ProgressArgs,
    },
    /// Whether a blob exists, and its size.
    Head {
        /// `host/repository`.
        repo: String,
        /// `sha256:…`.
        digest: String,
    },
}

/// `regctl image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Copy an image between repositories and registries.
    Copy(CopyArgs),
    /// The digest of the manifest a reference names.
    Digest {
        /// Image reference.
        reference: String,
    },
    /// The image configuration (of one platform for an index).
    Inspect {
        /// Image reference.
        reference: String,
        /// Platform for an index (default linux/amd64).
        #[arg(long)]
        platform: Option<String>,
    },
}

/// `regctl image copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source reference.
    pub src: String,
    /// Target reference.
    pub dst: String,
    /// Copy only this platform of an index.
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Copy the whole index (the default).
    #[arg(long)]
    pub all_platforms: bool,
    /// Blobs copied at once.
    #[arg(long, default_value_t = vch_registry::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Also copy the referrers (signatures, SBOMs) of the copied manifests, and theirs; the
    /// target's `sha256-<hex>` tag is updated where it has no referrers API.
    #[arg(long)]
    pub referrers: bool,
    /// Progress on stderr.
    #[command(flatten)]
    pub progress: ProgressArgs,
}

/// Sets up logging on stderr (`-v` info, `-vv` debug; `RUST_LOG` overrides).
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints the error as one line and returns exit code 1.
pub fn report(err: &anyhow::Error) -> ExitCode {
    // A cause whose text the line already holds is left out (many errors print their source).
    let line = err.chain().skip(1).fold(err.to_string(), |line, cause| {
        let cause = cause.to_string();
        if line.contains(&cause) {
            line
        } else {
            format!("{line}: {cause}")
        }
    });
    eprintln!("regctl: {line}");
    if err.downcast_ref::<Usage>().is_some() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn repo_ref(s: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse_repository(s)?)
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completion(args) = &cli.command {
        return completion::run(args);
    }
    let config_path = Config::path()?;
    let config = Config::load(&config_path)?;
    let policy = cli.policy.as_deref().map(PolicyGate::load).transpose()?;
    let docker = match DockerConfig::default_path() {
        Some(p) => DockerConfig::load(&p)?,
        None => DockerConfig::default(),
    };
    let mut clients = Clients {
        config,
        policy,
        docker,
    };
    let json = cli.json;
    match cli.command {
        Command::Registry(cmd) => registry_cmd(cmd, &mut clients, &config_path, json).await,
        Command::Repo(RepoCmd::Ls { host }) => {
            let repos = clients.client(&host).await?.catalog(Some(1000)).await?;
            list_out(&repos, json)
        }
        Command::Tag(TagCmd::Ls { repo }) => {
            let r = repo_ref(&repo)?;
            let tags = clients
                .client(&r.registry)
                .await?
                .tags(&r.repository, Some(1000))
                .await?;
            list_out(&tags, json)
        }
        Command::Tag(TagCmd::Delete { reference }) => {
            let r = Reference::parse(&reference)?;
            let tag = r
                .tag
                .clone()
                .filter(|_| r.digest.is_none())
                .context("tag delete needs REPO:TAG")?;
            let client = clients.client(&r.registry).await?;
            client.tag_delete(&r.repository, &tag).await?;
            if json {
                print_json(&serde_json::json!({"deleted": reference}))?;
            }
            Ok(())
        }
        Command::Manifest(cmd) => manifest_cmd(cmd, &clients, json).await,
        Command::Blob(cmd) => blob_cmd(cmd, &clients, json).await,
        Command::Image(cmd) => image_cmd(cmd, &clients, json).await,
        Command::Artifact(cmd) => artifact_cmd(cmd, &clients, json).await,
        Command::Completion(args) => completion::run(&args),
        Command::Replicate(cmd) => replicate::run(cmd, &clients, json).await,
    }
}

fn list_out(items: &[String], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!(items));
    }
    let mut out = std::io::stdout().lock();
    for i in items {
        writeln!(out, "{i}")?;
    }
    Ok(())
}

async fn registry_cmd(
    cmd: RegistryCmd,
    clients: &mut Clients,
    path: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        RegistryCmd::Set {
            host,
            tls,
            cacert,
            client_cert,
            client_key,
        } => {
            let entry = clients.config.hosts.entry(host.clone()).or_default();
            if let Some(t) = tls {
                entry.tls = t;
            }
            for c in cacert {
                let c = std::path::absolute(&c).with_context(|| format!("{}", c.display()))?;
                if !entry.cacert.contains(&c) {
                    entry.cacert.push(c);
                }
            }
            if let (Some(c), Some(k)) = (client_cert, client_key) {
                entry.client_cert = Some(std::path::absolute(c)?);
                entry.client_key = Some(std::path::absolute(k)?);
            }
            // Refuse settings that do not load (a bad CA file) before saving them.
            clients.client(&host).await?;
            clients.config.save(path)?;
            if json {
                print_json(&serde_json::to_value(&clients.config.hosts[&host])?)?;
            }
        }
        RegistryCmd::Login {
            host,
            user,
            pass_stdin,
        } => {
            if !pass_stdin {
                bail!("give the password on stdin with --pass-stdin");
            }
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            clients.config.hosts.entry(host.clone()).or_default().auth =
                Some(encode_auth(&user, &password));
            clients
                .client(&host)
                .await?
                .check_login()
                .await
                .context("login refused")?;
            clients.config.save(path)?;
            if json {
                print_json(&serde_json::json!({"host": host, "login": "succeeded"}))?;
            } else {
                eprintln!("Login Succeeded");
            }
        }
        RegistryCmd::Logout { host } => {
            if let Some(h) = clients.config.hosts.get_mut(&host) {
                h.auth = None;
            }
            clients.config.save(path)?;
        }
    }
    Ok(())
}

async fn manifest_cmd(cmd: ManifestCmd, clients: &Clients, json: bool) -> anyhow::Result<()> {
    match cmd {
        ManifestCmd::Get {
            reference,
            platform,
            format,
        } => {
            let r = Reference::parse(&reference)?;
            let client = clients.client(&r.registry).await?;
            let mut m = client.manifest_get(&r.repository, &r.target()).await?;
            if let Some(p) = platform {
                let p = Platform::parse(&p)?;
                let decoded = m.decode()?;
                if let Manifest::Index { .. } = decoded {
                    let d = decoded.select_platform(&p, &reference)?;
                    m = client.manifest_get(&r.repository, &d.digest).await?;
                }
            }
            match format {
                Format::Raw => std::io::stdout().lock().write_all(&m.bytes)?,
                Format::Json => {
                    let v: serde_json::Value = serde_json::from_slice(&m.bytes)?;
                    print_json(&v)?;
                }
            }
        }
        ManifestCmd::Head { reference } => {
            let r = Reference::parse(&reference)?;
            let client = clients.client(&r.registry).await?;
            let head = client
                .manifest_head(&r.repository, &r.target())
                .await?
                .with_context(|| format!("{reference}: manifest unknown"))?;
            let digest = head.digest.map(|d| d.to_string()).unwrap_or_default();
            if json {
                print_json(&serde_json::json!({
                    "digest": digest, "mediaType": head.media_type, "size": head.size,
                }))?;
            } else {
                println!("{digest}");
            }
        }
        ManifestCmd::Delete { reference } => {
            let r = Reference::parse(&reference)?;
            let client = clients.client(&r.registry).await?;
            let digest = match &r.digest {
                Some(d) => d.to_string(),
                None => client
                    .manifest_get(&r.repository, &r.target())
                    .await?
                    .digest
                    .to_string(),
            };
            client.manifest_delete(&r.repository, &digest).await?;
            if json {
                print_json(&serde_json::json!({"deleted": digest}))?;
            }
        }
    }
    Ok(())
}

async fn blob_cmd(cmd: BlobCmd, clients: &Clients, json: bool) -> anyhow::Result<()> {
    match cmd {
        BlobCmd::Get {
            repo,
            digest,
            progress,
        } => {
            let r = repo_ref(&repo)?;
            let d = vch_registry::Digest::parse(&digest)?;
            let client = clients.client(&r.registry).await?;
            let reporter = progress.reporter();
            let result = blob_get(&client, &r.repository, &d, &reporter).await;
            reporter.finish(result.is_ok());
            result?;
        }
        BlobCmd::Head { repo, digest } => {
            let r = repo_ref(&repo)?;
            let d = vch_registry::Digest::parse(&digest)?;
            let client = clients.client(&r.registry).await?;
            let size = client
                .blob_head(&r.repository, &d)
                .await?
                .with_context(|| format!("{repo}@{digest}: blob unknown"))?;
            if json {
                print_json(&serde_json::json!({"digest": digest, "size": size}))?;
            } else {
                println!("{size}");
            }
        }
    }
    Ok(())
}

async fn image_cmd(cmd: ImageCmd, clients: &Clients, json: bool) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Copy(args) => {
            let s = Reference::parse(&args.src)?;
            let d = Reference::parse(&args.dst)?;
            let src = clients.client(&s.registry).await?;
            let dst = if s.registry == d.registry {
                src.clone()
            } else {
                clients.client(&d.registry).await?
            };
            let mut opts = CopyOptions::default()
                .concurrency(args.concurrency)
                .referrers(args.referrers);
            if let Some(p) = &args.platform {
                opts = opts.platform(Platform::parse(p)?);
            }
            let reporter = args.progress.reporter();
            if let Some(callback) = reporter.copy_callback() {
                opts = opts.progress(callback);
            }
            let result = copy_image(&src, &s, &dst, &d, &opts).await;
            reporter.finish(result.is_ok());
            let report = result?;
            if json {
                print_json(&serde_json::json!({
                    "digest": report.digest, "mediaType": report.media_type,
                    "copied": report.copied, "mounted": report.mounted,
                    "skipped": report.skipped, "resumed": report.resumed, "bytes": report.bytes,
                    "referrers": report.referrers,
                }))?;
            } else {
                println!("{}", report.digest);
            }
        }
        ImageCmd::Digest { reference } => {
            let r = Reference::parse(&reference)?;
            let client = clients.client(&r.registry).await?;
            let m = client.manifest_get(&r.repository, &r.target()).await?;
            if json {
                print_json(&serde_json::json!({"digest": m.digest.to_string()}))?;
            } else {
                println!("{}", m.digest);
            }
        }
        ImageCmd::Inspect {
            reference,
            platform,
        } => {
            let r = Reference::parse(&reference)?;
            let client = clients.client(&r.registry).await?;
            let mut m = client.manifest_get(&r.repository, &r.target()).await?;
            let mut decoded = m.decode()?;
            if let Manifest::Index { .. } = decoded {
                let p = Platform::parse(platform.as_deref().unwrap_or("linux/amd64"))?;
                let d = decoded.select_platform(&p, &reference)?;
                m = client.manifest_get(&r.repository, &d.digest).await?;
                decoded = m.decode()?;
            }
            let Manifest::Image { config, .. } = decoded else {
                bail!("{reference}: nested index");
            };
            let digest = vch_registry::Digest::parse(&config.digest)?;
            let bytes = client
                .blob_get(&r.repository, &digest)
                .await?
                .bytes()
                .await?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).context("the image config is not JSON")?;
            print_json(&v)?;
        }
    }
    Ok(())
}

async fn artifact_cmd(cmd: ArtifactCmd, clients: &Clients, json: bool) -> anyhow::Result<()> {
    let ArtifactCmd::List {
        reference,
        filter_artifact_type,
    } = cmd;
    let r = Reference::parse(&reference)?;
    let client = clients.client(&r.registry).await?;
    let subject = match &r.digest {
        Some(d) => d.clone(),
        None => {
            let head = client.manifest_head(&r.repository, &r.target()).await?;
            match head.and_then(|h| h.digest) {
                Some(d) => d,
                None => {
                    client
                        .manifest_get(&r.repository, &r.target())
                        .await?
                        .digest
                }
            }
        }
    };
    let referrers = client
        .referrers(&r.repository, &subject, filter_artifact_type.as_deref())
        .await?;
    if json {
        let index: serde_json::Value = serde_json::from_slice(&referrers.to_index())?;
        print_json(&index)?;
    } else {
        for d in &referrers.manifests {
            println!(
                "{}\t{}\t{}",
                d.digest,
                d.artifact_type.as_deref().unwrap_or("-"),
                d.size
            );
        }
    }
    Ok(())
}

/// Writes a blob to stdout as it arrives (verified at the end by the stream), reporting
/// progress at most every 100 ms; progress never touches stdout.
async fn blob_get(
    client: &vch_registry::Client,
    repo: &str,
    digest: &vch_registry::Digest,
    reporter: &progress::Reporter,
) -> anyhow::Result<()> {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(100);
    let mut stream = client.blob_get(repo, digest).await?;
    let digest = digest.as_str();
    reporter.event(Event::Started {
        digest,
        size: stream.size(),
    });
    let mut out = std::io::stdout().lock();
    let (mut bytes, mut last) = (0u64, std::time::Instant::now());
    while let Some(chunk) = stream.chunk().await? {
        out.write_all(&chunk)?;
        bytes += chunk.len() as u64;
        if !reporter.is_silent() && last.elapsed() >= EVERY {
            last = std::time::Instant::now();
            reporter.event(Event::Progress { digest, bytes });
        }
    }
    out.flush()?;
    reporter.event(Event::Progress { digest, bytes });
    reporter.event(Event::Done {
        digest,
        size: bytes,
        outcome: Outcome::Downloaded,
    });
    Ok(())
}
