//! What the bench binaries of this crate share: a plain-HTTP client for a testbed registry,
//! and the measures of an external run (wall time, peak RSS and CPU from `/usr/bin/time`, a
//! process's CPU from `/proc`).

use std::path::Path;
use std::process::Command;

use vch_registry::{Client, HostSettings, PlainHttp};
use vch_testbed::Registry;

/// A client of the testbed registry over plain HTTP.
pub(crate) fn plain_client(reg: &Registry) -> Client {
    let s = HostSettings::builder(reg.addr())
        .dangerous()
        .plain_http(PlainHttp::Only)
        .build()
        .unwrap();
    Client::builder(reg.addr()).settings(s).build().unwrap()
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_of(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // CLK_TCK is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command under /usr/bin/time with `env` set; returns (wall seconds, peak RSS KiB, CPU
/// seconds). Panics, with its output, when it fails.
pub(crate) fn timed(cmd: &str, args: &[&str], env: &[(&str, &Path)]) -> (f64, u64, f64) {
    let mut c = Command::new("/usr/bin/time");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .arg("-f")
        .arg("TIME %e %M %U %S")
        .arg(cmd)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\n{}\n{err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let line = err.lines().rev().find(|l| l.starts_with("TIME ")).unwrap();
    let mut parts = line.split_whitespace().skip(1);
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    let rss: u64 = parts.next().unwrap().parse().unwrap();
    let user: f64 = parts.next().unwrap().parse().unwrap();
    let sys: f64 = parts.next().unwrap().parse().unwrap();
    (secs, rss, user + sys)
}

/// The median (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
