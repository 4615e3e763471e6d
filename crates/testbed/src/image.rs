//! Test images built offline: a runnable static-busybox image imported into a [`Dockerd`], and
//! images of random layers pushed into a registry through the Registry HTTP API.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::dockerd::Dockerd;
use crate::error::{Error, Result};
use crate::http::{HttpClient, resolve_location};

/// Where busybox-static installs its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Applets linked into the rootfs (all present in Debian's busybox-static).
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "echo",
    "cat",
    "ls",
    "sleep",
    "true",
    "false",
    "env",
    "id",
    "hostname",
    "printf",
    "mkdir",
    "rm",
    "touch",
    "ps",
    "head",
    "tail",
    "grep",
    "sed",
    "wc",
    "date",
    "uname",
    "wget",
    "nc",
    "sha256sum",
    "test",
    "kill",
    "stat",
    "tar",
    "find",
    "cp",
    "mv",
    "ln",
    "pwd",
    "dd",
];

/// Media types of the Docker image manifest v2 schema 2.
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_V1: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Test images.
#[derive(Debug)]
#[non_exhaustive]
pub struct TestImage;

impl TestImage {
    /// The tag [`TestImage::busybox`] imports as.
    pub const BUSYBOX_TAG: &'static str = "vch-test/busybox:latest";

    /// Imports a static-busybox image into `dockerd` as [`TestImage::BUSYBOX_TAG`] and returns
    /// the tag. Runnable offline: `docker run --rm vch-test/busybox:latest echo hi`.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] without busybox-static or the docker CLI; [`Error::Command`]
    /// when `docker import` fails.
    pub fn busybox(dockerd: &Dockerd) -> Result<String> {
        Self::busybox_as(dockerd, Self::BUSYBOX_TAG)
    }

    /// As [`TestImage::busybox`], with a chosen tag.
    ///
    /// # Errors
    /// As [`TestImage::busybox`].
    pub fn busybox_as(dockerd: &Dockerd, tag: &str) -> Result<String> {
        let tar = Self::busybox_rootfs()?;
        // A file of its own per call: imports into one daemon may run in parallel.
        let file = tempfile::Builder::new()
            .prefix("busybox-rootfs-")
            .suffix(".tar")
            .tempfile_in(dockerd.dir())
            .map_err(|e| Error::io(format!("create a file in {}", dockerd.dir().display()), e))?;
        std::fs::write(file.path(), tar)
            .map_err(|e| Error::io(format!("write {}", file.path().display()), e))?;
        dockerd.docker_ok([
            "import".as_ref(),
            "--change".as_ref(),
            "CMD [\"sh\"]".as_ref(),
            file.path().as_os_str(),
            tag.as_ref(),
        ])?;
        Ok(tag.to_owned())
    }

    /// The rootfs tar of the busybox image: `/bin/busybox` (static), applet symlinks in
    /// `/bin`, and empty `/tmp`, `/etc`, `/root`.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] when busybox-static is not installed.
    pub fn busybox_rootfs() -> Result<Vec<u8>> {
        let busybox = Path::new(BUSYBOX);
        let bytes = std::fs::read(busybox).map_err(|_| Error::MissingBinary {
            binary: BUSYBOX.to_owned(),
            package: "busybox-static".to_owned(),
        })?;
        // Debian's dynamic `busybox` package also installs /bin/busybox; a dynamic binary
        // would not run in an image without libc.
        if !is_static_elf(&bytes) {
            return Err(Error::MissingBinary {
                binary: format!("static {BUSYBOX}"),
                package: "busybox-static".to_owned(),
            });
        }
        let mut tar = TarWriter::default();
        for dir in ["bin/", "etc/", "root/"] {
            tar.dir(dir, 0o755);
        }
        tar.dir("tmp/", 0o1777);
        tar.file("bin/busybox", 0o755, &bytes);
        for applet in APPLETS {
            tar.symlink(&format!("bin/{applet}"), "busybox");
        }
        Ok(tar.finish())
    }

    /// An image of random layers to push with [`RandomImage::push`].
    pub fn random(repository: impl Into<String>, tag: impl Into<String>) -> RandomImage {
        RandomImage {
            repository: repository.into(),
            tag: tag.into(),
            layers: 1,
            layer_size: 1024,
            seed: None,
        }
    }
}

