//! File layouts Docker users know, and writing a set of files all-or-nothing.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of private keys.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of certificates and other public files.
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of directories this crate creates.
pub const DIR_MODE: u32 = 0o700;

/// One file of a set to write: a path relative to the target directory and its contents.
#[derive(Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path relative to the directory given to [`write_files`]; no `..`, not absolute.
    pub path: PathBuf,
    /// The bytes to write.
    pub contents: Vec<u8>,
    /// Whether this is a secret (written mode 0600 instead of 0644).
    pub secret: bool,
}

impl std::fmt::Debug for PlannedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFile")
            .field("path", &self.path)
            .field("len", &self.contents.len())
            .field("secret", &self.secret)
            .finish()
    }
}

impl PlannedFile {
    /// A public file (certificate, config).
    pub fn public(path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
            secret: false,
        }
    }

    /// A secret file (private key).
    pub fn secret(path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
            secret: true,
        }
    }
}

/// Where the certificates of a deployment go, by the names each consumer expects.
///
/// | file | [`Layout::Vch`] (vic-machine, `DOCKER_CERT_PATH`) | [`Layout::Dinv`] (`/certs`) | [`Layout::CertsD`] |
/// |---|---|---|---|
/// | CA certificate | `ca.pem` | `ca.crt` | `certs.d/<host[:port]>/ca.crt` |
/// | CA key (only when we hold it) | `ca-key.pem` | `ca-key.pem` | — |
/// | server certificate / key | `server-cert.pem` / `server-key.pem` | `docker.crt` / `docker.key` | — |
/// | client certificate / key | `cert.pem` / `key.pem` | `docker-client.crt` / `docker-client.key` | `client.cert` / `client.key` |
///
/// For [`Layout::CertsD`] the port is part of the directory name only when it is not 443, as
/// dockerd looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// A VCH directory, as vic-machine writes it; the client trio is what `DOCKER_CERT_PATH`
    /// expects.
    Vch,
    /// The `/certs` directory of Docker-in-VIC.
    Dinv,
    /// Docker's per-registry trust directory, relative to its parent (e.g. `/etc/docker`).
    CertsD {
        /// Registry host name or IP address.
        host: String,
        /// Registry port; `None` or 443 means the default.
        port: Option<u16>,
    },
}

/// The PEM texts of a deployment's certificates and keys; absent parts are not written.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    /// The CA certificate (or chain of CA certificates) clients and servers trust; `None` when
    /// the server certificate comes from elsewhere and no CA file is kept.
    pub ca_cert: Option<String>,
    /// The CA key, only when this deployment owns its CA.
    pub ca_key: Option<String>,
    /// Server certificate (chain) and key.
    pub server: Option<(String, String)>,
    /// Client certificate and key.
    pub client: Option<(String, String)>,
}

impl Bundle {
    /// The files of this bundle in `layout`, relative to the target directory.
    pub fn files(&self, layout: &Layout) -> Result<Vec<PlannedFile>> {
        let names: [&str; 6] = match layout {
            Layout::Vch => [
                "ca.pem",
                "ca-key.pem",
                "server-cert.pem",
                "server-key.pem",
                "cert.pem",
                "key.pem",
            ],
            Layout::Dinv => [
                "ca.crt",
                "ca-key.pem",
                "docker.crt",
                "docker.key",
                "docker-client.crt",
                "docker-client.key",
            ],
            Layout::CertsD { host, port } => {
                let dir = Path::new("certs.d").join(certs_d_dir_name(host, *port)?);
                let mut out = Vec::new();
                if let Some(ca) = &self.ca_cert {
                    out.push(PlannedFile::public(dir.join("ca.crt"), ca.clone()));
                }
                if let Some((cert, key)) = &self.client {
                    out.push(PlannedFile::public(dir.join("client.cert"), cert.clone()));
                    out.push(PlannedFile::secret(dir.join("client.key"), key.clone()));
                }
                return Ok(out);
            }
        };
        let [ca, ca_key, server_cert, server_key, client_cert, client_key] = names;
        let mut out = Vec::new();
        if let Some(cert) = &self.ca_cert {
            out.push(PlannedFile::public(ca, cert.clone()));
        }
        if let Some(key) = &self.ca_key {
            out.push(PlannedFile::secret(ca_key, key.clone()));
        }
        if let Some((cert, key)) = &self.server {
            out.push(PlannedFile::public(server_cert, cert.clone()));
            out.push(PlannedFile::secret(server_key, key.clone()));
        }
        if let Some((cert, key)) = &self.client {
            out.push(PlannedFile::public(client_cert, cert.clone()));
            out.push(PlannedFile::secret(client_key, key.clone()));
        }
        Ok(out)
    }
}

