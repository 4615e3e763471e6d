//! Proxy benchmark: one real dockerd from the testbed, reached side by side directly (unix socket
//! and its own TCP listener), through HAProxy as a plain TCP→unix relay (the approach of
//! docker-socket-proxy), and through the VCH endpoint (`vch-admin serve`, plain TCP and mutual
//! TLS). For a like-for-like TLS baseline, a second dockerd of the same build listens with
//! `--tlsverify` ("direct tls": Go's TLS in dockerd, the same CA, server and client certificates
//! as the VCH's mutual TLS; dockerd puts every TCP listener under TLS, so one engine cannot offer
//! both), with its own copy of the stream data. It measures `/_ping` keep-alive latency, 512 MiB
//! streams both ways, the proxy's memory as a stream grows, `POST /build` of a 1 GiB context
//! (which the endpoint reads as it streams) with the proxy's memory during it, and the memory of
//! 1 000 idle `/events` streams. Every loop is bounded in count and time; all traffic is on
//! loopback.
//!
//! On a shared machine, run it under `nice -n -20`: dockerd, haproxy and the proxy are children of
//! the bench and inherit the priority, so other work disturbs every target alike and less. The
//! output ends with one met/missed line per target of issue 5 (and of the build issue); the
//! figures and their reading are in `crates/proxy/README.md` ("Performance").
//!
//! ```text
//! nice -n -20 cargo bench -p vch-benches --bench proxy            # full run (~6 min, root)
//! cargo bench -p vch-benches --bench proxy -- --quick             # small sizes, a smoke run
//! cargo bench -p vch-benches --bench proxy -- --phases ping,idle  # some phases only
//! cargo bench -p vch-benches --bench proxy -- --phases build      # POST /build only (~2 min)
//! VCH_BENCH_BASELINE=/path/to/older/bench-exe cargo bench ... # A/B: that build's endpoint too
//! VCH_BENCH_METRICS=1 cargo bench ... -- --phases ping  # A/B: the endpoint with --metrics too
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on the terminal"
)]

mod http;
mod serve;
mod tar;

use std::cell::RefCell;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use vch_testbed::{Dockerd, DockerdTls, Haproxy, TestImage};

use crate::http::{Conn, Dial, Framing};
use crate::serve::{Cpu, RssSampler, Vch, cpu, rss};
use crate::tar::{Expect, Pattern, Walker};

const MIB: u64 = 1 << 20;
/// How much more a 512 MiB stream may peak than a 64 MiB one and still count as flat.
const FLAT_MIB: f64 = 4.0;
/// Socket timeout: a stuck peer fails the bench instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The image `GET /images/{name}/get` saves: one layer holding the big file.
const BIG_IMAGE: &str = "vchbench-big:latest";
const BIG_FILE: &str = "big.bin";
const SMALL_FILE: &str = "small.bin";
/// The path of another build of this bench executable (say, of the previous commit): when set,
/// its `vch-admin serve` runs as two more targets ("baseline …"), so that a change is measured
/// side by side with what it changes, in the same run.
const BASELINE_ENV: &str = "VCH_BENCH_BASELINE";
/// When set, the endpoint also runs with Prometheus metrics on (`--metrics`), as two more
/// targets ("vch+metrics …"): what counting costs, side by side in the same run.
const METRICS_ENV: &str = "VCH_BENCH_METRICS";
/// The phases, in the order they run (all by default).
const PHASES: [&str; 5] = ["ping", "stream", "memory", "build", "idle"];
/// The tag the build phase gives its image (removed after each build).
const BUILD_TAG: &str = "vchbench-build";
/// What the docker CLI sends first.
const PING: &[u8] = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";
/// What the proxy forwards it as (unversioned paths are served as 1.25).
const PING_V125: &[u8] = b"GET /v1.25/_ping HTTP/1.1\r\nHost: docker\r\n\r\n";

