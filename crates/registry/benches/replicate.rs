//! Replication benchmark (issue 18; a bench binary, not criterion: each sample is seconds long
//! and runs external programs). Between local Distribution registries (plain HTTP, loopback):
//!
//! - `regctl replicate run --rules rules.toml` (the release binary named by `$REGCTL_BIN`, driven
//!   through its command line only): a first run into an empty destination, then a re-run with
//!   nothing changed against the same destination (and the same state file),
//! - `skopeo sync --src yaml --dest docker` of the same 50 repositories into its own empty
//!   destination, then its re-run.
//!
//! The source holds 50 repositories × 3 tags (`bench/app-NN:{v1,v2,v3}`, 150 images), populated
//! once with the library client (not measured). Each image has three layers, as a fleet built on
//! a few base images does: a base layer shared by ten repositories (5 bases of 4 MiB), a
//! dependency layer shared by the repository's three tags (512 KiB), and an application layer
//! of its own (64 KiB); the blobs are made in `parts/*` repositories of the source (outside the
//! replicated set) and mounted into `bench/*`.
//!
//! Every round starts a fresh destination per tool and runs both tools (their order alternating
//! between rounds, so a change of machine load falls on both alike). After each run the
//! destination must hold exactly the 50 repositories with all 150 tags at the source's digests
//! and every blob; otherwise the bench panics. Wall time, peak RSS and the client's CPU time
//! come from `/usr/bin/time`, the registries' CPU time from `/proc/<pid>/stat`, and the requests
//! each registry served from its access log.
//!
//! Run (the release builds take long on a small machine; build first, the build is not
//! measured):
//!
//! ```sh
//! cargo build --release -p regctl
//! cargo bench -p vch-registry --bench replicate --no-run
//! REGCTL_BIN=$PWD/target/release/regctl cargo bench -p vch-registry --bench replicate
//! ```
//!
//! `REPLBENCH_ROUNDS` (default 5) sets the rounds; `REPLBENCH_TOOLS=skopeo` runs skopeo alone
//! (for debugging the set-up without regctl).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: failures panic, results are printed"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use vch_registry::{Client, DOCKER_MANIFEST, Digest, Mount};
use vch_testbed::{HttpClient, PushedImage, Registry, TestImage};

use common::{cpu_of, load_average, median, plain_client, timed};

const REPOSITORIES: usize = 50;
const TAGS: [&str; 3] = ["v1", "v2", "v3"];
/// Repositories per base image: `bench/app-NN` uses base `NN / 10`.
const REPOS_PER_BASE: usize = 10;
const BASE_SIZE: usize = 4 << 20;
const DEPS_SIZE: usize = 512 << 10;
const APP_SIZE: usize = 64 << 10;
const DEFAULT_ROUNDS: usize = 5;
/// Repositories the rule replicates at once (the issue's example value).
const CONCURRENCY: usize = 4;

/// Requests a registry served, counted from the access-log lines of its text log
/// (`127.0.0.1 - - [date] "PUT /v2/… HTTP/1.1" 201 …`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Requests {
    total: u64,
    /// `POST …/blobs/uploads/` that opened an upload (no `mount=`).
    blob_post: u64,
    /// `POST …/blobs/uploads/?mount=…` (cross-repository mounts asked for).
    mount: u64,
    /// `PATCH` and `PUT` of upload sessions (blob bytes sent or an upload closed).
    blob_write: u64,
    /// `PUT …/manifests/…`.
    manifest_put: u64,
    /// `GET …/blobs/sha256:…` (blob bytes served).
    blob_get: u64,
}

impl Requests {
    fn count(log: &str) -> Self {
        let mut r = Self::default();
        for line in log.lines() {
            let Some((_, rest)) = line.split_once("] \"") else {
                continue;
            };
            let mut words = rest.split(' ');
            let (Some(method), Some(uri)) = (words.next(), words.next()) else {
                continue;
            };
            if !uri.starts_with("/v2/") {
                continue;
            }
            r.total += 1;
            let upload = uri.contains("/blobs/uploads/");
            match method {
                "POST" if upload && uri.contains("mount=") => r.mount += 1,
                "POST" if upload => r.blob_post += 1,
                "PATCH" | "PUT" if upload => r.blob_write += 1,
                "PUT" if uri.contains("/manifests/") => r.manifest_put += 1,
                "GET" if uri.contains("/blobs/sha256:") => r.blob_get += 1,
                _ => {}
            }
        }
        r
    }

