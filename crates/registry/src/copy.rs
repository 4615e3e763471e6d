//! Copying an image between repositories and registries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::body::{Checkpoints, ProgressHook};
use crate::client::{Client, Mount};
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest, Platform};
use crate::reference::{Digest, Reference};

/// Default number of blobs copied at once.
///
/// Chosen by measurement (crates/registry/README.md, "Performance"): between two local
/// Distribution registries on a 2-core host, 2 to 16 parallel blobs lie within a few percent
/// of one another in a single run; across runs 8 was the best or close to it, while 16 gained
/// at most 10 % for twice the memory (about 40 MiB peak).
pub const DEFAULT_CONCURRENCY: usize = 8;
/// First retry delay of a blob; doubles each attempt.
const BACKOFF: Duration = Duration::from_millis(250);
/// Attempts per blob.
const BLOB_ATTEMPTS: u32 = 4;
/// Resumes of one upload session from the registry's `Range` before the blob is retried from
/// scratch.
const RESUMES: u32 = 4;

/// What happened to a blob during a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobOutcome {
    /// The target already had it (`HEAD` answered 200).
    Skipped,
    /// Linked from another repository of the same registry.
    Mounted,
    /// Streamed from the source.
    Copied,
}

/// Progress of a copy, for progress bars.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CopyEvent {
    /// A blob starts.
    BlobStarted {
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// A blob is in the target.
    BlobDone {
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
        /// How it got there.
        outcome: BlobOutcome,
    },
    /// Bytes of a blob being streamed have been read from the source: at most every 100 ms
    /// per blob, and once with `bytes == size` when the source has been read and verified
    /// (so every copied blob has at least one). After a [`CopyEvent::BlobResumed`] the
    /// offset may go back to where the resumed stream starts hashing.
    BlobProgress {
        /// Its digest.
        digest: String,
        /// Bytes read so far.
        bytes: u64,
        /// Its size.
        size: u64,
    },
    /// A blob upload broke and continues from the registry's offset.
    BlobResumed {
        /// Its digest.
        digest: String,
        /// The offset the registry reported (bytes it already holds).
        offset: u64,
    },
    /// A manifest was pushed.
    ManifestPushed {
        /// Its digest.
        digest: String,
    },
}

/// A progress callback.
pub type Progress = Arc<dyn Fn(&CopyEvent) + Send + Sync>;

/// Names a repository of the target registry that holds a blob (by digest), so a blob the
/// target repository lacks is mounted from there instead of streamed from the source.
pub type MountHint = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How to copy.
#[derive(Clone)]
#[must_use]
pub struct CopyOptions {
    platform: Option<Platform>,
    concurrency: usize,
    progress: Option<Progress>,
    referrers: bool,
    mount_hint: Option<MountHint>,
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("platform", &self.platform)
            .field("concurrency", &self.concurrency)
            .field("referrers", &self.referrers)
            .finish_non_exhaustive()
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            platform: None,
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
            referrers: false,
            mount_hint: None,
        }
    }
}

impl CopyOptions {
    /// Copies only this platform of an index (the target tag then names that platform's
    /// manifest). Without it, an index is copied whole.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Blobs copied at once (default [`DEFAULT_CONCURRENCY`], at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Calls `progress` as blobs and manifests complete.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Asks `hint` where the target registry already holds a blob the target repository
    /// lacks; a hinted blob is mounted from there (a cross-repository mount; the registry
    /// may still refuse, and the blob is then streamed). Replication passes the
    /// repositories it wrote earlier.
    pub fn mount_hint(mut self, hint: MountHint) -> Self {
        self.mount_hint = Some(hint);
        self
    }

    /// Also copies the referrers (OCI 1.1: signatures, SBOMs, any manifest whose `subject`
    /// is one of the copied manifests), after the image, and their referrers in turn
    /// (default off, as regctl's `image copy` without `--referrers`).
    pub fn referrers(mut self, on: bool) -> Self {
        self.referrers = on;
        self
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Digest of the manifest the target reference now names.
    pub digest: String,
    /// Media type of that manifest.
    pub media_type: String,
    /// Blobs streamed.
    pub copied: usize,
    /// Blobs mounted.
    pub mounted: usize,
    /// Blobs already present.
    pub skipped: usize,
    /// Uploads resumed from the registry's offset after a failure.
    pub resumed: usize,
    /// Bytes streamed.
    pub bytes: u64,
    /// Referrer manifests copied (with [`CopyOptions::referrers`]).
    pub referrers: usize,
}

struct Side<'a> {
    client: &'a Client,
    repo: &'a str,
}

