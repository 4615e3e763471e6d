//! Reading a `docker build` context as it streams to dockerd (the body of `POST /build`), to tell
//! which Dockerfile dockerd will read from it.
//!
//! [`ContextReader`] is push-style: the proxy hands it the body bytes as they arrive
//! ([`ContextReader::feed`]), asks what dockerd would read as the Dockerfile from what has arrived
//! so far ([`ContextReader::dockerfile`]), and keeps feeding the rest of the body after it has
//! released the upload, because a later tar entry can replace the Dockerfile: the
//! [`Resolution`]'s `generation` then changes.
//!
//! # What dockerd does, and what this reader mirrors
//!
//! The classic builder (`builder/remotecontext/archive.go`, `FromArchive`) reads the body through
//! `archive.DecompressStream` (compression chosen by the first 10 bytes, `DetectCompression`),
//! `tarsum` (Go's `archive/tar` reader, which re-encodes every header with Go's tar writer), and
//! `chrootarchive.Untar`, which runs `DecompressStream` *again* on the re-encoded stream and
//! `archive.Unpack` chrooted into the context directory. Then `withDockerfileFromContext`
//! (`builder/remotecontext/detect.go`) opens the Dockerfile through
//! `symlink.FollowSymlinkInScope`. This reader parses the tar stream as Go's reader does, keeps a
//! model of the tree `Unpack` builds (paths, directories, files as inodes, symlinks, hard links,
//! devices), and resolves the Dockerfile path in that model as `FollowSymlinkInScope` does.
//!
//! | dockerd step | rule mirrored here |
//! | --- | --- |
//! | `DetectCompression` | bzip2 `BZh`, gzip `1f 8b 08`, xz `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd` or a skippable frame, else plain tar; on the first 10 bytes (fewer if the body is shorter) |
//! | gzip (`unpigz` or Go), bzip2 (Go), xz (`xz -d`), zstd (klauspost) | multi-member / multi-stream; the whole body must decode cleanly, to its end: a corrupt or truncated stream, or bytes after the last member, is an error even after the tar's end marker, because dockerd ignores `unpigz`'s and `xz`'s exit status and would extract the prefix they wrote before failing (which may lack the entries that replace the Dockerfile) |
//! | Go `tar.Reader` | checksum (unsigned or signed), octal / base-256 numbers, USTAR/GNU/STAR prefixes, PAX `x` records (`path`, `linkpath`, `size`, last one wins), GNU `L`/`K` long names (these win over PAX), `g` ignored but parsed, legacy `\0` type with a trailing `/` is a directory, header-only types carry no data whatever their size, extension data over 1 MiB is an error, end: two zero blocks, or EOF at a block boundary or in padding; a zero block then a non-zero block is an error |
//! | second `DecompressStream` on the re-encoded stream | the first entry's name, as Go's writer would place it at the start of the stream, must not start with a compression magic: dockerd would decompress its own re-encoding and extract another archive, so such a context is refused |
//! | `Unpack` in the chroot | names are `filepath.Clean`ed and joined to `/`, so `..` is clamped at the context root (no breakout error in the chroot); an entry replaces what is at its path unless both are directories; missing parents are created, parent symlinks are followed inside the root; a hard link links the node itself (a symlink stays a symlink) and shares its inode; an entry dockerd cannot extract (unknown type, dangling parent, link to a directory, ...) is an error |
//! | `withDockerfileFromContext` | `Dockerfile` by default, `dockerfile` when the parameter is exactly `Dockerfile` and it does not exist; `FollowSymlinkInScope` (lexical `..`, absolute targets from the root, 255 steps); a parameter leaving the root is an error |
//!
//! # Memory and speed
//!
//! File contents are skipped, not copied. The reader keeps: the bytes of a regular file that is,
//! when written, where the Dockerfile path (or the `dockerfile` fallback) resolves (up to
//! [`MAX_DOCKERFILE_SIZE`]; 16 MiB of such files alive at once), the bytes of small files (up to
//! 64 KiB each, 8 MiB in all) so that a later link to them can still be read, and the tree model
//! (at most 1 Mi nodes, about 100 bytes each plus the name). A decompressor's own state is bounded
//! too (xz memory limit 256 MiB, zstd window 128 MiB).

use std::collections::HashMap;

use bytes::Bytes;

/// The largest Dockerfile this reader keeps; a larger one resolves to [`Resolution::Unreadable`].
pub const MAX_DOCKERFILE_SIZE: u64 = 4 << 20;
/// Regular files up to this size are kept while [`SMALL_FILES_BUDGET`] allows, in case a later
/// link makes one of them the Dockerfile.
const SMALL_FILE_MAX: u64 = 64 << 10;
const SMALL_FILES_BUDGET: u64 = 8 << 20;
/// Bytes of Dockerfile candidates alive at once (a file replaced at the Dockerfile path is freed
/// unless a hard link keeps it).
const CANDIDATES_BUDGET: u64 = 16 << 20;
/// Nodes alive in the tree model.
const MAX_NODES: usize = 1 << 20;
/// Go's `maxSpecialFileSize`: the largest PAX header or GNU long name its reader accepts.
const MAX_SPECIAL_FILE: u64 = 1 << 20;
/// Linux `PATH_MAX` and `NAME_MAX`: dockerd cannot create an entry whose path is longer.
const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;
/// Linux follows at most 40 symlinks in one path walk (`ELOOP` beyond).
const MAX_SYMLINKS: u32 = 40;
/// Components one path walk may visit, symlink targets included: bounds the work an entry can
/// cost (the kernel would go on, to 40 targets of 4 KiB; such a context is refused).
const MAX_WALK_STEPS: u32 = 4096;
/// `evalSymlinksInScope`'s `maxIter`.
const EVAL_MAX_ITER: usize = 255;
const XZ_MEMLIMIT: u64 = 256 << 20;
const DEFAULT_DOCKERFILE: &str = "Dockerfile";
const BLOCK: usize = 512;
const OUT_BUF: usize = 64 << 10;
/// `DecompressStream` peeks this many bytes to choose the decompressor.
const PEEK: usize = 10;

/// Why a build context cannot be inspected; the proxy denies the build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The `dockerfile` parameter leaves the build context (dockerd: "Forbidden path outside the
    /// build context").
    #[error("dockerfile parameter {param:?} is outside the build context")]
    OutsideContext {
        /// The parameter as given.
        param: String,
    },
    /// The `dockerfile` parameter cannot name a file (it holds a NUL byte).
    #[error("dockerfile parameter {param:?} is not a valid path")]
    InvalidParameter {
        /// The parameter as given.
        param: String,
    },
    /// The compressed stream is malformed or ends early.
    #[error("malformed {format} stream: {detail}")]
    Compression {
        /// `gzip`, `bzip2`, `xz` or `zstd`.
        format: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The tar archive is malformed: dockerd's tar reader fails there too.
    #[error("malformed tar archive at byte {offset}: {detail}")]
    Tar {
        /// Offset of the offending block in the decompressed stream.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The body ended inside a tar header or an entry's data.
    #[error("the build context ends inside {what} (byte {offset} of the tar stream)")]
    Truncated {
        /// `a tar header`, `an entry's data`, ...
        what: &'static str,
        /// Decompressed bytes read.
        offset: u64,
    },
    /// An entry dockerd cannot extract (its untar fails), or that this reader does not model.
    #[error("tar entry {entry:?}: {detail}")]
    Entry {
        /// The entry's name (lossy UTF-8, shortened).
        entry: String,
        /// Why.
        detail: String,
    },
    /// A limit of this reader (tree size).
    #[error("the build context exceeds this reader's limits: {detail}")]
    Limit {
        /// Which limit.
        detail: String,
    },
    /// Different dockerd versions, or dockerd's two decompression passes, would read different
    /// archives from these bytes.
    #[error("ambiguous build context: {detail}")]
    Ambiguous {
        /// Why.
        detail: String,
    },
    /// The caller used the reader wrongly (fed bytes after [`ContextReader::finish`]).
    #[error("context reader misuse: {0}")]
    Misuse(&'static str),
}

/// What dockerd would read as the Dockerfile, from the bytes fed so far.
///
/// | variant | before [`ContextReader::finish`] | after |
/// | --- | --- | --- |
/// | `Pending` | the Dockerfile path resolves to nothing yet, or to a file whose bytes are still arriving | never |
/// | `Found` | a complete regular file; a later entry may still replace it (`generation` changes) | final |
/// | `Unreadable` | what is there now cannot be read; a later entry may still replace it | final; "Cannot locate specified Dockerfile: X" when nothing is there |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Not there yet (or not complete yet: the entry's bytes are still arriving).
    Pending,
    /// Resolved to a complete regular file.
    Found {
        /// Changes whenever the resolution changes (another entry replaced the file, a link was
        /// redirected), so the caller can notice that what it decided on is no longer what
        /// dockerd will read.
        generation: u64,
        /// The file's path inside the context, symlinks resolved (lossy UTF-8).
        path: String,
        /// The file's bytes.
        content: Bytes,
    },
    /// Resolves to something dockerd cannot read as a Dockerfile, or that this reader cannot
    /// know: a directory, a device, an empty file, a file whose bytes were not kept, a loop.
    Unreadable {
        /// As in [`Resolution::Found`].
        generation: u64,
        /// Why, for the audit line and the denial.
        reason: String,
    },
}

/// Sizes for the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextStats {
    /// Body bytes fed.
    pub compressed: u64,
    /// Tar stream bytes read, up to the end-of-archive marker.
    pub uncompressed: u64,
    /// Tar entries read (files, directories, links, devices; not PAX or GNU extension headers).
    pub entries: u64,
    /// `none`, `gzip`, `bzip2`, `xz`, `zstd`, or `unknown` before the first bytes.
    pub compression: &'static str,
}

/// A push-style reader of a `docker build` context: see the [module docs](self).
///
/// Errors are sticky: after one, every call returns it again. The result does not depend on how
/// the body is split into [`feed`](Self::feed) calls.
pub struct ContextReader {
    input: Input,
    scanner: Scanner,
    compressed: u64,
    finished: bool,
    failed: Option<ContextError>,
}

impl ContextReader {
    /// A reader for a build whose `dockerfile` query parameter is `dockerfile_param` (empty: the
    /// default `Dockerfile`, with dockerd's lowercase `dockerfile` fallback).
    ///
    /// The parameter is joined to the context root and cleaned as dockerd's `filepath.Join`
    /// does: `sub/../Dockerfile` is `Dockerfile`, `/x` is `x`; one that leaves the root
    /// (`../x`, `/../x`) is [`ContextError::OutsideContext`].
    pub fn new(dockerfile_param: &str) -> Result<Self, ContextError> {
        let target = Target::new(dockerfile_param)?;
        Ok(ContextReader {
            input: Input::Detect(Vec::with_capacity(PEEK)),
            scanner: Scanner::new(target),
            compressed: 0,
            finished: false,
            failed: None,
        })
    }