/// Whether `bytes` is an ELF executable without a `PT_INTERP` program header (statically
/// linked), for 64-bit little-endian ELF.
fn is_static_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if !bytes.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let off = usize::try_from(phoff).unwrap_or(usize::MAX);
        let entry = off.saturating_add(i.saturating_mul(usize::from(phentsize)));
        u32_at(entry).is_some_and(|t| t != PT_INTERP)
    })
}

/// An image of random layers, built in memory and pushed through the Registry HTTP API
/// (monolithic uploads: `POST` then `PUT ?digest=`; then a schema 2 manifest).
///
/// Each layer is a real gzip-wrapped tar holding one file `layer-N.bin` of `layer_size`
/// random bytes (gzip stored blocks: random data does not compress), so the image can be pulled
/// by docker or skopeo; the blob is `layer_size` plus about 1.5 KiB of framing.
#[derive(Clone, Debug)]
#[must_use]
pub struct RandomImage {
    repository: String,
    tag: String,
    layers: usize,
    layer_size: usize,
    seed: Option<u64>,
}

/// What [`RandomImage::push`] pushed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PushedImage {
    /// Repository within the registry (`team/app`).
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// `sha256:…` of the manifest bytes (the registry's `Docker-Content-Digest`).
    pub manifest_digest: String,
    /// The manifest as pushed.
    pub manifest: Vec<u8>,
    /// `sha256:…` of the config blob.
    pub config_digest: String,
    /// `sha256:…` of each layer blob, base first.
    pub layer_digests: Vec<String>,
    /// Sum of the sizes of all blobs (config and layers).
    pub total_bytes: u64,
}

impl RandomImage {
    /// Number of layers (default 1).
    pub fn layers(mut self, layers: usize) -> Self {
        self.layers = layers;
        self
    }

    /// Random bytes per layer (default 1024).
    pub fn layer_size(mut self, bytes: usize) -> Self {
        self.layer_size = bytes;
        self
    }

    /// A fixed seed, for identical content across runs (default: a fresh one per image).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the blobs and pushes them and the manifest to `registry_url`
    /// (`http://127.0.0.1:PORT`) with `client` (which carries TLS trust and credentials).
    ///
    /// # Errors
    /// [`Error::Http`] when an upload is refused or a digest does not match.
    pub fn push(&self, client: &HttpClient, registry_url: &str) -> Result<PushedImage> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = registry_url.trim_end_matches('/');
        let seed = self.seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos
                ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
                ^ u64::from(std::process::id())
        });
        let mut rng = XorShift::new(seed);
        let mut total = 0u64;
        let mut layers = Vec::with_capacity(self.layers);
        let mut diff_ids = Vec::with_capacity(self.layers);
        for i in 0..self.layers {
            let mut content = vec![0u8; self.layer_size];
            rng.fill(&mut content);
            let mut tar = TarWriter::default();
            tar.file(&format!("layer-{i}.bin"), 0o644, &content);
            let tar = tar.finish();
            diff_ids.push(sha256_digest(&tar));
            let blob = gzip_stored(&tar);
            let digest = upload_blob(client, base, &self.repository, &blob)?;
            total += blob.len() as u64;
            layers.push(serde_json::json!({
                "mediaType": LAYER_GZIP, "size": blob.len(), "digest": digest,
            }));
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        })
        .to_string()
        .into_bytes();
        let config_digest = upload_blob(client, base, &self.repository, &config)?;
        total += config.len() as u64;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": { "mediaType": CONFIG_V1, "size": config.len(), "digest": config_digest },
            "layers": layers,
        })
        .to_string()
        .into_bytes();
        let manifest_digest = sha256_digest(&manifest);
        let url = format!("{base}/v2/{}/manifests/{}", self.repository, self.tag);
        let resp = client.request("PUT", &url, &[("Content-Type", MANIFEST_V2)], &manifest)?;
        if resp.status != 201 {
            return Err(Error::http(
                "PUT",
                &url,
                format!("status {}: {}", resp.status, resp.text()),
            ));
        }
        if let Some(d) = resp.header("docker-content-digest")
            && d != manifest_digest
        {
            return Err(Error::http(
                "PUT",
                &url,
                format!("registry says digest {d}, we computed {manifest_digest}"),
            ));
        }
        let layer_digests = layers
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned))
            .collect();
        Ok(PushedImage {
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            manifest_digest,
            manifest,
            config_digest,
            layer_digests,
            total_bytes: total,
        })
    }
}