/// Copies `src_ref` from `src` to `dst_ref` on `dst`.
///
/// Rules: every blob is checked with `HEAD` first; within one registry blobs are mounted;
/// otherwise they stream from source to target without temporary files, verified against
/// their digests as they pass (a corrupt source blob fails its upload before the last
/// bytes are sent). A manifest is pushed only after all its blobs (and an index only after
/// all its manifests), so the target never shows a partial image. Blobs retry with backoff
/// on connection errors, 5xx, 429 (honouring `Retry-After`) and 401 (an expired token is
/// refreshed); an upload that breaks mid-way resumes from the session's `Range` where the
/// registry still has the session (see the crate docs).
///
/// With [`CopyOptions::referrers`], the referrers of every manifest copied (found with
/// [`Client::referrers`] on the source: its API, else its tag schema) are copied next, each
/// pushed by digest after its subject; the target indexes them (its referrers API, else
/// the `sha256-<hex>` tag that [`Client::manifest_put`] updates).
///
/// # Errors
/// The first blob or manifest error; [`Error::NoPlatform`] when the platform is missing.
pub async fn copy_image(
    src: &Client,
    src_ref: &Reference,
    dst: &Client,
    dst_ref: &Reference,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let from = Side {
        client: src,
        repo: &src_ref.repository,
    };
    let to = Side {
        client: dst,
        repo: &dst_ref.repository,
    };
    let target = dst_ref
        .tag
        .clone()
        .or_else(|| dst_ref.digest.as_ref().map(ToString::to_string))
        .unwrap_or_else(|| "latest".to_owned());
    let top = src.manifest_get(from.repo, &src_ref.target()).await?;
    let mut report = CopyReport::default();
    let mut copied = Vec::new();
    let chosen = match (&options.platform, top.decode()?) {
        (Some(platform), index @ Manifest::Index { .. }) => {
            let desc = index.select_platform(platform, &src_ref.to_string())?;
            src.manifest_get(from.repo, &desc.digest).await?
        }
        _ => top,
    };
    report.media_type.clone_from(&chosen.media_type);
    let digest = copy_manifest(
        &from,
        &to,
        chosen,
        &target,
        options,
        &mut report,
        &mut copied,
    )
    .await?;
    report.digest = digest.to_string();
    if options.referrers {
        copy_referrers(&from, &to, copied, options, &mut report).await?;
    }
    Ok(report)
}

