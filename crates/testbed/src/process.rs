//! Spawning, watching and stopping the processes a component runs.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::error::{Error, Result};

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many log lines a start error carries.
const TAIL_LINES: usize = 40;
/// How many times a start is retried after losing a race for a free port.
const PORT_ATTEMPTS: usize = 5;

/// Runs `start` until it does not lose a race for a free port (another process took the port
/// between our probe and the component's bind), at most [`PORT_ATTEMPTS`] times.
pub(crate) fn retry_port_clash<T>(what: &str, mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start() {
            Err(e) if e.is_port_clash() && attempt < PORT_ATTEMPTS => {
                tracing::debug!(attempt, "{what} lost a port race, retrying");
            }
            other => return other,
        }
    }
}

/// Finds `binary` in `PATH`, then in `/usr/sbin` and `/sbin` (where Debian puts `dockerd` and
/// `dnsmasq`, not always in a non-root `PATH`).
pub(crate) fn find_binary(binary: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::MissingBinary {
            binary: binary.to_owned(),
            package: package.to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1: bound, read and released.
///
/// Another process may take it before the component binds it; callers retry the start when the
/// component reports the address in use.
///
/// # Errors
/// When no socket can be bound on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("bind 127.0.0.1:0 to find a free port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("local address of 127.0.0.1:0", e))?;
    Ok(addr.port())
}

/// A free port on 127.0.0.1 for both TCP and UDP (for a DNS server).
pub(crate) fn free_tcp_udp_port() -> Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        if std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Invalid {
        what: "port search",
        value: "no port free for both tcp and udp on 127.0.0.1 after 50 tries".to_owned(),
    })
}

/// A short temp dir under `/tmp`, so unix socket paths below it stay far under 108 bytes.
pub(crate) fn short_tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(|e| Error::io("create a temp dir in /tmp", e))
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    // Reading the last 64 KiB is plenty for a few dozen lines.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The whole log file as text (lossy UTF-8; empty when it cannot be read).
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A child process we started, with its output in a log file. Dropping it stops it:
/// SIGTERM, up to [`STOP_GRACE`], SIGKILL, reap; then any process whose command line names
/// `marker` (processes the child started on our behalf, such as dockerd's containerd and its
/// shims) gets the same treatment.
#[derive(Debug)]
pub(crate) struct Supervised {
    component: String,
    child: Option<Child>,
    log: PathBuf,
    marker: Option<PathBuf>,
}

impl Supervised {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub(crate) fn spawn(
        component: &str,
        mut cmd: Command,
        log: &Path,
        marker: Option<&Path>,
    ) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("open log {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("clone log handle {}", log.display()), e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // Own process group: a Ctrl-C meant for the test runner does not hit the daemon
        // half-way; we stop it ourselves in order.
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawn {component} ({cmd:?})"), e))?;
        tracing::debug!(component, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            component: component.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            marker: marker.map(Path::to_owned),
        })
    }

    /// The process id of the child, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error if the child has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("stopped".to_owned()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(self.exited(status.to_string()))
            }
            Err(e) => Err(Error::io(format!("wait for {}", self.component), e)),
        }
    }

    fn exited(&self, status: String) -> Error {
        Error::Exited {
            component: self.component.clone(),
            status,
            log: self.log.clone(),
            log_tail: log_tail(&self.log, TAIL_LINES),
        }
    }

    /// Polls `probe` until it returns `Ok(())`, the child exits, or `timeout` passes.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> std::result::Result<(), String>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let last = match probe() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                // A daemon that exited between the probe and now explains itself better.
                self.check_running()?;
                return Err(Error::Timeout {
                    component: self.component.clone(),
                    timeout,
                    last,
                    log: self.log.clone(),
                    log_tail: log_tail(&self.log, TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the child and everything started for it. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&self.component, &mut child);
        }
        if let Some(marker) = self.marker.take() {
            for pid in pids_naming(&marker) {
                tracing::debug!(component = self.component, pid, "stopping leftover process");
                stop_foreign(pid);
            }
            unmount_below(&marker);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: Signal) {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
    if let Some(pid) = raw {
        // ESRCH (already gone) is fine: the goal is that it is gone.
        let _ = kill_process(pid, sig);
    }
}

/// SIGTERM, wait up to the grace period, SIGKILL, reap.
fn terminate(component: &str, child: &mut Child) {
    let pid = child.id();
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            tracing::debug!(component, pid, "stopped");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!(component, pid, "did not stop on SIGTERM, sending SIGKILL");
    signal(pid, Signal::KILL);
    let _ = child.wait();
}

/// Stops a process that is not our child (we cannot reap it; its parent or init does).
fn stop_foreign(pid: u32) {
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, Signal::KILL);
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Detaches every mount at or below `dir`, deepest first. dockerd bind-mounts its data root
/// onto itself (mount propagation) and undoes it only on a clean shutdown; a leftover mount
/// would keep the temp dir from being removed.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy();
    let prefix = prefix.trim_end_matches('/');
    // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        match rustix::mount::unmount(point.as_str(), rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => tracing::debug!(point, "unmounted leftover mount"),
            Err(e) => tracing::warn!(point, error = %e, "could not unmount leftover mount"),
        }
    }
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Live processes (other than ourselves) whose command line contains `needle`.
pub(crate) fn pids_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| contains(&cmdline, needle))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs a short helper command to completion; a non-zero exit is an error with its output.
pub(crate) fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let line = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("run {line}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_error(line, &out))
    }
}