/// The `certs.d` directory name dockerd looks up for a registry: `host` for port 443 or none,
/// else `host:port` (IPv6 in brackets when a port follows).
pub fn certs_d_dir_name(host: &str, port: Option<u16>) -> Result<String> {
    let invalid = |reason| Error::InvalidHost {
        host: host.to_owned(),
        reason,
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        return Err(invalid("empty"));
    }
    if bare.contains(['/', '\\', '\0']) || bare == "." || bare == ".." {
        return Err(invalid("not usable as a directory name"));
    }
    let is_v6 = bare.parse::<std::net::Ipv6Addr>().is_ok();
    if !is_v6 && bare.contains(':') {
        return Err(invalid("give the port separately"));
    }
    Ok(match port {
        None | Some(443) => bare.to_owned(),
        Some(p) if is_v6 => format!("[{bare}]:{p}"),
        Some(p) => format!("{bare}:{p}"),
    })
}

/// Whether [`write_files`] may replace files that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overwrite {
    /// Fail with [`Error::Exists`] before writing anything if any target exists.
    #[default]
    Never,
    /// Replace existing files (`--force`).
    Replace,
}

/// Writes a set of files under `dir`, all or nothing, and returns their full paths.
///
/// Every target is checked first (with [`Overwrite::Never`] an existing one fails the whole
/// set before anything is written); then each file goes to a temporary file in its own
/// directory, is fsynced, and the temporaries are moved into place (a no-clobber hard link, or
/// a rename when replacing); finally the directories are fsynced. When a step fails, the
/// temporaries are removed and files already moved into place are removed again (or, when they
/// replaced a file, the old file is put back), so no half-written set stays behind.
///
/// Directories are created mode 0700, keys written 0600, other files 0644.
pub fn write_files(
    dir: &Path,
    files: &[PlannedFile],
    overwrite: Overwrite,
) -> Result<Vec<PathBuf>> {
    write_files_failing_at(dir, files, overwrite, None)
}

/// [`write_files`], failing on purpose before moving file number `fail_at` into place, so
/// tests can prove the roll-back.
fn write_files_failing_at(
    dir: &Path,
    files: &[PlannedFile],
    overwrite: Overwrite,
    fail_at: Option<usize>,
) -> Result<Vec<PathBuf>> {
    // Phase 1: check every target.
    let mut targets = Vec::with_capacity(files.len());
    for file in files {
        check_relative(&file.path)?;
        let target = dir.join(&file.path);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::io(
                    &target,
                    std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
                ));
            }
            Ok(_) if overwrite == Overwrite::Never => return Err(Error::Exists { path: target }),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&target, e)),
        }
        if targets.contains(&target) {
            return Err(Error::io(
                &target,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "listed twice"),
            ));
        }
        targets.push(target);
    }

    let mut txn = Transaction {
        fail_at,
        ..Transaction::default()
    };
    match txn.run(files, &targets, overwrite) {
        Ok(()) => {
            txn.finish();
            Ok(targets)
        }
        Err(e) => {
            txn.roll_back();
            Err(e)
        }
    }
}

/// What [`write_files`] has done so far, to undo it.
#[derive(Default)]
struct Transaction {
    created_dirs: Vec<PathBuf>,
    temps: Vec<PathBuf>,
    /// Targets moved into place, with the backup of the file they replaced.
    committed: Vec<(PathBuf, Option<PathBuf>)>,
    fail_at: Option<usize>,
}