/// Copies the referrers of each manifest in `subjects` (all copied already), then theirs.
async fn copy_referrers(
    from: &Side<'_>,
    to: &Side<'_>,
    subjects: Vec<Digest>,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<()> {
    let mut queue = std::collections::VecDeque::from(subjects);
    let mut seen = std::collections::HashSet::new();
    while let Some(subject) = queue.pop_front() {
        let referrers = from.client.referrers(from.repo, &subject, None).await?;
        for desc in referrers.manifests {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            let manifest = from.client.manifest_get(from.repo, &desc.digest).await?;
            tracing::debug!(%subject, referrer = desc.digest, "copying a referrer");
            // Pushed by digest: the target's `manifest_put` indexes it under the subject
            // (the tag schema where the target has no referrers API).
            let mut more = Vec::new();
            copy_manifest(from, to, manifest, &desc.digest, options, report, &mut more).await?;
            report.referrers += 1;
            // A signature of an SBOM refers to the SBOM.
            queue.extend(more);
        }
    }
    Ok(())
}

/// Copies an image manifest, or an index with every manifest it lists, under `target`; the
/// digest pushed there. Every manifest copied (children and the index) goes to `copied`.
async fn copy_manifest(
    from: &Side<'_>,
    to: &Side<'_>,
    manifest: crate::client::FetchedManifest,
    target: &str,
    options: &CopyOptions,
    report: &mut CopyReport,
    copied: &mut Vec<Digest>,
) -> Result<Digest> {
    let Manifest::Index { manifests, .. } = manifest.decode()? else {
        let digest = copy_one(from, to, manifest, target, options, report).await?;
        copied.push(digest.clone());
        return Ok(digest);
    };
    for desc in &manifests {
        let child = from.client.manifest_get(from.repo, &desc.digest).await?;
        let digest = child.digest.to_string();
        copied.push(copy_one(from, to, child, &digest, options, report).await?);
    }
    let digest = push_manifest(to, target, manifest, options).await?;
    copied.push(digest.clone());
    Ok(digest)
}

/// Pushes a manifest under `target` and reports it.
async fn push_manifest(
    to: &Side<'_>,
    target: &str,
    manifest: crate::client::FetchedManifest,
    options: &CopyOptions,
) -> Result<Digest> {
    let digest = to
        .client
        .manifest_put(to.repo, target, &manifest.media_type, manifest.bytes)
        .await?;
    emit(
        options,
        &CopyEvent::ManifestPushed {
            digest: digest.to_string(),
        },
    );
    Ok(digest)
}

fn emit(options: &CopyOptions, event: &CopyEvent) {
    if let Some(p) = &options.progress {
        p(event);
    }
}

/// A stream hook that reports [`CopyEvent::BlobProgress`], when anyone listens.
fn progress_hook(options: &CopyOptions, blob: Blob<'_>) -> Option<ProgressHook> {
    let progress = options.progress.clone()?;
    let (digest, size) = (blob.digest.to_string(), blob.size);
    Some(Arc::new(move |bytes| {
        progress(&CopyEvent::BlobProgress {
            digest: digest.clone(),
            bytes,
            size,
        });
    }))
}

/// Copies an image manifest's blobs, then the manifest under `target`; its digest.
async fn copy_one(
    from: &Side<'_>,
    to: &Side<'_>,
    manifest: crate::client::FetchedManifest,
    target: &str,
    options: &CopyOptions,
    report: &mut CopyReport,
) -> Result<Digest> {
    let decoded = manifest.decode()?;
    if let Manifest::Index { .. } = decoded {
        return Err(Error::Manifest {
            reference: manifest.digest.to_string(),
            reason: "nested indexes are not copied".into(),
        });
    }
    let blobs: Vec<Descriptor> = decoded.blobs().into_iter().cloned().collect();
    let sem = Arc::new(Semaphore::new(options.concurrency));
    let mut tasks = JoinSet::new();
    for desc in blobs {
        let sem = sem.clone();
        let (src, dst) = (from.client.clone(), to.client.clone());
        let (src_repo, dst_repo) = (from.repo.to_owned(), to.repo.to_owned());
        let options = options.clone();
        tasks.spawn(async move {
            let _permit = sem
                .acquire_owned()
                .await
                .map_err(|_| Error::Unreachable("the copy semaphore closed"))?;
            emit(
                &options,
                &CopyEvent::BlobStarted {
                    digest: desc.digest.clone(),
                    size: desc.size,
                },
            );
            let (outcome, resumed) =
                copy_blob(&src, &src_repo, &dst, &dst_repo, &desc, &options).await?;
            emit(
                &options,
                &CopyEvent::BlobDone {
                    digest: desc.digest.clone(),
                    size: desc.size,
                    outcome,
                },
            );
            Ok::<_, Error>((outcome, desc.size, resumed))
        });
    }
    // The first failure aborts the rest (dropping the JoinSet cancels its tasks).
    while let Some(joined) = tasks.join_next().await {
        let (outcome, size, resumed) =
            joined.map_err(|_| Error::Unreachable("a blob copy task panicked"))??;
        report.resumed += resumed;
        match outcome {
            BlobOutcome::Copied => {
                report.copied += 1;
                report.bytes += size;
            }
            BlobOutcome::Mounted => report.mounted += 1,
            BlobOutcome::Skipped => report.skipped += 1,
        }
    }
    push_manifest(to, target, manifest, options).await
}

/// Copies one blob, with retries; the outcome and how many times its upload resumed.
async fn copy_blob(
    src: &Client,
    src_repo: &str,
    dst: &Client,
    dst_repo: &str,
    desc: &Descriptor,
    options: &CopyOptions,
) -> Result<(BlobOutcome, usize)> {
    let digest = Digest::parse(&desc.digest)?;
    let mut attempt = 0;
    let mut resumed = 0;
    loop {
        attempt += 1;
        let blob = Blob {
            digest: &digest,
            size: desc.size,
        };
        match copy_blob_once(src, src_repo, dst, dst_repo, blob, options, &mut resumed).await {
            Ok(outcome) => return Ok((outcome, resumed)),
            Err(e) if attempt < BLOB_ATTEMPTS && (e.is_retryable() || e.status() == Some(401)) => {
                let wait = e.retry_after().unwrap_or(BACKOFF * 2u32.pow(attempt - 1));
                tracing::info!(%digest, error = %e, ?wait, attempt, "blob copy failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Clone, Copy)]
struct Blob<'a> {
    digest: &'a Digest,
    size: u64,
}

async fn copy_blob_once(
    src: &Client,
    src_repo: &str,
    dst: &Client,
    dst_repo: &str,
    blob: Blob<'_>,
    options: &CopyOptions,
    resumed: &mut usize,
) -> Result<BlobOutcome> {
    let digest = blob.digest;
    if dst.blob_head(dst_repo, digest).await?.is_some() {
        return Ok(BlobOutcome::Skipped);
    }
    let hinted = options
        .mount_hint
        .as_ref()
        .and_then(|hint| hint(digest.as_str()))
        .filter(|repo| repo != dst_repo);
    let mount_from = if src.same_registry(dst) && src_repo != dst_repo {
        Some(src_repo.to_owned())
    } else {
        hinted
    };
    let session = match mount_from {
        Some(from) => match dst.mount(dst_repo, &from, digest).await? {
            Mount::Mounted => return Ok(BlobOutcome::Mounted),
            Mount::Upload(session) => session,
        },
        None => dst.upload_start(dst_repo).await?,
    };
    let checkpoints = Checkpoints::new(digest);
    let hook = progress_hook(options, blob);
    let mut stream = src
        .blob_get(src_repo, digest)
        .await?
        .with_checkpoints(checkpoints.clone());
    if let Some(hook) = &hook {
        stream = stream.with_progress(hook.clone());
    }
    let mut current = session;
    let mut offset = 0;
    let mut resumes = 0;
    loop {
        let err = match dst
            .upload_put_stream_at(&current, digest, offset, blob.size, stream)
            .await
        {
            Ok(()) => return Ok(BlobOutcome::Copied),
            Err(e) if e.is_retryable() && resumes < RESUMES => e,
            Err(e) => return Err(e),
        };
        resumes += 1;
        // Where is the registry? A session that is gone fails the blob into a fresh upload
        // (the retry below). Distribution (2.8) is such a registry after a broken request:
        // its session location carries a signed offset, and when the bytes it holds differ
        // from it (a request that broke after writing some) it cancels the session.
        let status = match dst.upload_status(&current).await {
            Ok(s) if s.offset <= blob.size => s,
            Ok(s) => {
                tracing::info!(%digest, offset = s.offset, "the registry holds more than the blob");
                return Err(err);
            }
            Err(status_err) => {
                tracing::info!(%digest, error = %status_err, "upload session gone; starting over");
                return Err(err);
            }
        };
        offset = status.offset;
        current = status;
        if offset == blob.size {
            // Every byte landed (and passed verification: the stream releases its last
            // bytes only then); only the commit was lost.
            dst.upload_finish(&current, digest).await?;
            return Ok(BlobOutcome::Copied);
        }
        let Some(checkpoint) = checkpoints.at_or_before(offset) else {
            return Err(err);
        };
        tracing::info!(%digest, error = %err, offset, "upload broke; resuming from the registry's range");
        emit(
            options,
            &CopyEvent::BlobResumed {
                digest: digest.to_string(),
                offset,
            },
        );
        *resumed += 1;
        stream = src
            .blob_get_resumed(src_repo, digest, blob.size, checkpoint, offset)
            .await?;
        if let Some(hook) = &hook {
            stream = stream.with_progress(hook.clone());
        }
    }
}