    /// Feeds the next body bytes as received (compressed or not). Processes them fully before
    /// returning.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ContextError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.finished {
            return Err(ContextError::Misuse("feed after finish"));
        }
        self.compressed += bytes.len() as u64;
        let result = self.feed_inner(bytes);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The body ended. An archive that did not end properly is an error: a truncated
    /// compressed stream, a tar stream ending inside a header or an entry's data. (Go's tar
    /// reader, and so dockerd, accepts a stream that ends at a block boundary or in the padding
    /// after an entry, without the two zero blocks.)
    ///
    /// Afterwards, [`dockerfile`](Self::dockerfile) is final: a Dockerfile that was never found
    /// is [`Resolution::Unreadable`] with dockerd's "Cannot locate specified Dockerfile: X".
    pub fn finish(&mut self) -> Result<(), ContextError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let result = self.finish_inner();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// What dockerd would read as the Dockerfile from what has been fed so far.
    pub fn dockerfile(&self) -> Resolution {
        self.scanner.resolution.current.clone()
    }

    /// Decompressed bytes seen and tar entries seen (for the audit line: "context size").
    pub fn stats(&self) -> ContextStats {
        ContextStats {
            compressed: self.compressed,
            uncompressed: self.scanner.offset,
            entries: self.scanner.entries,
            compression: self.input.name(),
        }
    }

    fn feed_inner(&mut self, bytes: &[u8]) -> Result<(), ContextError> {
        let rest = match &mut self.input {
            Input::Detect(head) => {
                let take = (PEEK - head.len()).min(bytes.len());
                head.extend_from_slice(&bytes[..take]);
                if head.len() < PEEK {
                    return Ok(());
                }
                let head = std::mem::take(head);
                self.start(head)?;
                &bytes[take..]
            }
            _ => bytes,
        };
        self.push(rest)
    }

    fn finish_inner(&mut self) -> Result<(), ContextError> {
        if let Input::Detect(head) = &mut self.input {
            let head = std::mem::take(head);
            self.start(head)?;
        }
        if let Input::ZstdPrefix(prefix) = &mut self.input {
            let prefix = std::mem::take(prefix);
            self.start_zstd(prefix)?;
        }
        match &mut self.input {
            Input::Detect(_) | Input::ZstdPrefix(_) | Input::Plain => {}
            Input::Gzip(d) => d.finish(&mut self.scanner)?,
            Input::Bzip2(d) => d.finish()?,
            Input::Xz(d) => d.finish(&mut self.scanner)?,
            Input::Zstd(d) => d.finish(&mut self.scanner)?,
        }
        self.scanner.finish()
    }

    /// Chooses the decompressor from the first bytes, as `DecompressStream` does.
    fn start(&mut self, head: Vec<u8>) -> Result<(), ContextError> {
        match detect(&head) {
            Compression::None => {
                self.input = Input::Plain;
                self.scanner.push(&head)
            }
            Compression::Zstd => {
                self.input = Input::ZstdPrefix(Vec::with_capacity(BLOCK));
                self.push(&head)
            }
            Compression::Gzip => {
                self.input = Input::Gzip(Box::new(Gzip::new()));
                self.push(&head)
            }
            Compression::Bzip2 => {
                self.input = Input::Bzip2(Box::new(Bzip2::new()));
                self.push(&head)
            }
            Compression::Xz => {
                self.input = Input::Xz(Box::new(Xz::new()?));
                self.push(&head)
            }
        }
    }

    /// dockerd detects zstd since 23.0 (skippable frames since 25.0); an older one reads the same
    /// bytes as a plain tar. Refuse bytes that are both a zstd stream and a valid tar header.
    fn start_zstd(&mut self, prefix: Vec<u8>) -> Result<(), ContextError> {
        if prefix.len() >= BLOCK && header_checksum_ok(&prefix[..BLOCK]) {
            return Err(ContextError::Ambiguous {
                detail: "the body starts with zstd magic bytes and is also a valid tar header, \
                         which dockerd before 23.0 reads as a plain tar"
                    .into(),
            });
        }
        self.input = Input::Zstd(Box::new(Zstd::new()?));
        self.push(&prefix)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), ContextError> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.input {
            Input::Detect(_) => Err(ContextError::Misuse("push before detection")),
            Input::ZstdPrefix(prefix) => {
                let take = (BLOCK - prefix.len()).min(bytes.len());
                prefix.extend_from_slice(&bytes[..take]);
                if prefix.len() < BLOCK {
                    return Ok(());
                }
                let prefix = std::mem::take(prefix);
                self.start_zstd(prefix)?;
                self.push(&bytes[take..])
            }
            Input::Plain => self.scanner.push(bytes),
            Input::Gzip(d) => d.decode(bytes, &mut self.scanner),
            Input::Bzip2(d) => d.decode(bytes, &mut self.scanner),
            Input::Xz(d) => d.decode(bytes, &mut self.scanner),
            Input::Zstd(d) => d.decode(bytes, &mut self.scanner),
        }
    }
}

impl std::fmt::Debug for ContextReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextReader")
            .field("stats", &self.stats())
            .field("dockerfile", &self.scanner.resolution.current)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Split invariance, for the fuzz target and its seed replay: feeding `data` in one piece or in
/// pieces of a size chosen by its first byte gives the same outcome. Panics otherwise.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    const PARAMS: [&str; 4] = ["", "Dockerfile", "sub/Dockerfile", "x/../dockerfile"];
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let param = PARAMS[usize::from(first >> 6)];
    let piece = usize::from(first & 0x3f) + 1;
    let run = |pieces: &mut dyn Iterator<Item = &[u8]>| -> Result<Resolution, ContextError> {
        let mut reader = ContextReader::new(param)?;
        for p in pieces {
            reader.feed(p)?;
        }
        reader.finish()?;
        Ok(reader.dockerfile())
    };
    let whole = run(&mut std::iter::once(body));
    let split = run(&mut body.chunks(piece));
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "resolution depends on the split ({piece})"),
        (Err(_), Err(_)) => {}
        _ => panic!("outcome depends on the split ({piece}): {whole:?} vs {split:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Compression

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// `archive.DetectCompression`, in its order (bzip2, gzip, xz, zstd).
fn detect(head: &[u8]) -> Compression {
    const ZSTD_SKIPPABLE: u32 = 0x184D_2A50;
    if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 8
            && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & 0xFFFF_FFF0
                == ZSTD_SKIPPABLE)
    {
        Compression::Zstd
    } else {
        Compression::None
    }
}

enum Input {
    /// Fewer than [`PEEK`] bytes seen.
    Detect(Vec<u8>),
    /// zstd: holding the first block back for the ambiguity check.
    ZstdPrefix(Vec<u8>),
    Plain,
    Gzip(Box<Gzip>),
    Bzip2(Box<Bzip2>),
    Xz(Box<Xz>),
    Zstd(Box<Zstd>),
}

impl Input {
    fn name(&self) -> &'static str {
        match self {
            Input::Detect(_) => "unknown",
            Input::Plain => "none",
            Input::Gzip(_) => "gzip",
            Input::Bzip2(_) => "bzip2",
            Input::Xz(_) => "xz",
            Input::ZstdPrefix(_) | Input::Zstd(_) => "zstd",
        }
    }
}

fn compression_error(format: &'static str, detail: impl std::fmt::Display) -> ContextError {
    ContextError::Compression {
        format,
        detail: detail.to_string(),
    }
}

fn truncated(format: &'static str) -> ContextError {
    compression_error(format, "the stream ends early")
}

/// Multi-member gzip (RFC 1952) as Go's `gzip.Reader` and `unpigz` read it: members follow each
/// other until the end of the body; anything else after a member is an error.
struct Gzip {
    inflate: flate2::Decompress,
    crc: flate2::Crc,
    state: GzState,
    out: Box<[u8]>,
}

enum GzState {
    /// Between members (also before the first one): the body may end here.
    Between,
    Header(GzHeader),
    Body,
    Trailer {
        buf: [u8; 8],
        len: usize,
    },
}

struct GzHeader {
    stage: GzStage,
    fixed: [u8; 10],
    len: usize,
    flags: u8,
    crc: flate2::Crc,
}

#[derive(Clone, Copy)]
enum GzStage {
    Fixed,
    ExtraLen { lo: Option<u8> },
    Extra { left: usize },
    Name,
    Comment,
    HeaderCrc { lo: Option<u8> },
}

const GZ_FHCRC: u8 = 0x02;
const GZ_FEXTRA: u8 = 0x04;
const GZ_FNAME: u8 = 0x08;
const GZ_FCOMMENT: u8 = 0x10;
const GZ_RESERVED: u8 = 0xe0;

impl Gzip {
    fn new() -> Self {
        Gzip {
            inflate: flate2::Decompress::new(false),
            crc: flate2::Crc::new(),
            state: GzState::Between,
            out: vec![0; OUT_BUF].into_boxed_slice(),
        }
    }

    fn decode(&mut self, mut input: &[u8], scanner: &mut Scanner) -> Result<(), ContextError> {
        loop {
            match &mut self.state {
                GzState::Between => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    self.state = GzState::Header(GzHeader {
                        stage: GzStage::Fixed,
                        fixed: [0; 10],
                        len: 0,
                        flags: 0,
                        crc: flate2::Crc::new(),
                    });
                }
                GzState::Header(header) => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let used = header.feed(input)?;
                    input = &input[used..];
                    if header.done() {
                        self.inflate.reset(false);
                        self.crc.reset();
                        self.state = GzState::Body;
                    }
                }
                GzState::Body => {
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let status = self.inflate.decompress(
                        input,
                        &mut self.out,
                        flate2::FlushDecompress::None,
                    );
                    let used = (self.inflate.total_in() - in0) as usize;
                    let made = (self.inflate.total_out() - out0) as usize;
                    input = &input[used..];
                    self.crc.update(&self.out[..made]);
                    scanner.push(&self.out[..made])?;
                    match status {
                        Err(e) => return Err(compression_error("gzip", e)),
                        Ok(flate2::Status::StreamEnd) => {
                            self.state = GzState::Trailer {
                                buf: [0; 8],
                                len: 0,
                            };
                        }
                        Ok(_) if used == 0 && made < self.out.len() => return Ok(()),
                        Ok(_) => {}
                    }
                }
                GzState::Trailer { buf, len } => {
                    let take = (8 - *len).min(input.len());
                    buf[*len..*len + take].copy_from_slice(&input[..take]);
                    *len += take;
                    input = &input[take..];
                    if *len < 8 {
                        return Ok(());
                    }
                    let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    let size = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                    if crc != self.crc.sum() || size != self.crc.amount() {
                        return Err(compression_error("gzip", "checksum mismatch"));
                    }
                    self.state = GzState::Between;
                }
            }
        }
    }

    fn finish(&mut self, scanner: &mut Scanner) -> Result<(), ContextError> {
        // Output the inflater still holds.
        self.decode(&[], scanner)?;
        match self.state {
            GzState::Between => Ok(()),
            _ => Err(truncated("gzip")),
        }
    }
}

impl GzHeader {
    fn done(&self) -> bool {
        matches!(self.stage, GzStage::HeaderCrc { lo: None }) && self.len == usize::MAX
    }

    /// Consumes header bytes; returns how many. `len == usize::MAX` marks the end.
    fn feed(&mut self, input: &[u8]) -> Result<usize, ContextError> {
        let mut used = 0;
        while used < input.len() && self.len != usize::MAX {
            let rest = &input[used..];
            match self.stage {
                GzStage::Fixed => {
                    let take = (10 - self.len).min(rest.len());
                    self.fixed[self.len..self.len + take].copy_from_slice(&rest[..take]);
                    self.crc.update(&rest[..take]);
                    self.len += take;
                    used += take;
                    if self.len == 10 {
                        if self.fixed[..3] != [0x1f, 0x8b, 0x08] {
                            return Err(compression_error("gzip", "invalid member header"));
                        }
                        self.flags = self.fixed[3];
                        if self.flags & GZ_RESERVED != 0 {
                            return Err(compression_error("gzip", "reserved header flags set"));
                        }
                        self.len = 0;
                        self.next_after(GzStage::Fixed);
                    }
                }
                GzStage::ExtraLen { lo } => {
                    self.crc.update(&rest[..1]);
                    used += 1;
                    match lo {
                        None => self.stage = GzStage::ExtraLen { lo: Some(rest[0]) },
                        Some(lo) => {
                            let left = usize::from(u16::from_le_bytes([lo, rest[0]]));
                            self.stage = GzStage::Extra { left };
                            if left == 0 {
                                self.next_after(GzStage::Extra { left: 0 });
                            }
                        }
                    }
                }
                GzStage::Extra { left } => {
                    let take = left.min(rest.len());
                    self.crc.update(&rest[..take]);
                    used += take;
                    self.stage = GzStage::Extra { left: left - take };
                    if left == take {
                        self.next_after(GzStage::Extra { left: 0 });
                    }
                }
                stage @ (GzStage::Name | GzStage::Comment) => {
                    let (take, end) = match rest.iter().position(|&b| b == 0) {
                        Some(i) => (i + 1, true),
                        None => (rest.len(), false),
                    };
                    self.crc.update(&rest[..take]);
                    used += take;
                    if end {
                        self.next_after(stage);
                    }
                }
                GzStage::HeaderCrc { lo } => {
                    used += 1;
                    match lo {
                        None => self.stage = GzStage::HeaderCrc { lo: Some(rest[0]) },
                        Some(lo) => {
                            let want = u16::from_le_bytes([lo, rest[0]]);
                            if want != (self.crc.sum() & 0xffff) as u16 {
                                return Err(compression_error("gzip", "header checksum mismatch"));
                            }
                            self.stage = GzStage::HeaderCrc { lo: None };
                            self.len = usize::MAX;
                        }
                    }
                }
            }
        }
        Ok(used)
    }

    /// Moves to the next optional field the flags announce, or ends the header.
    fn next_after(&mut self, stage: GzStage) {
        let order = [
            (0u8, GzStage::Fixed),
            (GZ_FEXTRA, GzStage::ExtraLen { lo: None }),
            (GZ_FNAME, GzStage::Name),
            (GZ_FCOMMENT, GzStage::Comment),
            (GZ_FHCRC, GzStage::HeaderCrc { lo: None }),
        ];
        let rank = |s: GzStage| match s {
            GzStage::Fixed => 0,
            GzStage::ExtraLen { .. } | GzStage::Extra { .. } => 1,
            GzStage::Name => 2,
            GzStage::Comment => 3,
            GzStage::HeaderCrc { .. } => 4,
        };
        let from = rank(stage);
        for (i, (flag, next)) in order.iter().enumerate() {
            if i > from && self.flags & flag != 0 {
                self.stage = *next;
                return;
            }
        }
        self.stage = GzStage::HeaderCrc { lo: None };
        self.len = usize::MAX;
    }
}

/// Multi-stream bzip2, as Go's `compress/bzip2` reads it.
struct Bzip2 {
    stream: bzip2::Decompress,
    between: bool,
    out: Box<[u8]>,
}

