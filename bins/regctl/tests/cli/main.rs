//! `regctl` end to end: the real binary against real registries, dockerd and skopeo.

// Test code may unwrap: a panic there is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certs_d;
mod commands;
mod completion;
mod interop;
mod progress;
mod proxy;
mod replicate;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vch_pki::{CaOptions, CertificateAuthority, LeafOptions};

/// A test CA whose certificate is written to `ca.pem` in a temp dir, issuing server
/// certificates as PEM files there (the form `Registry::builder().tls` and `--cacert` take).
pub(crate) struct TestPki {
    pub(crate) ca: CertificateAuthority,
    dir: tempfile::TempDir,
}

impl TestPki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate(&CaOptions::new("regctl test CA")).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        Self { ca, dir }
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a server certificate for `names`; its certificate and key files.
    pub(crate) fn server_files(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let leaf = self
            .ca
            .issue(&LeafOptions::server(names.iter().copied()))
            .unwrap();
        let (cert, key) = (
            self.dir.path().join(format!("{stem}-cert.pem")),
            self.dir.path().join(format!("{stem}-key.pem")),
        );
        std::fs::write(&cert, leaf.cert_pem()).unwrap();
        std::fs::write(&key, leaf.key().to_pem()).unwrap();
        (cert, key)
    }
}

/// An isolated home: regctl's config, Docker's config dir, certs.d all inside it.
pub(crate) struct Home {
    pub(crate) dir: tempfile::TempDir,
}

impl Home {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_regctl"));
        c.env("HOME", self.path())
            .env("REGCTL_CONFIG", self.path().join("regctl.json"))
            .env("DOCKER_CONFIG", self.path().join(".docker"))
            .env_remove("RUST_LOG");
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub(crate) fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "regctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