fn main() -> ExitCode {
    if std::env::var_os(serve::CHILD_ENV).is_some() {
        return serve::child_main();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sizes, counts and the time budget.
struct Config {
    ping_warmup: usize,
    ping_count: usize,
    ping_rounds: usize,
    stream: u64,
    small: u64,
    reps: usize,
    /// The build phase's context, the smaller one its memory is compared with, and its rounds.
    build: u64,
    build_small: u64,
    build_rounds: usize,
    idle: usize,
    phases: Vec<String>,
    deadline: Instant,
}

impl Config {
    fn from_args() -> anyhow::Result<Config> {
        let mut config = Config {
            ping_warmup: 500,
            ping_count: 5000,
            ping_rounds: 10,
            stream: 512 * MIB,
            small: 64 * MIB,
            reps: 5,
            build: 1024 * MIB,
            build_small: 64 * MIB,
            build_rounds: 5,
            idle: 1000,
            phases: PHASES.map(String::from).to_vec(),
            deadline: Instant::now() + Duration::from_secs(25 * 60),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // cargo bench passes it to every bench binary.
                "--bench" => {}
                "--quick" => {
                    config.ping_warmup = 200;
                    config.ping_count = 1000;
                    config.stream = 64 * MIB;
                    config.small = 8 * MIB;
                    config.reps = 1;
                    config.build = 64 * MIB;
                    config.build_small = 8 * MIB;
                    config.build_rounds = 1;
                    config.idle = 100;
                }
                "--phases" => {
                    let list = args.next().context("--phases needs a list")?;
                    config.phases = list.split(',').map(str::to_owned).collect();
                    for p in &config.phases {
                        ensure!(
                            PHASES.contains(&p.as_str()),
                            "unknown phase {p:?} ({})",
                            PHASES.join(", ")
                        );
                    }
                }
                other => bail!("unknown argument {other:?} (--quick, --phases LIST)"),
            }
        }
        Ok(config)
    }

    fn wants(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    fn check_time(&self, what: &str) -> anyhow::Result<()> {
        ensure!(
            Instant::now() < self.deadline,
            "the time budget ran out before {what}"
        );
        Ok(())
    }
}

/// One way to reach dockerd.
struct Target<'a> {
    name: &'static str,
    dial: Dial,
    /// The relay's process, whose CPU time the ping phase reports.
    relay: Option<u32>,
    /// The ping request (the versioned one only for the diagnostic row).
    ping: &'static [u8],
    /// The engine behind it: its dockerd's process and the container the streams use.
    engine: &'a Engine,
}

/// A dockerd prepared for the streams: a container holding the big file, the big image.
struct Engine {
    dockerd: Dockerd,
    container: String,
    busybox: String,
}

impl Engine {
    /// Imports busybox, creates a container holding the big file (and, with `small`, the small
    /// one the memory phase reads) and imports the big image.
    fn prepare(
        dockerd: Dockerd,
        config: &Config,
        pattern: &Pattern,
        small: bool,
    ) -> anyhow::Result<Engine> {
        let busybox = TestImage::busybox(&dockerd)?;
        let direct = Dial::Unix(dockerd.socket_path().to_owned());
        let body = format!(r#"{{"Image":"{busybox}","Cmd":["true"]}}"#);
        let (status, created) = small_request(
            &direct,
            "POST",
            "/v1.25/containers/create",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        )?;
        ensure!(status == 201, "container create: {status} {created}");
        let created: serde_json::Value = serde_json::from_str(&created)?;
        let container = created["Id"]
            .as_str()
            .context("container create answered no Id")?
            .to_owned();

        let t = Instant::now();
        put_archive(
            &direct,
            &container,
            BIG_FILE,
            config.stream,
            pattern,
            &mut |_| Ok(()),
        )?;
        if small {
            put_archive(
                &direct,
                &container,
                SMALL_FILE,
                config.small,
                pattern,
                &mut |_| Ok(()),
            )?;
        }
        import_image(&direct, BIG_IMAGE, config.stream, pattern)?;
        eprintln!(
            "set-up: {} container {} with {BIG_FILE}{}, image {BIG_IMAGE} ({:.1} s)",
            dockerd.host(),
            &container[..12.min(container.len())],
            if small {
                format!(" and {SMALL_FILE}")
            } else {
                String::new()
            },
            t.elapsed().as_secs_f64()
        );
        Ok(Engine {
            dockerd,
            container,
            busybox,
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.dockerd.pid().context("dockerd has exited")
    }
}

/// The TLS client for both TLS targets, modelled on the docker CLI (Go's crypto/tls): TLS 1.3
/// suites in the order Go's client offers them on a CPU with AES hardware (seen in the
/// ClientHello of docker 28.2.2, Go 1.24.3: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305). Both
/// servers follow a client that prefers AES (rustls by default; Go since 1.17 picks AES-GCM when
/// the client lists it first and the CPU has AES), so both run AES-128-GCM, as the CLI would.
/// rustls' own default order puts AES-256-GCM first.
fn go_like_client_config(dir: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    let mut provider = default_provider();
    let tls12: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_none())
        .copied()
        .collect();
    provider.cipher_suites = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ]
    .into_iter()
    .chain(tls12)
    .collect();
    let mut roots = rustls::RootCertStore::empty();
    for ca in vch_pki::load_certificates(&dir.join("ca.pem"))? {
        roots.add(ca)?;
    }
    let chain = vch_pki::load_certificates(&dir.join("cert.pem"))?;
    let key = vch_pki::load_private_key(&dir.join("key.pem"))?;
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    )
}

/// The protocol and cipher suite each TLS target negotiates with the bench's client.
fn tls_suites(targets: &[Target<'_>]) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for t in targets {
        if let Dial::Tls(..) = t.dial {
            let conn = t.dial.connect(IO_TIMEOUT)?;
            parts.push(format!("{} {}", t.name, conn.tls_summary()));
        }
    }
    Ok(format!(
        "TLS negotiated (client offers TLS 1.3 AES-128-GCM, AES-256-GCM, ChaCha20, as Go's): {}\n\n",
        parts.join("; ")
    ))
}

/// What the stream phase moves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    GetArchive,
    GetImage,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Put => "PUT archive",
            Op::GetArchive => "GET archive",
            Op::GetImage => "GET image",
        }
    }
}

/// The engine, its data and the relays in front of it.
struct Bench {
    config: Config,
    pattern: Pattern,
    /// The engine every target but "direct tls" reaches, and the one the memory and idle
    /// phases use.
    engine: Engine,
    /// The same dockerd build with only a `--tlsverify` TCP listener (ping and stream phases).
    tls_engine: Option<Engine>,
    haproxy: Haproxy,
    _root: tempfile::TempDir,
    plain_dir: std::path::PathBuf,
    mtls_dir: std::path::PathBuf,
    tls_client: Arc<rustls::ClientConfig>,
    /// One line per target of the issue: met or missed, with the figure.
    verdicts: RefCell<Vec<String>>,
}

