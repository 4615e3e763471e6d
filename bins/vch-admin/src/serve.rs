//! `vch-admin serve DIR`: run a VCH made by `vch-admin create` in front of its Docker engine.
//!
//! Signals: SIGTERM and SIGINT stop accepting, let open requests finish (up to the grace period)
//! and exit 0; SIGHUP re-reads `vch.toml`, the certificates and the registry policy, and swaps them
//! in without dropping live connections (a bad file is reported and the old settings stay). This
//! is how `vch-admin update` takes effect.
//!
//! The registry rules are `[registry]` compiled by `RegistryConfig::compile_rules`: the lists in
//! force (narrowed by `update`, if it did), the push rule and the mode. In audit mode a warning
//! goes to stderr at start and after each reload: denials are logged, not enforced.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use vch_pki::TlsMode;
use vch_policy::{EnforcementMode, Policy};
use vch_proxy::{Listen, Options, Server, Settings, Upstream, server_tls};

use crate::config::VchConfig;

/// Arguments of `vch-admin serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The VCH directory written by `vch-admin create`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Listen on this address instead of the one in vch.toml.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Also listen on a unix socket (plain HTTP: guard it with file permissions).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Append the audit log (one JSON line per request) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub header_timeout: u64,
    /// Seconds open requests may take to finish on shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_grace: u64,
}

/// Where audit lines go: stdout, or a file opened for appending.
pub(crate) fn audit_writer(args: &ServeArgs) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match &args.audit_log {
        None => Box::new(std::io::stdout()),
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open audit log {}", path.display()))?,
        ),
    })
}

/// Runs `vch-admin serve` until SIGTERM/SIGINT.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Fail closed: nothing is served unless every file loads.
    let (config, settings) = load(&args.dir)?;
    let audit_mode = settings.mode == EnforcementMode::Audit;
    let mut listen = vec![Listen::Tcp(
        args.listen.unwrap_or_else(|| config.listen_addr()),
    )];
    if let Some(path) = &args.unix {
        listen.push(Listen::Unix(path.clone()));
    }
    let options = Options {
        header_read_timeout: Duration::from_secs(args.header_timeout.max(1)),
        max_connections: args.max_connections.max(1),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        ..Options::default()
    };
    let server = Server::bind(&listen, settings, options).await?;
    let handle = server.handle();
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    eprintln!(
        "vch-admin: VCH {} serves Docker API v{} on {} ({}), engine {}",
        config.name,
        vch_proxy::API_VERSION,
        server.local_addrs().join(", "),
        config.tls.mode,
        config.docker_host
    );
    if audit_mode {
        eprintln!("{AUDIT_WARNING}");
    }
    let dir = args.dir.clone();
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                _ = hangup.recv() => match load(&dir) {
                    Ok((_, settings)) => {
                        let audit_mode = settings.mode == EnforcementMode::Audit;
                        handle.reload(settings);
                        eprintln!("vch-admin: reloaded {}", dir.join(crate::config::CONFIG_FILE).display());
                        if audit_mode {
                            eprintln!("{AUDIT_WARNING}");
                        }
                    }
                    Err(e) => eprintln!("vch-admin: reload failed, keeping the running settings: {e:#}"),
                },
            }
        }
        handle.shutdown();
    });
    server.run().await;
    signals.abort();
    eprintln!("vch-admin: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The stderr line of a VCH in audit mode.
const AUDIT_WARNING: &str =
    "vch-admin: warning: policy mode audit: denials are logged, not enforced";

/// Reads the VCH directory into endpoint settings (at start and on every SIGHUP).
fn load(dir: &Path) -> anyhow::Result<(VchConfig, Settings)> {
    let (config, paths) = VchConfig::load(dir)?;
    let rules = config
        .registry
        .compile_rules(dir)
        .with_context(|| format!("[registry] in {}", paths.config_file.display()))?;
    let engine_tls = match &config.docker_tls {
        Some(t) => {
            let client = vch_pki::client_config(
                &dir.join(&t.ca),
                Some((&dir.join(&t.cert), &dir.join(&t.key))),
            )
            .with_context(|| format!("[docker_tls] in {}", paths.config_file.display()))?;
            Some(std::sync::Arc::new(client))
        }
        None => None,
    };
    let upstream = Upstream::parse(&config.docker_host, engine_tls)?;
    let mut settings = Settings::new(upstream, Policy::empty()).with_rules(rules);
    let files = |what: &str, p: &Option<PathBuf>| {
        p.clone()
            .with_context(|| format!("tls mode {} needs a {what} file", config.tls.mode))
    };
    settings = match config.tls.mode {
        TlsMode::None => settings,
        TlsMode::Tls => settings.with_tls(server_tls(
            &files("cert", &paths.cert)?,
            &files("key", &paths.key)?,
            None,
        )?),
        TlsMode::TlsVerify => settings.with_tls(server_tls(
            &files("cert", &paths.cert)?,
            &files("key", &paths.key)?,
            Some(&files("ca", &paths.ca)?),
        )?),
        other => anyhow::bail!("TLS mode {other} is not supported by serve"),
    };
    let settings = settings.with_dns(&config.registry.dns)?;
    Ok((config, settings))
}

/// Writes the `record` field of audit events, one line each, to the audit sink.
pub(crate) struct AuditLayer {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AuditLayer {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Self {
        AuditLayer {
            out: Mutex::new(out),
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Record(Option<String>);
        impl tracing::field::Visit for Record {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "record" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut record = Record(None);
        event.record(&mut record);
        if let Some(mut line) = record.0 {
            // One write per line: the file is unbuffered, and `writeln!` would make two.
            line.push('\n');
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            // An audit line that cannot be written is reported once per line on stderr.
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                eprintln!("vch-admin: cannot write the audit log");
            }
        }
    }
}