impl Transaction {
    fn run(
        &mut self,
        files: &[PlannedFile],
        targets: &[PathBuf],
        overwrite: Overwrite,
    ) -> Result<()> {
        // Phase 2: directories and temporaries.
        for target in targets {
            if let Some(parent) = target.parent() {
                self.create_dirs(parent)?;
            }
        }
        for (file, target) in files.iter().zip(targets) {
            let temp = sibling(target, "tmp");
            self.temps.push(temp.clone());
            write_temp(&temp, &file.contents, file.secret)?;
        }
        // Phase 3: move into place.
        for (i, (temp, target)) in self.temps.clone().iter().zip(targets).enumerate() {
            if self.fail_at == Some(i) {
                return Err(Error::io(target, std::io::Error::other("injected failure")));
            }
            match overwrite {
                Overwrite::Never => {
                    // A hard link never replaces: a file created since phase 1 fails here.
                    fs::hard_link(temp, target).map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => Error::Exists {
                            path: target.clone(),
                        },
                        _ => Error::io(target, e),
                    })?;
                    self.committed.push((target.clone(), None));
                    fs::remove_file(temp).map_err(|e| Error::io(temp, e))?;
                }
                Overwrite::Replace => {
                    let backup = if target.exists() {
                        let backup = sibling(target, "bak");
                        fs::hard_link(target, &backup).map_err(|e| Error::io(target, e))?;
                        Some(backup)
                    } else {
                        None
                    };
                    if let Err(e) = fs::rename(temp, target) {
                        if let Some(b) = backup {
                            let _ = fs::remove_file(b);
                        }
                        return Err(Error::io(target, e));
                    }
                    self.committed.push((target.clone(), backup));
                }
            }
        }
        self.temps.clear();
        // Phase 4: make the renames durable.
        let mut parents: Vec<&Path> = targets.iter().filter_map(|t| t.parent()).collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn create_dirs(&mut self, dir: &Path) -> Result<()> {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => {
                self.created_dirs.push(dir.to_owned());
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(Error::io(dir, e)),
        }
    }

    fn finish(self) {
        for (_, backup) in self.committed {
            if let Some(b) = backup
                && let Err(e) = fs::remove_file(&b)
            {
                tracing::warn!(path = %b.display(), error = %e, "cannot remove backup");
            }
        }
    }

    fn roll_back(self) {
        for temp in &self.temps {
            let _ = fs::remove_file(temp);
        }
        for (target, backup) in self.committed.iter().rev() {
            let restored = match backup {
                Some(b) => fs::rename(b, target),
                None => fs::remove_file(target),
            };
            if let Err(e) = restored {
                tracing::error!(path = %target.display(), error = %e, "cannot roll back");
            }
        }
        for dir in self.created_dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn check_relative(path: &Path) -> Result<()> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "file paths in a set must be relative, without '..'",
            ),
        ))
    }
}

/// A hidden name beside `target`, unique to this process and moment.
fn sibling(target: &Path, what: &str) -> PathBuf {
    let mut nonce = [0u8; 6];
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let mut name = OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(format!(".{what}-{}-{nonce}", std::process::id()));
    target.with_file_name(name)
}

