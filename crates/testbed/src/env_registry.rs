//! A `docker-registry` configured the way a deployment configures it: by the environment of an
//! env file (`vch-admin registry cert` writes `registry.env`), optionally inside a network
//! namespace (where dockerd verifies registry certificates, as it does not on loopback).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{find_binary, log_tail};

/// How long the registry has to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry` with the settings of an env file. Dropping it kills exactly its
/// process.
pub struct EnvRegistry {
    child: Child,
    dir: tempfile::TempDir,
}

impl EnvRegistry {
    /// Serves on `addr` with storage in a temporary directory and every `REGISTRY_*` variable of
    /// `env_file` (none inherited from the caller); inside network namespace `netns` if given
    /// (`ip netns exec` execs the registry, so the child is the registry itself).
    pub fn start(env_file: &Path, addr: SocketAddr, netns: Option<&str>) -> Result<EnvRegistry> {
        let binary = find_binary("docker-registry", "docker-registry")?;
        let io = |what: String| move |source| Error::Io { what, source };
        let dir = tempfile::Builder::new()
            .prefix("vchenvreg-")
            .tempdir()
            .map_err(io("a temporary directory".into()))?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    \
                 rootdirectory: {:?}\nhttp:\n  addr: \"{addr}\"\n  secret: test-not-secret\n",
                dir.path().join("storage").display().to_string()
            ),
        )
        .map_err(io(format!("writing {}", config.display())))?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new(find_binary("ip", "iproute2")?);
                c.args(["netns", "exec", ns]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        cmd.arg("serve").arg(&config);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(name);
            }
        }
        let log = dir.path().join("registry.log");
        let create = |path: &Path| {
            std::fs::File::create(path).map_err(io(format!("creating {}", path.display())))
        };
        cmd.envs(read_env_file(env_file)?)
            .stdin(Stdio::null())
            .stdout(create(&log)?)
            .stderr(create(&dir.path().join("registry.err"))?);
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        let mut registry = EnvRegistry { child, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(_) => return Ok(registry),
                Err(e) => {
                    if let Ok(Some(status)) = registry.child.try_wait() {
                        return Err(Error::Exited {
                            component: "docker-registry".into(),
                            status: status.to_string(),
                            log: registry.err_path(),
                            log_tail: log_tail(&registry.err_path(), 20),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout {
                            component: "docker-registry".into(),
                            timeout: START_TIMEOUT,
                            last: format!("connect {addr}: {e}"),
                            log: registry.err_path(),
                            log_tail: log_tail(&registry.err_path(), 20),
                        });
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn err_path(&self) -> PathBuf {
        self.dir.path().join("registry.err")
    }

    /// What the registry logged (its access log and errors), for failure messages.
    pub fn log_text(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default(),
            std::fs::read_to_string(self.err_path()).unwrap_or_default()
        )
    }
}

impl Drop for EnvRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `NAME=VALUE` lines of an env file (blank lines and `#` comments skipped).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}
