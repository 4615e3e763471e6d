//! Tar streams generated on the fly and checked on the fly: a file of any size is one 1 MiB
//! pseudo-random pattern repeated, so neither side ever holds the stream in memory, and every
//! byte that comes back is compared with what went in.

use std::io;

/// Tar block size.
const BLOCK: u64 = 512;

/// The repeated content of every generated file.
pub(crate) struct Pattern(Vec<u8>);

impl Pattern {
    /// 1 MiB from a xorshift generator: incompressible enough that no layer can shortcut it.
    pub(crate) fn new(seed: u64) -> Pattern {
        let mut x = seed | 1;
        let mut bytes = Vec::with_capacity(1 << 20);
        while bytes.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        Pattern(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Length of a tar holding one file of `size` bytes.
pub(crate) fn archive_len(size: u64) -> u64 {
    BLOCK + size.div_ceil(BLOCK) * BLOCK + 2 * BLOCK
}

/// Writes a tar holding one regular file `name` of `size` bytes of the pattern, in pieces of at
/// most 1 MiB.
pub(crate) fn write_archive(
    out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    name: &str,
    size: u64,
    pattern: &Pattern,
) -> io::Result<()> {
    out(&header(name, size))?;
    let block = pattern.bytes();
    let mut remaining = size;
    while remaining > 0 {
        let n = remaining.min(block.len() as u64) as usize;
        out(&block[..n])?;
        remaining -= n as u64;
    }
    let zeros = [0u8; 2 * BLOCK as usize];
    let pad = (size.div_ceil(BLOCK) * BLOCK - size) as usize;
    out(&zeros[..pad])?;
    out(&zeros)
}

/// The Dockerfile of every generated build context: it builds with no base image and no pull
/// (`FROM scratch`, and one instruction so that there is an image to tag).
pub(crate) const DOCKERFILE: &[u8] = b"FROM scratch\nLABEL x=y\n";

/// The file sizes of a mixed build context, drawn log-uniformly: median about 128 KiB, mean about
/// 600 KiB, a source tree with some assets.
pub(crate) const MIXED_SIZES: (u64, u64) = (4 << 10, 4 << 20);

/// A generated build context: a `Dockerfile` (first or last) among files whose sizes are drawn
/// log-uniformly from a range (such as [`MIXED_SIZES`]), rarely a multiple of 512, so that
/// entries carry padding. The archive is exactly the length asked for (rounded down to a block),
/// so an HTTP request can declare it up front.
pub(crate) struct Context {
    /// Entries in archive order: name and size.
    entries: Vec<(String, u64)>,
}

impl Context {
    /// About `size` bytes of tar (at least the Dockerfile and the two end blocks).
    pub(crate) fn new(
        size: u64,
        dockerfile_last: bool,
        (smallest, largest): (u64, u64),
    ) -> Context {
        const END: u64 = 2 * BLOCK;
        let entry_len = |n: u64| BLOCK + n.div_ceil(BLOCK) * BLOCK;
        let dockerfile = ("Dockerfile".to_owned(), DOCKERFILE.len() as u64);
        let mut len = entry_len(dockerfile.1) + END;
        let mut entries = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let (lo, hi) = (smallest as f64, largest as f64);
        loop {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            let n = if largest <= smallest {
                smallest
            } else {
                (lo * (hi / lo).powf(unit)) as u64
            };
            if len + entry_len(n) + BLOCK > size {
                break;
            }
            len += entry_len(n);
            entries.push((Self::name(entries.len()), n));
        }
        // The last file fills what is left, to the block.
        if let Some(room) = (size / BLOCK * BLOCK).checked_sub(len + BLOCK) {
            entries.push((Self::name(entries.len()), room));
        }
        if dockerfile_last {
            entries.push(dockerfile);
        } else {
            entries.insert(0, dockerfile);
        }
        Context { entries }
    }

    fn name(i: usize) -> String {
        format!("src/m{:02}/f{i:05}.bin", i / 100)
    }

    /// The archive's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, n)| BLOCK + n.div_ceil(BLOCK) * BLOCK)
            .sum::<u64>()
            + 2 * BLOCK
    }

    /// How many entries it holds (the Dockerfile included).
    pub(crate) fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Writes the archive in pieces of at most `content.len()`; every file holds `content`,
    /// repeated (it must not be empty).
    pub(crate) fn write(
        &self,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
        content: &[u8],
    ) -> io::Result<()> {
        let zeros = [0u8; 2 * BLOCK as usize];
        for (name, size) in &self.entries {
            out(&header(name, *size))?;
            if name == "Dockerfile" {
                out(DOCKERFILE)?;
            } else {
                let mut remaining = *size;
                while remaining > 0 {
                    let n = remaining.min(content.len() as u64) as usize;
                    out(&content[..n])?;
                    remaining -= n as u64;
                }
            }
            out(&zeros[..(size.div_ceil(BLOCK) * BLOCK - size) as usize])?;
        }
        out(&zeros)
    }
}

/// A ustar header for a regular file, mode 0644, owned by root.
fn header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = name.as_bytes();
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// What the walker checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A container archive: a regular file whose name ends with this, holding the pattern.
    File(&'static str),
    /// An image (`docker save`): every regular entry over 1 MiB is a layer, itself a tar that
    /// must hold the file.
    Image(&'static str),
}

enum State {
    Header,
    Data {
        remaining: u64,
        pad: u64,
        pos: u64,
        check: bool,
    },
    Pad(u64),
    End,
}

/// A streaming tar reader that checks one file's content against the pattern.
pub(crate) struct Walker<'a> {
    pattern: &'a [u8],
    expect: Expect,
    state: State,
    header: [u8; 512],
    header_len: usize,
    zero_blocks: u32,
    layer: Option<Box<Walker<'a>>>,
    /// Size of each verified copy of the file (in this tar and nested layers).
    pub(crate) verified: Vec<u64>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(pattern: &'a Pattern, expect: Expect) -> Walker<'a> {
        Walker {
            pattern: pattern.bytes(),
            expect,
            state: State::Header,
            header: [0; 512],
            header_len: 0,
            zero_blocks: 0,
            layer: None,
            verified: Vec::new(),
        }
    }

    /// Feeds the next piece of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    let take = (512 - self.header_len).min(data.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&data[..take]);
                    self.header_len += take;
                    data = &data[take..];
                    if self.header_len == 512 {
                        self.header_len = 0;
                        self.start_entry()?;
                    }
                }
                State::Data {
                    remaining,
                    pad,
                    pos,
                    check,
                } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    let piece = &data[..take];
                    if *check {
                        match &mut self.layer {
                            Some(layer) => layer.feed(piece)?,
                            None => compare(self.pattern, *pos, piece)?,
                        }
                    }
                    *pos += take as u64;
                    *remaining -= take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        let pad = *pad;
                        self.end_entry()?;
                        self.state = State::Pad(pad);
                    }
                }
                State::Pad(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Header;
                    }
                }
                State::End => {
                    if data.iter().any(|&b| b != 0) {
                        return Err("data after the end of the archive".to_owned());
                    }
                    data = &[];
                }
            }
        }
        // A zero-length entry never enters `Data`.
        if let State::Pad(0) = self.state {
            self.state = State::Header;
        }
        Ok(())
    }

    fn start_entry(&mut self) -> Result<(), String> {
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::End;
            }
            return Ok(());
        }
        self.zero_blocks = 0;
        let stored = parse_number(&h[148..156])?;
        let sum: u64 = h[..148]
            .iter()
            .chain(&[b' '; 8])
            .chain(&h[156..])
            .map(|&b| u64::from(b))
            .sum();
        if stored != sum {
            return Err(format!("tar header checksum {stored} != {sum}"));
        }
        let size = parse_number(&h[124..136])?;
        let name = String::from_utf8_lossy(&h[..100]);
        let name = name.trim_end_matches('\0');
        let regular = matches!(h[156], b'0' | 0);
        let check = match self.expect {
            Expect::File(file) => regular && name.ends_with(file),
            Expect::Image(file) => {
                let layer = regular && size > 1 << 20;
                if layer {
                    self.layer = Some(Box::new(Walker {
                        expect: Expect::File(file),
                        ..Walker::new_raw(self.pattern)
                    }));
                }
                layer
            }
        };
        let pad = size.div_ceil(BLOCK) * BLOCK - size;
        self.state = if size == 0 {
            State::Pad(pad)
        } else {
            State::Data {
                remaining: size,
                pad,
                pos: 0,
                check,
            }
        };
        if check && matches!(self.expect, Expect::File(_)) {
            self.verified.push(size);
        }
        Ok(())
    }

    fn new_raw(pattern: &'a [u8]) -> Walker<'a> {
        Walker {
            pattern,
            expect: Expect::File(""),
            state: State::Header,
            header: [0; 512],
            header_len: 0,
            zero_blocks: 0,
            layer: None,
            verified: Vec::new(),
        }
    }

    fn end_entry(&mut self) -> Result<(), String> {
        if let Some(layer) = self.layer.take() {
            let verified = layer.finish()?;
            self.verified.extend(verified);
        }
        Ok(())
    }

    /// Ends the stream; returns the sizes of the verified copies of the file.
    pub(crate) fn finish(self) -> Result<Vec<u64>, String> {
        if !matches!(self.state, State::End) {
            return Err("the archive ends before its two zero blocks".to_owned());
        }
        Ok(self.verified)
    }
}