    /// Blob bytes or manifests written: what a no-change re-run must not do.
    fn writes(&self) -> u64 {
        self.blob_post + self.blob_write + self.manifest_put
    }
}

/// A registry's log so far, to count what one run adds.
struct LogMark(usize);

impl LogMark {
    fn new(reg: &Registry) -> Self {
        Self(reg.log().len())
    }

    fn since(&self, reg: &Registry) -> Requests {
        Requests::count(reg.log().get(self.0..).unwrap_or_default())
    }
}

/// One image of the replicated set.
struct SetImage {
    repository: String,
    tag: String,
    digest: Digest,
    /// Config and layers, with their sizes.
    blobs: Vec<(Digest, u64)>,
}

/// One layer made by [`TestImage::random`] in a `parts/*` repository.
struct Part {
    repository: String,
    /// Its descriptor in the image manifest.
    descriptor: serde_json::Value,
    digest: Digest,
    size: u64,
    diff_id: String,
}

fn part(rt: &tokio::runtime::Runtime, client: &Client, pushed: &PushedImage) -> Part {
    let manifest: serde_json::Value = serde_json::from_slice(&pushed.manifest).unwrap();
    let descriptor = manifest["layers"][0].clone();
    let config_digest = Digest::parse(&pushed.config_digest).unwrap();
    let config = rt.block_on(async {
        client
            .blob_get(&pushed.repository, &config_digest)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    Part {
        repository: pushed.repository.clone(),
        digest: Digest::parse(descriptor["digest"].as_str().unwrap()).unwrap(),
        size: descriptor["size"].as_u64().unwrap(),
        descriptor,
        diff_id: config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned(),
    }
}

/// A distinct seed per kind and index: [`TestImage::random`]'s generator ignores the seed's
/// lowest bit (it sets it), so indices are spread by two.
fn seed(kind: u64, index: usize) -> u64 {
    (kind << 32) + 2 * index as u64
}

fn random_part(
    rt: &tokio::runtime::Runtime,
    src: &Registry,
    client: &Client,
    repository: &str,
    size: usize,
    seed: u64,
) -> Part {
    let pushed = TestImage::random(repository, "layer")
        .layer_size(size)
        .seed(seed)
        .push(&HttpClient::plain(), src.url())
        .unwrap();
    part(rt, client, &pushed)
}

/// Fills the source: the parts, then 50 × 3 images whose layers are mounted from them and
/// whose configs name the layers' real diff ids (so docker could pull and run them).
fn populate(rt: &tokio::runtime::Runtime, src: &Registry) -> Vec<SetImage> {
    let client = plain_client(src);
    let bases: Vec<Part> = (0..REPOSITORIES.div_ceil(REPOS_PER_BASE))
        .map(|b| {
            let repository = format!("parts/base-{b}");
            random_part(rt, src, &client, &repository, BASE_SIZE, seed(0xba5e, b))
        })
        .collect();
    let mut set = Vec::new();
    for n in 0..REPOSITORIES {
        let repository = format!("bench/app-{n:02}");
        let deps = random_part(
            rt,
            src,
            &client,
            &format!("parts/deps-{n:02}"),
            DEPS_SIZE,
            seed(0xde95, n),
        );
        for (t, tag) in TAGS.iter().enumerate() {
            let app = random_part(
                rt,
                src,
                &client,
                &format!("parts/app-{n:02}-{tag}"),
                APP_SIZE,
                seed(0xc0de, n * TAGS.len() + t),
            );
            let layers = [&bases[n / REPOS_PER_BASE], &deps, &app];
            let config = serde_json::json!({
                "architecture": "amd64",
                "os": "linux",
                "config": { "Labels": { "bench": format!("{repository}:{tag}") } },
                "rootfs": {
                    "type": "layers",
                    "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
                },
            })
            .to_string();
            let config = Bytes::from(config);
            let config_size = config.len() as u64;
            let digest = rt.block_on(async {
                for l in layers {
                    let m = client
                        .mount(&repository, &l.repository, &l.digest)
                        .await
                        .unwrap();
                    assert!(
                        matches!(m, Mount::Mounted),
                        "mount of {} into {repository}",
                        l.digest
                    );
                }
                let config_digest = client.push_blob(&repository, config).await.unwrap();
                let manifest = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": DOCKER_MANIFEST,
                    "config": {
                        "mediaType": "application/vnd.docker.container.image.v1+json",
                        "size": config_size,
                        "digest": config_digest.as_str(),
                    },
                    "layers": layers.iter().map(|l| l.descriptor.clone()).collect::<Vec<_>>(),
                })
                .to_string();
                let digest = client
                    .manifest_put(&repository, tag, DOCKER_MANIFEST, Bytes::from(manifest))
                    .await
                    .unwrap();
                let mut blobs = vec![(config_digest, config_size)];
                blobs.extend(layers.iter().map(|l| (l.digest.clone(), l.size)));
                (digest, blobs)
            });
            set.push(SetImage {
                repository: repository.clone(),
                tag: (*tag).to_owned(),
                digest: digest.0,
                blobs: digest.1,
            });
        }
    }
    set
}