/// Monolithic upload: `POST /v2/<name>/blobs/uploads/` → 202 + `Location`, then
/// `PUT <location>?digest=…` with the whole blob → 201. Returns the digest.
fn upload_blob(client: &HttpClient, base: &str, repository: &str, blob: &[u8]) -> Result<String> {
    let digest = sha256_digest(blob);
    let start = format!("{base}/v2/{repository}/blobs/uploads/");
    let resp = client.request("POST", &start, &[], &[])?;
    if resp.status != 202 {
        return Err(Error::http(
            "POST",
            &start,
            format!("status {}: {}", resp.status, resp.text()),
        ));
    }
    let location = resp
        .header("location")
        .ok_or_else(|| Error::http("POST", &start, "202 without Location"))?;
    let upload = resolve_location(&start, location).map_err(|r| Error::http("POST", &start, r))?;
    let sep = if upload.contains('?') { '&' } else { '?' };
    let put = format!("{upload}{sep}digest={digest}");
    let resp = client.request(
        "PUT",
        &put,
        &[("Content-Type", "application/octet-stream")],
        blob,
    )?;
    if resp.status != 201 {
        return Err(Error::http(
            "PUT",
            &put,
            format!("status {}: {}", resp.status, resp.text()),
        ));
    }
    Ok(digest)
}

/// `sha256:<hex>` of `data`.
#[must_use]
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// xorshift64*: fast, reproducible filler for layer contents (not for anything secret).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is the one fixed point of xorshift.
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A ustar archive writer for the few entry kinds the images need.
#[derive(Default)]
struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], off: usize, len: usize, v: &[u8]| {
            let n = v.len().min(len);
            h[off..off + n].copy_from_slice(&v[..n]);
        };
        let octal = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}", w = len - 1);
            put(h, off, len - 1, s.as_bytes());
        };
        put(&mut h, 0, 100, name.as_bytes());
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        put(&mut h, 157, 100, link.as_bytes());
        put(&mut h, 257, 6, b"ustar\0");
        put(&mut h, 263, 2, b"00");
        put(&mut h, 265, 32, b"root");
        put(&mut h, 297, 32, b"root");
        // The checksum is computed with its own field read as eight spaces.
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        self.out.extend_from_slice(&h);
    }

    fn dir(&mut self, name: &str, mode: u32) {
        self.header(name, mode, 0, b'5', "");
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, mode, data.len(), b'0', "");
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.resize(self.out.len() + pad, 0);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    fn finish(mut self) -> Vec<u8> {
        // End of archive: two zero blocks.
        self.out.resize(self.out.len() + 1024, 0);
        self.out
    }
}

/// gzip (RFC 1952) around deflate stored blocks (RFC 1951 §3.2.4): valid gzip without a
/// compressor, fine for random data that would not compress anyway.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        // Chunks are at most 65535 bytes, so the length fits in u16.
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the input size modulo 2^32 by definition.
    out.extend_from_slice(&((data.len() as u64 & 0xffff_ffff) as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses).
fn crc32(data: &[u8]) -> u32 {
    let table: [u32; 256] = std::array::from_fn(|i| {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn gzip_roundtrips_through_system_gzip() {
        let mut data = vec![0u8; 200_000];
        XorShift::new(7).fill(&mut data);
        for input in [&data[..], &data[..65535], &[][..]] {
            let gz = gzip_stored(input);
            let out = std::process::Command::new("gzip")
                .arg("-dc")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(&gz)?;
                    child.wait_with_output()
                })
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout, input);
        }
    }

    #[test]
    fn tar_lists_with_system_tar() {
        let mut tar = TarWriter::default();
        tar.dir("bin/", 0o755);
        tar.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        tar.symlink("bin/hi", "hello");
        let bytes = tar.finish();
        assert_eq!(bytes.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("bin/hello"), "{listing}");
        assert!(listing.contains("bin/hi -> hello"), "{listing}");
        assert!(listing.contains("18 "), "size of hello: {listing}");
    }

    #[test]
    fn digest_format() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn xorshift_is_reproducible_and_not_constant() {
        let (mut a, mut b) = (vec![0u8; 13], vec![0u8; 13]);
        XorShift::new(42).fill(&mut a);
        XorShift::new(42).fill(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, vec![a[0]; 13]);
    }

    #[test]
    fn busybox_rootfs_is_static_and_complete() {
        let tar = TestImage::busybox_rootfs().unwrap();
        assert!(is_static_elf(&std::fs::read(BUSYBOX).unwrap()));
        assert!(!is_static_elf(&std::fs::read("/bin/sh").unwrap()));
        assert!(tar.len() > 500_000);
    }
}
