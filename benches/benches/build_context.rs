//! Reading a build context as it streams (`vch_proxy::build::context::ContextReader`): the work
//! the endpoint does on every byte of a `POST /build` upload. Target: a 1 GiB uncompressed context
//! read at 1 GB/s or more of CPU.
//!
//! Groups (`cargo bench -p vch-benches --bench build_context`, about 2 minutes):
//! - `tar/dockerfile_first/1GiB`: a 1 GiB tar held in memory (the Dockerfile, then about 1 700
//!   files of 4 KiB to 4 MiB, log-uniform: the generator of the proxy bench's build phase), fed in
//!   64 KiB pieces, as the endpoint gets them from hyper;
//! - `tar/dockerfile_last/1GiB`: the Dockerfile is the last entry (the reader reads on after it
//!   finds one anyway, as a later entry replaces it; here it finds it only at the end);
//! - `tar/header_walk/1GiB`: the naive baseline, the least any tar reader does: gather each
//!   512-byte header, read its size, skip the data;
//! - `tar/small_files/1GiB`: the worst case for a reader that skips file data, about 170 000
//!   files of 1 to 16 KiB (a `node_modules`), in 1 700 directories;
//! - `tar/empty_files/256MiB`: the adversarial case, 512 Ki empty files (a header each, nothing
//!   else): what one entry costs the reader;
//! - `gzip/dockerfile_first/64MiB`: the same kind of context, 64 MiB of tar whose files hold
//!   text-like content, gzip-compressed at the default level (as `docker build --compress`
//!   sends it), for reference; throughput is counted in tar bytes; `gzip/inflate_only/64MiB` is
//!   its baseline, the decompression alone.
//!
//! Every iteration asserts that the Dockerfile was found with its content and every byte counted.
//! Each iteration moves the whole archive, so the groups use criterion's flat sampling: ten
//! samples of one iteration each.
#![allow(
    clippy::print_stderr,
    reason = "a benchmark reports its set-up on the terminal"
)]

#[allow(
    dead_code,
    reason = "the proxy bench's tar generator, shared; its checker is not used here"
)]
#[path = "proxy/tar.rs"]
mod tar;

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use vch_proxy::build::context::{ContextReader, Resolution};

const MIB: u64 = 1 << 20;
/// What hyper hands the endpoint at a time from a fast upload.
const PIECE: usize = 64 * 1024;

/// A generated context in memory.
struct Archive {
    bytes: Vec<u8>,
    /// The tar's length (for gzip, the uncompressed length).
    tar_len: u64,
    entries: usize,
}

fn archive(size: u64, dockerfile_last: bool, sizes: (u64, u64), content: &[u8]) -> Archive {
    let context = tar::Context::new(size, dockerfile_last, sizes);
    let mut bytes = Vec::with_capacity(context.len() as usize);
    context
        .write(
            &mut |piece| {
                bytes.extend_from_slice(piece);
                Ok(())
            },
            content,
        )
        .unwrap_or_else(|e| panic!("writing to memory cannot fail: {e}"));
    assert_eq!(bytes.len() as u64, context.len());
    Archive {
        tar_len: context.len(),
        entries: context.entries(),
        bytes,
    }
}

/// Compresses at gzip's default level (6), as `docker build --compress` does (Go's
/// `gzip.NewWriter`).
fn gzip(archive: Archive) -> Archive {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(&archive.bytes)
        .and_then(|()| encoder.finish())
        .map(|bytes| Archive { bytes, ..archive })
        .unwrap_or_else(|e| panic!("compressing in memory cannot fail: {e}"))
}

/// 1 MiB of text-like bytes (identifiers, spaces and newlines from a seeded generator): it
/// compresses about as source code does, unlike the proxy bench's random pattern.
fn text() -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "fn", "let", "mut", "self", "return", "match", "if", "else", "for", "in", "while",
        "struct", "impl", "pub", "use", "crate", "context", "reader", "buffer", "length", "error",
        "value", "header", "entry", "Some", "None", "Ok", "Err", "(", ")", "{", "};",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 32) as usize].as_bytes());
        out.push(if x >> 60 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(1 << 20);
    out
}