fn run() -> anyhow::Result<()> {
    let config = Config::from_args()?;
    let started = Instant::now();
    tar::self_check().map_err(|e| anyhow::anyhow!("tar self-check: {e}"))?;
    raise_fd_limit(config.idle as u64 * 2 + 512)?;
    println!("proxy bench: {}", machine());
    println!("load average at start: {}", loadavg());

    let bench = Bench::set_up(config)?;
    let engine = &bench.engine;
    let direct = Dial::Unix(engine.dockerd.socket_path().to_owned());
    let dockerd_tcp = engine
        .dockerd
        .tcp_addr()
        .context("dockerd was asked for a TCP listener")?;

    let mut report = String::new();
    let vch = Vch::start(&bench.plain_dir, bench.config.idle + 64)?;
    let vch_tls = Vch::start(&bench.mtls_dir, bench.config.idle + 64)?;
    // Another build of this bench, for an A/B run side by side: its endpoint as two more targets.
    let baseline = match std::env::var_os(BASELINE_ENV) {
        Some(exe) => {
            let exe = std::path::PathBuf::from(exe);
            Some((
                Vch::start_baseline(&exe, &bench.plain_dir, bench.config.idle + 64)?,
                Vch::start_baseline(&exe, &bench.mtls_dir, bench.config.idle + 64)?,
            ))
        }
        None => None,
    };
    let with_metrics = match std::env::var_os(METRICS_ENV) {
        Some(_) => Some((
            Vch::start_with_metrics(&bench.plain_dir, bench.config.idle + 64)?,
            Vch::start_with_metrics(&bench.mtls_dir, bench.config.idle + 64)?,
        )),
        None => None,
    };
    let mut targets = vec![
        Target {
            name: "direct unix",
            dial: direct.clone(),
            relay: None,
            ping: PING,
            engine,
        },
        Target {
            name: "direct tcp",
            dial: Dial::Tcp(dockerd_tcp),
            relay: None,
            ping: PING,
            engine,
        },
    ];
    if let Some(tls) = &bench.tls_engine {
        let addr = tls
            .dockerd
            .tcp_addr()
            .context("dockerd was asked for a TLS listener")?;
        targets.push(Target {
            name: "direct tls",
            dial: Dial::Tls(addr, Arc::clone(&bench.tls_client)),
            relay: None,
            ping: PING,
            engine: tls,
        });
    }
    targets.extend([
        Target {
            name: "haproxy tcp→unix",
            dial: Dial::Tcp(bench.haproxy.addr()),
            relay: bench.haproxy.pid(),
            ping: PING,
            engine,
        },
        Target {
            name: "vch tcp→unix",
            dial: Dial::Tcp(vch.addr),
            relay: Some(vch.pid()),
            ping: PING,
            engine,
        },
        Target {
            name: "vch mtls→unix",
            dial: Dial::Tls(vch_tls.addr, Arc::clone(&bench.tls_client)),
            relay: Some(vch_tls.pid()),
            ping: PING,
            engine,
        },
    ]);
    if let Some((plain, mtls)) = &baseline {
        targets.extend([
            Target {
                name: "baseline tcp→unix",
                dial: Dial::Tcp(plain.addr),
                relay: Some(plain.pid()),
                ping: PING,
                engine,
            },
            Target {
                name: "baseline mtls→unix",
                dial: Dial::Tls(mtls.addr, Arc::clone(&bench.tls_client)),
                relay: Some(mtls.pid()),
                ping: PING,
                engine,
            },
        ]);
    }
    if let Some((plain, mtls)) = &with_metrics {
        targets.extend([
            Target {
                name: "vch+metrics tcp→unix",
                dial: Dial::Tcp(plain.addr),
                relay: Some(plain.pid()),
                ping: PING,
                engine,
            },
            Target {
                name: "vch+metrics mtls→unix",
                dial: Dial::Tls(mtls.addr, Arc::clone(&bench.tls_client)),
                relay: Some(mtls.pid()),
                ping: PING,
                engine,
            },
        ]);
    }
    report += &tls_suites(&targets)?;

    if bench.config.wants("ping") {
        bench.config.check_time("the ping phase")?;
        // A diagnostic row: dockerd asked directly for the path the proxy forwards.
        let mut ping_targets: Vec<&Target> = targets.iter().collect();
        let versioned = Target {
            name: "direct unix v1.25",
            dial: direct.clone(),
            relay: None,
            ping: PING_V125,
            engine,
        };
        ping_targets.insert(1, &versioned);
        report += &bench.ping(&ping_targets)?;
    }
    if bench.config.wants("stream") {
        bench.config.check_time("the stream phase")?;
        report += &bench.streams(&targets)?;
    }
    // Every request sent through a VCH left its audit line: the traffic really went through.
    let audit = (vch.audit_lines()?, vch_tls.audit_lines()?);
    // The endpoints with metrics counted what they served (a scrape of each).
    if let Some((plain, mtls)) = &with_metrics {
        let counted = (plain.requests_counted()?, mtls.requests_counted()?);
        report += &format!(
            "\nvch+metrics counted {} and {} requests (tcp, mtls; vch_requests_total)\n",
            counted.0, counted.1
        );
    }
    drop((vch, vch_tls, baseline, with_metrics));
    if bench.config.wants("memory") {
        bench.config.check_time("the memory phase")?;
        report += &bench.memory()?;
    }
    if bench.config.wants("build") {
        bench.config.check_time("the build phase")?;
        report += &bench.build()?;
    }
    if bench.config.wants("idle") {
        bench.config.check_time("the idle phase")?;
        report += &bench.idle()?;
    }
    println!("\n{report}");
    println!("targets of issue 5 (the build phase: of the build issue):");
    for line in bench.verdicts.borrow().iter() {
        println!("  {line}");
    }
    println!(
        "audit lines written: vch tcp {}, vch mtls {}",
        audit.0, audit.1
    );
    println!("load average at end: {}", loadavg());
    println!("total time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

impl Bench {
    fn set_up(config: Config) -> anyhow::Result<Bench> {
        let pattern = Pattern::new(0x5eed_cafe);
        let dockerd = Dockerd::builder()
            .tcp_listener()
            .start()
            .context("dockerd from the testbed must start (scripts/setup.sh)")?;
        let haproxy = Haproxy::to_unix(dockerd.socket_path())
            .maxconn(4 * config.idle as u32 + 64)
            .start()
            .context("haproxy from the testbed must start (scripts/setup.sh)")?;
        let engine = Engine::prepare(dockerd, &config, &pattern, true)?;

        let root = tempfile::Builder::new().prefix("vchbench-").tempdir()?;
        let host = engine.dockerd.host();
        let plain_dir = serve::create(root.path(), "plain", &host, false)?;
        let mtls_dir = serve::create(root.path(), "mtls", &host, true)?;
        let tls_client = go_like_client_config(&mtls_dir)?;
        // dockerd's own TLS listener with the VCH's CA and server certificate, so that one client
        // configuration (and one client certificate) serves both TLS targets.
        let tls_engine = if config.wants("ping") || config.wants("stream") {
            let dockerd = Dockerd::builder()
                .tls(DockerdTls {
                    ca: mtls_dir.join("ca.pem"),
                    cert: mtls_dir.join("server-cert.pem"),
                    key: mtls_dir.join("server-key.pem"),
                })
                .start()
                .context("dockerd with --tlsverify from the testbed must start")?;
            Some(Engine::prepare(dockerd, &config, &pattern, false)?)
        } else {
            None
        };
        Ok(Bench {
            config,
            pattern,
            engine,
            tls_engine,
            haproxy,
            _root: root,
            plain_dir,
            mtls_dir,
            tls_client: Arc::new(tls_client),
            verdicts: RefCell::new(Vec::new()),
        })
    }

    /// `/_ping` on one keep-alive connection per target, the targets taking turns in rounds so
    /// that a busy moment of the machine hits all of them alike.
    fn ping(&self, targets: &[&Target<'_>]) -> anyhow::Result<String> {
        let c = &self.config;
        let mut conns = Vec::new();
        for t in targets {
            let mut conn = t.dial.connect(IO_TIMEOUT)?;
            for _ in 0..c.ping_warmup {
                ping(&mut conn, t.ping).with_context(|| format!("ping {}", t.name))?;
            }
            conns.push(conn);
        }
        let per_round = c.ping_count / c.ping_rounds;
        let mut samples = vec![Vec::with_capacity(c.ping_count); targets.len()];
        // CPU used by dockerd and by the relay during each target's turns (read between turns,
        // outside the timed requests).
        let mut engine_cpu = vec![Cpu::default(); targets.len()];
        let mut relay_cpu = vec![Cpu::default(); targets.len()];
        let budget = Instant::now() + Duration::from_secs(120);
        for round in 0..c.ping_rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                let relay_before = targets[i].relay.map(cpu).transpose()?;
                let dockerd_pid = targets[i].engine.pid()?;
                let engine_before = cpu(dockerd_pid)?;
                for _ in 0..per_round {
                    let t0 = Instant::now();
                    ping(&mut conns[i], targets[i].ping)
                        .with_context(|| format!("ping {}", targets[i].name))?;
                    samples[i].push(t0.elapsed().as_nanos() as u64);
                }
                engine_cpu[i].add(cpu(dockerd_pid)?.since(engine_before));
                if let (Some(pid), Some(before)) = (targets[i].relay, relay_before) {
                    relay_cpu[i].add(cpu(pid)?.since(before));
                }
            }
            if Instant::now() > budget {
                eprintln!("ping: time budget reached after {} rounds", round + 1);
                break;
            }
        }
        let stats: Vec<Latency> = samples.iter_mut().map(|s| Latency::of(s)).collect();
        let base = &stats[0];
        let mut out = format!(
            "/_ping keep-alive latency: {} requests per target on one connection after {} warm-up \
             ({} interleaved rounds), µs\n",
            stats[0].n, c.ping_warmup, c.ping_rounds
        );
        out += &format!(
            "{:<18} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>11} {:>11} {:>9}\n",
            "target",
            "p50",
            "p90",
            "p99",
            "max",
            "added p50",
            "added p99",
            "relay CPU",
            "dockerd CPU",
            "relay cs"
        );
        for (i, (t, s)) in targets.iter().zip(&stats).enumerate() {
            let n = s.n.max(1) as f64;
            let relay = if t.relay.is_some() {
                format!(
                    "{:>11.1} {:>11.1} {:>9.1}",
                    relay_cpu[i].nanos as f64 / 1000.0 / n,
                    engine_cpu[i].nanos as f64 / 1000.0 / n,
                    relay_cpu[i].switches as f64 / n
                )
            } else {
                format!(
                    "{:>11} {:>11.1} {:>9}",
                    "-",
                    engine_cpu[i].nanos as f64 / 1000.0 / n,
                    "-"
                )
            };
            out += &format!(
                "{:<18} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>+10.1} {:>+10.1} {relay}\n",
                t.name,
                s.p50,
                s.p90,
                s.p99,
                s.max,
                s.p50 - base.p50,
                s.p99 - base.p99,
            );
        }
        out += "CPU columns: µs of CPU per request (all threads of the process); relay cs: context \
                switches of the relay per request\n";
        out += "targets: added p50 ≤ 100 µs, added p99 ≤ 300 µs over direct unix\n";
        // Like for like, TLS on both sides (information, not a target of the issue).
        let find = |name: &str| targets.iter().position(|t| t.name == name);
        if let (Some(d), Some(v)) = (find("direct tls"), find("vch mtls→unix")) {
            let (d, v) = (&stats[d], &stats[v]);
            out += &format!(
                "vch mtls→unix × tls (over direct tls, not a target): p50 × {:.2} ({:+.1} µs), \
                 p99 × {:.2} ({:+.1} µs)\n",
                v.p50 / d.p50,
                v.p50 - d.p50,
                v.p99 / d.p99,
                v.p99 - d.p99
            );
        }
        out += "\n";
        for (t, s) in targets.iter().zip(&stats) {
            if t.name.starts_with("vch") {
                let (p50, p99) = (s.p50 - base.p50, s.p99 - base.p99);
                self.verdict(
                    p50 <= 100.0 && p99 <= 300.0,
                    format!(
                        "{}: /_ping adds {p50:+.0} µs p50 (≤ 100), {p99:+.0} µs p99 (≤ 300)",
                        t.name
                    ),
                );
            }
        }
        Ok(out)
    }

    /// 512 MiB both ways through every target, `reps` times, the order of targets rotating.
    fn streams(&self, targets: &[Target<'_>]) -> anyhow::Result<String> {
        let c = &self.config;
        let ops = [Op::Put, Op::GetArchive, Op::GetImage];
        // rates[op][target]: MiB/s of each repetition
        let mut rates = vec![vec![Vec::new(); targets.len()]; ops.len()];
        // CPU of the relay and of dockerd, and MiB moved, per op and target.
        let mut relay_cpu = vec![vec![Cpu::default(); targets.len()]; ops.len()];
        let mut engine_cpu = vec![vec![Cpu::default(); targets.len()]; ops.len()];
        let mut moved = vec![vec![0.0; targets.len()]; ops.len()];
        for (o, &op) in ops.iter().enumerate() {
            for rep in 0..c.reps {
                for k in 0..targets.len() {
                    let i = (rep + k) % targets.len();
                    c.check_time("a stream")?;
                    let relay_before = targets[i].relay.map(cpu).transpose()?;
                    let dockerd_pid = targets[i].engine.pid()?;
                    let engine_before = cpu(dockerd_pid)?;
                    let t0 = Instant::now();
                    let bytes = self
                        .transfer(op, &targets[i], &mut |_| Ok(()))
                        .with_context(|| format!("{} via {}", op.label(), targets[i].name))?;
                    let secs = t0.elapsed().as_secs_f64();
                    engine_cpu[o][i].add(cpu(dockerd_pid)?.since(engine_before));
                    if let (Some(pid), Some(before)) = (targets[i].relay, relay_before) {
                        relay_cpu[o][i].add(cpu(pid)?.since(before));
                    }
                    let mib = bytes as f64 / MIB as f64;
                    moved[o][i] += mib;
                    rates[o][i].push(mib / secs);
                }
            }
        }
        let median: Vec<Vec<f64>> = rates
            .iter_mut()
            .map(|per_target| per_target.iter_mut().map(|r| median(r)).collect())
            .collect();
        let mut out = format!(
            "throughput: {} MiB streams, median of {}, MiB/s (ratio to direct unix / to direct tcp)\n",
            c.stream / MIB,
            c.reps
        );
        // Targets 0 and 1 are dockerd's own unix socket and TCP listener.
        let tcp = targets
            .iter()
            .position(|t| t.name == "direct tcp")
            .context("no direct tcp target")?;
        out += &format!("{:<18}", "target");
        for op in ops {
            out += &format!(" {:>22}", op.label());
        }
        out += "\n";
        for (i, t) in targets.iter().enumerate() {
            out += &format!("{:<18}", t.name);
            for per_op in &median {
                out += &format!(
                    " {:>10.0} ({:.2} / {:.2})",
                    per_op[i],
                    per_op[i] / per_op[0],
                    per_op[i] / per_op[tcp]
                );
            }
            out += "\n";
        }
        // Like for like, TLS on both sides (information, not a target of the issue).
        let direct_tls = targets.iter().position(|t| t.name == "direct tls");
        let vch_mtls = targets.iter().position(|t| t.name == "vch mtls→unix");
        if let (Some(d), Some(v)) = (direct_tls, vch_mtls) {
            let ratios: Vec<String> = ops
                .iter()
                .zip(&median)
                .map(|(op, per_op)| format!("{} {:.2}", op.label(), per_op[v] / per_op[d]))
                .collect();
            out += &format!(
                "vch mtls→unix × tls (of direct tls, not a target): {}\n",
                ratios.join(", ")
            );
        }
        out += "targets: vch ≥ 0.90 of direct (over TCP, as its clients come), and ≥ haproxy\n";
        let haproxy = targets.iter().position(|t| t.name.starts_with("haproxy"));
        for (i, t) in targets.iter().enumerate() {
            if !t.name.starts_with("vch") {
                continue;
            }
            for (o, op) in ops.iter().enumerate() {
                let to_unix = median[o][i] / median[o][0];
                let to_tcp = median[o][i] / median[o][tcp];
                let relay = haproxy.map_or(f64::NAN, |h| median[o][h]);
                let word = |met: bool| if met { "met" } else { "missed" };
                self.verdict(
                    to_tcp >= 0.90 && median[o][i] >= relay,
                    format!(
                        "{}: {} at {to_tcp:.2} of direct tcp (≥ 0.90: {}; {to_unix:.2} of direct \
                         unix), {:.0} MiB/s vs haproxy {relay:.0} (≥: {})",
                        t.name,
                        op.label(),
                        word(to_tcp >= 0.90),
                        median[o][i],
                        word(median[o][i] >= relay)
                    ),
                );
            }
        }
        out += "CPU per MiB moved, µs: relay / dockerd\n";
        for (i, t) in targets.iter().enumerate() {
            out += &format!("{:<18}", t.name);
            for o in 0..ops.len() {
                let per = |c: Cpu| c.nanos as f64 / 1000.0 / moved[o][i].max(1.0);
                let relay = match t.relay {
                    Some(_) => format!("{:.0}", per(relay_cpu[o][i])),
                    None => "-".to_owned(),
                };
                out += &format!(" {:>20}", format!("{relay} / {:.0}", per(engine_cpu[o][i])));
            }
            out += "\n";
        }
        out += "\n";
        Ok(out)
    }

    /// One transfer; returns the body bytes moved. `progress` sees the running count.
    fn transfer(
        &self,
        op: Op,
        target: &Target<'_>,
        progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
    ) -> anyhow::Result<u64> {
        let size = self.config.stream;
        let (dial, container) = (&target.dial, &target.engine.container);
        match op {
            Op::Put => put_archive(dial, container, BIG_FILE, size, &self.pattern, progress),
            Op::GetArchive => get_archive(dial, container, BIG_FILE, size, &self.pattern, progress),
            Op::GetImage => get_image(dial, BIG_IMAGE, size, &self.pattern, progress),
        }
    }

    /// A fresh `vch-admin serve` (plain TCP): its RSS while streams of two sizes go through,
    /// and while a client stops reading in the middle of one.
    fn memory(&self) -> anyhow::Result<String> {
        let c = &self.config;
        let vch = Vch::start(&self.plain_dir, 64)?;
        let dial = Dial::Tcp(vch.addr);
        let pid = vch.pid();
        for _ in 0..10 {
            ping(&mut dial.connect(IO_TIMEOUT)?, PING)?;
        }
        std::thread::sleep(Duration::from_millis(200));
        let baseline = rss(pid)?;
        let mut out = format!(
            "memory of vch-admin serve (plain TCP, fresh process): RSS {:.1} MiB after 10 pings\n",
            baseline as f64 / MIB as f64
        );
        out += &format!(
            "{:<28} {:>12} {:>14}  {}\n",
            "stream", "max RSS MiB", "over baseline", "RSS at each eighth of the stream, MiB"
        );
        let mut maxima = Vec::new();
        let streams = [
            (Op::GetArchive, SMALL_FILE, c.small),
            (Op::GetArchive, BIG_FILE, c.stream),
            (Op::Put, SMALL_FILE, c.small),
            (Op::Put, BIG_FILE, c.stream),
            (Op::GetImage, BIG_FILE, c.stream),
        ];
        for (op, file, size) in streams {
            c.check_time("a memory stream")?;
            let sampler = RssSampler::start(pid);
            let mut points = Vec::new();
            let mut next = size / 8;
            let mut progress = |done: u64| -> std::io::Result<()> {
                if done >= next {
                    points.push(rss(pid).map_err(std::io::Error::other)?);
                    next += size / 8;
                }
                Ok(())
            };
            match op {
                Op::Put => put_archive(
                    &dial,
                    &self.engine.container,
                    file,
                    size,
                    &self.pattern,
                    &mut progress,
                )?,
                Op::GetArchive => get_archive(
                    &dial,
                    &self.engine.container,
                    file,
                    size,
                    &self.pattern,
                    &mut progress,
                )?,
                Op::GetImage => get_image(&dial, BIG_IMAGE, size, &self.pattern, &mut progress)?,
            };
            let max = sampler.finish();
            maxima.push((op, size, max));
            let points: Vec<String> = points
                .iter()
                .map(|r| format!("{:.1}", *r as f64 / MIB as f64))
                .collect();
            out += &format!(
                "{:<28} {:>12.1} {:>+14.1}  {}\n",
                format!("{} {} MiB", op.label(), size / MIB),
                max as f64 / MIB as f64,
                (max as f64 - baseline as f64) / MIB as f64,
                points.join(" ")
            );
        }
        // Backpressure: a client that stops reading must not make the proxy buffer the stream.
        let stall = self.stalled_download(&dial, pid)?;
        out += &format!(
            "{:<28} {:>12.1} {:>+14.1}  (client reads 8 MiB, pauses 2 s, reads on)\n",
            format!("GET archive {} MiB, stalled", c.stream / MIB),
            stall as f64 / MIB as f64,
            (stall as f64 - baseline as f64) / MIB as f64
        );
        let growth = |op: Op| {
            let small = maxima
                .iter()
                .find(|m| m.0 == op && m.1 == c.small)
                .map(|m| m.2);
            let big = maxima
                .iter()
                .find(|m| m.0 == op && m.1 == c.stream)
                .map(|m| m.2);
            match (small, big) {
                (Some(s), Some(b)) => (b as f64 - s as f64) / MIB as f64,
                _ => f64::NAN,
            }
        };
        out += &format!(
            "max RSS, {} MiB stream minus {} MiB stream: download {:+.1} MiB, upload {:+.1} MiB \
             (target: flat)\n\n",
            c.stream / MIB,
            c.small / MIB,
            growth(Op::GetArchive),
            growth(Op::Put)
        );
        ensure!(
            vch.audit_lines()? > 10 + streams.len(),
            "vch audit lines missing"
        );
        // Flat: the larger stream's peak is within FLAT_MIB of the smaller one's, where the
        // stream is 448 MiB longer (buffers are bounded, nothing grows with the stream).
        for op in [Op::GetArchive, Op::Put] {
            let g = growth(op);
            self.verdict(
                g <= FLAT_MIB,
                format!(
                    "vch tcp→unix: {} peak RSS {} MiB vs {} MiB stream {g:+.1} MiB (flat: ≤ {FLAT_MIB} MiB)",
                    op.label(),
                    c.stream / MIB,
                    c.small / MIB
                ),
            );
        }
        self.verdict(
            stall <= maxima.iter().map(|m| m.2).max().unwrap_or(0) + (FLAT_MIB * MIB as f64) as u64,
            format!(
                "vch tcp→unix: a stalled reader peaks at {:.1} MiB RSS (no buffering of the stream)",
                stall as f64 / MIB as f64
            ),
        );
        Ok(out)
    }

    /// `POST /build` of a generated context (the Dockerfile first, then files of mixed sizes):
    /// straight to dockerd and through a fresh `vch-admin serve`, which reads the context as it
    /// streams; the targets take turns in rounds. The endpoint's RSS is sampled during every
    /// upload through it, and compared with its peak during a smaller build.
    fn build(&self) -> anyhow::Result<String> {
        let c = &self.config;
        let vch = Vch::start(&self.plain_dir, 64)?;
        let pid = vch.pid();
        let direct = Dial::Unix(self.engine.dockerd.socket_path().to_owned());
        let dockerd_tcp = self
            .engine
            .dockerd
            .tcp_addr()
            .context("dockerd was asked for a TCP listener")?;
        let targets = [
            ("direct unix", direct.clone(), None),
            ("direct tcp", Dial::Tcp(dockerd_tcp), None),
            ("vch tcp→unix", Dial::Tcp(vch.addr), Some(pid)),
        ];
        let big = tar::Context::new(c.build, false, tar::MIXED_SIZES);
        let small = tar::Context::new(c.build_small, false, tar::MIXED_SIZES);
        // Warm-up: every target once, with the small context. The image stays until the end of
        // the phase, so that every later build finds its `LABEL` step in the cache and what is
        // timed is the upload (dockerd reads the whole context before it builds), not the
        // container the classic builder creates and removes for an uncached step (0.6 s here).
        for (name, dial, _) in &targets {
            build_upload(dial, &small, &self.pattern, &mut |_| Ok(()))
                .with_context(|| format!("build via {name}"))?;
        }
        std::thread::sleep(Duration::from_millis(200));
        let warm = rss(pid)?;
        let sampler = RssSampler::start(pid);
        build_upload(&targets[2].1, &small, &self.pattern, &mut |_| Ok(()))
            .context("build via vch")?;
        let small_peak = sampler.finish();

        let mut rates = vec![Vec::new(); targets.len()];
        let mut relay_cpu = Cpu::default();
        let mut engine_cpu = vec![Cpu::default(); targets.len()];
        let mut moved = vec![0.0; targets.len()];
        let mut big_peak = 0;
        let mut points = Vec::new();
        // The peaks during the first and second halves of the big uploads through the endpoint.
        let mut halves = (0, 0);
        for round in 0..c.build_rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                let (name, dial, relay) = &targets[i];
                c.check_time("a build")?;
                let mut sampler = relay.map(RssSampler::start);
                let mut first_half = None;
                let relay_before = relay.map(cpu).transpose()?;
                let dockerd_pid = self.engine.pid()?;
                let engine_before = cpu(dockerd_pid)?;
                let t0 = Instant::now();
                // The endpoint's RSS at each eighth of its first big upload: where it levels off.
                let mut next = if relay.is_some() && points.is_empty() {
                    big.len() / 8
                } else {
                    u64::MAX
                };
                let mut progress = |done: u64| -> std::io::Result<()> {
                    if done >= next {
                        points.push(rss(pid).map_err(std::io::Error::other)?);
                        next += big.len() / 8;
                    }
                    // The peak of each half apart: memory that grows with the context grows
                    // in the second half too, bounded buffers fill up in the first.
                    if done >= big.len() / 2
                        && first_half.is_none()
                        && let Some(s) = sampler.take()
                    {
                        first_half = Some(s.finish());
                        sampler = Some(RssSampler::start(pid));
                    }
                    Ok(())
                };
                let sent = build_upload(dial, &big, &self.pattern, &mut progress)
                    .with_context(|| format!("build via {name}"))?;
                let secs = t0.elapsed().as_secs_f64();
                engine_cpu[i].add(cpu(dockerd_pid)?.since(engine_before));
                if let (Some(pid), Some(before)) = (relay, relay_before) {
                    relay_cpu.add(cpu(*pid)?.since(before));
                }
                if let (Some(first), Some(sampler)) = (first_half, sampler) {
                    let second = sampler.finish();
                    halves.0 = halves.0.max(first);
                    halves.1 = halves.1.max(second);
                    big_peak = big_peak.max(first).max(second);
                }
                let mib = sent as f64 / MIB as f64;
                moved[i] += mib;
                rates[i].push(mib / secs);
            }
        }
        let (status, body) = small_request(
            &direct,
            "DELETE",
            &format!("/v1.25/images/{BUILD_TAG}"),
            "",
            b"",
        )?;
        ensure!(status == 200, "removing the built image: {status} {body}");
        ensure!(
            vch.audit_lines()? >= 2 + c.build_rounds,
            "vch audit lines missing"
        );
        let runs: Vec<String> = rates
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let median: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
        let mut out = format!(
            "build: POST /v1.25/build of a {} MiB context ({} entries, the Dockerfile first; \
            FROM scratch), {} rounds, MiB/s (ratio to direct unix / to direct tcp)\n",
            big.len() / MIB,
            big.entries(),
            c.build_rounds
        );
        out += &format!(
            "{:<18} {:>8} {:>14} {:>22} {:>14}  {}\n",
            "target", "median", "", "relay CPU µs/MiB", "dockerd µs/MiB", "each round"
        );
        for (i, (name, _, relay)) in targets.iter().enumerate() {
            let per = |c: Cpu| c.nanos as f64 / 1000.0 / moved[i].max(1.0);
            let relay = match relay {
                Some(_) => format!("{:.0}", per(relay_cpu)),
                None => "-".to_owned(),
            };
            out += &format!(
                "{name:<18} {:>8.0} {:>14} {relay:>22} {:>14.0}  {}\n",
                median[i],
                format!(
                    "({:.2} / {:.2})",
                    median[i] / median[0],
                    median[i] / median[1]
                ),
                per(engine_cpu[i]),
                runs[i]
            );
        }
        let growth = (big_peak as f64 - small_peak as f64) / MIB as f64;
        out += &format!(
            "vch-admin serve RSS: {:.1} MiB after the warm-up builds; peak {:.1} MiB during a {} \
            MiB build, {:.1} MiB during the {} MiB builds ({growth:+.1})\n",
            warm as f64 / MIB as f64,
            small_peak as f64 / MIB as f64,
            small.len() / MIB,
            big_peak as f64 / MIB as f64,
            big.len() / MIB
        );
        let points: Vec<String> = points
            .iter()
            .map(|r| format!("{:.1}", *r as f64 / MIB as f64))
            .collect();
        out += &format!(
            "vch-admin serve RSS at each eighth of its first {} MiB upload, MiB: {}\n",
            big.len() / MIB,
            points.join(" ")
        );
        let late = (halves.1 as f64 - halves.0 as f64) / MIB as f64;
        out += &format!(
            "peak RSS in the first half of the {} MiB uploads {:.1} MiB, in the second half {:.1} \
             ({late:+.1})\n",
            big.len() / MIB,
            halves.0 as f64 / MIB as f64,
            halves.1 as f64 / MIB as f64
        );
        out += "targets: vch ≥ 0.90 of direct tcp (its clients come over TCP); RSS flat\n\n";
        let ratio = median[2] / median[1];
        self.verdict(
            ratio >= 0.90,
            format!(
                "vch tcp→unix: a {} MiB build upload at {ratio:.2} of direct tcp (≥ 0.90; {:.2} \
                of direct unix), {:.0} vs {:.0} MiB/s",
                big.len() / MIB,
                median[2] / median[0],
                median[2],
                median[1]
            ),
        );
        // The context reader keeps small files (up to 8 MiB in all, `SMALL_FILES_BUDGET` in
        // crates/proxy/src/build/context.rs) for links that come later: a bounded store that a
        // large context fills and a small one may not.
        const READER_STORE_MIB: f64 = 8.0;
        self.verdict(
            growth <= FLAT_MIB + READER_STORE_MIB,
            format!(
                "vch tcp→unix: build peak RSS {} MiB vs {} MiB context {growth:+.1} MiB (flat: ≤ \
                {FLAT_MIB} MiB plus the reader's {READER_STORE_MIB} MiB store of small files)",
                big.len() / MIB,
                small.len() / MIB
            ),
        );
        self.verdict(
            late <= FLAT_MIB,
            format!(
                "vch tcp→unix: build peak RSS in the second half of a {} MiB upload {late:+.1} MiB \
                 over the first half (flat: ≤ {FLAT_MIB} MiB)",
                big.len() / MIB
            ),
        );
        Ok(out)
    }

    fn stalled_download(&self, dial: &Dial, pid: u32) -> anyhow::Result<u64> {
        let sampler = RssSampler::start(pid);
        let mut paused = false;
        get_archive(
            dial,
            &self.engine.container,
            BIG_FILE,
            self.config.stream,
            &self.pattern,
            &mut |done| {
                if !paused && done >= 8 * MIB {
                    paused = true;
                    std::thread::sleep(Duration::from_secs(2));
                }
                Ok(())
            },
        )?;
        Ok(sampler.finish())
    }

    /// `idle` clients each hold `GET /events` open through a fresh proxy; RSS growth per
    /// connection. An event then proves every stream is live.
    fn idle(&self) -> anyhow::Result<String> {
        let c = &self.config;
        let mut out = format!(
            "idle streaming connections: {} clients each with GET /events open\n",
            c.idle
        );
        out += &format!(
            "{:<28} {:>12} {:>12} {:>16}\n",
            "target (process measured)", "before MiB", "with MiB", "per connection"
        );
        let vch = Vch::start(&self.plain_dir, c.idle + 64)?;
        let (line, plain) =
            self.idle_one("vch tcp (vch-admin)", &Dial::Tcp(vch.addr), vch.pid())?;
        out += &line;
        drop(vch);
        let vch = Vch::start(&self.mtls_dir, c.idle + 64)?;
        let dial = Dial::Tls(vch.addr, Arc::clone(&self.tls_client));
        let (line, mtls) = self.idle_one("vch mtls (vch-admin)", &dial, vch.pid())?;
        out += &line;
        drop(vch);
        let pid = self.haproxy.pid().context("haproxy has exited")?;
        out += &self
            .idle_one("haproxy", &Dial::Tcp(self.haproxy.addr()), pid)?
            .0;
        for (name, kib) in [("vch tcp→unix", plain), ("vch mtls→unix", mtls)] {
            self.verdict(
                kib < 64.0,
                format!(
                    "{name}: {kib:.1} KiB per idle /events stream ({} streams; < 64 KiB)",
                    c.idle
                ),
            );
        }
        out += "target: vch under 64 KiB per connection\n\n";
        Ok(out)
    }

    fn idle_one(&self, name: &str, dial: &Dial, pid: u32) -> anyhow::Result<(String, f64)> {
        for _ in 0..10 {
            ping(&mut dial.connect(IO_TIMEOUT)?, PING)?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let before = rss(pid)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut conns = Vec::with_capacity(self.config.idle);
        for i in 0..self.config.idle {
            ensure!(
                Instant::now() < deadline,
                "{name}: only {i} event streams opened in 120 s"
            );
            let mut conn = dial.connect(IO_TIMEOUT)?;
            conn.send_head("GET", "/v1.25/events", "")?;
            let head = conn
                .read_head(false)
                .with_context(|| format!("{name}: events stream {i}"))?;
            ensure!(
                head.status == 200 && head.framing != Framing::Empty,
                "{name}: /events answered {}",
                head.status
            );
            conns.push(conn);
        }
        std::thread::sleep(Duration::from_secs(1));
        let with = rss(pid)?;
        // Every stream is live: one event reaches all of them.
        let tag = format!(
            "/v1.25/images/{}/tag?repo=vchbench-event&tag={}",
            self.engine.busybox,
            name.split_whitespace().next().unwrap_or("t")
        );
        let direct = Dial::Unix(self.engine.dockerd.socket_path().to_owned());
        let (status, body) = small_request(&direct, "POST", &tag, "", b"")?;
        ensure!(status == 201, "tag for an event: {status} {body}");
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.wait_data()
                .with_context(|| format!("{name}: no event on stream {i}"))?;
        }
        drop(conns);
        let per = (with as f64 - before as f64) / self.config.idle as f64 / 1024.0;
        let line = format!(
            "{:<28} {:>12.1} {:>12.1} {:>12.1} KiB\n",
            name,
            before as f64 / MIB as f64,
            with as f64 / MIB as f64,
            per
        );
        Ok((line, per))
    }
}