/// Panics unless `dst` holds exactly the set's repositories, each with exactly its tags at the
/// source's digests and every blob with its size.
fn verify(rt: &tokio::runtime::Runtime, dst: &Registry, set: &[SetImage], what: &str) {
    let client = plain_client(dst);
    rt.block_on(async {
        let want: BTreeSet<&str> = set.iter().map(|i| i.repository.as_str()).collect();
        let catalog = client.catalog(None).await.unwrap();
        let got: BTreeSet<&str> = catalog.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{what}: repositories at the destination");
        let mut tags: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for image in set {
            tags.entry(&image.repository)
                .or_default()
                .insert(image.tag.clone());
            let head = client
                .manifest_head(&image.repository, &image.tag)
                .await
                .unwrap();
            let digest = head.and_then(|h| h.digest);
            assert_eq!(
                digest.as_ref(),
                Some(&image.digest),
                "{what}: {}:{} at the destination",
                image.repository,
                image.tag
            );
            for (d, size) in &image.blobs {
                let got = client.blob_head(&image.repository, d).await.unwrap();
                assert_eq!(got, Some(*size), "{what}: blob {d} in {}", image.repository);
            }
        }
        for (repository, want) in tags {
            let got: BTreeSet<String> = client
                .tags(repository, None)
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(got, want, "{what}: tags of {repository}");
        }
    });
}

/// One measured run.
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    rss_kib: u64,
    client_cpu: f64,
    registries_cpu: f64,
    dst: Requests,
    src: Requests,
}

/// Runs `cmd` against `src` → `dst`, measuring it.
fn measure(
    src: &Registry,
    dst: &Registry,
    cmd: &str,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Sample {
    let (src_mark, dst_mark) = (LogMark::new(src), LogMark::new(dst));
    let cpu0 = cpu_of(src.pid()) + cpu_of(dst.pid());
    let (wall, rss_kib, client_cpu) = timed(cmd, args, env);
    let registries_cpu = cpu_of(src.pid()) + cpu_of(dst.pid()) - cpu0;
    // The registry writes its access-log line after the answer: give the last ones time.
    std::thread::sleep(std::time::Duration::from_millis(200));
    Sample {
        wall,
        rss_kib,
        client_cpu,
        registries_cpu,
        dst: dst_mark.since(dst),
        src: src_mark.since(src),
    }
}

/// The tools compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Regctl,
    Skopeo,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Regctl => "regctl replicate run",
            Self::Skopeo => "skopeo sync (1.9.3)",
        }
    }
}

/// What a tool needs to run against one destination: a directory with its config files.
struct Job {
    tool: Tool,
    dir: tempfile::TempDir,
}