impl Bzip2 {
    fn new() -> Self {
        Bzip2 {
            stream: bzip2::Decompress::new(false),
            between: false,
            out: vec![0; OUT_BUF].into_boxed_slice(),
        }
    }

    fn decode(&mut self, mut input: &[u8], scanner: &mut Scanner) -> Result<(), ContextError> {
        loop {
            if self.between {
                if input.is_empty() {
                    return Ok(());
                }
                self.stream = bzip2::Decompress::new(false);
                self.between = false;
            }
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let status = self.stream.decompress(input, &mut self.out);
            let used = (self.stream.total_in() - in0) as usize;
            let made = (self.stream.total_out() - out0) as usize;
            input = &input[used..];
            scanner.push(&self.out[..made])?;
            match status {
                Err(e) => return Err(compression_error("bzip2", e)),
                Ok(bzip2::Status::StreamEnd) => self.between = true,
                Ok(_) if used == 0 && made < self.out.len() => return Ok(()),
                Ok(_) => {}
            }
        }
    }

    fn finish(&mut self) -> Result<(), ContextError> {
        if self.between {
            Ok(())
        } else {
            Err(truncated("bzip2"))
        }
    }
}

/// xz, concatenated streams and stream padding, as `xz -d` reads them.
struct Xz {
    stream: liblzma::stream::Stream,
    out: Box<[u8]>,
}

impl Xz {
    fn new() -> Result<Self, ContextError> {
        let stream =
            liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, liblzma::stream::CONCATENATED)
                .map_err(|e| compression_error("xz", e))?;
        Ok(Xz {
            stream,
            out: vec![0; OUT_BUF].into_boxed_slice(),
        })
    }

    fn run(
        &mut self,
        mut input: &[u8],
        action: liblzma::stream::Action,
        scanner: &mut Scanner,
    ) -> Result<bool, ContextError> {
        loop {
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let status = self.stream.process(input, &mut self.out, action);
            let used = (self.stream.total_in() - in0) as usize;
            let made = (self.stream.total_out() - out0) as usize;
            input = &input[used..];
            scanner.push(&self.out[..made])?;
            match status {
                Err(e) => return Err(compression_error("xz", e)),
                Ok(liblzma::stream::Status::StreamEnd) => return Ok(true),
                Ok(_) if used == 0 && made < self.out.len() => return Ok(false),
                Ok(_) => {}
            }
        }
    }

    fn decode(&mut self, input: &[u8], scanner: &mut Scanner) -> Result<(), ContextError> {
        self.run(input, liblzma::stream::Action::Run, scanner)
            .map(|_| ())
    }

    fn finish(&mut self, scanner: &mut Scanner) -> Result<(), ContextError> {
        if self.run(&[], liblzma::stream::Action::Finish, scanner)? {
            Ok(())
        } else {
            Err(truncated("xz"))
        }
    }
}

/// zstd frames (and skippable frames) one after another.
struct Zstd {
    stream: zstd::stream::raw::Decoder<'static>,
    /// The decoder's last hint: 0 when a frame is complete and flushed.
    hint: usize,
    out: Box<[u8]>,
}

impl Zstd {
    fn new() -> Result<Self, ContextError> {
        let stream = zstd::stream::raw::Decoder::new().map_err(|e| compression_error("zstd", e))?;
        Ok(Zstd {
            stream,
            hint: 1,
            out: vec![0; OUT_BUF].into_boxed_slice(),
        })
    }

    fn decode(&mut self, mut input: &[u8], scanner: &mut Scanner) -> Result<(), ContextError> {
        use zstd::stream::raw::Operation;
        loop {
            let mut src = zstd::stream::raw::InBuffer::around(input);
            let mut dst = zstd::stream::raw::OutBuffer::around(&mut self.out[..]);
            let status = self.stream.run(&mut src, &mut dst);
            let used = src.pos();
            let made = dst.pos();
            input = &input[used..];
            scanner.push(&self.out[..made])?;
            match status {
                Err(e) => return Err(compression_error("zstd", e)),
                // Without progress, the decoder asks for the next frame's header even at a
                // frame boundary: keep the hint of the last step that did something.
                Ok(hint) if used > 0 || made > 0 => self.hint = hint,
                Ok(_) => {}
            }
            if used == 0 && made < self.out.len() {
                return Ok(());
            }
        }
    }