impl Bench {
    fn verdict(&self, met: bool, text: String) {
        let mark = if met { "met   " } else { "MISSED" };
        self.verdicts.borrow_mut().push(format!("{mark} {text}"));
    }
}

/// `GET /_ping` on a keep-alive connection; the answer must be `200 OK`.
fn ping(conn: &mut Conn, request: &[u8]) -> anyhow::Result<()> {
    conn.send_raw(request)?;
    let head = conn.read_head(false)?;
    let mut body = [0u8; 8];
    let mut n = 0;
    conn.read_body(head.framing, &mut |piece| {
        let end = n + piece.len();
        if end > body.len() {
            return Err(std::io::Error::other("/_ping body too long"));
        }
        body[n..end].copy_from_slice(piece);
        n = end;
        Ok(())
    })?;
    ensure!(
        head.status == 200 && &body[..n] == b"OK",
        "/_ping answered {} {:?}",
        head.status,
        String::from_utf8_lossy(&body[..n])
    );
    Ok(())
}

/// A request with a small body; the answer's status and text.
fn small_request(
    dial: &Dial,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut conn = dial.connect(IO_TIMEOUT)?;
    conn.send_head(
        method,
        path,
        &format!("{headers}Content-Length: {}\r\n", body.len()),
    )?;
    conn.send_raw(body)?;
    let head = conn.read_head(method == "HEAD")?;
    let text = conn.read_body_vec(head.framing)?;
    Ok((head.status, String::from_utf8_lossy(&text).into_owned()))
}

