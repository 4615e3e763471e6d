//! Image copy benchmark (a bench binary, not criterion: each sample is seconds long and runs
//! external programs). Between two local Distribution registries (plain HTTP, loopback):
//!
//! - `regctl image copy` (the release binary named by `$REGCTL_BIN`) at several concurrencies,
//! - `skopeo copy`,
//! - two ingest baselines: the destination taking the same blobs by parallel monolithic uploads
//!   (`POST`, then `PUT ?digest=`), then the manifest,
//!   - "in-process from memory": this process uploads the blobs held in memory with the
//!     library's client, all at once (its CPU is this process's, read from `/proc/self/stat`),
//!   - "parallel curl from files": the way an admin would with standard tools, one `sh` + two
//!     `curl` per blob (`curl -T file` streams it with a Content-Length), all at once and 8 at
//!     once through `xargs -P`, from files written once before the rounds (so in the page
//!     cache); the client CPU is that of all those processes (`/usr/bin/time` counts waited-for
//!     descendants),
//! - a copy into another repository of the same registry (mount).
//!
//! Every sample copies into a freshly started destination registry. Wall time, peak RSS and
//! the client's CPU time (user + system) come from `/usr/bin/time`; the registries' CPU time
//! from `/proc/<pid>/stat`, to show where a copy spends the machine. Run:
//! `cargo build --release -p regctl && REGCTL_BIN=target/release/regctl cargo bench -p vch-registry --bench copy`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: failures panic, results are printed"
)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use vch_registry::Digest;
use vch_testbed::{HttpClient, PushedImage, Registry, TestImage};

use common::{cpu_of, load_average, median, plain_client, timed};

const SAMPLES: usize = 5;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// One tool's samples.
struct Row {
    name: String,
    times: Vec<f64>,
    rss: Option<u64>,
    /// Client, source and destination CPU seconds per sample (NaN: not measured).
    cpu: Vec<[f64; 3]>,
}

impl Row {
    fn new(name: String) -> Self {
        Self {
            name,
            times: Vec::new(),
            rss: None,
            cpu: Vec::new(),
        }
    }

    fn add(&mut self, t: f64, rss: Option<u64>, cpu: [f64; 3]) {
        self.times.push(t);
        if let Some(r) = rss {
            self.rss = Some(self.rss.unwrap_or(0).max(r));
        }
        self.cpu.push(cpu);
    }

    fn print(&self, mb: f64) {
        let t = median(self.times.clone());
        let rss = self
            .rss
            .map_or_else(|| "-".to_owned(), |r| format!("{:.1}", r as f64 / 1024.0));
        let cpu: Vec<String> = (0..3)
            .map(|i| {
                let m = mean(&self.cpu.iter().map(|c| c[i]).collect::<Vec<_>>());
                if m.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{m:.2}")
                }
            })
            .collect();
        println!(
            "| {} | {t:.2} | {:.0} | {rss} | {} |",
            self.name,
            mb / t,
            cpu.join(" / ")
        );
    }
}

/// Uploads the image's blobs from memory into a fresh registry with all uploads in parallel,
/// then the manifest: the registry's ingest limit for this content, with a lean client in this
/// process. Returns (wall seconds, [this process's CPU, NaN, destination CPU]).
fn ingest(
    rt: &tokio::runtime::Runtime,
    blobs: &Arc<Vec<Bytes>>,
    pushed: &PushedImage,
) -> (f64, [f64; 3]) {
    let dst = Registry::start().unwrap();
    let client = plain_client(&dst);
    let me = Some(std::process::id());
    let (me0, cpu0) = (cpu_of(me), cpu_of(dst.pid()));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..blobs.len() {
            let (client, blobs) = (client.clone(), blobs.clone());
            tasks.spawn(async move {
                let b = blobs[i].clone();
                let d = Digest::sha256(&b);
                let s = client.upload_start("ingest/app").await.unwrap();
                client.upload_put_bytes(&s, &d, b).await.unwrap();
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        client
            .manifest_put(
                "ingest/app",
                "v1",
                vch_registry::DOCKER_MANIFEST,
                Bytes::from(pushed.manifest.clone()),
            )
            .await
            .unwrap();
    });
    let t = start.elapsed().as_secs_f64();
    (t, [cpu_of(me) - me0, f64::NAN, cpu_of(dst.pid()) - cpu0])
}

/// One blob's monolithic upload with curl (distribution spec, "POST then PUT"): `$1` the
/// registry URL, `$2` the repository, `$3` the blob's file, `$4` its digest. `Expect:` is
/// cleared so curl does not wait for `100 Continue` before each body.
const CURL_UPLOAD_SH: &str = r#"set -e
loc=$(curl -fsS -o /dev/null -X POST -w '%header{location}' "$1/v2/$2/blobs/uploads/")
case "$loc" in http*) ;; *) loc="$1$loc" ;; esac
case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -fsS -o /dev/null -H 'Expect:' -T "$3" "$loc${sep}digest=$4"
"#;