    fn finish(&mut self, scanner: &mut Scanner) -> Result<(), ContextError> {
        self.decode(&[], scanner)?;
        if self.hint == 0 {
            Ok(())
        } else {
            Err(truncated("zstd"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tar headers, as Go's archive/tar reads them

const TYPE_REG: u8 = b'0';
const TYPE_REGA: u8 = 0;
const TYPE_LINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_CHAR: u8 = b'3';
const TYPE_BLOCK: u8 = b'4';
const TYPE_DIR: u8 = b'5';
const TYPE_FIFO: u8 = b'6';
const TYPE_PAX: u8 = b'x';
const TYPE_PAX_GLOBAL: u8 = b'g';
const TYPE_GNU_LONGNAME: u8 = b'L';
const TYPE_GNU_LONGLINK: u8 = b'K';
const TYPE_GNU_SPARSE: u8 = b'S';

/// `isHeaderOnlyType`: these carry no data, whatever their size field says.
fn header_only(typeflag: u8) -> bool {
    matches!(
        typeflag,
        TYPE_LINK | TYPE_SYMLINK | TYPE_CHAR | TYPE_BLOCK | TYPE_DIR | TYPE_FIFO
    )
}

struct Header {
    typeflag: u8,
    name: Vec<u8>,
    linkname: Vec<u8>,
    size: i64,
}

/// `parser.parseString`: up to the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// `parser.parseOctal`: trims spaces and NULs, then `strconv.ParseUint(s, 8, 64)`; the value is
/// then an `int64` (wrapping, as Go's conversion does).
fn parse_octal(b: &[u8]) -> Option<i64> {
    let start = b.iter().position(|&c| c != b' ' && c != 0);
    let Some(start) = start else { return Some(0) };
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(start, |i| i + 1);
    let digits = cstr(&b[start..end]);
    if digits.is_empty() {
        return None;
    }
    let mut x: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        x = x.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(x as i64)
}

/// `parser.parseNumeric`: base-256 when the high bit is set, else octal.
fn parse_numeric(b: &[u8]) -> Option<i64> {
    let Some(&first) = b.first() else {
        return Some(0);
    };
    if first & 0x80 == 0 {
        return parse_octal(b);
    }
    let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, &c) in b.iter().enumerate() {
        let mut c = c ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 > 0 {
            return None;
        }
        x = x << 8 | u64::from(c);
    }
    if x >> 63 > 0 {
        return None;
    }
    Some(if inv == 0xff { !(x as i64) } else { x as i64 })
}

/// `block.getFormat`'s checksum test: the checksum field, read as octal, equals the unsigned or
/// the signed sum of the block with that field taken as spaces.
fn header_checksum_ok(b: &[u8]) -> bool {
    let Some(value) = parse_octal(&b[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    value == unsigned || value == signed
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

/// `Reader.readHeader` for a non-zero block.
fn parse_header(b: &[u8]) -> Result<Header, &'static str> {
    if !header_checksum_ok(b) {
        return Err("invalid tar header (checksum mismatch)");
    }
    let magic = &b[257..263];
    let format = if magic == b"ustar\0" && &b[508..512] == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && &b[263..265] == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    };
    let mut ok = true;
    let mut numeric = |field: &[u8]| match parse_numeric(field) {
        Some(v) => v,
        None => {
            ok = false;
            0
        }
    };
    let size = numeric(&b[124..136]);
    for field in [&b[100..108], &b[108..116], &b[116..124], &b[136..148]] {
        numeric(field);
    }
    let mut prefix: &[u8] = &[];
    if format != Format::V7 {
        numeric(&b[329..337]);
        numeric(&b[337..345]);
        match format {
            Format::Ustar => prefix = cstr(&b[345..500]),
            Format::Star => {
                prefix = cstr(&b[345..476]);
                numeric(&b[476..488]);
                numeric(&b[488..500]);
            }
            _ => {
                // Go reads GNU atime/ctime skeptically: when they do not parse and the USTAR
                // prefix field is ASCII, the file came from pre-1.8 Go and that is the prefix.
                let atime_bad = b[345] != 0 && parse_numeric(&b[345..357]).is_none();
                let ctime_bad = b[357] != 0 && parse_numeric(&b[357..369]).is_none();
                if atime_bad || ctime_bad {
                    let s = cstr(&b[345..500]);
                    if s.iter().all(|&c| c < 0x80) {
                        prefix = s;
                    }
                }
            }
        }
    }
    if !ok {
        return Err("invalid tar header (numeric field)");
    }
    let mut name = Vec::with_capacity(prefix.len() + 101);
    if !prefix.is_empty() {
        name.extend_from_slice(prefix);
        name.push(b'/');
    }
    name.extend_from_slice(cstr(&b[..100]));
    Ok(Header {
        typeflag: b[156],
        name,
        linkname: cstr(&b[157..257]).to_vec(),
        size,
    })
}

/// `strconv.ParseInt(s, 10, 64)`.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut x: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        x = x.checked_mul(10)?;
        x = if negative {
            x.checked_sub(d)?
        } else {
            x.checked_add(d)?
        };
    }
    Some(x)
}

/// `parsePAXTime`: accepted or not.
fn pax_time_ok(s: &[u8]) -> bool {
    let (secs, frac) = match s.iter().position(|&c| c == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[][..]),
    };
    parse_int(secs).is_some() && frac.iter().all(u8::is_ascii_digit)
}

type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// `parsePAX` / `parsePAXRecord`: `"%d %s=%s\n"` records.
fn parse_pax(mut s: &[u8]) -> Result<PaxRecords, &'static str> {
    const BAD: &str = "invalid PAX record";
    let mut records = Vec::new();
    while !s.is_empty() {
        let sp = s.iter().position(|&c| c == b' ').ok_or(BAD)?;
        let n = parse_int(&s[..sp]).ok_or(BAD)?;
        if n < 5 || n as u64 > s.len() as u64 {
            return Err(BAD);
        }
        let n = n as usize - (sp + 1);
        if n == 0 {
            return Err(BAD);
        }
        let rest = &s[sp + 1..];
        let (record, newline) = (&rest[..n - 1], rest[n - 1]);
        if newline != b'\n' {
            return Err(BAD);
        }
        s = &rest[n..];
        let eq = record.iter().position(|&c| c == b'=').ok_or(BAD)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let valid = !key.is_empty()
            && match key {
                b"path" | b"linkpath" | b"uname" | b"gname" => !value.contains(&0),
                _ => !key.contains(&0),
            };
        if !valid {
            return Err(BAD);
        }
        records.push((key.to_vec(), value.to_vec()));
    }
    Ok(records)
}

/// The `DecompressStream` magic Go's tar writer could put at the start of the re-encoded stream
/// for a first entry of this name, if any.
///
/// The stream starts with a name field, NUL-padded: the name itself (USTAR, GNU; a global
/// header's after non-ASCII bytes are dropped); when longer than 100 bytes, the part after a `/`
/// where USTAR splits it; or, when PAX is needed, `path.Join(dir, "PaxHeaders.0", file)` with
/// non-ASCII bytes dropped. Every candidate is tested (a superset of what the writer picks).
fn reencoded_magic(name: &[u8]) -> Option<Compression> {
    let ascii =
        |s: &[u8]| -> Vec<u8> { s.iter().copied().filter(|&c| c < 0x80 && c != 0).collect() };
    let split = name.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let (dir, file) = name.split_at(split);
    let mut joined = Vec::with_capacity(name.len() + 14);
    for part in [dir, b"PaxHeaders.0", file] {
        if !part.is_empty() {
            if !joined.is_empty() {
                joined.push(b'/');
            }
            joined.extend_from_slice(part);
        }
    }
    let pax = ascii(&go_clean(&joined));
    let plain = ascii(name);
    let mut starts: Vec<&[u8]> = vec![name, &plain, &pax];
    if name.len() > 100 {
        for (i, &c) in name.iter().enumerate() {
            if c == b'/' {
                starts.push(&name[i + 1..]);
            }
        }
    }
    starts.into_iter().find_map(|s| {
        let mut window = [0u8; PEEK];
        let n = s.len().min(PEEK);
        window[..n].copy_from_slice(&s[..n]);
        match detect(&window) {
            Compression::None => None,
            found => Some(found),
        }
    })
}

/// Go's `path.Clean`.
fn go_clean(path: &[u8]) -> Vec<u8> {
    let rooted = path.first() == Some(&b'/');
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => match comps.last() {
                Some(&last) if last != b".." => {
                    comps.pop();
                }
                _ if !rooted => comps.push(c),
                _ => {}
            },
            c => comps.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if rooted {
        out.push(b'/');
    }
    out.extend_from_slice(&comps.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tar scanner: headers in, tree changes out

enum State {
    /// Expecting a header block (`fill` bytes of it buffered).
    Header,
    /// One zero block seen; expecting the next block.
    AfterZero,
    /// An entry's data, then its padding.
    Data { data: u64, pad: u64, sink: Sink },
    /// Two zero blocks: dockerd stops reading here.
    Ended,
}

enum Sink {
    Skip,
    Keep { ino: Ino, buf: Vec<u8> },
    Extension { kind: Extension, buf: Vec<u8> },
}

enum Extension {
    Pax,
    Global { name: Vec<u8> },
    LongName,
    LongLink,
}

/// Extension headers waiting for the entry they describe (locals of Go's `Reader.next`).
#[derive(Default)]
struct Pending {
    pax: Option<PaxRecords>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

struct Scanner {
    state: State,
    block: Box<[u8; BLOCK]>,
    fill: usize,
    /// Tar bytes consumed.
    offset: u64,
    pending: Pending,
    tree: Tree,
    target: Target,
    resolution: ResolutionState,
    entries: u64,
    seen_first: bool,
    /// What the last resolution's path and fallback resolved to.
    targets: [Option<Ino>; 2],
    finished: bool,
}

fn display_name(name: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(&name[..name.len().min(MAX)]);
    if name.len() > MAX {
        format!("{s}...")
    } else {
        s.into_owned()
    }
}

impl Scanner {
    fn new(target: Target) -> Self {
        let mut scanner = Scanner {
            state: State::Header,
            block: Box::new([0; BLOCK]),
            fill: 0,
            offset: 0,
            pending: Pending::default(),
            tree: Tree::new(),
            target,
            resolution: ResolutionState {
                generation: 0,
                key: Key::Pending,
                current: Resolution::Pending,
            },
            entries: 0,
            seen_first: false,
            targets: [None; 2],
            finished: false,
        };
        scanner.refresh(false);
        scanner
    }

    fn push(&mut self, mut input: &[u8]) -> Result<(), ContextError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Ended => return Ok(()),
                State::Data { data, pad, sink } => {
                    if *data > 0 {
                        let n = (*data).min(input.len() as u64) as usize;
                        match sink {
                            Sink::Skip => {}
                            Sink::Keep { buf, .. } | Sink::Extension { buf, .. } => {
                                buf.extend_from_slice(&input[..n]);
                            }
                        }
                        *data -= n as u64;
                        self.offset += n as u64;
                        input = &input[n..];
                        if *data == 0 {
                            self.end_of_data()?;
                        }
                    } else {
                        let n = (*pad).min(input.len() as u64) as usize;
                        *pad -= n as u64;
                        self.offset += n as u64;
                        input = &input[n..];
                    }
                    if let State::Data {
                        data: 0, pad: 0, ..
                    } = self.state
                    {
                        self.state = State::Header;
                    }
                }
                State::Header | State::AfterZero => {
                    if self.fill == 0 && input.len() >= BLOCK {
                        let (block, rest) = input.split_at(BLOCK);
                        input = rest;
                        self.offset += BLOCK as u64;
                        self.block(block)?;
                    } else {
                        let n = (BLOCK - self.fill).min(input.len());
                        self.block[self.fill..self.fill + n].copy_from_slice(&input[..n]);
                        self.fill += n;
                        self.offset += n as u64;
                        input = &input[n..];
                        if self.fill == BLOCK {
                            self.fill = 0;
                            let block = *self.block;
                            self.block(&block)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn tar_error(&self, detail: impl Into<String>) -> ContextError {
        ContextError::Tar {
            offset: self.offset.saturating_sub(BLOCK as u64),
            detail: detail.into(),
        }
    }

    fn block(&mut self, block: &[u8]) -> Result<(), ContextError> {
        let zero = block.iter().all(|&b| b == 0);
        match self.state {
            State::AfterZero if zero => {
                self.state = State::Ended;
                Ok(())
            }
            State::AfterZero => Err(self.tar_error("a zero block followed by a non-zero block")),
            _ if zero => {
                self.state = State::AfterZero;
                Ok(())
            }
            _ => {
                let header = parse_header(block).map_err(|e| self.tar_error(e))?;
                self.header(header)
            }
        }
    }

    fn header(&mut self, header: Header) -> Result<(), ContextError> {
        if !header_only(header.typeflag) && header.size < 0 {
            return Err(self.tar_error("negative size"));
        }
        let kind = match header.typeflag {
            TYPE_PAX => Extension::Pax,
            TYPE_PAX_GLOBAL => Extension::Global { name: header.name },
            TYPE_GNU_LONGNAME => Extension::LongName,
            TYPE_GNU_LONGLINK => Extension::LongLink,
            _ => return self.entry(header),
        };
        let size = header.size as u64;
        if size > MAX_SPECIAL_FILE {
            return Err(self.tar_error("extension header larger than 1 MiB"));
        }
        self.state = State::Data {
            data: size,
            pad: padding(size),
            sink: Sink::Extension {
                kind,
                buf: Vec::with_capacity(size as usize),
            },
        };
        if size == 0 {
            self.end_of_data()?;
        }
        Ok(())
    }

    /// An entry's data is complete (its padding may follow).
    fn end_of_data(&mut self) -> Result<(), ContextError> {
        let State::Data { sink, .. } = &mut self.state else {
            return Ok(());
        };
        match std::mem::replace(sink, Sink::Skip) {
            Sink::Skip => Ok(()),
            Sink::Keep { ino, buf } => {
                self.tree.complete(ino, Bytes::from(buf));
                self.refresh(false);
                Ok(())
            }
            Sink::Extension { kind, buf } => match kind {
                Extension::Pax => {
                    let records = parse_pax(&buf).map_err(|e| self.tar_error(e))?;
                    self.pending.pax = Some(records);
                    Ok(())
                }
                Extension::LongName => {
                    self.pending.long_name = Some(cstr(&buf).to_vec());
                    Ok(())
                }
                Extension::LongLink => {
                    self.pending.long_link = Some(cstr(&buf).to_vec());
                    Ok(())
                }
                Extension::Global { mut name } => {
                    // Returned by Go's reader as an entry (pending extensions dropped), skipped
                    // by Unpack, but written first by tarsum's writer if it comes first.
                    let records = parse_pax(&buf).map_err(|e| self.tar_error(e))?;
                    self.pending = Pending::default();
                    if let Some((_, path)) = records.iter().rev().find(|(k, _)| k == b"path")
                        && !path.is_empty()
                    {
                        name.clone_from(path);
                    }
                    self.check_first(&name)
                }
            },
        }
    }

    fn check_first(&mut self, name: &[u8]) -> Result<(), ContextError> {
        if std::mem::replace(&mut self.seen_first, true) {
            return Ok(());
        }
        match reencoded_magic(name) {
            None => Ok(()),
            Some(_) => Err(ContextError::Ambiguous {
                detail: format!(
                    "the first entry's name {:?} starts with compression magic bytes: dockerd \
                     would decompress its own re-encoding of the archive",
                    display_name(name)
                ),
            }),
        }
    }

    /// `Reader.next` after a non-extension header, then `Unpack` for the entry.
    fn entry(&mut self, header: Header) -> Result<(), ContextError> {
        let Header {
            mut typeflag,
            mut name,
            mut linkname,
            mut size,
        } = header;
        let pending = std::mem::take(&mut self.pending);
        if let Some(records) = pending.pax {
            // A map in Go: the last record of a key wins; an empty value keeps the header's.
            let mut last: HashMap<&[u8], &[u8]> = HashMap::new();
            for (k, v) in &records {
                last.insert(k, v);
            }
            for (&key, &value) in &last {
                if key.starts_with(b"GNU.sparse.") {
                    return Err(ContextError::Entry {
                        entry: display_name(&name),
                        detail: "GNU sparse files are not supported".into(),
                    });
                }
                if value.is_empty() {
                    continue;
                }
                let ok = match key {
                    b"path" => {
                        name = value.to_vec();
                        true
                    }
                    b"linkpath" => {
                        linkname = value.to_vec();
                        true
                    }
                    b"size" => match parse_int(value) {
                        Some(v) => {
                            size = v;
                            true
                        }
                        None => false,
                    },
                    b"uid" | b"gid" => parse_int(value).is_some(),
                    b"atime" | b"mtime" | b"ctime" => pax_time_ok(value),
                    _ => true,
                };
                if !ok {
                    return Err(self.tar_error("invalid PAX record value"));
                }
            }
        }
        if let Some(long) = pending.long_name
            && !long.is_empty()
        {
            name = long;
        }
        if let Some(long) = pending.long_link
            && !long.is_empty()
        {
            linkname = long;
        }
        if typeflag == TYPE_REGA {
            typeflag = if name.ends_with(b"/") {
                TYPE_DIR
            } else {
                TYPE_REG
            };
        }
        let size = if header_only(typeflag) { 0 } else { size };
        if size < 0 {
            return Err(self.tar_error("negative size"));
        }
        let size = size as u64;
        if typeflag == TYPE_GNU_SPARSE {
            return Err(ContextError::Entry {
                entry: display_name(&name),
                detail: "GNU sparse files are not supported".into(),
            });
        }
        self.entries += 1;
        self.check_first(&name)?;
        let sink = self.apply(typeflag, &name, &linkname, size)?;
        self.state = State::Data {
            data: size,
            pad: padding(size),
            sink,
        };
        if size == 0 {
            self.end_of_data()?;
        }
        Ok(())
    }

    /// `Unpack` for one entry: the tree change, and where its data goes.
    fn apply(
        &mut self,
        typeflag: u8,
        name: &[u8],
        linkname: &[u8],
        size: u64,
    ) -> Result<Sink, ContextError> {
        let entry_error = |detail: &str| ContextError::Entry {
            entry: display_name(name),
            detail: detail.to_string(),
        };
        let path = CleanPath::new(name);
        let Some((leaf, parents)) = path.comps.split_last() else {
            // The context root: a directory merges; `.` is skipped (`fi.IsDir() && hdr.Name ==
            // "."`); anything else is `RemoveAll("/")`, which fails.
            return if typeflag == TYPE_DIR || path.dot {
                Ok(Sink::Skip)
            } else {
                Err(entry_error("would replace the context root"))
            };
        };
        if !matches!(
            typeflag,
            TYPE_REG | TYPE_LINK | TYPE_SYMLINK | TYPE_CHAR | TYPE_BLOCK | TYPE_DIR | TYPE_FIFO
        ) {
            return Err(entry_error(&format!(
                "unsupported tar entry type {:?} (dockerd: unhandled tar header type)",
                char::from(typeflag)
            )));
        }
        path.check_lengths().map_err(entry_error)?;
        let fs_error = |e: FsError, what: &str| match e {
            FsError::Limit => ContextError::Limit {
                detail: format!("more than {MAX_NODES} nodes in the context tree"),
            },
            FsError::TooComplex => ContextError::Limit {
                detail: format!(
                    "resolving {:?} visits more than {MAX_WALK_STEPS} path components",
                    display_name(name)
                ),
            },
            e => entry_error(&format!("{what}: {}", e.text())),
        };
        let dir = self
            .tree
            .ensure_dir(parents)
            .map_err(|e| fs_error(e, "dockerd cannot create its parent directory"))?;
        let existing = self.tree.child(dir, leaf);
        if typeflag == TYPE_DIR && existing.is_some_and(|ino| self.tree.is_dir(ino)) {
            return Ok(Sink::Skip);
        }
        if existing.is_some() {
            self.tree.unlink(dir, leaf);
        }
        let mut sink = Sink::Skip;
        match typeflag {
            TYPE_DIR => {
                self.tree
                    .add(dir, leaf, Node::Dir(Dir::new(dir)))
                    .map_err(|e| fs_error(e, "mkdir"))?;
            }
            TYPE_SYMLINK => {
                if linkname.is_empty() {
                    return Err(entry_error("symlink with an empty target (ENOENT)"));
                }
                if linkname.len() >= PATH_MAX || linkname.contains(&0) {
                    return Err(entry_error("symlink target too long"));
                }
                self.tree
                    .add(
                        dir,
                        leaf,
                        Node::Symlink {
                            links: 1,
                            target: linkname.into(),
                        },
                    )
                    .map_err(|e| fs_error(e, "symlink"))?;
            }
            TYPE_CHAR | TYPE_BLOCK | TYPE_FIFO => {
                let kind = match typeflag {
                    TYPE_CHAR => Device::Char,
                    TYPE_BLOCK => Device::Block,
                    _ => Device::Fifo,
                };
                self.tree
                    .add(dir, leaf, Node::Device { links: 1, kind })
                    .map_err(|e| fs_error(e, "mknod"))?;
            }
            TYPE_LINK => {
                // `filepath.Join("/", Linkname)`, then link(2): parents followed, the last
                // component not (a link to a symlink is a symlink).
                let target = CleanPath::new(linkname);
                target.check_lengths().map_err(entry_error)?;
                let ino = self
                    .tree
                    .lookup_link_target(&target.comps)
                    .map_err(|e| fs_error(e, "dockerd cannot hard link it"))?;
                self.tree.link(dir, leaf, ino);
            }
            _ => {
                let ino = self
                    .tree
                    .add(dir, leaf, Node::File(File::new(size)))
                    .map_err(|e| fs_error(e, "create"))?;
                // Where the path resolves now that the file exists; published below, once its
                // bytes are known to be kept or not.
                let targets = if self.tree.dirty {
                    let (_, _, targets) = self.tree.resolve(&self.target, false);
                    self.tree.dirty = true;
                    targets
                } else {
                    self.targets
                };
                let targeted = targets.contains(&Some(ino));
                if self.tree.keep(ino, size, targeted) {
                    sink = Sink::Keep {
                        ino,
                        buf: Vec::with_capacity(size as usize),
                    };
                }
            }
        }
        self.refresh(false);
        Ok(sink)
    }

    fn finish(&mut self) -> Result<(), ContextError> {
        let truncated = |what| ContextError::Truncated {
            what,
            offset: self.offset,
        };
        match &self.state {
            State::Ended => {}
            State::Header | State::AfterZero if self.fill == 0 => {}
            State::Header | State::AfterZero => return Err(truncated("a tar header")),
            State::Data { data: 0, .. } => {}
            State::Data { .. } => return Err(truncated("an entry's data")),
        }
        self.refresh(true);
        Ok(())
    }

    /// Recomputes the resolution (bumping the generation when it changed); returns the inodes
    /// the Dockerfile path and its fallback resolve to.
    fn refresh(&mut self, finished: bool) -> [Option<Ino>; 2] {
        if !self.tree.dirty && finished == self.finished {
            return self.targets;
        }
        self.finished = finished;
        let (key, resolution, targets) = self.tree.resolve(&self.target, finished);
        self.targets = targets;
        let state = &mut self.resolution;
        if key != state.key {
            state.generation += 1;
            state.key = key;
        }
        state.current = match resolution {
            Outcome::Pending => Resolution::Pending,
            Outcome::Found { path, content } => Resolution::Found {
                generation: state.generation,
                path,
                content,
            },
            Outcome::Unreadable(reason) => Resolution::Unreadable {
                generation: state.generation,
                reason,
            },
        };
        targets
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A name as `filepath.Join("/", filepath.Clean(name))` leaves it: components, `..` clamped at
/// the root; `dot` when `filepath.Clean(name)` is exactly `.`.
struct CleanPath<'a> {
    comps: Vec<&'a [u8]>,
    dot: bool,
}

impl<'a> CleanPath<'a> {
    fn new(name: &'a [u8]) -> Self {
        let rooted = name.first() == Some(&b'/');
        let mut comps = Vec::new();
        let mut escaped = false;
        for c in name.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        escaped = true;
                    }
                }
                c => comps.push(c),
            }
        }
        let dot = !rooted && !escaped && comps.is_empty();
        CleanPath { comps, dot }
    }

    /// ENAMETOOLONG: dockerd's syscalls on this path fail.
    fn check_lengths(&self) -> Result<(), &'static str> {
        let len: usize = self.comps.iter().map(|c| c.len() + 1).sum();
        if len >= PATH_MAX {
            return Err("path longer than PATH_MAX");
        }
        if self.comps.iter().any(|c| c.len() > NAME_MAX) {
            return Err("path component longer than NAME_MAX");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile path and its resolution

struct Target {
    /// dockerd's `dockerfilePath` (the parameter, `Dockerfile` when empty), for messages.
    param: String,
    /// The parameter joined to the root and cleaned, as components.
    comps: Vec<Box<[u8]>>,
    /// The parameter is exactly `Dockerfile`: the lowercase fallback applies.
    fallback: bool,
}

impl Target {
    fn new(param: &str) -> Result<Self, ContextError> {
        let param = if param.is_empty() {
            DEFAULT_DOCKERFILE
        } else {
            param
        };
        if param.contains('\0') {
            return Err(ContextError::InvalidParameter {
                param: param.into(),
            });
        }
        // `filepath.Join(root, param)`: a leading `/` is only a separator, and `..` past the
        // root leaves it (no clamping: the root is a real directory here).
        let mut comps: Vec<Box<[u8]>> = Vec::new();
        for c in param.as_bytes().split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        return Err(ContextError::OutsideContext {
                            param: param.into(),
                        });
                    }
                }
                c => comps.push(c.into()),
            }
        }
        // dockerd can only fail on these: one `evalSymlinksInScope` step per component (255
        // at most), and `open(2)` takes at most PATH_MAX.
        if comps.len() >= EVAL_MAX_ITER || param.len() >= PATH_MAX {
            return Err(ContextError::InvalidParameter {
                param: param.into(),
            });
        }
        Ok(Target {
            param: param.into(),
            comps,
            fallback: param == DEFAULT_DOCKERFILE,
        })
    }
}

struct ResolutionState {
    generation: u64,
    key: Key,
    current: Resolution,
}

/// What identifies a resolution, for the generation counter.
#[derive(PartialEq, Eq)]
enum Key {
    Pending,
    Found(u64, String),
    Unreadable(String),
}

enum Outcome {
    Pending,
    Found { path: String, content: Bytes },
    Unreadable(String),
}

/// `evalSymlinksInScope`'s result.
enum Lookup {
    Missing,
    Found(Ino, String),
    Error(String),
}

// ---------------------------------------------------------------------------------------------
// The tree dockerd's Unpack builds

type Ino = u32;
const ROOT: Ino = 0;

/// One path walk's counters.
#[derive(Default)]
struct Walk {
    links: u32,
    steps: u32,
}

impl Walk {
    fn step(&mut self) -> Result<(), FsError> {
        self.steps += 1;
        if self.steps > MAX_WALK_STEPS {
            return Err(FsError::TooComplex);
        }
        Ok(())
    }

    fn link(&mut self) -> Result<(), FsError> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(FsError::Loop);
        }
        Ok(())
    }
}

