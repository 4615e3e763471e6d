//! Where a build upload waits while its Dockerfile is being found and decided: in memory up to a
//! few MiB, then in an unlinked temporary file (in the VCH directory), never more than the spool
//! limit in all. Replayed to dockerd in the order received once the build is allowed.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

/// What is kept in memory before the spool goes to a file.
const IN_MEMORY: u64 = 8 * 1024 * 1024;
/// The size of the pieces the file part is replayed in.
const REPLAY_CHUNK: usize = 256 * 1024;

/// The held-back start of an upload.
pub(crate) struct Spool {
    memory: VecDeque<Bytes>,
    in_memory: u64,
    file: Option<tokio::fs::File>,
    in_file: u64,
    dir: PathBuf,
    limit: u64,
}

/// The spool is full or its file cannot be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// More than the limit arrived before the Dockerfile was found.
    #[error(
        "the build context's Dockerfile was not found in its first {limit} bytes, the VCH's build \
         spool limit ([build] spool_limit): put the Dockerfile first in the context, or raise the limit"
    )]
    Full {
        /// The limit.
        limit: u64,
    },
    /// The temporary file failed.
    #[error("the VCH cannot spool the build context in {dir}: {error}")]
    File {
        /// Where.
        dir: String,
        /// Why.
        error: std::io::Error,
    },
}

impl Spool {
    pub(crate) fn new(dir: PathBuf, limit: u64) -> Self {
        Spool {
            memory: VecDeque::new(),
            in_memory: 0,
            file: None,
            in_file: 0,
            dir,
            limit,
        }
    }

    /// Everything held.
    pub(crate) fn len(&self) -> u64 {
        self.in_memory + self.in_file
    }

    /// Holds the next piece of the upload.
    pub(crate) async fn push(&mut self, data: Bytes) -> Result<(), SpoolError> {
        let n = data.len() as u64;
        if self.len() + n > self.limit {
            return Err(SpoolError::Full { limit: self.limit });
        }
        if self.file.is_none() && self.in_memory + n <= IN_MEMORY {
            self.in_memory += n;
            self.memory.push_back(data);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let dir = self.dir.clone();
                let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(|error| self.file_error(error))?;
                self.file.insert(tokio::fs::File::from_std(file))
            }
        };
        let written = file.write_all(&data).await;
        written.map_err(|error| self.file_error(error))?;
        self.in_file += n;
        Ok(())
    }

    fn file_error(&self, error: std::io::Error) -> SpoolError {
        SpoolError::File {
            dir: self.dir.display().to_string(),
            error,
        }
    }

    /// Starts the replay: the memory part, then the file part from its start.
    pub(crate) async fn replay(mut self) -> Result<Replay, SpoolError> {
        if let Some(file) = &mut self.file {
            let rewound = async {
                file.flush().await?;
                file.seek(SeekFrom::Start(0)).await
            };
            rewound.await.map_err(|error| self.file_error(error))?;
        }
        Ok(Replay { spool: self })
    }
}

/// The held-back bytes, given back in order.
pub(crate) struct Replay {
    spool: Spool,
}

impl Replay {
    /// The next piece, `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, SpoolError> {
        if let Some(data) = self.spool.memory.pop_front() {
            return Ok(Some(data));
        }
        let Some(file) = &mut self.spool.file else {
            return Ok(None);
        };
        if self.spool.in_file == 0 {
            return Ok(None);
        }
        let want = REPLAY_CHUNK.min(usize::try_from(self.spool.in_file).unwrap_or(REPLAY_CHUNK));
        let mut buf = BytesMut::zeroed(want);
        let read = file.read_exact(&mut buf).await;
        if let Err(error) = read {
            return Err(self.spool.file_error(error));
        }
        self.spool.in_file -= want as u64;
        Ok(Some(buf.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_goes_in_comes_back_in_order_across_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path().to_owned(), 64 * 1024 * 1024);
        let mut sent = Vec::new();
        for i in 0..40u8 {
            let piece = Bytes::from(vec![i; 300 * 1024 + usize::from(i)]);
            sent.extend_from_slice(&piece);
            spool.push(piece).await.unwrap();
        }
        assert!(
            spool.file.is_some(),
            "beyond {IN_MEMORY} bytes the spool is a file"
        );
        assert_eq!(spool.len(), sent.len() as u64);
        let mut replay = spool.replay().await.unwrap();
        let mut got = Vec::new();
        while let Some(piece) = replay.next().await.unwrap() {
            got.extend_from_slice(&piece);
        }
        assert!(got == sent, "replayed bytes differ");
        // The file is unlinked: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path().to_owned(), 1000);
        spool.push(Bytes::from(vec![0; 600])).await.unwrap();
        let full = spool.push(Bytes::from(vec![0; 600])).await.unwrap_err();
        assert!(matches!(full, SpoolError::Full { limit: 1000 }), "{full}");
        assert!(full.to_string().contains("spool_limit"));
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_a_clear_error() {
        let mut spool = Spool::new(PathBuf::from("/nonexistent/vch"), u64::MAX);
        spool
            .push(Bytes::from(vec![0; IN_MEMORY as usize]))
            .await
            .unwrap();
        let error = spool.push(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(error.to_string().contains("/nonexistent/vch"), "{error}");
    }
}
