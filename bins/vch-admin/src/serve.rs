//! `vch-admin serve DIR`: run a VCH made by `vch-admin create` in front of its Docker engine.
//!
//! Signals: SIGTERM and SIGINT stop accepting, let open requests finish (up to the grace period)
//! and exit 0; SIGHUP reopens the audit log file (log rotation: the lines written before go to the
//! renamed file, the ones after to a new file at the path), then re-reads `vch.toml`, the
//! certificates and the registry policy, and swaps them in without dropping live connections (a
//! bad file is reported and the old settings stay). This is how `vch-admin update` takes effect.
//!
//! Under a service manager (`$NOTIFY_SOCKET`, systemd's `Type=notify`), serve reports `READY=1`
//! once it listens, `RELOADING=1` then `READY=1` around a SIGHUP, and `STOPPING=1` when it drains
//! (see [`crate::notify`] and `contrib/systemd/vch@.service`).
//!
//! The registry rules are `[registry]` compiled by `RegistryConfig::compile_rules`: the lists in
//! force (narrowed by `update`, if it did), the push rule and the mode. In audit mode a warning
//! goes to stderr at start and after each reload: denials are logged, not enforced.
//!
//! API versions: the VCH serves Docker API 1.24 (or the engine's `MinAPIVersion`, if higher) up
//! to the lowest of the engine's `ApiVersion`, the newest version the proxy has been audited for
//! (`vch_proxy::AUDITED_API_VERSION`) and `[api] version` (the pin `create --api-version`
//! writes; 1.25 is VIC's strict mode). The engine is asked at start, and the range printed:
//!
//! ```text
//! vch-admin: VCH vch1 serves Docker API 1.24 to 1.41 (engine 1.12 to 1.41) on 127.0.0.1:2376 (tlsverify), engine unix:///var/run/docker.sock
//! ```
//!
//! At start and after each reload, stderr also says:
//!
//! | condition | line |
//! |---|---|
//! | the engine did not answer `/version` | `warning:` the range is settled at the first request |
//! | the engine's minimum is above 1.24 (Docker 29: 1.40 or 1.44) | `warning:` older clients are refused; set `DOCKER_MIN_API_VERSION=1.24` in dockerd's environment or `"min-api-version": "1.24"` in `/etc/docker/daemon.json` |
//! | the pin is below the engine's minimum (the range is empty) | `error:` every request is refused; the same daemon settings, or a higher pin |
//!
//! None of them stops the server: the engine may be reconfigured while the VCH runs, and the
//! range is asked again after the engine was unreachable and on SIGHUP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use vch_pki::TlsMode;
use vch_policy::{EnforcementMode, Policy};
use vch_proxy::{
    AUDITED_API_VERSION, ApiRange, ApiVersion, EngineApi, Handle, Listen, MIN_API_VERSION, Options,
    Server, Settings, Upstream, server_tls, server_tls_with_crl,
};

use crate::config::VchConfig;
use crate::notify::Notifier;

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
    /// Serve Prometheus metrics on ADDR (`GET /metrics`, plain HTTP, no authentication: a
    /// loopback address or a scrape network); overrides `[serve] metrics` in vch.toml.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// Where audit lines go: stdout, or a file opened for appending and reopened on SIGHUP.
pub(crate) struct AuditSink {
    /// `None`: stdout, which is never reopened.
    path: Option<PathBuf>,
    out: Mutex<Box<dyn Write + Send>>,
}

/// The sink `init_tracing` made for `serve`, for the SIGHUP handler to reopen. (The tracing
/// subscriber that writes to it is process-wide too.)
static AUDIT_SINK: OnceLock<Arc<AuditSink>> = OnceLock::new();

impl AuditSink {
    /// Opens the audit sink of `serve` and registers it for [`AuditSink::reopen_registered`].
    pub(crate) fn open(args: &ServeArgs) -> anyhow::Result<Arc<Self>> {
        let out: Box<dyn Write + Send> = match &args.audit_log {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(open_append(path)?),
        };
        let sink = Arc::new(AuditSink {
            path: args.audit_log.clone(),
            out: Mutex::new(out),
        });
        let _ = AUDIT_SINK.set(Arc::clone(&sink));
        Ok(sink)
    }

