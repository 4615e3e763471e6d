//! `regctl replicate …`: run, serve and status of replication rules.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use vch_registry::replicate::{
    CancelToken, Control, Outcome, Replicator, Rules, ServeOptions, StateData, StateStore,
};

use crate::settings::{Clients, TlsMode};

/// `regctl replicate …`.
#[derive(Debug, Subcommand)]
pub enum ReplicateCmd {
    /// Run the named rules (or every enabled rule) once; exit 1 when a job failed after its
    /// retries.
    Run {
        /// The rules file (TOML).
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
        /// Rules to run (default: every enabled rule).
        #[arg(value_name = "RULE")]
        names: Vec<String>,
    },
    /// Run scheduled rules on their schedule and `immediate` rules on the source registry's
    /// notifications (`POST /notify/<endpoint>`); SIGHUP reloads the rules, SIGTERM stops.
    Serve {
        /// The rules file (TOML).
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
        /// Address for the notification listener (`127.0.0.1:8750`).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Per rule and repository: the last run, result, images and bytes, errors.
    Status {
        /// The rules file (TOML); its state file is read.
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
    },
}

/// Runs one `replicate` command.
pub(crate) async fn run(cmd: ReplicateCmd, clients: &Clients, json: bool) -> anyhow::Result<()> {
    match cmd {
        ReplicateCmd::Run { rules, names } => {
            let rules = Rules::load(&rules).map_err(|e| crate::Usage(e.into()))?;
            let rep = Arc::new(replicator(rules, clients, None).await?);
            let summaries = rep.run(&names, &CancelToken::new()).await?;
            let failed: usize = summaries
                .iter()
                .map(|s| s.failed.len() + usize::from(s.error.is_some()))
                .sum();
            if json {
                let v: Vec<_> = summaries
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "rule": s.rule, "repositories": s.repositories,
                            "images": s.totals.images, "bytes": s.totals.bytes,
                            "unchanged": s.totals.unchanged, "deleted": s.totals.deleted,
                            "failed": s.failed.iter().map(|(r, e)| serde_json::json!({"repository": r, "error": e})).collect::<Vec<_>>(),
                            "error": s.error,
                        })
                    })
                    .collect();
                crate::print_json(&serde_json::json!(v))?;
            } else {
                let mut out = std::io::stdout().lock();
                for s in &summaries {
                    writeln!(
                        out,
                        "{}: {} repositories, {} images ({} bytes) replicated, {} unchanged, {} deleted, {} failed",
                        s.rule,
                        s.repositories,
                        s.totals.images,
                        s.totals.bytes,
                        s.totals.unchanged,
                        s.totals.deleted,
                        s.failed.len()
                    )?;
                }
            }
            for s in &summaries {
                if let Some(e) = &s.error {
                    eprintln!("regctl: rule {:?}: {e}", s.rule);
                }
                for (repo, e) in &s.failed {
                    eprintln!("regctl: rule {:?}, repository {repo}: {e}", s.rule);
                }
            }
            if failed > 0 {
                bail!(
                    "{failed} replication job(s) failed after their retries (see `regctl replicate status`)"
                );
            }
            Ok(())
        }
        ReplicateCmd::Serve { rules, listen } => serve(&rules, listen, clients).await,
        ReplicateCmd::Status { rules } => {
            let rules = Rules::load(&rules).map_err(|e| crate::Usage(e.into()))?;
            let state = StateData::read(&rules.state)?;
            if json {
                return crate::print_json(&serde_json::to_value(&state)?);
            }
            print_status(&rules, &state)
        }
    }
}

/// Binds the rules' endpoints to clients (regctl's settings and Docker credentials per host;
/// the endpoint's scheme and `verify_tls` decide the transport) and opens the state file
/// (or reuses `state`, on reload).
async fn replicator(
    rules: Rules,
    clients: &Clients,
    state: Option<Arc<StateStore>>,
) -> anyhow::Result<Replicator> {
    let mut bound = HashMap::new();
    for (name, ep) in &rules.endpoints {
        let tls = match (ep.plain_http, ep.verify_tls) {
            (true, _) => TlsMode::Disabled,
            (false, true) => TlsMode::Enabled,
            (false, false) => TlsMode::Insecure,
        };
        let client = clients
            .client_with(&ep.host, Some(tls))
            .await
            .with_context(|| format!("endpoint {name:?} ({})", ep.url))?;
        bound.insert(name.clone(), client);
    }
    let state = match state {
        Some(s) => {
            if s.path() != rules.state {
                tracing::warn!(kept = %s.path().display(), new = %rules.state.display(), "the state file cannot change on reload; restart to move it");
            }
            s
        }
        None => Arc::new(StateStore::open(&rules.state)?),
    };
    Ok(Replicator::new(rules, bound, state)?)
}

async fn serve(path: &Path, listen: SocketAddr, clients: &Clients) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rules = Rules::load(path).map_err(|e| crate::Usage(e.into()))?;
    let rep = Arc::new(replicator(rules, clients, None).await?);
    let state = rep.state().clone();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(vch_registry::replicate::serve(
        listener,
        rep,
        rx,
        ServeOptions::default(),
    ));
    eprintln!("regctl: replicating; notifications on http://{listen}/notify/<endpoint>");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let loaded = match Rules::load(path) {
                    Ok(rules) => replicator(rules, clients, Some(state.clone())).await,
                    Err(e) => Err(e.into()),
                };
                match loaded {
                    Ok(rep) => {
                        let _ = tx.send(Control::Reload(Arc::new(rep))).await;
                        eprintln!("regctl: rules reloaded from {}", path.display());
                    }
                    Err(e) => eprintln!("regctl: reload refused, the old rules stay: {e:#}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = tx.send(Control::Shutdown).await;
    server.await.context("the replication server panicked")??;
    eprintln!("regctl: replication stopped");
    Ok(())
}

fn when(secs: Option<u64>) -> String {
    let Some(secs) = secs else {
        return "never".into();
    };
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn print_status(rules: &Rules, state: &StateData) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "state: {}", rules.state.display())?;
    for rule in &rules.rules {
        let rs = state.rules.get(&rule.name).cloned().unwrap_or_default();
        writeln!(
            out,
            "rule {} ({} → {}, {}): last run {}, {}{}",
            rule.name,
            rule.from,
            rule.to,
            if rule.enabled { "enabled" } else { "disabled" },
            when(rs.last_run),
            outcome(rs.result),
            rs.last_error.map(|e| format!(": {e}")).unwrap_or_default(),
        )?;
        for (repo, st) in &rs.repositories {
            write!(
                out,
                "  {repo} → {}: {} at {}, {} images, {} bytes (total {} images, {} bytes), {} tags",
                st.destination,
                outcome(st.result),
                when(st.last_run),
                st.images,
                st.bytes,
                st.total_images,
                st.total_bytes,
                st.tags.len(),
            )?;
            if let Some(e) = &st.last_error {
                write!(out, "; error: {e}")?;
            }
            if let Some(at) = st.next_retry {
                write!(out, "; retry at {}", when(Some(at)))?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
        Outcome::Cancelled => "cancelled",
        _ => "never run",
    }
}
