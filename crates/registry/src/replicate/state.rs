//! The state file: per rule and repository what was replicated, written atomically and held
//! by one process at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Format version written in the file.
const VERSION: u32 = 1;

/// How a job ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// Not run yet.
    #[default]
    Never,
    /// Everything in scope replicated.
    Ok,
    /// Failed; `next_retry` says when it runs again.
    Failed,
    /// Stopped before the end (rule disabled, shutdown); runs again later.
    Cancelled,
}

/// What is known of one source repository under one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RepoState {
    /// The destination repository.
    pub destination: String,
    /// Last job's end, seconds since the epoch.
    pub last_run: Option<u64>,
    /// Last successful job's end.
    pub last_success: Option<u64>,
    /// Last job's outcome.
    pub result: Outcome,
    /// Images (tags) pushed by the last job.
    pub images: u64,
    /// Blob bytes streamed by the last job.
    pub bytes: u64,
    /// Images pushed since the state file began.
    pub total_images: u64,
    /// Bytes streamed since the state file began.
    pub total_bytes: u64,
    /// Tags deleted at the destination by the last job.
    pub deleted: u64,
    /// The last error, until a job succeeds.
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When a failed job runs again (seconds since the epoch).
    pub next_retry: Option<u64>,
    /// Tag → digest this rule pushed (or found identical) at the destination: only these are
    /// ever deleted there.
    pub tags: BTreeMap<String, String>,
}

/// What is known of one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RuleState {
    /// Last complete pass over the rule's repositories (start, seconds since the epoch).
    pub last_run: Option<u64>,
    /// Its outcome.
    pub result: Outcome,
    /// The last error of a pass (listing the source, a conflict).
    pub last_error: Option<String>,
    /// By source repository.
    pub repositories: BTreeMap<String, RepoState>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StateData {
    /// Format version.
    pub version: u32,
    /// By rule name.
    pub rules: BTreeMap<String, RuleState>,
}

impl StateData {
    /// Reads a state file without locking it (it is only ever replaced whole, by rename, so
    /// a reader sees one complete version); missing is empty.
    ///
    /// # Errors
    /// [`Error::State`] when it cannot be read or parsed.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| state_err(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: VERSION,
                ..Self::default()
            }),
            Err(e) => Err(state_err(path, e)),
        }
    }
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The state file, locked for this process (`<file>.lock`, `flock`), with its data in memory;
/// every [`StateStore::update`] writes the whole file atomically (temp file in the same
/// directory, fsync, rename, fsync of the directory).
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    data: Mutex<StateData>,
    _lock: File,
}

impl StateStore {
    /// Locks and reads the state file (created on first write).
    ///
    /// # Errors
    /// [`Error::State`] when another process holds the lock, or the file is unreadable.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| state_err(path, e))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| state_err(path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                state_err(
                    path,
                    "another `regctl replicate` process is using it (its .lock is held)",
                )
            },
        )?;
        let data = StateData::read(path)?;
        Ok(Self {
            path: path.to_owned(),
            data: Mutex::new(data),
            _lock: lock,
        })
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the data.
    #[must_use]
    pub fn snapshot(&self) -> StateData {
        self.data.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Changes the data and writes the file; the change stays in memory even when the write
    /// fails (the next write carries it).
    ///
    /// # Errors
    /// [`Error::State`] when the file cannot be written.
    pub fn update<T>(&self, change: impl FnOnce(&mut StateData) -> T) -> Result<T> {
        let mut data = self
            .data
            .lock()
            .map_err(|_| Error::Unreachable("the state lock is poisoned"))?;
        data.version = VERSION;
        let out = change(&mut data);
        let bytes = serde_json::to_vec_pretty(&*data).map_err(|e| state_err(&self.path, e))?;
        write_atomically(&self.path, &bytes).map_err(|e| state_err(&self.path, e))?;
        Ok(out)
    }

    /// One repository's state, default when unknown.
    #[must_use]
    pub fn repo(&self, rule: &str, repo: &str) -> RepoState {
        self.data
            .lock()
            .ok()
            .and_then(|d| d.rules.get(rule)?.repositories.get(repo).cloned())
            .unwrap_or_default()
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory, fsynced and renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_atomic_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let store = StateStore::open(&path).unwrap();
            store
                .update(|d| {
                    let r = d.rules.entry("r".into()).or_default();
                    let repo = r.repositories.entry("a/b".into()).or_default();
                    repo.tags.insert("v1".into(), "sha256:00".into());
                    repo.result = Outcome::Ok;
                })
                .unwrap();
            // A second process (another open) is refused while this one holds it.
            let err = StateStore::open(&path).unwrap_err().to_string();
            assert!(err.contains("another"), "{err}");
            // Readers see complete files.
            let read = StateData::read(&path).unwrap();
            assert_eq!(read.rules["r"].repositories["a/b"].tags["v1"], "sha256:00");
        }
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.repo("r", "a/b").result, Outcome::Ok);
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["state.json", "state.json.lock"], "{names:?}");
    }

    #[test]
    fn a_reader_never_sees_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = std::sync::Arc::new(StateStore::open(&path).unwrap());
        store.update(|_| ()).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        store
                            .update(|d| {
                                let repo = d
                                    .rules
                                    .entry(format!("rule-{w}"))
                                    .or_default()
                                    .repositories
                                    .entry(format!("repo-{i}"))
                                    .or_default();
                                repo.last_error = Some("x".repeat(i * 100));
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut reads = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            StateData::read(&path).unwrap();
            reads += 1;
        }
        for w in writers {
            w.join().unwrap();
        }
        let last = StateData::read(&path).unwrap();
        assert_eq!(last.rules.len(), 4);
        assert!(last.rules.values().all(|r| r.repositories.len() == 50));
        assert!(reads > 0);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = StateStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
