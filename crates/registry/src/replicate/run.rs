//! Replicating repositories: planning against the destination, copying, deletions, retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::rules::{Rule, Rules};
use super::state::{Outcome, StateStore, now_secs};
use crate::client::Client;
use crate::copy::{CopyEvent, CopyOptions, copy_image};
use crate::error::{Error, Result};
use crate::reference::{Digest, Reference};

/// Page size for catalog and tag listings.
const PAGE: u32 = 1000;

/// Stops jobs at the next image boundary (a rule disabled or removed, a shutdown).
#[derive(Clone, Debug)]
pub struct CancelToken(Arc<watch::Sender<bool>>);

impl Default for CancelToken {
    fn default() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
}

impl CancelToken {
    /// A token not cancelled yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every holder.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether it was cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// What one repository job did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepoReport {
    /// Images (tags) pushed.
    pub images: u64,
    /// Blob bytes streamed.
    pub bytes: u64,
    /// Tags already identical at the destination.
    pub unchanged: u64,
    /// Tags (or manifests) deleted at the destination.
    pub deleted: u64,
}

/// What a rule's pass did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RuleSummary {
    /// The rule.
    pub rule: String,
    /// Repositories in scope.
    pub repositories: usize,
    /// Summed over its repositories.
    pub totals: RepoReport,
    /// Repositories that failed after their retries, with the last error.
    pub failed: Vec<(String, String)>,
    /// A failure of the whole pass (listing the source).
    pub error: Option<String>,
}

impl RuleSummary {
    /// Whether everything replicated.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.error.is_none()
    }
}