impl Job {
    fn new(tool: Tool, src: &Registry, dst: &Registry, set: &[SetImage]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match tool {
            Tool::Regctl => {
                let rules = format!(
                    r#"state = "{state}"

[[endpoint]]
name = "source"
url = "{src}"
verify_tls = false

[[endpoint]]
name = "destination"
url = "{dst}"
verify_tls = false

[[rule]]
name = "bench"
from = "source"
to = "destination"
repositories = ["bench/**"]
tags = ["*"]
flatten = 0
trigger = "manual"
deletions = false
enabled = true
concurrency = {CONCURRENCY}
"#,
                    state = dir.path().join("replication-state.json").display(),
                    src = src.url(),
                    dst = dst.url(),
                );
                std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
            }
            Tool::Skopeo => {
                // An empty tag list: every tag of the repository.
                let repos: BTreeSet<&str> = set.iter().map(|i| i.repository.as_str()).collect();
                let mut yaml = format!("{}:\n  tls-verify: false\n  images:\n", src.addr());
                for r in repos {
                    writeln!(yaml, "    {r}: []").unwrap();
                }
                std::fs::write(dir.path().join("sync.yaml"), yaml).unwrap();
            }
        }
        // No credentials or settings of the machine's user leak in.
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        Self { tool, dir }
    }

    fn run(&self, src: &Registry, dst: &Registry, regctl: &str) -> Sample {
        let d = self.dir.path();
        let docker = d.join("docker");
        let regctl_config = d.join("regctl.json");
        let env: [(&str, &Path); 2] = [
            ("DOCKER_CONFIG", &docker),
            ("REGCTL_CONFIG", &regctl_config),
        ];
        match self.tool {
            Tool::Regctl => {
                let rules = d.join("rules.toml");
                measure(
                    src,
                    dst,
                    regctl,
                    &["replicate", "run", "--rules", rules.to_str().unwrap()],
                    &env,
                )
            }
            Tool::Skopeo => {
                let yaml = d.join("sync.yaml");
                // Not `--scoped`: the destination is `<dst>/bench/<last component>`, the same
                // names as at the source.
                let dest = format!("{}/bench", dst.addr());
                measure(
                    src,
                    dst,
                    "skopeo",
                    &[
                        "sync",
                        "--src",
                        "yaml",
                        "--dest",
                        "docker",
                        "--dest-tls-verify=false",
                        yaml.to_str().unwrap(),
                        &dest,
                    ],
                    &env,
                )
            }
        }
    }
}

/// A tool's samples of one scenario.
struct Row {
    tool: Tool,
    scenario: &'static str,
    samples: Vec<Sample>,
}

impl Row {
    fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall).collect())
    }

    fn client_cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.client_cpu).collect())
    }

    fn registries_cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.registries_cpu).collect())
    }

    fn rss_mib(&self) -> f64 {
        median(self.samples.iter().map(|s| s.rss_kib as f64).collect()) / 1024.0
    }

    /// The median-wall sample, whose requests the table shows (they vary little between
    /// rounds; the spread is printed apart when they do).
    fn median_sample(&self) -> Sample {
        let m = self.wall();
        *self.samples.iter().find(|s| s.wall == m).unwrap()
    }

    fn print(&self) {
        let walls: Vec<f64> = self.samples.iter().map(|s| s.wall).collect();
        let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let max = walls.iter().copied().fold(0.0, f64::max);
        let Sample { dst, src, .. } = self.median_sample();
        println!(
            "| {} | {} | {:.2} ({min:.2}-{max:.2}) | {:.2} | {:.2} | {:.1} | {} | {}/{}/{}/{} | {} / {} |",
            self.tool.name(),
            self.scenario,
            self.wall(),
            self.client_cpu(),
            self.registries_cpu(),
            self.rss_mib(),
            dst.total,
            dst.blob_post,
            dst.mount,
            dst.blob_write,
            dst.manifest_put,
            src.total,
            src.blob_get,
        );
        let distinct: BTreeSet<String> = self
            .samples
            .iter()
            .map(|s| format!("destination {:?}, source {:?}", s.dst, s.src))
            .collect();
        if distinct.len() > 1 {
            for d in distinct {
                println!("  (requests differ between rounds: {d})");
            }
        }
    }
}