/// `PUT /containers/{id}/archive?path=/` with a generated tar of one file; returns the bytes sent.
fn put_archive(
    dial: &Dial,
    container: &str,
    file: &str,
    size: u64,
    pattern: &Pattern,
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let len = tar::archive_len(size);
    let mut conn = dial.connect(IO_TIMEOUT)?;
    conn.send_head(
        "PUT",
        &format!("/v1.25/containers/{container}/archive?path=/"),
        &format!("Content-Type: application/x-tar\r\nContent-Length: {len}\r\n"),
    )?;
    let mut sent = 0;
    tar::write_archive(
        &mut |piece| {
            conn.write_all(piece)?;
            sent += piece.len() as u64;
            progress(sent)
        },
        file,
        size,
        pattern,
    )?;
    conn.flush()?;
    let head = conn.read_head(false)?;
    let body = conn.read_body_vec(head.framing)?;
    ensure!(
        head.status == 200,
        "PUT archive answered {}: {}",
        head.status,
        String::from_utf8_lossy(&body)
    );
    Ok(sent)
}

/// `GET /containers/{id}/archive?path=/FILE`; the tar is checked byte for byte.
fn get_archive(
    dial: &Dial,
    container: &str,
    file: &'static str,
    size: u64,
    pattern: &Pattern,
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let path = format!("/v1.25/containers/{container}/archive?path=/{file}");
    get_tar(dial, &path, Expect::File(file), size, pattern, progress)
}