/// All blobs through `xargs -P $1` (each line of `$4/blobs.list` is "file digest"), then the
/// manifest: `$2` the registry URL, `$3` the repository, `$4` the directory of the files.
const CURL_INGEST_SH: &str = r#"set -e
xargs -a "$4/blobs.list" -n 2 -P "$1" sh "$4/upload.sh" "$2" "$3"
curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' --data-binary "@$4/manifest.json" "$2/v2/$3/manifests/v1"
"#;

/// The blobs and manifest as files, with the scripts that upload them.
struct CurlFiles {
    dir: tempfile::TempDir,
    digests: Vec<Digest>,
}

impl CurlFiles {
    fn write(blobs: &[Bytes], pushed: &PushedImage) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut list = String::new();
        let mut digests = Vec::new();
        for (i, b) in blobs.iter().enumerate() {
            let d = Digest::sha256(b);
            let path = dir.path().join(format!("blob{i}"));
            std::fs::write(&path, b).unwrap();
            list.push_str(&format!("{} {d}\n", path.display()));
            digests.push(d);
        }
        std::fs::write(dir.path().join("blobs.list"), list).unwrap();
        std::fs::write(dir.path().join("manifest.json"), &pushed.manifest).unwrap();
        std::fs::write(dir.path().join("upload.sh"), CURL_UPLOAD_SH).unwrap();
        std::fs::write(dir.path().join("ingest.sh"), CURL_INGEST_SH).unwrap();
        Self { dir, digests }
    }

    /// Uploads every blob with `parallel` curl uploads at once, then the manifest, into a fresh
    /// registry; checks that every blob landed with its size. Returns (wall seconds, [curl and
    /// shell CPU, NaN, destination CPU]).
    fn ingest(&self, parallel: usize, rt: &tokio::runtime::Runtime) -> (f64, [f64; 3]) {
        let dst = Registry::start().unwrap();
        let dir = self.dir.path().to_str().unwrap();
        let script = format!("{dir}/ingest.sh");
        let d0 = cpu_of(dst.pid());
        let (t, _, c) = timed(
            "sh",
            &[&script, &parallel.to_string(), dst.url(), "ingest/app", dir],
            &[],
        );
        let dst_cpu = cpu_of(dst.pid()) - d0;
        let client = plain_client(&dst);
        rt.block_on(async {
            for (i, d) in self.digests.iter().enumerate() {
                let len = std::fs::metadata(self.dir.path().join(format!("blob{i}")))
                    .unwrap()
                    .len();
                let got = client.blob_head("ingest/app", d).await.unwrap();
                assert_eq!(got, Some(len), "curl ingest lost blob {d}");
            }
        });
        (t, [c, f64::NAN, dst_cpu])
    }
}