fn main() {
    let tools: Vec<Tool> = match std::env::var("REPLBENCH_TOOLS").as_deref() {
        Ok("skopeo") => vec![Tool::Skopeo],
        Ok("regctl") => vec![Tool::Regctl],
        _ => vec![Tool::Regctl, Tool::Skopeo],
    };
    let regctl = if tools.contains(&Tool::Regctl) {
        std::env::var("REGCTL_BIN").expect("set REGCTL_BIN to the release regctl binary")
    } else {
        String::new()
    };
    let rounds: usize = std::env::var("REPLBENCH_ROUNDS")
        .ok()
        .map_or(DEFAULT_ROUNDS, |r| {
            r.parse().expect("REPLBENCH_ROUNDS: a number")
        });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let src = Registry::start().unwrap();
    let started = std::time::Instant::now();
    let set = populate(&rt, &src);
    let mut unique = BTreeMap::new();
    let mut per_repo = BTreeSet::new();
    for image in &set {
        for (d, size) in &image.blobs {
            unique.insert(d.clone(), *size);
            per_repo.insert((image.repository.clone(), d.clone(), *size));
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "# Replication: {REPOSITORIES} repositories x {} tags = {} images, {} distinct blobs, {:.1} MiB \
         ({} blob links and {:.1} MiB counted per repository); populated in {:.1} s",
        TAGS.len(),
        set.len(),
        unique.len(),
        mib(unique.values().sum()),
        per_repo.len(),
        mib(per_repo.iter().map(|(_, _, s)| s).sum()),
        started.elapsed().as_secs_f64(),
    );
    println!("load average at start: {}", load_average());

    let scenarios = ["first run", "no-change re-run"];
    let mut rows: Vec<Row> = tools
        .iter()
        .flat_map(|t| {
            scenarios.iter().map(|s| Row {
                tool: *t,
                scenario: s,
                samples: Vec::new(),
            })
        })
        .collect();
    for round in 0..rounds {
        let mut order = tools.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for tool in order {
            let dst = Registry::start().unwrap();
            let job = Job::new(tool, &src, &dst, &set);
            for scenario in scenarios {
                let sample = job.run(&src, &dst, &regctl);
                verify(&rt, &dst, &set, &format!("{} {scenario}", tool.name()));
                let row = rows
                    .iter_mut()
                    .find(|r| r.tool == tool && r.scenario == scenario)
                    .unwrap();
                println!(
                    "round {}: {} {scenario}: {:.2} s, destination {:?}",
                    round + 1,
                    tool.name(),
                    sample.wall,
                    sample.dst
                );
                row.samples.push(sample);
            }
        }
    }

    println!("\nload average at end: {}\n", load_average());
    println!(
        "| tool | scenario | wall s, median (min-max) | client CPU s | registries CPU s | \
         peak RSS MiB | requests at destination | of which blob POST / mount / PATCH+PUT / \
         manifest PUT | requests at source / blob GETs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        row.print();
    }
    if tools.len() == 2 {
        println!();
        for scenario in scenarios {
            let ours = rows
                .iter()
                .find(|r| r.tool == Tool::Regctl && r.scenario == scenario)
                .unwrap();
            let theirs = rows
                .iter()
                .find(|r| r.tool == Tool::Skopeo && r.scenario == scenario)
                .unwrap();
            println!(
                "regctl / skopeo, {scenario}: wall {:.2}x, client CPU {:.2}x, registries CPU {:.2}x, peak RSS {:.2}x",
                ours.wall() / theirs.wall(),
                ours.client_cpu() / theirs.client_cpu(),
                ours.registries_cpu() / theirs.registries_cpu(),
                ours.rss_mib() / theirs.rss_mib(),
            );
        }
    }
    for tool in tools {
        let rerun = rows
            .iter()
            .find(|r| r.tool == tool && r.scenario == scenarios[1])
            .unwrap();
        let writes: u64 = rerun.samples.iter().map(|s| s.dst.writes()).sum();
        let gets: u64 = rerun.samples.iter().map(|s| s.src.blob_get).sum();
        println!(
            "{}: no-change re-runs wrote {writes} blob or manifest requests at the destination \
                 and read {gets} blobs from the source, over {} rounds",
            tool.name(),
            rerun.samples.len()
        );
    }
}