/// `GET /images/{name}/get` (docker save); the layer inside is checked byte for byte.
fn get_image(
    dial: &Dial,
    image: &str,
    size: u64,
    pattern: &Pattern,
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let path = format!("/v1.25/images/{image}/get");
    get_tar(
        dial,
        &path,
        Expect::Image(BIG_FILE),
        size,
        pattern,
        progress,
    )
}

fn get_tar(
    dial: &Dial,
    path: &str,
    expect: Expect,
    size: u64,
    pattern: &Pattern,
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let mut conn = dial.connect(IO_TIMEOUT)?;
    conn.send_head("GET", path, "")?;
    let head = conn.read_head(false)?;
    if head.status != 200 {
        let body = conn.read_body_vec(head.framing)?;
        bail!(
            "GET {path} answered {}: {}",
            head.status,
            String::from_utf8_lossy(&body)
        );
    }
    let mut walker = Walker::new(pattern, expect);
    let mut received = 0;
    conn.read_body(head.framing, &mut |piece| {
        walker
            .feed(piece)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        received += piece.len() as u64;
        progress(received)
    })?;
    let verified = walker
        .finish()
        .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
    ensure!(
        verified == [size],
        "GET {path}: expected one verified file of {size} bytes, found {verified:?}"
    );
    Ok(received)
}