/// Replicates the repositories of a set of rules, with one client per endpoint and one
/// state file. Cheap to share (`Arc`); jobs of different repositories run in parallel.
#[derive(Debug)]
pub struct Replicator {
    rules: Rules,
    clients: HashMap<String, Client>,
    state: Arc<StateStore>,
    /// (destination endpoint, destination repository) → the rule writing it.
    claims: Mutex<HashMap<(String, String), String>>,
    /// (destination endpoint, blob digest) → a destination repository holding it, learnt
    /// from this process's copies: later repositories mount those blobs.
    blobs: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl Replicator {
    /// Binds rules to clients (one per endpoint name) and a locked state file.
    ///
    /// # Errors
    /// [`Error::Rules`] when an endpoint has no client.
    pub fn new(
        rules: Rules,
        clients: HashMap<String, Client>,
        state: Arc<StateStore>,
    ) -> Result<Self> {
        if let Some(name) = rules.endpoints.keys().find(|n| !clients.contains_key(*n)) {
            return Err(Error::Rules {
                file: rules.state.display().to_string(),
                item: format!("endpoint {name:?}"),
                reason: "no client was configured for it".into(),
            });
        }
        Ok(Self {
            rules,
            clients,
            state,
            claims: Mutex::new(HashMap::new()),
            blobs: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Copy options for one destination repository: blobs the destination registry holds
    /// in another repository (seen by this process) are mounted from there.
    fn copy_options(&self, to: &str, dest: &str) -> CopyOptions {
        let (known, seen) = (self.blobs.clone(), self.blobs.clone());
        let (to_hint, to_seen, dest) = (to.to_owned(), to.to_owned(), dest.to_owned());
        CopyOptions::default()
            .mount_hint(Arc::new(move |digest| {
                let known = known.lock().ok()?;
                known.get(&(to_hint.clone(), digest.to_owned())).cloned()
            }))
            .progress(Arc::new(move |event| {
                if let CopyEvent::BlobDone { digest, .. } = event
                    && let Ok(mut seen) = seen.lock()
                {
                    seen.entry((to_seen.clone(), digest.clone()))
                        .or_insert_with(|| dest.clone());
                }
            }))
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The state file.
    #[must_use]
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    fn client(&self, endpoint: &str) -> Result<&Client> {
        self.clients.get(endpoint).ok_or(Error::Unreachable(
            "a rule names an endpoint without a client",
        ))
    }

    /// The source repositories in the rule's scope: the catalog filtered, plus repositories
    /// the state knows that still match (gone at the source: their tags are deletions).
    ///
    /// # Errors
    /// Listing the source catalog.
    pub async fn repositories(&self, rule: &Rule) -> Result<Vec<String>> {
        let src = self.client(&rule.from)?;
        let mut repos: Vec<String> = src
            .catalog(Some(PAGE))
            .await?
            .into_iter()
            .filter(|r| rule.repositories.matches(r))
            .collect();
        let known = self
            .state
            .snapshot()
            .rules
            .remove(&rule.name)
            .map(|r| r.repositories)
            .unwrap_or_default();
        for repo in known.into_keys() {
            if rule.repositories.matches(&repo) && !repos.contains(&repo) {
                repos.push(repo);
            }
        }
        repos.sort();
        Ok(repos)
    }

    /// Refuses a destination another rule of this process writes.
    fn claim(&self, rule: &Rule, dest: &str) -> Result<()> {
        let mut claims = self
            .claims
            .lock()
            .map_err(|_| Error::Unreachable("the claims lock is poisoned"))?;
        let key = (rule.to.clone(), dest.to_owned());
        match claims.get(&key) {
            Some(other) if *other != rule.name => Err(Error::Replication {
                rule: rule.name.clone(),
                repository: dest.to_owned(),
                reason: format!(
                    "destination {}/{dest} is also written by rule {other:?}; refusing both",
                    rule.to
                ),
            }),
            _ => {
                claims.insert(key, rule.name.clone());
                Ok(())
            }
        }
    }

    /// One attempt at one repository: copies what the destination lacks, propagates
    /// deletions when the rule says so, and records the outcome in the state file
    /// (failures count up and set `next_retry` from the retry settings).
    ///
    /// # Errors
    /// The first failure; [`Error::Replication`] for a conflicting destination or a cancel.
    pub async fn sync_repository(
        &self,
        rule: &Rule,
        repo: &str,
        cancel: &CancelToken,
    ) -> Result<RepoReport> {
        let dest = rule.destination(repo);
        let started = now_secs();
        let mut tags = self.state.repo(&rule.name, repo).tags;
        let result = match self.claim(rule, &dest) {
            Ok(()) => self.sync_inner(rule, repo, &dest, &mut tags, cancel).await,
            Err(e) => Err(e),
        };
        let retry = self.rules.retry;
        self.state.update(|data| {
            let entry = data
                .rules
                .entry(rule.name.clone())
                .or_default()
                .repositories
                .entry(repo.to_owned())
                .or_default();
            entry.destination.clone_from(&dest);
            entry.tags = tags;
            let end = now_secs();
            entry.last_run = Some(end);
            match &result {
                Ok(r) => {
                    entry.result = Outcome::Ok;
                    entry.last_success = Some(end);
                    entry.images = r.images;
                    entry.bytes = r.bytes;
                    entry.deleted = r.deleted;
                    entry.total_images += r.images;
                    entry.total_bytes += r.bytes;
                    entry.last_error = None;
                    entry.failures = 0;
                    entry.next_retry = None;
                }
                Err(e) if cancel.is_cancelled() => {
                    entry.result = Outcome::Cancelled;
                    entry.last_error = Some(e.to_string());
                    entry.next_retry = Some(end);
                }
                Err(e) => {
                    entry.result = Outcome::Failed;
                    entry.last_error = Some(e.to_string());
                    entry.failures += 1;
                    entry.next_retry =
                        Some(started.max(end) + retry.delay(entry.failures).as_secs());
                }
            }
        })?;
        result
    }

    async fn sync_inner(
        &self,
        rule: &Rule,
        repo: &str,
        dest: &str,
        replicated: &mut BTreeMap<String, String>,
        cancel: &CancelToken,
    ) -> Result<RepoReport> {
        let src = self.client(&rule.from)?;
        let dst = self.client(&rule.to)?;
        let mut report = RepoReport::default();
        let copy = self.copy_options(&rule.to, dest);
        let source_tags = match src.tags(repo, Some(PAGE)).await {
            Ok(t) => t,
            // The repository is gone at the source: every tag of it was deleted.
            Err(e) if e.status() == Some(404) => Vec::new(),
            Err(e) => return Err(e),
        };
        let present: HashSet<&str> = source_tags.iter().map(String::as_str).collect();
        let mut wanted: Vec<&str> = source_tags
            .iter()
            .map(String::as_str)
            .filter(|t| rule.tags.matches(t))
            .collect();
        wanted.sort_unstable();
        for tag in wanted {
            if cancel.is_cancelled() {
                return Err(cancelled(rule, repo));
            }
            let Some(digest) = head_digest(src, repo, tag).await? else {
                continue; // deleted since the listing
            };
            if head_digest(dst, dest, tag).await?.as_ref() == Some(&digest) {
                replicated.insert(tag.to_owned(), digest.to_string());
                report.unchanged += 1;
                continue;
            }
            let from = Reference {
                registry: src.host().to_owned(),
                repository: repo.to_owned(),
                tag: Some(tag.to_owned()),
                digest: None,
            };
            let to = Reference {
                registry: dst.host().to_owned(),
                repository: dest.to_owned(),
                tag: Some(tag.to_owned()),
                digest: None,
            };
            let copied = copy_image(src, &from, dst, &to, &copy).await?;
            tracing::info!(rule = rule.name, %from, %to, digest = copied.digest, bytes = copied.bytes, "replicated");
            report.images += 1;
            report.bytes += copied.bytes;
            replicated.insert(tag.to_owned(), copied.digest);
            // Checkpoint: a crash after this point does not lose the record of the push.
            let snapshot = replicated.clone();
            self.state.update(|data| {
                data.rules
                    .entry(rule.name.clone())
                    .or_default()
                    .repositories
                    .entry(repo.to_owned())
                    .or_default()
                    .tags = snapshot;
            })?;
        }
        let gone: Vec<(String, String)> = replicated
            .iter()
            .filter(|(t, _)| !present.contains(t.as_str()))
            .map(|(t, d)| (t.clone(), d.clone()))
            .collect();
        for (tag, digest) in gone {
            if cancel.is_cancelled() {
                return Err(cancelled(rule, repo));
            }
            if rule.deletions && rule.tags.matches(&tag) {
                report.deleted += u64::from(
                    self.delete(src, repo, dst, dest, &tag, &digest, replicated)
                        .await?,
                );
            }
            replicated.remove(&tag);
        }
        Ok(report)
    }

    /// Deletes `dest:tag` when it still names the digest this rule put there: the manifest
    /// too when the source no longer has it and no other destination tag names it, else
    /// only the tag. Whether something was deleted.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    async fn delete(
        &self,
        src: &Client,
        repo: &str,
        dst: &Client,
        dest: &str,
        tag: &str,
        digest: &str,
        replicated: &BTreeMap<String, String>,
    ) -> Result<bool> {
        match head_digest(dst, dest, tag).await? {
            Some(d) if d.as_str() == digest => {}
            Some(other) => {
                tracing::warn!(dest, tag, %other, ours = digest, "the destination tag was moved by someone else; left alone");
                return Ok(false);
            }
            None => return Ok(false),
        }
        let source_has_it = src.manifest_head(repo, digest).await?.is_some();
        let mut shared = source_has_it;
        if !shared {
            // Deleting by digest untags every tag naming it (Distribution 2.7+): only when
            // no other destination tag does.
            for other in dst.tags(dest, Some(PAGE)).await? {
                if other == tag {
                    continue;
                }
                let names_it = match replicated.get(&other) {
                    Some(d) => d == digest,
                    None => head_digest(dst, dest, &other)
                        .await?
                        .is_some_and(|d| d.as_str() == digest),
                };
                if names_it {
                    shared = true;
                    break;
                }
            }
        }
        if shared {
            dst.tag_delete(dest, tag).await?;
            tracing::info!(dest, tag, "deleted the tag at the destination");
        } else {
            dst.manifest_delete(dest, digest).await?;
            tracing::info!(dest, tag, digest, "deleted the manifest at the destination");
        }
        Ok(true)
    }

    /// A repository with retries (backoff from the rules file, `attempts` in all; `None`:
    /// the file's `[retry] attempts`); stops early when cancelled.
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn sync_with_retries(
        &self,
        rule: &Rule,
        repo: &str,
        attempts: Option<u32>,
        cancel: &CancelToken,
    ) -> Result<RepoReport> {
        let attempts = attempts.unwrap_or(self.rules.retry.attempts).max(1);
        let mut failures = 0;
        loop {
            match self.sync_repository(rule, repo, cancel).await {
                Ok(r) => return Ok(r),
                Err(e) if failures + 1 >= attempts || cancel.is_cancelled() || is_conflict(&e) => {
                    return Err(e);
                }
                Err(e) => {
                    failures += 1;
                    let wait = self.rules.retry.delay(failures);
                    tracing::warn!(rule = rule.name, repo, error = %e, ?wait, failures, "replication failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => return Err(e),
                    }
                }
            }
        }
    }

    /// One pass over a rule: lists its repositories (with retries) and replicates them,
    /// `rule.concurrency` at a time, each with retries.
    pub async fn run_rule(self: &Arc<Self>, rule: &Rule, cancel: &CancelToken) -> RuleSummary {
        let started = now_secs();
        let mut summary = RuleSummary {
            rule: rule.name.clone(),
            ..RuleSummary::default()
        };
        let mut failures = 0;
        let repos = loop {
            match self.repositories(rule).await {
                Ok(r) => break Some(r),
                Err(e) if failures + 1 >= self.rules.retry.attempts || cancel.is_cancelled() => {
                    summary.error = Some(format!("listing the source repositories: {e}"));
                    break None;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(rule = rule.name, error = %e, "listing failed; retrying");
                    tokio::time::sleep(self.rules.retry.delay(failures)).await;
                }
            }
        };
        if let Some(repos) = repos {
            summary.repositories = repos.len();
            let sem = Arc::new(Semaphore::new(rule.concurrency));
            let mut jobs = JoinSet::new();
            for repo in repos {
                // The permit is taken here, not in the task: repositories start in catalog
                // order (tasks race for a permit), which makes runs repeatable.
                let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
                    break;
                };
                let (me, rule, cancel) = (self.clone(), rule.clone(), cancel.clone());
                jobs.spawn(async move {
                    let _permit = permit;
                    let r = me.sync_with_retries(&rule, &repo, None, &cancel).await;
                    (repo, r)
                });
            }
            while let Some(joined) = jobs.join_next().await {
                match joined {
                    Ok((_, Ok(r))) => {
                        summary.totals.images += r.images;
                        summary.totals.bytes += r.bytes;
                        summary.totals.unchanged += r.unchanged;
                        summary.totals.deleted += r.deleted;
                    }
                    Ok((repo, Err(e))) => summary.failed.push((repo, e.to_string())),
                    Err(e) => summary.failed.push(("?".into(), e.to_string())),
                }
            }
            summary.failed.sort();
        }
        let ok = summary.ok();
        let error = summary.error.clone().or_else(|| {
            summary
                .failed
                .first()
                .map(|(repo, e)| format!("{repo}: {e}"))
        });
        let recorded = self.state.update(|data| {
            let r = data.rules.entry(rule.name.clone()).or_default();
            r.last_run = Some(started);
            r.result = if ok { Outcome::Ok } else { Outcome::Failed };
            r.last_error = error;
        });
        if let Err(e) = recorded {
            summary.error.get_or_insert(e.to_string());
        }
        summary
    }

    /// Runs the named rules (or, with none named, every enabled rule) once.
    ///
    /// # Errors
    /// [`Error::Rules`] for a name the file does not have.
    pub async fn run(
        self: &Arc<Self>,
        names: &[String],
        cancel: &CancelToken,
    ) -> Result<Vec<RuleSummary>> {
        let selected: Vec<Rule> = if names.is_empty() {
            self.rules
                .rules
                .iter()
                .filter(|r| r.enabled)
                .cloned()
                .collect()
        } else {
            names
                .iter()
                .map(|n| {
                    self.rules.rule(n).cloned().ok_or_else(|| Error::Rules {
                        file: "the command line".into(),
                        item: format!("rule {n:?}"),
                        reason: "no rule has this name".into(),
                    })
                })
                .collect::<Result<_>>()?
        };
        let mut out = Vec::new();
        for rule in &selected {
            out.push(self.run_rule(rule, cancel).await);
        }
        Ok(out)
    }
}

fn cancelled(rule: &Rule, repo: &str) -> Error {
    Error::Replication {
        rule: rule.name.clone(),
        repository: repo.to_owned(),
        reason: "cancelled".into(),
    }
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Replication { reason, .. } if reason.contains("also written by rule"))
}

/// The digest a tag names, `None` when the tag does not exist; a registry that omits
/// `Docker-Content-Digest` on `HEAD` costs a `GET`.
async fn head_digest(client: &Client, repo: &str, tag: &str) -> Result<Option<Digest>> {
    match client.manifest_head(repo, tag).await {
        Ok(Some(h)) => match h.digest {
            Some(d) => Ok(Some(d)),
            None => Ok(Some(client.manifest_get(repo, tag).await?.digest)),
        },
        Ok(None) => Ok(None),
        // A repository that does not exist yet at the destination.
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}