/// Feeds the archive in 64 KiB pieces and checks what the reader found.
fn read(archive: &Archive) {
    let mut reader = ContextReader::new("").unwrap_or_else(|e| panic!("default name: {e}"));
    for piece in archive.bytes.chunks(PIECE) {
        reader
            .feed(black_box(piece))
            .unwrap_or_else(|e| panic!("feed: {e}"));
    }
    reader.finish().unwrap_or_else(|e| panic!("finish: {e}"));
    match reader.dockerfile() {
        Resolution::Found { path, content, .. } => {
            assert_eq!(path, "Dockerfile");
            assert_eq!(&content[..], tar::DOCKERFILE);
        }
        _ => panic!("the Dockerfile was not found"),
    }
    let stats = reader.stats();
    assert_eq!(stats.uncompressed, archive.tar_len);
    assert_eq!(stats.compressed, archive.bytes.len() as u64);
    assert_eq!(stats.entries, archive.entries as u64);
}

/// The naive baseline: gathers each header, reads its size, skips the data; counts the entries.
fn header_walk(archive: &Archive) {
    let (mut header, mut have, mut skip, mut entries) = ([0u8; 512], 0, 0u64, 0);
    for mut piece in black_box(&archive.bytes).chunks(PIECE) {
        while !piece.is_empty() {
            if skip > 0 {
                let n = skip.min(piece.len() as u64);
                skip -= n;
                piece = &piece[n as usize..];
                continue;
            }
            let take = (512 - have).min(piece.len());
            header[have..have + take].copy_from_slice(&piece[..take]);
            have += take;
            piece = &piece[take..];
            if have == 512 {
                have = 0;
                if header.iter().all(|&b| b == 0) {
                    continue;
                }
                let field = &header[124..135];
                let size = field
                    .iter()
                    .fold(0u64, |v, &d| v * 8 + u64::from(d.wrapping_sub(b'0') & 7));
                skip = size.div_ceil(512) * 512;
                entries += 1;
            }
        }
    }
    assert_eq!(entries, archive.entries);
}

/// The gzip baseline: decompression alone (flate2's gzip reader, the CRC checked), into a
/// 64 KiB buffer.
fn inflate(archive: &Archive) {
    let mut decoder = GzDecoder::new(black_box(&archive.bytes[..]));
    let mut buf = vec![0u8; PIECE];
    let mut total = 0u64;
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += black_box(&buf[..n]).len() as u64,
            Err(e) => panic!("inflate: {e}"),
        }
    }
    assert_eq!(total, archive.tar_len);
}

fn bench(c: &mut Criterion) {
    let pattern = tar::Pattern::new(0x5eed_cafe);
    let mut group = c.benchmark_group("tar");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let variants = [
        ("dockerfile_first", false, tar::MIXED_SIZES),
        ("dockerfile_last", true, tar::MIXED_SIZES),
        ("small_files", false, (1 << 10, 16 << 10)),
        ("empty_files", false, (0, 0)),
    ];
    for (name, last, sizes) in variants {
        let t = Instant::now();
        // Empty files are 512 bytes each, and the reader's tree holds at most 1 Mi nodes.
        let size = if name == "empty_files" { 256 } else { 1024 } * MIB;
        let archive = archive(size, last, sizes, pattern.bytes());
        eprintln!(
            "tar/{name}: {} MiB, {} entries, generated in {:.1} s",
            archive.tar_len / MIB,
            archive.entries,
            t.elapsed().as_secs_f64()
        );
        group.throughput(Throughput::Bytes(archive.tar_len));
        let label = match size / MIB {
            1024 => "1GiB".to_owned(),
            mib => format!("{mib}MiB"),
        };
        group.bench_function(BenchmarkId::new(name, label), |b| b.iter(|| read(&archive)));
        if name == "dockerfile_first" {
            group.bench_function(BenchmarkId::new("header_walk", "1GiB"), |b| {
                b.iter(|| header_walk(&archive));
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("gzip");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let archive = gzip(archive(64 * MIB, false, tar::MIXED_SIZES, &text()));
    eprintln!(
        "gzip/dockerfile_first: {} MiB of tar in {:.1} MiB of gzip ({} entries)",
        archive.tar_len / MIB,
        archive.bytes.len() as f64 / MIB as f64,
        archive.entries
    );
    group.throughput(Throughput::Bytes(archive.tar_len));
    group.bench_function(BenchmarkId::new("dockerfile_first", "64MiB"), |b| {
        b.iter(|| read(&archive));
    });
    group.bench_function(BenchmarkId::new("inflate_only", "64MiB"), |b| {
        b.iter(|| inflate(&archive));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
