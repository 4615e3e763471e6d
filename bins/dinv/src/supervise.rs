//! Running dockerd (and the policy front) until dockerd exits.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use rustix::process::{Pid, Signal, kill_process};
use tokio::signal::unix::{SignalKind, signal};
use vch_policy::{Policy, RegistryConfig};
use vch_proxy::{Listen, Options, Server, Settings, Upstream, server_tls};

use crate::certs::{self, Mode, TlsFiles};
use crate::command;
use crate::flags::Flags;

/// The environment variable a Docker 29 engine reads its oldest accepted API version from.
const MIN_API_ENV: &str = "DOCKER_MIN_API_VERSION";
/// What dinv sets it to: the oldest version the VCH serves.
const MIN_API_VERSION: &str = "1.24";

/// How long dockerd gets to stop after dinv itself gives up (the policy front died), before
/// SIGKILL: dockerd's own `--shutdown-timeout` (15 s) for containers, and some.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long open requests through the policy front may take once dockerd is gone.
pub const FRONT_GRACE: Duration = Duration::from_secs(5);

/// Prepares the TLS material, binds the policy front (if asked), starts dockerd and waits for
/// it, forwarding SIGINT, SIGTERM, SIGQUIT and SIGHUP. Returns dockerd's exit status (128 +
/// the signal if a signal ended it).
pub(crate) async fn supervise(flags: Flags, debug: bool) -> anyhow::Result<ExitCode> {
    tracing::debug!(?flags, "dinv starting");
    let tls = match (flags.tls, flags.tlsverify) {
        (_, true) => Some(Mode::TlsVerify),
        (true, false) => Some(Mode::Tls),
        _ => None,
    };
    let tls = match tls {
        Some(mode) => Some(prepare_tls(&flags, mode).await?),
        None => None,
    };
    let front = !flags.whitelist_registries.is_empty();
    // The front binds before dockerd starts: a bad certificate or a port in use fails the
    // start without a dockerd to clean up.
    let server = if front {
        Some(bind_front(&flags, tls.as_ref()).await?)
    } else {
        None
    };
    let args = command::dockerd_args(&flags, tls.as_ref(), debug, front);
    let program = flags.dockerd.display().to_string();
    println!("dinv: starting {}", command::display(&program, &args));

    // Watch the signals before dockerd exists, so none is lost in between.
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut quit = signal(SignalKind::quit()).context("cannot watch SIGQUIT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    // dockerd gets a process group of its own: a terminal's Ctrl-C reaches it once, through
    // dinv, rather than twice (dockerd force-quits on the third).
    let mut dockerd = tokio::process::Command::new(&flags.dockerd);
    // Docker 29 engines refuse clients below API 1.44 by default; the VCH clients DinV serves
    // speak 1.24 and 1.25 (the policy front serves from 1.24). Older engines ignore it; a value
    // in dinv's own environment is kept.
    if std::env::var_os(MIN_API_ENV).is_none() {
        dockerd.env(MIN_API_ENV, MIN_API_VERSION);
    }
    let mut child = dockerd
        .args(&args)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw)
        .context("dockerd has no process id")?;
    tracing::debug!(pid = pid.as_raw_nonzero().get(), "dockerd started");

    let (handle, mut front_task) = match server {
        Some(server) => (Some(server.handle()), Some(tokio::spawn(server.run()))),
        None => (None, None),
    };
    let forward = |sig: Signal, name: &str| {
        tracing::debug!(signal = name, "forwarding to dockerd");
        if let Err(e) = kill_process(pid, sig) {
            tracing::warn!(signal = name, error = %e, "cannot signal dockerd");
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("cannot wait for dockerd")?;
                eprintln!("dinv: dockerd exited: {status}");
                if let (Some(handle), Some(task)) = (handle, front_task) {
                    handle.shutdown();
                    if tokio::time::timeout(FRONT_GRACE + Duration::from_secs(1), task).await.is_err() {
                        tracing::warn!("the policy endpoint did not stop in time");
                    }
                }
                return Ok(exit_code(status));
            }
            _ = terminate.recv() => forward(Signal::TERM, "SIGTERM"),
            _ = interrupt.recv() => forward(Signal::INT, "SIGINT"),
            _ = quit.recv() => forward(Signal::QUIT, "SIGQUIT"),
            _ = hangup.recv() => forward(Signal::HUP, "SIGHUP"),
            ended = async {
                match front_task.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                let cause = match ended {
                    Ok(()) => "it stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                stop(&mut child, pid).await;
                anyhow::bail!("the policy endpoint failed ({cause}); dockerd was stopped");
            }
        }
    }
}

/// SIGTERM, [`STOP_GRACE`], then SIGKILL; always reaps.
async fn stop(child: &mut tokio::process::Child, pid: Pid) {
    let _ = kill_process(pid, Signal::TERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("dockerd did not stop in time: killing it");
        let _ = child.kill().await;
    }
}

/// dockerd's code, or 128 + the signal that ended it (as a shell reports it).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn prepare_tls(flags: &Flags, mode: Mode) -> anyhow::Result<TlsFiles> {
    let (files, report) = certs::prepare(&flags.certs, mode, flags.vic_ip.as_deref()).await?;
    for path in &report.written {
        println!("dinv: wrote {}", path.display());
    }
    if report.written.is_empty() {
        println!(
            "dinv: using the TLS material in {} as it is",
            flags.certs.display()
        );
    }
    if !report.server_names.is_empty() {
        println!(
            "dinv: the server certificate covers {}",
            report.server_names.join(", ")
        );
    }
    for note in &report.notes {
        println!("dinv: note: {note}");
    }
    Ok(files)
}

/// The VCH policy endpoint on the TCP port, with dockerd's TLS material, forwarding to
/// dockerd's unix socket. Insecure registries join the whitelist, as in `vch.toml`'s
/// `[registry]`.
async fn bind_front(flags: &Flags, tls: Option<&TlsFiles>) -> anyhow::Result<Server> {
    let config = RegistryConfig {
        whitelist: flags.whitelist_registries.clone(),
        insecure: flags.insecure_registries.clone(),
        ..RegistryConfig::default()
    };
    let rules = config
        .compile_rules(&flags.certs)
        .context("-whitelist-registry / -insecure-registry")?;
    let socket = command::engine_socket(flags);
    let upstream = Upstream::parse(&socket, None)?;
    let mut settings = Settings::new(upstream, Policy::empty()).with_rules(rules);
    if let Some(files) = tls {
        let config = server_tls(&files.cert, &files.key, files.verify.then_some(&*files.ca))
            .context("the policy endpoint's TLS material")?;
        settings = settings.with_tls(config);
    }
    let settings = settings.with_dns(&config.dns)?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, flags.tcp_port()));
    let options = Options {
        shutdown_grace: FRONT_GRACE,
        ..Options::default()
    };
    let server = Server::bind(&[Listen::Tcp(addr)], settings, options)
        .await
        .context("cannot start the policy endpoint")?;
    let mode = match tls {
        Some(TlsFiles { verify: true, .. }) => "tlsverify",
        Some(_) => "tls",
        None => "plain HTTP",
    };
    println!(
        "dinv: policy endpoint on {} ({mode}) for dockerd at {socket}; registries allowed: {}",
        server.local_addrs().join(", "),
        config
            .whitelist
            .iter()
            .chain(&config.insecure)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(server)
}