    /// Reopens the registered audit log file, if serve writes to one; returns its path.
    ///
    /// The new file is opened first and swapped in under the lock every line is written under:
    /// a line goes whole to the old file or whole to the new one, and none is lost. If the open
    /// fails, lines keep going to the old file.
    fn reopen_registered() -> anyhow::Result<Option<PathBuf>> {
        let Some(sink) = AUDIT_SINK.get() else {
            return Ok(None);
        };
        let Some(path) = &sink.path else {
            return Ok(None);
        };
        let file = open_append(path)?;
        let old = std::mem::replace(&mut *sink.lock(), Box::new(file));
        drop(old);
        Ok(Some(path.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open_append(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open audit log {}", path.display()))
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
    let pin = settings.api_pin;
    let mut listen = vec![Listen::Tcp(
        args.listen.unwrap_or_else(|| config.listen_addr()),
    )];
    if let Some(path) = &args.unix {
        listen.push(Listen::Unix(path.clone()));
    }
    let metrics = start_metrics(args.metrics.or(config.serve.metrics)).await?;
    let options = Options {
        header_read_timeout: Duration::from_secs(args.header_timeout.max(1)),
        max_connections: args.max_connections.max(1),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        metrics: metrics
            .as_ref()
            .map(|(metrics, _)| std::sync::Arc::clone(metrics)),
        ..Options::default()
    };
    let server = Server::bind(&listen, settings, options).await?;
    let handle = server.handle();
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    // `bind` asked the engine already; an engine that did not answer is asked again here.
    let api = served(&handle, pin).await;
    eprintln!(
        "vch-admin: VCH {} serves Docker API {} on {} ({}), engine {}",
        config.name,
        api.describe(),
        server.local_addrs().join(", "),
        config.tls.mode,
        config.docker_host
    );
    for line in api.warnings(&config.docker_host) {
        eprintln!("{line}");
    }
    if let Some((_, addr)) = &metrics {
        eprintln!("vch-admin: metrics on http://{addr}/metrics");
    }
    if audit_mode {
        eprintln!("{AUDIT_WARNING}");
    }
    let notifier = Notifier::from_env();
    notifier.ready(&format!(
        "serving Docker API {} on {}",
        api.range,
        server.local_addrs().join(", ")
    ));
    let dir = args.dir.clone();
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                _ = hangup.recv() => {
                    notifier.reloading();
                    let status = reload(&dir, &handle).await;
                    notifier.ready(&status);
                }
            }
        }
        notifier.stopping();
        handle.shutdown();
    });
    server.run().await;
    signals.abort();
    eprintln!("vch-admin: stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: reopens the audit log, then reloads the VCH directory; returns the status line for
/// the service manager.
async fn reload(dir: &Path, handle: &Handle) -> String {
    match AuditSink::reopen_registered() {
        Ok(Some(path)) => eprintln!("vch-admin: reopened the audit log {}", path.display()),
        Ok(None) => {}
        Err(e) => eprintln!(
            "vch-admin: cannot reopen the audit log, still writing to the old file: {e:#}"
        ),
    }
    match load(dir) {
        Ok((config, settings)) => {
            let audit_mode = settings.mode == EnforcementMode::Audit;
            let pin = settings.api_pin;
            handle.reload(settings);
            // The pin may have changed, and the engine with it: ask again.
            let api = served(handle, pin).await;
            eprintln!(
                "vch-admin: reloaded {}; serves Docker API {}",
                dir.join(crate::config::CONFIG_FILE).display(),
                api.describe()
            );
            for line in api.warnings(&config.docker_host) {
                eprintln!("{line}");
            }
            if audit_mode {
                eprintln!("{AUDIT_WARNING}");
            }
            format!("serving Docker API {} (reloaded)", api.range)
        }
        Err(e) => {
            eprintln!("vch-admin: reload failed, keeping the running settings: {e:#}");
            format!("serving with the previous settings: reload failed: {e:#}")
        }
    }
}

/// Binds the metrics listener, if an address is given, and serves it for the life of the
/// process: a bad or busy address stops the start.
async fn start_metrics(
    addr: Option<SocketAddr>,
) -> anyhow::Result<Option<(std::sync::Arc<vch_proxy::Metrics>, SocketAddr)>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = vch_proxy::MetricsListener::bind(addr)
        .await
        .context("cannot serve metrics (--metrics or [serve] metrics)")?;
    let bound = listener.local_addr()?;
    let metrics = std::sync::Arc::new(vch_proxy::Metrics::new());
    tokio::spawn(listener.serve(std::sync::Arc::clone(&metrics)));
    Ok(Some((metrics, bound)))
}

/// The API versions a running server serves, for its stderr lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Served {
    range: ApiRange,
    /// `None`: the engine did not answer `/version`.
    engine: Option<EngineApi>,
    pin: Option<ApiVersion>,
}