type Children = HashMap<Box<[u8]>, Ino, foldhash::fast::RandomState>;

struct Dir {
    parent: Ino,
    children: Children,
}

impl Dir {
    fn new(parent: Ino) -> Self {
        Dir {
            parent,
            children: Children::default(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    Small,
    Candidate,
    TooLarge,
}

struct File {
    links: u32,
    serial: u64,
    size: u64,
    keep: Keep,
    /// Set when the kept bytes are complete.
    content: Option<Bytes>,
}

impl File {
    fn new(size: u64) -> Self {
        File {
            links: 1,
            serial: 0,
            size,
            keep: Keep::No,
            content: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Device {
    Char,
    Block,
    Fifo,
}

enum Node {
    Free,
    Dir(Dir),
    File(File),
    Symlink { links: u32, target: Box<[u8]> },
    Device { links: u32, kind: Device },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsError {
    NoEnt,
    NotDir,
    Loop,
    Perm,
    Limit,
    TooComplex,
}

impl FsError {
    fn text(self) -> &'static str {
        match self {
            FsError::NoEnt => "no such file or directory",
            FsError::NotDir => "not a directory",
            FsError::Loop => "too many levels of symbolic links",
            FsError::Perm => "operation not permitted",
            FsError::Limit => "too many nodes",
            FsError::TooComplex => "symlink resolution too long for this reader",
        }
    }
}

/// `Lstat` of a path whose parents are known not to be symlinks.
enum Stat {
    Missing,
    NotDir,
    Node(Ino),
}

struct Tree {
    nodes: Vec<Node>,
    free: Vec<Ino>,
    live: usize,
    serial: u64,
    small_kept: u64,
    candidates_kept: u64,
    /// The directory slots (directory, name) and the nodes the last resolution consulted: a
    /// change to one of them makes the tree `dirty`, and only then is the resolution computed
    /// again (most entries cannot change it).
    watched_slots: Vec<(Ino, Box<[u8]>)>,
    watched_nodes: Vec<Ino>,
    dirty: bool,
}

impl Tree {
    fn new() -> Self {
        Tree {
            nodes: vec![Node::Dir(Dir::new(ROOT))],
            free: Vec::new(),
            live: 1,
            serial: 0,
            small_kept: 0,
            candidates_kept: 0,
            watched_slots: Vec::new(),
            watched_nodes: Vec::new(),
            dirty: true,
        }
    }

    fn touch(&mut self, dir: Ino, name: &[u8]) {
        if !self.dirty
            && self
                .watched_slots
                .iter()
                .any(|(d, n)| *d == dir && n[..] == *name)
        {
            self.dirty = true;
        }
    }

    fn node(&self, ino: Ino) -> &Node {
        self.nodes.get(ino as usize).unwrap_or(&Node::Free)
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.node(ino), Node::Dir(_))
    }

    fn child(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        match self.node(dir) {
            Node::Dir(d) => d.children.get(name).copied(),
            _ => None,
        }
    }

    fn parent(&self, dir: Ino) -> Ino {
        match self.node(dir) {
            Node::Dir(d) => d.parent,
            _ => ROOT,
        }
    }

    fn add(&mut self, dir: Ino, name: &[u8], mut node: Node) -> Result<Ino, FsError> {
        if self.live >= MAX_NODES {
            return Err(FsError::Limit);
        }
        if let Node::File(file) = &mut node {
            self.serial += 1;
            file.serial = self.serial;
        }
        let ino = match self.free.pop() {
            Some(ino) => {
                self.nodes[ino as usize] = node;
                ino
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as Ino
            }
        };
        self.live += 1;
        self.touch(dir, name);
        if let Some(Node::Dir(d)) = self.nodes.get_mut(dir as usize) {
            d.children.insert(name.into(), ino);
        }
        Ok(ino)
    }

    /// A hard link: a new name for `ino` in `dir` (the name is free).
    fn link(&mut self, dir: Ino, name: &[u8], ino: Ino) {
        if let Some(
            Node::File(File { links, .. })
            | Node::Symlink { links, .. }
            | Node::Device { links, .. },
        ) = self.nodes.get_mut(ino as usize)
        {
            *links += 1;
        }
        self.touch(dir, name);
        if let Some(Node::Dir(d)) = self.nodes.get_mut(dir as usize) {
            d.children.insert(name.into(), ino);
        }
    }

    /// `RemoveAll` of `dir/name`.
    fn unlink(&mut self, dir: Ino, name: &[u8]) {
        self.touch(dir, name);
        let removed = match self.nodes.get_mut(dir as usize) {
            Some(Node::Dir(d)) => d.children.remove(name),
            _ => None,
        };
        let Some(ino) = removed else { return };
        let mut stack = vec![ino];
        while let Some(ino) = stack.pop() {
            let last = match self.nodes.get_mut(ino as usize) {
                Some(Node::Dir(d)) => {
                    stack.extend(d.children.drain().map(|(_, child)| child));
                    true
                }
                Some(
                    Node::File(File { links, .. })
                    | Node::Symlink { links, .. }
                    | Node::Device { links, .. },
                ) => {
                    *links -= 1;
                    *links == 0
                }
                _ => false,
            };
            if last {
                self.release(ino);
            }
        }
    }

    fn release(&mut self, ino: Ino) {
        let Some(slot) = self.nodes.get_mut(ino as usize) else {
            return;
        };
        if let Node::File(file) = std::mem::replace(slot, Node::Free) {
            match file.keep {
                Keep::Small => self.small_kept -= file.size,
                Keep::Candidate => self.candidates_kept -= file.size,
                Keep::No | Keep::TooLarge => {}
            }
        }
        self.free.push(ino);
        self.live -= 1;
    }

    /// Decides whether a new regular file's bytes are kept; reserves the budget.
    fn keep(&mut self, ino: Ino, size: u64, targeted: bool) -> bool {
        let keep = if targeted && size > MAX_DOCKERFILE_SIZE {
            Keep::TooLarge
        } else if targeted && self.candidates_kept + size <= CANDIDATES_BUDGET {
            self.candidates_kept += size;
            Keep::Candidate
        } else if size <= SMALL_FILE_MAX && self.small_kept + size <= SMALL_FILES_BUDGET {
            self.small_kept += size;
            Keep::Small
        } else {
            Keep::No
        };
        if let Some(Node::File(file)) = self.nodes.get_mut(ino as usize) {
            file.keep = keep;
        }
        matches!(keep, Keep::Small | Keep::Candidate)
    }

    fn complete(&mut self, ino: Ino, content: Bytes) {
        if let Some(Node::File(file)) = self.nodes.get_mut(ino as usize) {
            file.content = Some(content);
        }
        if self.watched_nodes.contains(&ino) {
            self.dirty = true;
        }
    }

    /// Resolves `target` as the kernel does in dockerd's chroot, from the directory `base`:
    /// absolute targets from the root, `..` physical and clamped at the root, the last
    /// component followed too.
    fn follow(&self, base: Ino, target: &[u8], walk: &mut Walk) -> Result<Ino, FsError> {
        let mut cur = if target.first() == Some(&b'/') {
            ROOT
        } else {
            base
        };
        let mut comps = target
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .peekable();
        while let Some(c) = comps.next() {
            walk.step()?;
            let last = comps.peek().is_none();
            if !self.is_dir(cur) {
                return Err(FsError::NotDir);
            }
            match c {
                b"." => continue,
                b".." => {
                    cur = self.parent(cur);
                    continue;
                }
                _ => {}
            }
            let child = self.child(cur, c).ok_or(FsError::NoEnt)?;
            cur = match self.node(child) {
                Node::Symlink { target, .. } => {
                    walk.link()?;
                    self.follow(cur, target, walk)?
                }
                _ => child,
            };
            if !last && !self.is_dir(cur) {
                return Err(FsError::NotDir);
            }
        }
        if target.last() == Some(&b'/') && !self.is_dir(cur) {
            return Err(FsError::NotDir);
        }
        Ok(cur)
    }

    /// `createImpliedDirectories` (`MkdirAll`) for an entry's parents: missing directories are
    /// created, symlinks followed; a dangling symlink or a non-directory fails.
    fn ensure_dir(&mut self, comps: &[&[u8]]) -> Result<Ino, FsError> {
        let mut cur = ROOT;
        let mut walk = Walk::default();
        for &c in comps {
            walk.step()?;
            cur = match self.child(cur, c) {
                None => self.add(cur, c, Node::Dir(Dir::new(cur)))?,
                Some(child) => self.walk_into(cur, child, &mut walk)?,
            };
        }
        Ok(cur)
    }

    /// Steps into `child` of `cur` as a directory, following a symlink.
    fn walk_into(&self, cur: Ino, child: Ino, walk: &mut Walk) -> Result<Ino, FsError> {
        let next = match self.node(child) {
            Node::Symlink { target, .. } => {
                walk.link()?;
                self.follow(cur, target, walk)?
            }
            _ => child,
        };
        if self.is_dir(next) {
            Ok(next)
        } else {
            Err(FsError::NotDir)
        }
    }

    /// link(2)'s old path: parents followed, the last component not; not a directory.
    fn lookup_link_target(&self, comps: &[&[u8]]) -> Result<Ino, FsError> {
        let Some((leaf, parents)) = comps.split_last() else {
            return Err(FsError::Perm);
        };
        let mut cur = ROOT;
        let mut walk = Walk::default();
        for &c in parents {
            walk.step()?;
            let child = self.child(cur, c).ok_or(FsError::NoEnt)?;
            cur = self.walk_into(cur, child, &mut walk)?;
        }
        let ino = self.child(cur, leaf).ok_or(FsError::NoEnt)?;
        if self.is_dir(ino) {
            return Err(FsError::Perm);
        }
        Ok(ino)
    }

    /// `Lstat(root + "/" + comps)`, the parents being known not to be symlinks.
    ///
    /// Records in `seen` the directory slot where the walk stops: the slots before it were
    /// recorded when `evalSymlinksInScope` built the path one component at a time.
    fn lstat(&self, comps: &[&[u8]], seen: &mut Vec<(Ino, Box<[u8]>)>) -> Stat {
        let mut cur = ROOT;
        let mut stat = Stat::Node(ROOT);
        let mut last: Option<(Ino, &[u8])> = None;
        for (i, &c) in comps.iter().enumerate() {
            if !self.is_dir(cur) {
                stat = Stat::NotDir;
                break;
            }
            last = Some((cur, c));
            match self.child(cur, c) {
                None => {
                    stat = Stat::Missing;
                    break;
                }
                Some(child) => cur = child,
            }
            stat = Stat::Node(cur);
            if i + 1 < comps.len() && matches!(self.node(cur), Node::Symlink { .. }) {
                // evalSymlinksInScope only appends non-symlinks: cannot happen.
                stat = Stat::NotDir;
                break;
            }
        }
        if let Some((dir, name)) = last
            && !seen.iter().any(|(d, n)| *d == dir && n[..] == *name)
        {
            seen.push((dir, Box::from(name)));
        }
        stat
    }

    /// `symlink.FollowSymlinkInScope(filepath.Join(root, path), root)`, then `os.Open`'s view of
    /// the result.
    fn eval(&self, rel: &[Box<[u8]>], seen: &mut Vec<(Ino, Box<[u8]>)>) -> Lookup {
        if rel.is_empty() {
            return Lookup::Found(ROOT, String::new());
        }
        // The path after the root, `/a/b`: its split pieces are "", "a", "b". A symlink's target
        // is pushed in front of the rest, as `dest + "/" + path` is in Go.
        let mut initial = Vec::new();
        for c in rel {
            initial.push(b'/');
            initial.extend_from_slice(c);
        }
        let mut stack: Vec<Pieces<'_>> = vec![Pieces::new(&initial)];
        let mut b: Vec<&[u8]> = Vec::new();
        let mut n = 0usize;
        loop {
            let p = loop {
                match stack.last_mut() {
                    None => break None,
                    Some(top) => match top.next() {
                        Some(p) => break Some(p),
                        None => {
                            stack.pop();
                        }
                    },
                }
            };
            let Some(p) = p else { break };
            if n > EVAL_MAX_ITER {
                return Lookup::Error("too many links".into());
            }
            n += 1;
            if p.is_empty() {
                continue;
            }
            // cleanP = Clean("/" + b + p)
            let mut cand = b.clone();
            match p {
                b"." => {}
                b".." => {
                    cand.pop();
                }
                _ => cand.push(p),
            }
            if cand.is_empty() {
                b.clear();
                continue;
            }
            match self.lstat(&cand, seen) {
                Stat::Missing => b = cand,
                Stat::NotDir => return Lookup::Error("not a directory".into()),
                Stat::Node(ino) => match self.node(ino) {
                    Node::Symlink { target, .. } => {
                        if target.first() == Some(&b'/') {
                            b.clear();
                        }
                        stack.push(Pieces::new(target));
                    }
                    _ => b = cand,
                },
            }
        }
        let path = b
            .iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect::<Vec<_>>()
            .join("/");
        match self.lstat(&b, seen) {
            Stat::Missing => Lookup::Missing,
            Stat::NotDir => Lookup::Error("not a directory".into()),
            Stat::Node(ino) => Lookup::Found(ino, path),
        }
    }

    /// `withDockerfileFromContext`: the resolution key, the outcome, and the inodes the path and
    /// its fallback resolve to.
    fn resolve(&mut self, target: &Target, finished: bool) -> (Key, Outcome, [Option<Ino>; 2]) {
        let mut seen = std::mem::take(&mut self.watched_slots);
        seen.clear();
        let main = self.eval(&target.comps, &mut seen);
        let fallback = if target.fallback {
            Some(self.eval(&[Box::from(&b"dockerfile"[..])], &mut seen))
        } else {
            None
        };
        self.watched_slots = seen;
        self.dirty = false;
        let found = |l: Option<&Lookup>| match l {
            Some(Lookup::Found(ino, _)) => Some(*ino),
            _ => None,
        };
        let targets = [found(Some(&main)), found(fallback.as_ref())];
        self.watched_nodes.clear();
        self.watched_nodes.extend(targets.iter().flatten());
        let not_found = || {
            let message = format!("Cannot locate specified Dockerfile: {}", target.param);
            if finished {
                (
                    Key::Unreadable(message.clone()),
                    Outcome::Unreadable(message),
                )
            } else {
                (Key::Pending, Outcome::Pending)
            }
        };
        let (key, outcome) = match (main, fallback) {
            (Lookup::Error(e), _) => {
                let reason = format!(
                    "Forbidden path outside the build context: {} ({e})",
                    target.param
                );
                (Key::Unreadable(reason.clone()), Outcome::Unreadable(reason))
            }
            (Lookup::Found(ino, path), _) => self.read(ino, path, &target.param),
            (Lookup::Missing, Some(Lookup::Found(ino, path))) => self.read(ino, path, "dockerfile"),
            (Lookup::Missing, _) => not_found(),
        };
        (key, outcome, targets)
    }

    /// `os.Open` and `readAndParseDockerfile` on what the path resolved to.
    fn read(&self, ino: Ino, path: String, name: &str) -> (Key, Outcome) {
        let unreadable =
            |reason: String| (Key::Unreadable(reason.clone()), Outcome::Unreadable(reason));
        match self.node(ino) {
            Node::File(file) => match (&file.content, file.keep) {
                (_, Keep::TooLarge) => unreadable(format!(
                    "the Dockerfile ({name}) is larger than {MAX_DOCKERFILE_SIZE} bytes"
                )),
                (Some(content), _) if content.is_empty() => {
                    unreadable(format!("the Dockerfile ({name}) cannot be empty"))
                }
                (Some(content), _) => (
                    Key::Found(file.serial, path.clone()),
                    Outcome::Found {
                        path,
                        content: content.clone(),
                    },
                ),
                (None, Keep::Small | Keep::Candidate) => (Key::Pending, Outcome::Pending),
                (None, Keep::No) => unreadable(format!(
                    "the Dockerfile ({name}) resolves to {path:?}, a file of {} bytes whose \
                     bytes were not kept (written before it became the Dockerfile, or over \
                     this reader's memory budget)",
                    file.size
                )),
            },
            Node::Dir(_) => unreadable(format!("the Dockerfile ({name}) is a directory")),
            Node::Device { kind, .. } => unreadable(format!(
                "the Dockerfile ({name}) is a {}",
                match kind {
                    Device::Char => "character device",
                    Device::Block => "block device",
                    Device::Fifo => "FIFO",
                }
            )),
            Node::Symlink { .. } | Node::Free => unreadable(format!(
                "the Dockerfile ({name}) resolves to an unexpected node"
            )),
        }
    }
}

/// The pieces of `s.split('/')`, all of them (a trailing empty one included).
struct Pieces<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Pieces<'a> {
    fn new(s: &'a [u8]) -> Self {
        Pieces {
            rest: s,
            done: false,
        }
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        match self.rest.iter().position(|&c| c == b'/') {
            Some(i) => {
                let piece = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                Some(piece)
            }
            None => {
                self.done = true;
                Some(self.rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    /// A tiny tar writer: USTAR headers, or whatever a test wants to break.
    #[derive(Default)]
    struct Tar {
        out: Vec<u8>,
    }

    fn header(name: &[u8], typeflag: u8, link: &[u8], size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        h
    }

    fn seal(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    impl Tar {
        fn raw(&mut self, h: [u8; BLOCK], data: &[u8]) -> &mut Self {
            self.out.extend_from_slice(&h);
            self.out.extend_from_slice(data);
            self.out
                .resize(self.out.len() + padding(data.len() as u64) as usize, 0);
            self
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.raw(header(name.as_bytes(), b'0', b"", data.len() as u64), data)
        }
        fn dir(&mut self, name: &str) -> &mut Self {
            self.raw(header(name.as_bytes(), b'5', b"", 0), b"")
        }
        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(header(name.as_bytes(), b'2', target.as_bytes(), 0), b"")
        }
        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.raw(header(name.as_bytes(), b'1', target.as_bytes(), 0), b"")
        }
        fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
            let mut data = Vec::new();
            for (k, v) in records {
                data.extend_from_slice(pax_record(k, v).as_bytes());
            }
            self.raw(header(b"PaxHeaders/x", b'x', b"", data.len() as u64), &data)
        }
        fn gnu_long_name(&mut self, name: &str) -> &mut Self {
            let mut data = name.as_bytes().to_vec();
            data.push(0);
            self.raw(
                header(b"././@LongLink", b'L', b"", data.len() as u64),
                &data,
            )
        }
        /// The entries without the end-of-archive marker.
        fn open(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.out)
        }
        fn end(&mut self) -> Vec<u8> {
            let mut out = std::mem::take(&mut self.out);
            out.resize(out.len() + 2 * BLOCK, 0);
            out
        }
    }

    /// `"%d %s=%s\n"` where the number counts the whole record.
    fn pax_record(k: &str, v: &str) -> String {
        let body = format!(" {k}={v}\n");
        let n = (1..)
            .map(|digits| body.len() + digits)
            .find(|n| n.to_string().len() + body.len() == *n)
            .unwrap_or(0);
        format!("{n}{body}")
    }

    fn read(param: &str, body: &[u8]) -> (Result<(), ContextError>, Resolution) {
        let mut reader = ContextReader::new(param).expect("valid parameter");
        let result = reader.feed(body).and_then(|()| reader.finish());
        (result, reader.dockerfile())
    }

    #[track_caller]
    fn found(param: &str, body: &[u8]) -> (String, Vec<u8>) {
        match read(param, body) {
            (Ok(()), Resolution::Found { path, content, .. }) => (path, content.to_vec()),
            other => panic!("expected a Dockerfile, got {other:?}"),
        }
    }

    #[track_caller]
    fn unreadable(param: &str, body: &[u8]) -> String {
        match read(param, body) {
            (Ok(()), Resolution::Unreadable { reason, .. }) => reason,
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }

    #[track_caller]
    fn error(param: &str, body: &[u8]) -> ContextError {
        match read(param, body) {
            (Err(e), _) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn compress(format: &str, data: &[u8]) -> Vec<u8> {
        match format {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).expect("in memory");
                e.finish().expect("in memory")
            }
            "bzip2" => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).expect("in memory");
                e.finish().expect("in memory")
            }
            "xz" => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).expect("in memory");
                e.finish().expect("in memory")
            }
            "zstd" => zstd::encode_all(data, 1).expect("in memory"),
            _ => data.to_vec(),
        }
    }

    fn simple() -> Vec<u8> {
        Tar::default().file("Dockerfile", b"FROM busybox\n").end()
    }

    #[test]
    fn every_compression() {
        for format in ["none", "gzip", "bzip2", "xz", "zstd"] {
            let body = compress(format, &simple());
            assert_eq!(found("", &body).1, b"FROM busybox\n", "{format}");
            let mut reader = ContextReader::new("").expect("valid");
            reader.feed(&body).expect("feeds");
            reader.finish().expect("ends");
            assert_eq!(reader.stats().compression, format);
            assert_eq!(reader.stats().entries, 1);
            assert_eq!(reader.stats().compressed, body.len() as u64);
        }
    }

    #[test]
    fn multi_member_streams() {
        let a = Tar::default().file("a", b"x").open();
        let b = Tar::default().file("Dockerfile", b"FROM b\n").end();
        for format in ["gzip", "bzip2", "xz", "zstd"] {
            let mut body = compress(format, &a);
            body.extend(compress(format, &b));
            assert_eq!(found("", &body).1, b"FROM b\n", "{format}");
        }
    }

    #[test]
    fn truncated_compressed_streams() {
        for format in ["gzip", "bzip2", "xz", "zstd"] {
            let body = compress(
                format,
                &Tar::default().file("Dockerfile", b"FROM a\n").open(),
            );
            let cut = &body[..body.len() - 3];
            assert!(
                matches!(error("", cut), ContextError::Compression { .. }),
                "{format}"
            );
        }
    }

    #[test]
    fn garbage_after_the_end_marker_is_ignored() {
        let mut body = simple();
        body.extend_from_slice(b"trailing garbage that is not a tar header at all");
        assert_eq!(found("", &body).1, b"FROM busybox\n");
        // Not after a compressed stream: dockerd's `unpigz` or `xz` would fail there, unnoticed.
        let mut gz = compress("gzip", &simple());
        gz.extend_from_slice(b"not gzip");
        assert!(matches!(error("", &gz), ContextError::Compression { .. }));
    }

    /// Fuzzing found that how much output a decoder gives before failing depends on how its
    /// input is split; dockerd ignores `xz -d`'s and `unpigz`'s exit status, so it would extract
    /// whatever prefix they wrote. Any decoding failure, even after the tar's end marker, is an
    /// error.
    #[test]
    fn regression_decoder_failure_after_the_end_marker() {
        for format in ["gzip", "bzip2", "xz", "zstd"] {
            let mut body = compress(format, &simple());
            let n = body.len();
            body[n - 6] ^= 0x55;
            assert!(
                matches!(error("", &body), ContextError::Compression { .. }),
                "{format}"
            );
        }
    }

    #[test]
    fn end_of_archive_rules() {
        let tar = Tar::default().file("Dockerfile", b"FROM a\n").open();
        // EOF at a block boundary, after one zero block, or in the padding: clean (Go).
        assert_eq!(found("", &tar).1, b"FROM a\n");
        let mut one_zero = tar.clone();
        one_zero.extend_from_slice(&[0; BLOCK]);
        assert_eq!(found("", &one_zero).1, b"FROM a\n");
        assert_eq!(found("", &tar[..BLOCK + 7]).1, b"FROM a\n");
        // Inside the data or a header: truncated.
        assert!(matches!(
            error("", &tar[..BLOCK + 3]),
            ContextError::Truncated { .. }
        ));
        assert!(matches!(
            error("", &tar[..100]),
            ContextError::Truncated { .. }
        ));
        // A zero block, then a non-zero block.
        let mut bad = tar.clone();
        bad.extend_from_slice(&[0; BLOCK]);
        bad.extend_from_slice(&Tar::default().file("x", b"").open());
        assert!(matches!(error("", &bad), ContextError::Tar { .. }));
        // An empty body is an empty archive.
        assert_eq!(
            unreadable("", b""),
            "Cannot locate specified Dockerfile: Dockerfile"
        );
    }

    #[test]
    fn corrupt_checksum() {
        let mut tar = simple();
        tar[0] ^= 1;
        let e = error("", &tar);
        assert!(matches!(e, ContextError::Tar { offset: 0, .. }), "{e}");
    }

    #[test]
    fn signed_checksum_and_base256_size() {
        let data = b"FROM signed\n";
        let mut h = header(b"Dockerfile", b'0', b"", 0);
        h[124] = 0x80;
        h[124..136].fill(0);
        h[124] = 0x80;
        h[135] = data.len() as u8;
        h[265] = 0xff; // uname: makes the signed and unsigned sums differ
        h[148..156].copy_from_slice(b"        ");
        let signed: i64 = h.iter().map(|&b| i64::from(b as i8)).sum();
        h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let body = Tar::default().raw(h, data).end();
        assert_eq!(found("", &body).1, data);
    }

    #[test]
    fn dockerfile_late_after_megabytes() {
        let big = vec![7u8; 3 << 20];
        let body = Tar::default()
            .file("big1", &big)
            .file("big2", &big)
            .file("Dockerfile", b"FROM late\n")
            .end();
        let mut reader = ContextReader::new("").expect("valid");
        for chunk in body.chunks(100_000) {
            reader.feed(chunk).expect("feeds");
        }
        reader.finish().expect("ends");
        assert!(
            matches!(reader.dockerfile(), Resolution::Found { content, .. } if &content[..] == b"FROM late\n")
        );
        assert_eq!(reader.stats().uncompressed, body.len() as u64);
    }

    #[test]
    fn byte_by_byte() {
        let body = compress(
            "gzip",
            &Tar::default()
                .dir("sub")
                .file("sub/real", b"FROM x\n")
                .symlink("Dockerfile", "sub/real")
                .end(),
        );
        let mut reader = ContextReader::new("").expect("valid");
        for b in &body {
            reader.feed(std::slice::from_ref(b)).expect("feeds");
        }
        reader.finish().expect("ends");
        assert_eq!(reader.dockerfile(), read("", &body).1, "split-independent");
    }

    #[test]
    fn pending_then_found_then_replaced() {
        let tar = Tar::default()
            .file("Dockerfile", b"FROM first\n")
            .file("Dockerfile", b"FROM second\n")
            .end();
        let mut reader = ContextReader::new("").expect("valid");
        reader.feed(&tar[..BLOCK]).expect("header");
        assert_eq!(reader.dockerfile(), Resolution::Pending);
        reader.feed(&tar[BLOCK..2 * BLOCK]).expect("data");
        let Resolution::Found {
            generation: g1,
            content,
            ..
        } = reader.dockerfile()
        else {
            panic!("found")
        };
        assert_eq!(&content[..], b"FROM first\n");
        reader.feed(&tar[2 * BLOCK..]).expect("rest");
        reader.finish().expect("ends");
        let Resolution::Found {
            generation: g2,
            content,
            ..
        } = reader.dockerfile()
        else {
            panic!("found")
        };
        assert_eq!(&content[..], b"FROM second\n");
        assert_ne!(g1, g2, "a replacement changes the generation");
    }

    #[test]
    fn lowercase_fallback() {
        let body = Tar::default().file("dockerfile", b"FROM lower\n").end();
        assert_eq!(
            found("", &body),
            ("dockerfile".into(), b"FROM lower\n".to_vec())
        );
        assert_eq!(found("Dockerfile", &body).1, b"FROM lower\n");
        // Only for the default name.
        assert_eq!(
            unreadable("./Dockerfile", &body),
            "Cannot locate specified Dockerfile: ./Dockerfile"
        );
        // Not when Dockerfile exists, even as a directory.
        let both = Tar::default()
            .dir("Dockerfile")
            .file("dockerfile", b"FROM lower\n")
            .end();
        assert!(unreadable("", &both).contains("is a directory"));
        // A big lowercase file written before Dockerfile vanished is still kept.
        let big = vec![b'#'; 100 << 10];
        let body = Tar::default()
            .file("Dockerfile", b"FROM a\n")
            .file("dockerfile", &big)
            .symlink("Dockerfile", "missing")
            .end();
        assert_eq!(found("", &body).1.len(), big.len());
    }

    #[test]
    fn parameter_paths() {
        let body = Tar::default()
            .file("Dockerfile", b"FROM root\n")
            .file("x", b"FROM x\n")
            .end();
        assert_eq!(found("sub/../x", &body).1, b"FROM x\n");
        assert_eq!(found("/x", &body).1, b"FROM x\n");
        assert_eq!(found("./sub/../Dockerfile", &body).1, b"FROM root\n");
        for outside in ["../x", "/../x", "a/../../x"] {
            assert!(matches!(
                ContextReader::new(outside),
                Err(ContextError::OutsideContext { .. })
            ));
        }
        assert!(unreadable(".", &body).contains("is a directory"));
    }

    #[test]
    fn symlinks() {
        // To a later file.
        let body = Tar::default()
            .symlink("Dockerfile", "real")
            .file("real", b"FROM later\n")
            .end();
        assert_eq!(found("", &body), ("real".into(), b"FROM later\n".to_vec()));
        // To an earlier small file.
        let body = Tar::default()
            .file("real", b"FROM earlier\n")
            .symlink("Dockerfile", "real")
            .end();
        assert_eq!(found("", &body).1, b"FROM earlier\n");
        // To an earlier file too large to keep.
        let big = vec![b'#'; 100 << 10];
        let body = Tar::default()
            .file("real", &big)
            .symlink("Dockerfile", "real")
            .end();
        assert!(unreadable("", &body).contains("not kept"));
        // Absolute, and `..` clamped at the root.
        let body = Tar::default()
            .file("etc/real", b"FROM abs\n")
            .symlink("Dockerfile", "/../../etc/real")
            .end();
        assert_eq!(
            found("", &body),
            ("etc/real".into(), b"FROM abs\n".to_vec())
        );
        // A symlinked parent directory, absolute.
        let body = Tar::default()
            .dir("a")
            .symlink("link", "/a")
            .file("link/Dockerfile", b"FROM via\n")
            .end();
        assert_eq!(found("a/Dockerfile", &body).1, b"FROM via\n");
        assert_eq!(
            found("link/Dockerfile", &body),
            ("a/Dockerfile".into(), b"FROM via\n".to_vec())
        );
        // A loop.
        let body = Tar::default()
            .symlink("Dockerfile", "b")
            .symlink("b", "Dockerfile")
            .end();
        assert!(unreadable("", &body).contains("too many links"));
        // Through a file: FollowSymlinkInScope fails, no fallback.
        let body = Tar::default()
            .file("f", b"x")
            .file("dockerfile", b"FROM lower\n")
            .symlink("Dockerfile", "f/x")
            .end();
        assert!(unreadable("", &body).contains("not a directory"));
        // Lexical `..` after a file, as evalSymlinksInScope does it.
        let body = Tar::default()
            .file("f", b"x")
            .file("real", b"FROM lexical\n")
            .symlink("Dockerfile", "f/../real")
            .end();
        assert_eq!(found("", &body).1, b"FROM lexical\n");
    }

    #[test]
    fn hard_links_share_the_inode() {
        let body = Tar::default()
            .file("orig", b"FROM old\n")
            .hardlink("Dockerfile", "orig")
            .file("orig", b"FROM new\n")
            .end();
        assert_eq!(
            found("", &body),
            ("Dockerfile".into(), b"FROM old\n".to_vec())
        );
        // A link to a symlink is a symlink.
        let body = Tar::default()
            .file("real", b"FROM real\n")
            .symlink("s", "real")
            .hardlink("Dockerfile", "s")
            .end();
        assert_eq!(found("", &body), ("real".into(), b"FROM real\n".to_vec()));
        // To a missing file or a directory: dockerd fails.
        let body = Tar::default().hardlink("Dockerfile", "missing").end();
        assert!(matches!(error("", &body), ContextError::Entry { .. }));
        let body = Tar::default().dir("d").hardlink("Dockerfile", "d").end();
        assert!(matches!(error("", &body), ContextError::Entry { .. }));
    }

    #[test]
    fn replacing_a_symlink_redirects() {
        let tar = Tar::default()
            .file("a", b"FROM a\n")
            .file("b", b"FROM b\n")
            .symlink("Dockerfile", "a")
            .symlink("Dockerfile", "b")
            .end();
        let mut reader = ContextReader::new("").expect("valid");
        reader.feed(&tar[..5 * BLOCK]).expect("feeds");
        let first = reader.dockerfile();
        reader.feed(&tar[5 * BLOCK..]).expect("feeds");
        reader.finish().expect("ends");
        let second = reader.dockerfile();
        assert!(matches!(&first, Resolution::Found { content, .. } if &content[..] == b"FROM a\n"));
        assert!(
            matches!(&second, Resolution::Found { content, .. } if &content[..] == b"FROM b\n")
        );
        let generation = |r: &Resolution| match r {
            Resolution::Found { generation, .. } => *generation,
            _ => 0,
        };
        assert_ne!(generation(&first), generation(&second));
    }

    #[test]
    fn long_names() {
        let long = format!("{}/Dockerfile", "d".repeat(150));
        let body = Tar::default()
            .pax(&[("path", &long)])
            .file("short", b"FROM pax\n")
            .end();
        assert_eq!(found(&long, &body).1, b"FROM pax\n");
        let body = Tar::default()
            .gnu_long_name(&long)
            .file("short", b"FROM gnu\n")
            .end();
        assert_eq!(found(&long, &body).1, b"FROM gnu\n");
        // GNU long name wins over PAX path (Go's order).
        let body = Tar::default()
            .pax(&[("path", "pax")])
            .gnu_long_name("Dockerfile")
            .file("short", b"FROM gnu\n")
            .end();
        assert_eq!(found("", &body).1, b"FROM gnu\n");
        // USTAR prefix.
        let mut h = header(b"Dockerfile", b'0', b"", 7);
        h[345..348].copy_from_slice(b"pre");
        seal(&mut h);
        let body = Tar::default().raw(h, b"FROM p\n").end();
        assert_eq!(found("pre/Dockerfile", &body).1, b"FROM p\n");
    }

    #[test]
    fn pax_size_overrides_and_global_headers_are_ignored() {
        // The header says 0 bytes; PAX says 7: the data is 7 bytes.
        let mut tar = Tar::default();
        tar.pax(&[("size", "7")]);
        tar.raw(header(b"Dockerfile", b'0', b"", 0), b"FROM s\n");
        assert_eq!(found("", &tar.end()).1, b"FROM s\n");
        let mut tar = Tar::default();
        let g = pax_record("path", "ignored");
        tar.raw(header(b"global", b'g', b"", g.len() as u64), g.as_bytes());
        tar.file("Dockerfile", b"FROM g\n");
        assert_eq!(found("", &tar.end()).1, b"FROM g\n");
        let mut tar = Tar::default();
        tar.raw(header(b"PaxHeaders/x", b'x', b"", 9), b"8 path=x\n")
            .file("x", b"");
        assert!(matches!(error("", &tar.end()), ContextError::Tar { .. }));
    }

    #[test]
    fn header_only_types_carry_no_data() {
        // A directory whose size field says 512: Go reads no data, the next block is a header.
        let mut tar = Tar::default();
        tar.out.extend_from_slice(&header(b"d", b'5', b"", 512));
        tar.file("Dockerfile", b"FROM d\n");
        assert_eq!(found("", &tar.end()).1, b"FROM d\n");
        // The legacy type with a trailing slash is a directory.
        let mut tar = Tar::default();
        tar.out
            .extend_from_slice(&header(b"Dockerfile/", 0, b"", 0));
        assert!(unreadable("", &tar.end()).contains("is a directory"));
    }

    #[test]
    fn names_are_cleaned_into_the_root() {
        // In dockerd's chroot, `filepath.Join("/", "../x")` is `/x`.
        let body = Tar::default().file("../Dockerfile", b"FROM up\n").end();
        assert_eq!(found("", &body).1, b"FROM up\n");
        let body = Tar::default()
            .file("./a/./../Dockerfile", b"FROM c\n")
            .end();
        assert_eq!(found("", &body).1, b"FROM c\n");
        // `.` as a file is skipped; `/` as a file fails.
        let body = Tar::default()
            .file("./", b"x")
            .file("Dockerfile", b"FROM d\n")
            .end();
        assert_eq!(found("", &body).1, b"FROM d\n");
        let body = Tar::default().file("/", b"x").end();
        assert!(matches!(error("", &body), ContextError::Entry { .. }));
    }

    #[test]
    fn entries_dockerd_cannot_extract() {
        let mut tar = Tar::default();
        tar.raw(header(b"x", b'7', b"", 0), b"");
        assert!(matches!(error("", &tar.end()), ContextError::Entry { .. }));
        let body = Tar::default()
            .file("f", b"x")
            .file("f/Dockerfile", b"FROM x\n")
            .end();
        assert!(matches!(error("", &body), ContextError::Entry { .. }));
        let body = Tar::default()
            .symlink("l", "nowhere")
            .file("l/Dockerfile", b"FROM x\n")
            .end();
        assert!(matches!(error("", &body), ContextError::Entry { .. }));
    }

    #[test]
    fn symlink_loops_while_extracting() {
        // `a -> b -> a`: creating `a/x` walks the loop, ELOOP in dockerd.
        let body = Tar::default()
            .symlink("a", "b")
            .symlink("b", "a")
            .file("a/x", b"")
            .end();
        assert!(matches!(error("", &body), ContextError::Entry { .. }));
        // A long but finite chain through directories is followed.
        let mut tar = Tar::default();
        tar.dir("d0");
        for i in 1..30 {
            tar.symlink(&format!("d{i}"), &format!("d{}", i - 1));
        }
        tar.file("d29/Dockerfile", b"FROM chain\n");
        assert_eq!(found("d0/Dockerfile", &tar.end()).1, b"FROM chain\n");
    }

    #[test]
    fn parameters_dockerd_can_only_fail_on() {
        let deep = vec!["a"; 300].join("/");
        assert!(matches!(
            ContextReader::new(&deep),
            Err(ContextError::InvalidParameter { .. })
        ));
        assert!(matches!(
            ContextReader::new("a\0b"),
            Err(ContextError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn devices_are_unreadable() {
        let mut tar = Tar::default();
        tar.raw(header(b"Dockerfile", b'6', b"", 0), b"");
        assert!(unreadable("", &tar.end()).contains("FIFO"));
    }

    #[test]
    fn empty_and_too_large_dockerfiles() {
        let body = Tar::default().file("Dockerfile", b"").end();
        assert!(unreadable("", &body).contains("cannot be empty"));
        let big = vec![b'#'; (MAX_DOCKERFILE_SIZE + 1) as usize];
        let body = Tar::default().file("Dockerfile", &big).end();
        assert!(unreadable("", &body).contains("larger than"));
    }

    #[test]
    fn reencoding_magic_is_refused() {
        // A first entry named with gzip magic: dockerd's second DecompressStream would gunzip
        // tarsum's re-encoding.
        let mut h = header(b"\x1f\x8b\x08\x04xyz", b'0', b"", 0);
        h[257..263].copy_from_slice(b"ustar ");
        h[263..265].copy_from_slice(b" \0");
        seal(&mut h);
        let tar = Tar::default()
            .raw(h, b"")
            .file("Dockerfile", b"FROM a\n")
            .end();
        assert!(matches!(
            error("", &compress("gzip", &tar)),
            ContextError::Ambiguous { .. }
        ));
        // Read as plain, the same bytes are a gzip stream to dockerd's first pass too.
        assert!(matches!(error("", &tar), ContextError::Compression { .. }));
        // A directory part Go's PAX writer would put first.
        let long = format!("BZh9/{}", "x".repeat(200));
        let body = Tar::default()
            .pax(&[("path", &long)])
            .file("x", b"")
            .file("Dockerfile", b"FROM a\n")
            .end();
        assert!(matches!(error("", &body), ContextError::Ambiguous { .. }));
        // Short, after a `/`: Go writes it whole, from `a/`.
        let body = Tar::default()
            .file("a/BZh9", b"")
            .file("Dockerfile", b"FROM a\n")
            .end();
        assert_eq!(found("", &body).1, b"FROM a\n");
        // Not the first entry: fine.
        let body = Tar::default()
            .file("Dockerfile", b"FROM a\n")
            .file("BZh9", b"")
            .end();
        assert_eq!(found("", &body).1, b"FROM a\n");
    }

    #[test]
    fn zstd_that_is_also_a_tar_is_refused() {
        let mut h = header(b"\x28\xb5\x2f\xfdname", b'0', b"", 0);
        seal(&mut h);
        let body = Tar::default().raw(h, b"").end();
        assert!(matches!(error("", &body), ContextError::Ambiguous { .. }));
    }

    #[test]
    fn errors_are_sticky_and_feed_after_finish_is_misuse() {
        let mut reader = ContextReader::new("").expect("valid");
        reader.feed(&simple()).expect("feeds");
        reader.finish().expect("ends");
        assert!(matches!(reader.feed(b"x"), Err(ContextError::Misuse(_))));
        let mut reader = ContextReader::new("").expect("valid");
        let mut bad = simple();
        bad[0] ^= 1;
        assert!(reader.feed(&bad).is_err());
        assert!(reader.feed(b"").is_err());
        assert!(reader.finish().is_err());
    }

    #[test]
    fn small_file_budget_is_released() {
        // 300 small files of 60 KiB replace each other: the budget never runs out.
        let data = vec![b'#'; 60 << 10];
        let mut tar = Tar::default();
        for _ in 0..300 {
            tar.file("same", &data);
        }
        tar.symlink("Dockerfile", "same");
        assert_eq!(found("", &tar.end()).1.len(), data.len());
    }

    fn sample_contexts() -> Vec<Vec<u8>> {
        vec![
            simple(),
            Tar::default()
                .dir("sub")
                .file("sub/real", b"FROM x\n")
                .symlink("Dockerfile", "sub/real")
                .file("sub/real", b"FROM y\n")
                .end(),
            Tar::default()
                .pax(&[("path", "Dockerfile")])
                .file("a", b"FROM pax\n")
                .hardlink("b", "Dockerfile")
                .end(),
            Tar::default().file("dockerfile", b"FROM lower\n").end(),
        ]
    }

    proptest! {
        #[test]
        fn split_invariance(
            which in 0usize..4,
            format in prop::sample::select(vec!["none", "gzip", "bzip2", "xz", "zstd"]),
            cuts in prop::collection::vec(1usize..700, 0..40),
        ) {
            let body = compress(format, &sample_contexts()[which]);
            let whole = read("", &body);
            let mut reader = ContextReader::new("").expect("valid");
            let mut rest = &body[..];
            for cut in cuts {
                let n = cut.min(rest.len());
                reader.feed(&rest[..n]).expect("feeds");
                rest = &rest[n..];
            }
            reader.feed(rest).expect("feeds");
            reader.finish().expect("ends");
            prop_assert_eq!(whole.1, reader.dockerfile());
        }

        #[test]
        fn never_panics_on_mutations(
            which in 0usize..4,
            flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..8),
            piece in 1usize..600,
        ) {
            let mut body = sample_contexts()[which].clone();
            for (at, byte) in flips {
                let n = body.len();
                body[at % n] = byte;
            }
            let mut data = vec![piece as u8];
            data.extend_from_slice(&body);
            fuzz_check(&data);
        }
    }

    /// Runs a command; a missing tool fails the test loudly.
    fn run(cmd: &mut Command) -> Vec<u8> {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?} (install it): {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn gnu_tar_and_compressor_clis() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("build/files")).expect("mkdir");
        std::fs::write(root.join("build/files/real.Dockerfile"), b"FROM from-cli\n")
            .expect("write");
        std::os::unix::fs::symlink("build/files/real.Dockerfile", root.join("Dockerfile"))
            .expect("symlink");
        let long = format!("{}/{}", "l".repeat(60), "m".repeat(60));
        std::fs::create_dir_all(root.join(&long)).expect("mkdir");
        std::fs::write(root.join(&long).join("Dockerfile"), b"FROM long\n").expect("write");
        std::fs::write(root.join("big"), vec![1u8; 200_000]).expect("write");
        std::fs::hard_link(root.join("big"), root.join("big.link")).expect("link");
        for format in ["gnu", "posix", "ustar"] {
            let tar = run(Command::new("tar")
                .arg("-C")
                .arg(root)
                .arg(format!("--format={format}"))
                .args(["-cf", "-", "."]));
            assert_eq!(
                found("", &tar),
                (
                    "build/files/real.Dockerfile".into(),
                    b"FROM from-cli\n".to_vec()
                ),
                "{format}"
            );
            {
                assert_eq!(found(&format!("{long}/Dockerfile"), &tar).1, b"FROM long\n");
            }
        }
        let tar = run(Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-cf", "-", "."]));
        std::fs::write(root.join("../ctx.tar"), &tar).expect("write");
        for (tool, args) in [
            ("gzip", &["-c"][..]),
            ("bzip2", &["-c"][..]),
            ("xz", &["-c"][..]),
            ("zstd", &["-c", "-q"][..]),
        ] {
            let compressed = run(Command::new(tool).args(args).arg(root.join("../ctx.tar")));
            assert_eq!(found("", &compressed).1, b"FROM from-cli\n", "{tool}");
        }
    }
}