fn compare(pattern: &[u8], mut pos: u64, mut piece: &[u8]) -> Result<(), String> {
    while !piece.is_empty() {
        let offset = (pos % pattern.len() as u64) as usize;
        let n = (pattern.len() - offset).min(piece.len());
        if piece[..n] != pattern[offset..offset + n] {
            return Err(format!("file content differs near byte {pos}"));
        }
        pos += n as u64;
        piece = &piece[n..];
    }
    Ok(())
}

/// An octal field (NUL or space terminated) or GNU base-256.
fn parse_number(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        let mut v = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or("tar number overflows")?;
        }
        return Ok(v);
    }
    let text = String::from_utf8_lossy(field);
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8).map_err(|_| format!("bad tar number {digits:?}"))
}

/// Checks the generator against the walker, and that the walker finds a corrupt byte, before the
/// bench trusts either (a bench target has no test harness to run unit tests).
pub(crate) fn self_check() -> Result<(), String> {
    let pattern = Pattern::new(7);
    let archive = |name: &str, size: u64, pattern: &Pattern| -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        write_archive(
            &mut |piece| {
                bytes.extend_from_slice(piece);
                Ok(())
            },
            name,
            size,
            pattern,
        )
        .map_err(|e| e.to_string())?;
        if bytes.len() as u64 != archive_len(size) {
            return Err(format!("archive of {size} bytes has the wrong length"));
        }
        Ok(bytes)
    };
    for size in [0, 1, 511, 512, 513, (1 << 20) + 3, 3 << 20] {
        let bytes = archive("dir/big.bin", size, &pattern)?;
        let mut walker = Walker::new(&pattern, Expect::File("big.bin"));
        for piece in bytes.chunks(1000) {
            walker.feed(piece)?;
        }
        if walker.finish()? != vec![size] {
            return Err(format!("a {size}-byte file was not verified"));
        }
    }
    // A layer tar as a file of an outer tar (as `docker save` writes it).
    let layer = archive("big.bin", 2 << 20, &pattern)?;
    let outer = archive("abc/layer.tar", layer.len() as u64, &Pattern(layer))?;
    let mut walker = Walker::new(&pattern, Expect::Image("big.bin"));
    walker.feed(&outer)?;
    if walker.finish()? != vec![2 << 20] {
        return Err("the file in a nested layer was not verified".to_owned());
    }
    // A build context: its declared length is what is written, and it is a valid tar.
    for (size, last) in [(64 << 20, false), (20 << 20, true), (0, false)] {
        let context = Context::new(size, last, MIXED_SIZES);
        let mut bytes = Vec::new();
        context
            .write(
                &mut |piece| {
                    bytes.extend_from_slice(piece);
                    Ok(())
                },
                pattern.bytes(),
            )
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 != context.len() || (size > 4096 && context.len() != size) {
            return Err(format!("a context of {size} bytes is {} long", bytes.len()));
        }
        // Every header's checksum and size add up to the two end blocks.
        let mut walker = Walker::new(&pattern, Expect::File("(none)"));
        walker.feed(&bytes)?;
        walker.finish()?;
    }
    let mut corrupt = outer;
    corrupt[512 + 512 + 4096] ^= 1;
    let mut walker = Walker::new(&pattern, Expect::Image("big.bin"));
    if walker.feed(&corrupt).is_ok() {
        return Err("a corrupt byte went unnoticed".to_owned());
    }
    Ok(())
}