/// How long the start and reload lines wait for the engine's `/version` (a SIGTERM waits
/// behind it).
const API_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the server for its range (it asks the engine when it does not know its versions yet).
async fn served(handle: &Handle, pin: Option<ApiVersion>) -> Served {
    let range = tokio::time::timeout(API_PROBE_TIMEOUT, handle.api_range())
        .await
        .unwrap_or_else(|_| ApiRange::new(handle.engine_api(), pin));
    Served {
        range,
        engine: handle.engine_api(),
        pin,
    }
}

/// What to set on the engine so that it serves down to 1.24 again.
const DAEMON_FIX: &str = "set DOCKER_MIN_API_VERSION=1.24 in dockerd's environment or \
                          \"min-api-version\": \"1.24\" in /etc/docker/daemon.json and restart \
                          dockerd";

impl Served {
    /// `1.24 to 1.41 (engine 1.12 to 1.41)`.
    fn describe(&self) -> String {
        let mut notes = Vec::new();
        if let Some(pin) = self.pin {
            notes.push(format!("pinned to {pin}"));
        }
        match self.engine {
            Some(engine) => notes.push(format!("engine {} to {}", engine.min, engine.max)),
            None => notes.push("engine not reachable yet".to_owned()),
        }
        let range = if self.range.is_empty() {
            "none".to_owned()
        } else {
            self.range.to_string()
        };
        format!("{range} ({})", notes.join("; "))
    }

    /// The warning and error lines for an engine that narrows the range.
    fn warnings(&self, docker_host: &str) -> Vec<String> {
        let Some(engine) = self.engine else {
            return vec![format!(
                "vch-admin: warning: the Docker engine at {docker_host} did not answer /version; \
                 the API versions served are settled when it first does"
            )];
        };
        if self.range.is_empty() {
            return vec![match self.pin {
                Some(pin) if pin < engine.min => format!(
                    "vch-admin: error: [api] version = \"{pin}\" is below the Docker engine's \
                     minimum API version {}: every request will be refused; {DAEMON_FIX}, or \
                     raise [api] version",
                    engine.min
                ),
                _ => format!(
                    "vch-admin: error: the Docker engine's minimum API version {} is above the \
                     newest the proxy has been audited for ({AUDITED_API_VERSION}): every \
                     request will be refused",
                    engine.min
                ),
            }];
        }
        let mut lines = Vec::new();
        if engine.min > MIN_API_VERSION {
            lines.push(format!(
                "vch-admin: warning: the Docker engine refuses API versions below {} (its \
                 MinAPIVersion), so clients pinned lower, such as VIC mode's 1.25, are refused; \
                 to serve from 1.24, {DAEMON_FIX}",
                engine.min
            ));
        }
        if let Some(pin) = self.pin.filter(|&p| p > self.range.ceiling) {
            lines.push(format!(
                "vch-admin: warning: [api] version = \"{pin}\" is above the newest version served \
                 ({}, the Docker engine's): clients set to {pin} (DOCKER_API_VERSION in the env \
                 file) are refused; lower [api] version and the env file's DOCKER_API_VERSION, \
                 or upgrade the engine",
                self.range.ceiling
            ));
        }
        lines
    }
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
    let (projects, warnings) = crate::project::compile(&config.projects, &rules.pull)
        .with_context(|| format!("[projects] in {}", paths.config_file.display()))?;
    for line in warnings {
        eprintln!("{line}");
    }
    let mut settings = Settings::new(upstream, Policy::empty()).with_rules(rules);
    for project in projects {
        settings = settings.with_project(&project.name, project.list);
    }
    let mut settings = settings
        .with_api_version(config.api.version)
        .with_build_spool(vch_proxy::BuildSpool {
            dir: dir.to_owned(),
            limit: config.build.spool_limit,
        });
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
        TlsMode::TlsVerify => {
            // Written by `vch-admin client revoke`; re-read on every SIGHUP.
            let crl = dir.join(crate::client::CRL_FILE);
            settings.with_tls(server_tls_with_crl(
                &files("cert", &paths.cert)?,
                &files("key", &paths.key)?,
                Some(&files("ca", &paths.ca)?),
                crl.is_file().then_some(crl.as_path()),
            )?)
        }
        other => anyhow::bail!("TLS mode {other} is not supported by serve"),
    };
    let settings = settings.with_dns(&config.registry.dns)?;
    Ok((config, settings))
}