/// `POST /build?t=BUILD_TAG` with a generated context; the build must succeed. Returns the bytes
/// sent. If the upload breaks off, the answer that came instead is the error.
/// `progress` sees the running count of bytes sent.
fn build_upload(
    dial: &Dial,
    context: &tar::Context,
    pattern: &Pattern,
    progress: &mut dyn FnMut(u64) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let mut conn = dial.connect(IO_TIMEOUT)?;
    conn.send_head(
        "POST",
        &format!("/v1.25/build?t={BUILD_TAG}"),
        &format!(
            "Content-Type: application/x-tar\r\nContent-Length: {}\r\n",
            context.len()
        ),
    )?;
    let mut sent = 0;
    let written = context
        .write(
            &mut |piece| {
                conn.write_all(piece)?;
                sent += piece.len() as u64;
                progress(sent)
            },
            pattern.bytes(),
        )
        .and_then(|()| conn.flush());
    let answer = conn.read_head(false).and_then(|head| {
        let body = conn.read_body_vec(head.framing)?;
        Ok((head.status, String::from_utf8_lossy(&body).into_owned()))
    });
    let (status, body) = match (written, answer) {
        (Ok(()), answer) => answer?,
        (Err(e), Ok((status, body))) => {
            bail!("the upload broke off after {sent} bytes ({e}); answer {status}: {body}")
        }
        (Err(e), Err(_)) => return Err(e).context(format!("upload broke off after {sent} bytes")),
    };
    ensure!(
        status == 200 && body.contains("Successfully built") && !body.contains("\"error"),
        "build answered {status}: {body}"
    );
    Ok(sent)
}