fn write_temp(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let mode = if secret { SECRET_MODE } else { PUBLIC_MODE };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    // The umask may have narrowed the mode; set it exactly.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::io(path, e))?;
    file.write_all(contents).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn bundle() -> Bundle {
        Bundle {
            ca_cert: Some("CA".into()),
            ca_key: Some("CAKEY".into()),
            server: Some(("SC".into(), "SK".into())),
            client: Some(("CC".into(), "CK".into())),
        }
    }

    fn names(files: &[PlannedFile]) -> Vec<(String, bool)> {
        files
            .iter()
            .map(|f| (f.path.display().to_string(), f.secret))
            .collect()
    }

    #[test]
    fn layouts_name_files_as_their_consumers_expect() {
        let b = bundle();
        assert_eq!(
            names(&b.files(&Layout::Vch).unwrap()),
            [
                ("ca.pem", false),
                ("ca-key.pem", true),
                ("server-cert.pem", false),
                ("server-key.pem", true),
                ("cert.pem", false),
                ("key.pem", true)
            ]
            .map(|(n, s)| (n.to_owned(), s))
        );
        assert_eq!(
            names(&b.files(&Layout::Dinv).unwrap()),
            [
                ("ca.crt", false),
                ("ca-key.pem", true),
                ("docker.crt", false),
                ("docker.key", true),
                ("docker-client.crt", false),
                ("docker-client.key", true)
            ]
            .map(|(n, s)| (n.to_owned(), s))
        );
        let certs_d = |host: &str, port| {
            names(
                &b.files(&Layout::CertsD {
                    host: host.into(),
                    port,
                })
                .unwrap(),
            )
        };
        assert_eq!(
            certs_d("reg.example", Some(5000)),
            [
                ("certs.d/reg.example:5000/ca.crt", false),
                ("certs.d/reg.example:5000/client.cert", false),
                ("certs.d/reg.example:5000/client.key", true)
            ]
            .map(|(n, s)| (n.to_owned(), s))
        );
        assert_eq!(
            certs_d("reg.example", Some(443))[0].0,
            "certs.d/reg.example/ca.crt"
        );
        assert_eq!(
            certs_d("reg.example", None)[0].0,
            "certs.d/reg.example/ca.crt"
        );
        assert_eq!(certs_d("::1", Some(5000))[0].0, "certs.d/[::1]:5000/ca.crt");
        for bad in ["", "..", "a/b", "host:5000"] {
            assert!(certs_d_dir_name(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_with_modes_and_refuses_to_clobber() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vch").join("nested");
        let files = bundle().files(&Layout::Vch).unwrap();
        let written = write_files(&dir, &files, Overwrite::Never).unwrap();
        assert_eq!(written.len(), 6);
        assert_eq!(fs::read_to_string(dir.join("key.pem")).unwrap(), "CK");
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&dir.join("ca.pem")), 0o644);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        // No temporaries left.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 6);

        // A second write fails on the first existing file and changes nothing.
        let mut changed = bundle();
        changed.client = Some(("NEW".into(), "NEWKEY".into()));
        let err = write_files(
            &dir,
            &changed.files(&Layout::Vch).unwrap(),
            Overwrite::Never,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Exists { ref path } if path.ends_with("ca.pem")),
            "{err}"
        );
        assert_eq!(fs::read_to_string(dir.join("key.pem")).unwrap(), "CK");

        // With Replace it overwrites, keeping key modes.
        write_files(
            &dir,
            &changed.files(&Layout::Vch).unwrap(),
            Overwrite::Replace,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dir.join("key.pem")).unwrap(), "NEWKEY");
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 6, "no backups left");
    }

    #[test]
    fn one_existing_file_blocks_the_whole_set() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("key.pem"), "OLD").unwrap();
        let err = write_files(
            tmp.path(),
            &bundle().files(&Layout::Vch).unwrap(),
            Overwrite::Never,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Exists { .. }));
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the pre-existing file remains");
    }

    #[test]
    fn failure_midway_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        // The last file's parent is a regular file, so creating its directory fails after
        // nothing else was moved into place; and a read-only subdirectory makes a later move
        // fail after earlier ones succeeded.
        fs::write(tmp.path().join("blocker"), "x").unwrap();
        let files = vec![
            PlannedFile::public("a.pem", "A"),
            PlannedFile::secret("sub/b.key", "B"),
            PlannedFile::public("blocker/c.pem", "C"),
        ];
        assert!(write_files(tmp.path(), &files, Overwrite::Never).is_err());
        let mut left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["blocker"], "no file, temp or directory left");
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if entry.file_type().unwrap().is_dir() {
                for sub in listing(&entry.path()) {
                    out.push(format!("{name}/{sub}"));
                }
            } else {
                out.push(name);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn failed_move_rolls_back_files_already_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let files = vec![
            PlannedFile::public("a.pem", "A"),
            PlannedFile::secret("sub/b.key", "B"),
            PlannedFile::public("c.pem", "C"),
        ];
        // Two files are in place when the third move fails: all are removed again, with the
        // temporaries and the directory created for them.
        let err = write_files_failing_at(tmp.path(), &files, Overwrite::Never, Some(2));
        assert!(err.is_err());
        assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

        // When replacing, the old files come back.
        fs::write(tmp.path().join("a.pem"), "OLD").unwrap();
        let err = write_files_failing_at(tmp.path(), &files, Overwrite::Replace, Some(2));
        assert!(err.is_err());
        assert_eq!(listing(tmp.path()), ["a.pem"]);
        assert_eq!(fs::read_to_string(tmp.path().join("a.pem")).unwrap(), "OLD");
    }

    #[test]
    fn paths_must_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", ""] {
            let files = vec![PlannedFile::public(bad, "x")];
            assert!(
                write_files(tmp.path(), &files, Overwrite::Never).is_err(),
                "{bad:?}"
            );
        }
    }
}