pub(crate) fn command_error(line: String, out: &std::process::Output) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        stderr.trim().to_owned()
    };
    Error::Command {
        command: line,
        status: out.status.to_string(),
        output: text,
    }
}

/// `arg=value` as one OS string.
pub(crate) fn flag(name: &str, value: impl AsRef<OsStr>) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(name);
    s.push("=");
    s.push(value);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_package() {
        let err = find_binary("vch-no-such-binary", "vch-pkg").unwrap_err();
        assert_eq!(
            err.to_string(),
            "vch-no-such-binary not found: apt-get install vch-pkg"
        );
    }

    #[test]
    fn finds_sh() {
        assert!(find_binary("sh", "dash").unwrap().ends_with("sh"));
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(log_tail(&log, 2), "line 98\nline 99");
        assert_eq!(log_tail(&dir.path().join("none"), 2), "");
    }

    #[test]
    fn port_clash_is_recognised() {
        let err = Error::Exited {
            component: "x".into(),
            status: "exit status: 1".into(),
            log: PathBuf::from("/x"),
            log_tail: "listen tcp 127.0.0.1:5000: bind: address already in use".into(),
        };
        assert!(err.is_port_clash());
        let dns = Error::Exited {
            component: "x".into(),
            status: "exit status: 2".into(),
            log: PathBuf::from("/x"),
            log_tail: "failed to create listening socket for port 53: Address in use".into(),
        };
        assert!(dns.is_port_clash());
        let other = Error::Exited {
            component: "x".into(),
            status: "exit status: 2".into(),
            log: PathBuf::from("/x"),
            log_tail: "permission denied".into(),
        };
        assert!(!other.is_port_clash());
    }

    #[test]
    fn child_is_stopped_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        let mut p = Supervised::spawn("sleep", cmd, &dir.path().join("log"), None).unwrap();
        let pid = p.pid().unwrap();
        assert!(alive(pid));
        p.check_running().unwrap();
        p.stop();
        assert!(!alive(pid));
        assert!(p.check_running().is_err());
    }

    #[test]
    fn marked_grandchildren_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker-dir");
        // The shell starts a background sleep naming the marker and exits: an orphan that only
        // the marker scan can find.
        let script = format!("(exec -a '{}' sleep 300) & echo started", marker.display());
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &script]);
        let mut p = Supervised::spawn("sh", cmd, &dir.path().join("log"), Some(&marker)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids_naming(&marker).is_empty() {
            assert!(Instant::now() < deadline, "orphan never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        p.stop();
        assert!(pids_naming(&marker).is_empty());
    }

    #[test]
    fn mountinfo_unescaping() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\"), r"/trailing\");
    }

    #[test]
    fn contains_finds_subslices() {
        assert!(contains(b"abc/tmp/x\0def", b"/tmp/x"));
        assert!(!contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
    }
}