/// Writes the `record` field of audit events, one line each, to the audit sink.
pub(crate) struct AuditLayer {
    sink: Arc<AuditSink>,
}

impl AuditLayer {
    pub(crate) fn new(sink: Arc<AuditSink>) -> Self {
        AuditLayer { sink }
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
            let mut out = self.sink.lock();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u16) -> ApiVersion {
        ApiVersion::new(1, minor)
    }

    fn served(engine: Option<(u16, u16)>, pin: Option<u16>) -> Served {
        let engine = engine.map(|(min, max)| EngineApi {
            min: v(min),
            max: v(max),
        });
        let pin = pin.map(v);
        Served {
            range: ApiRange::new(engine, pin),
            engine,
            pin,
        }
    }

    #[test]
    fn the_range_line_names_the_engine_and_the_pin() {
        let docker_20_10 = Some((12, 41));
        assert_eq!(
            served(docker_20_10, None).describe(),
            "1.24 to 1.41 (engine 1.12 to 1.41)"
        );
        assert_eq!(
            served(docker_20_10, Some(25)).describe(),
            "1.24 to 1.25 (pinned to 1.25; engine 1.12 to 1.41)"
        );
        assert_eq!(
            served(None, None).describe(),
            "1.24 to 1.55 (engine not reachable yet)"
        );
        assert_eq!(
            served(Some((44, 52)), Some(25)).describe(),
            "none (pinned to 1.25; engine 1.44 to 1.52)"
        );
    }

    /// Rows: engine (min, max), pin, the start of each line printed.
    #[test]
    fn warnings_name_the_daemon_setting() {
        let host = "unix:///var/run/docker.sock";
        for (name, engine, pin, want) in [
            ("20.10", Some((12, 41)), None, &[][..]),
            ("20.10 pinned", Some((12, 41)), Some(25), &[]),
            (
                "29.0",
                Some((44, 52)),
                None,
                &["vch-admin: warning: the Docker engine refuses API versions below 1.44"],
            ),
            (
                "29.0 pinned to VIC",
                Some((44, 52)),
                Some(25),
                &[
                    "vch-admin: error: [api] version = \"1.25\" is below the Docker engine's minimum API version 1.44: every request will be refused",
                ],
            ),
            (
                "pin above the engine",
                Some((12, 41)),
                Some(44),
                &[
                    "vch-admin: warning: [api] version = \"1.44\" is above the newest version served (1.41",
                ],
            ),
            (
                "an engine newer than the audit",
                Some((56, 60)),
                None,
                &[
                    "vch-admin: error: the Docker engine's minimum API version 1.56 is above the newest",
                ],
            ),
            (
                "unreachable",
                None,
                None,
                &[
                    "vch-admin: warning: the Docker engine at unix:///var/run/docker.sock did not answer",
                ],
            ),
        ] {
            let lines = served(engine, pin).warnings(host);
            assert_eq!(lines.len(), want.len(), "{name}: {lines:?}");
            for (line, want) in lines.iter().zip(want) {
                assert!(line.starts_with(want), "{name}: {line}");
            }
        }
        let lines = served(Some((44, 52)), Some(25)).warnings(host);
        assert!(
            lines[0].contains(
                "DOCKER_MIN_API_VERSION=1.24 in dockerd's environment or \"min-api-version\": \
                 \"1.24\" in /etc/docker/daemon.json"
            ),
            "{lines:?}"
        );
    }
}
