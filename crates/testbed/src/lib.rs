//! Real components on loopback for tests: a private `dockerd`, the Distribution registry,
//! `dnsmasq`, `haproxy` as a TCP relay (plain or terminating TLS), a forward HTTP proxy, and
//! test images, each in its own short temp dir under `/tmp` on free ports; and for command
//! lines, real shells (bash, zsh, fish) to check completion scripts and a pseudo-terminal to
//! see what a command draws.
//!
//! Every component is a value that owns its processes: dropping it (also while a test panics)
//! sends SIGTERM, waits up to 10 s, sends SIGKILL and reaps, then removes the temp dir. Only
//! processes the testbed started are signalled, found by child handle or by their temp dir
//! path on the command line (dockerd's containerd and shims). Tests can therefore run in
//! parallel with `cargo test`'s default threads.
//!
//! A missing program is an [`Error::MissingBinary`] naming the Debian package, never a skip:
//! `scripts/setup.sh` installs them all. A start waits a bounded time (60 s by default) and
//! its error carries the tail of the component's log.
//!
//! ```no_run
//! # fn main() -> vch_testbed::Result<()> {
//! use vch_testbed::{Dockerd, TestImage};
//! let dockerd = Dockerd::start()?;
//! let image = TestImage::busybox(&dockerd)?;
//! let out = dockerd.docker_ok(["run", "--rm", &image, "echo", "hi"])?;
//! assert_eq!(out, "hi\n");
//! # Ok(()) }
//! ```

mod dns;
mod dockerd;
mod env_registry;
mod error;
mod forward_proxy;
mod haproxy;
mod http;
mod image;
mod process;
mod registry;
mod seeds;
mod shell;

// The API.
pub use dns::{Answer, Dns, DnsBuilder, RecordType, reverse_name};
pub use dockerd::{Dockerd, DockerdBuilder, DockerdTls};
pub use env_registry::{EnvRegistry, read_env_file};
pub use error::{Error, Result};
pub use forward_proxy::ForwardProxy;
pub use haproxy::{Haproxy, HaproxyBuilder};
pub use http::{HttpClient, Response};
pub use image::{PushedImage, RandomImage, TestImage, sha256_digest};
pub use process::free_port;
pub use registry::{Registry, RegistryBuilder, TokenAuth};
pub use seeds::{SeedCorpus, SeedTarget};
pub use shell::{Shell, bash_complete, run_in_pty, syntax_check};