fn scenario(
    name: &str,
    layers: usize,
    layer_size: usize,
    regctl: &str,
    rt: &tokio::runtime::Runtime,
) {
    let src = Registry::start().unwrap();
    let pushed = TestImage::random("bench/app", "v1")
        .layers(layers)
        .layer_size(layer_size)
        .seed(42)
        .push(&HttpClient::plain(), src.url())
        .unwrap();
    let mb = pushed.total_bytes as f64 / (1024.0 * 1024.0);
    // The blobs in memory, for the ingest limit.
    let client = plain_client(&src);
    let blobs: Arc<Vec<Bytes>> = Arc::new(rt.block_on(async {
        let mut v = Vec::new();
        for d in std::iter::once(&pushed.config_digest).chain(&pushed.layer_digests) {
            let d = Digest::parse(d).unwrap();
            v.push(
                client
                    .blob_get("bench/app", &d)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap(),
            );
        }
        v
    }));
    let src_ref = format!("{}/bench/app:v1", src.addr());
    let set = |home: &std::path::Path, host: &str| {
        let st = Command::new(regctl)
            .env("REGCTL_CONFIG", home.join("regctl.json"))
            .args(["registry", "set", host, "--tls", "disabled"])
            .status()
            .unwrap();
        assert!(st.success());
    };
    println!(
        "\n## {name}: {layers} layer(s) x {} MiB = {mb:.0} MiB (load average {})",
        layer_size >> 20,
        load_average()
    );
    // Every round runs each tool once, so a change of load during the run (other users of
    // the machine, page-cache writeback) falls on all of them alike.
    let concurrencies: Vec<usize> = [1usize, 2, 4, 8, 16]
        .into_iter()
        .filter(|c| *c == 1 || *c <= layers + 1)
        .collect();
    let mut rows: Vec<Row> = concurrencies
        .iter()
        .map(|c| Row::new(format!("regctl --concurrency {c}")))
        .collect();
    rows.push(Row::new("skopeo copy (1.9.3)".into()));
    let nblobs = blobs.len();
    rows.push(Row::new(format!(
        "ingest, in-process from memory ({nblobs} at once)"
    )));
    // Written once here, so every round reads them from the page cache.
    let files = CurlFiles::write(&blobs, &pushed);
    let curl_parallel: Vec<usize> = if nblobs > 8 {
        vec![nblobs, 8]
    } else {
        vec![nblobs]
    };
    for p in &curl_parallel {
        rows.push(Row::new(format!(
            "ingest, parallel curl from files ({p} at once)"
        )));
    }
    for _ in 0..SAMPLES {
        for (i, conc) in concurrencies.iter().enumerate() {
            let dst = Registry::start().unwrap();
            let home = tempfile::tempdir().unwrap();
            set(home.path(), &src.addr());
            set(home.path(), &dst.addr());
            let dst_ref = format!("{}/bench/app:v1", dst.addr());
            let conc_s = conc.to_string();
            let (s0, d0) = (cpu_of(src.pid()), cpu_of(dst.pid()));
            let (t, r, c) = timed(
                regctl,
                &[
                    "image",
                    "copy",
                    &src_ref,
                    &dst_ref,
                    "--concurrency",
                    &conc_s,
                ],
                &[("REGCTL_CONFIG", &home.path().join("regctl.json"))],
            );
            rows[i].add(
                t,
                Some(r),
                [c, cpu_of(src.pid()) - s0, cpu_of(dst.pid()) - d0],
            );
        }
        let dst = Registry::start().unwrap();
        let (s0, d0) = (cpu_of(src.pid()), cpu_of(dst.pid()));
        let (t, r, c) = timed(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{src_ref}"),
                &format!("docker://{}/bench/app:v1", dst.addr()),
            ],
            &[],
        );
        let n = concurrencies.len();
        rows[n].add(
            t,
            Some(r),
            [c, cpu_of(src.pid()) - s0, cpu_of(dst.pid()) - d0],
        );
        let (t, cpu) = ingest(rt, &blobs, &pushed);
        rows[n + 1].add(t, None, cpu);
        for (j, p) in curl_parallel.iter().enumerate() {
            let (t, cpu) = files.ingest(*p, rt);
            rows[n + 2 + j].add(t, None, cpu);
        }
    }
    println!(
        "| tool | median s | MiB/s | peak RSS MiB | CPU s: client / source / destination (mean) |"
    );
    println!("|---|---|---|---|---|");
    for row in &rows {
        row.print(mb);
    }
    // Same registry, another repository: mounts.
    let home = tempfile::tempdir().unwrap();
    set(home.path(), &src.addr());
    let mut times = Vec::new();
    for i in 0..SAMPLES {
        let dst_ref = format!("{}/bench/mounted{i}:v1", src.addr());
        let (t, _, _) = timed(
            regctl,
            &["image", "copy", &src_ref, &dst_ref],
            &[("REGCTL_CONFIG", &home.path().join("regctl.json"))],
        );
        times.push(t);
    }
    println!(
        "| regctl copy within the registry (mount) | {:.2} | - | - | - |",
        median(times)
    );
}

fn main() {
    let regctl = std::env::var("REGCTL_BIN").expect("set REGCTL_BIN to the release regctl binary");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    scenario("16 x 16 MiB", 16, 16 << 20, &regctl, &rt);
    scenario("1 x 512 MiB", 1, 512 << 20, &regctl, &rt);
}
