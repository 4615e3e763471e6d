//! The proxy under test as a process of its own: this bench binary re-executed as `vch-admin`
//! (same `Cli`, `init_tracing` and `run` as the real binary), so its memory is measured alone.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use rustix::process::{Pid, Signal, kill_process};

/// Set in the environment of a re-executed child: run `vch-admin` with the arguments.
pub(crate) const CHILD_ENV: &str = "VCH_BENCH_VCH_ADMIN";

/// The child's `main`: exactly what `bins/vch-admin/src/main.rs` does.
pub(crate) fn child_main() -> ExitCode {
    // If the bench dies, its proxies go with it.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::TERM));
    let cli = vch_admin::Cli::parse();
    if let Err(err) = vch_admin::init_tracing(&cli) {
        return vch_admin::report(&err);
    }
    match vch_admin::run(cli) {
        Ok(code) => code,
        Err(err) => vch_admin::report(&err),
    }
}

fn vch_admin() -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    Ok(child(&exe))
}

fn child(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, "1");
    cmd
}

/// `vch-admin create --name NAME --cert-path ROOT/NAME --docker-host HOST [--no-tls]`: plain
/// TCP, or the default mutual TLS with a new CA and client certificate.
pub(crate) fn create(
    root: &Path,
    name: &str,
    docker_host: &str,
    tls: bool,
) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    let mut cmd = vch_admin()?;
    cmd.args([
        "create",
        "--name",
        name,
        "--docker-host",
        docker_host,
        "--cert-path",
    ])
    .arg(&dir);
    if !tls {
        cmd.arg("--no-tls");
    }
    let out = cmd.output().context("cannot run vch-admin create")?;
    if !out.status.success() {
        bail!(
            "vch-admin create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(dir)
}

/// A running `vch-admin serve DIR`. Dropping it sends SIGTERM and waits for the exit.
pub(crate) struct Vch {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) audit_log: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Vch {
    /// Starts `vch-admin serve DIR --listen 127.0.0.1:0` with the audit log in a file (as a
    /// deployment would) and waits for the line that says where it listens.
    pub(crate) fn start(dir: &Path, max_connections: usize) -> anyhow::Result<Vch> {
        Vch::start_from(
            vch_admin()?,
            dir.join("audit.log"),
            dir,
            max_connections,
            &[],
        )
    }

    /// The same with Prometheus metrics on (`--metrics 127.0.0.1:0`), to measure what counting
    /// costs beside a VCH without (`VCH_BENCH_METRICS`, see `main.rs`).
    pub(crate) fn start_with_metrics(dir: &Path, max_connections: usize) -> anyhow::Result<Vch> {
        Vch::start_from(
            vch_admin()?,
            dir.join("audit-metrics.log"),
            dir,
            max_connections,
            &["--metrics", "127.0.0.1:0"],
        )
    }

    /// The same, run by another build of this bench (`VCH_BENCH_BASELINE`, see `main.rs`), with
    /// its own audit log.
    pub(crate) fn start_baseline(
        exe: &Path,
        dir: &Path,
        max_connections: usize,
    ) -> anyhow::Result<Vch> {
        Vch::start_from(
            child(exe),
            dir.join("audit-baseline.log"),
            dir,
            max_connections,
            &[],
        )
    }

    fn start_from(
        mut cmd: Command,
        audit_log: PathBuf,
        dir: &Path,
        max_connections: usize,
        extra: &[&str],
    ) -> anyhow::Result<Vch> {
        cmd.arg("serve")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--shutdown-grace", "2"])
            .args(extra)
            .arg("--max-connections")
            .arg(max_connections.to_string())
            .arg("--audit-log")
            .arg(&audit_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot start vch-admin serve")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let log = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains(" serves Docker API ") {
                        let _ = tx.send(line.clone());
                    }
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut vch = Vch {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            audit_log,
            stderr,
        };
        let line = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            anyhow::anyhow!(
                "vch-admin serve {} did not start: {}",
                dir.display(),
                vch.log()
            )
        })?;
        // "vch-admin: VCH NAME serves Docker API v1.25 on 127.0.0.1:PORT (mode), engine …"
        vch.addr = line
            .split_once(" on ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|addr| addr.trim_end_matches(',').parse().ok())
            .with_context(|| format!("no listen address in {line:?}"))?;
        Ok(vch)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote on stderr.
    pub(crate) fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The sum of `vch_requests_total` scraped from the metrics listener (`--metrics`), which
    /// shows the requests were counted.
    pub(crate) fn requests_counted(&self) -> anyhow::Result<f64> {
        use std::io::{Read as _, Write as _};
        let log = self.log();
        let addr = log
            .lines()
            .find_map(|l| l.split_once("metrics on http://"))
            .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
            .context("serve printed no metrics address")?;
        let mut tcp = std::net::TcpStream::connect(addr)?;
        write!(
            tcp,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        tcp.read_to_string(&mut text)?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("vch_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Lines in the audit log: one per request served.
    pub(crate) fn audit_lines(&self) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(&self.audit_log)
            .with_context(|| format!("cannot read {}", self.audit_log.display()))?;
        Ok(text.lines().count())
    }
}

impl Drop for Vch {
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident set size in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

/// Samples a process's RSS every 5 ms on a thread of its own and keeps the maximum.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(rss(pid).unwrap_or(0)));
        let thread = {
            let (stop, max) = (Arc::clone(&stop), Arc::clone(&max));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(now) = rss(pid) {
                        max.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the largest RSS seen.
    pub(crate) fn finish(mut self) -> u64 {
        self.halt();
        self.max.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// CPU time and context switches of a process, summed over its threads.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) nanos: u64,
    pub(crate) switches: u64,
}

impl Cpu {
    /// What the process used from `earlier` to `self` (a thread that exited in between is lost,
    /// hence saturating).
    pub(crate) fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            nanos: self.nanos.saturating_sub(earlier.nanos),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }

    pub(crate) fn add(&mut self, other: Cpu) {
        self.nanos += other.nanos;
        self.switches += other.switches;
    }
}

/// Reads `/proc/PID/task/*/schedstat` (ns on CPU) and the context switch counts.
pub(crate) fn cpu(pid: u32) -> anyhow::Result<Cpu> {
    let dir = format!("/proc/{pid}/task");
    let mut total = Cpu::default();
    for task in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let task = task?.path();
        // A thread may end while we read; skip it.
        let Ok(schedstat) = std::fs::read_to_string(task.join("schedstat")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(task.join("status")) else {
            continue;
        };
        total.nanos += schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        total.switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}