/// `POST /images/create?fromSrc=-` (docker import) of a tar holding the big file.
fn import_image(dial: &Dial, image: &str, size: u64, pattern: &Pattern) -> anyhow::Result<()> {
    let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let len = tar::archive_len(size);
    let mut conn = dial.connect(IO_TIMEOUT)?;
    conn.send_head(
        "POST",
        &format!("/v1.25/images/create?fromSrc=-&repo={repo}&tag={tag}"),
        &format!("Content-Type: application/x-tar\r\nContent-Length: {len}\r\n"),
    )?;
    tar::write_archive(&mut |piece| conn.write_all(piece), BIG_FILE, size, pattern)?;
    conn.flush()?;
    let head = conn.read_head(false)?;
    let body = String::from_utf8_lossy(&conn.read_body_vec(head.framing)?).into_owned();
    ensure!(
        head.status == 200 && !body.contains("\"error"),
        "import answered {}: {body}",
        head.status
    );
    Ok(())
}

/// Latency percentiles in µs.
struct Latency {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(nanos: &mut [u64]) -> Latency {
        nanos.sort_unstable();
        let pct = |p: f64| {
            if nanos.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * nanos.len() as f64).ceil() as usize;
            nanos[rank.clamp(1, nanos.len()) - 1] as f64 / 1000.0
        };
        Latency {
            n: nanos.len(),
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            max: pct(100.0),
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Raises the soft limit on open files to what `needed` asks (up to the hard limit): the idle
/// phase holds a socket per client here and two per client in the proxy, which inherits it.
fn raise_fd_limit(needed: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let current = limit.current.unwrap_or(u64::MAX);
    ensure!(
        hard >= needed,
        "the open-file hard limit is {hard}, the idle phase needs {needed} (raise it or use --quick)"
    );
    if current < needed {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(needed.max(current)),
                maximum: limit.maximum,
            },
        )
        .context("cannot raise the open-file limit")?;
    }
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs ({model})")
}
