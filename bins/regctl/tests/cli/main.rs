//! `regctl` end to end: the real binary against real registries, dockerd and skopeo.

// Test code may unwrap: a panic there is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod interop;
mod proxy;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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
