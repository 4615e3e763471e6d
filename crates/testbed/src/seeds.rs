//! Fuzz seed corpora (`fuzz/seeds/<target>/`) kept in step with tables in the tests, and
//! replayed through the fuzz targets' own checks.
//!
//! Each crate with fuzz targets keeps its seeds as a table in a test; the `seed-<hash>` files are
//! generated from it. `VCH_WRITE_SEEDS=1` rewrites them (run that test on one thread: the replay
//! must not read a directory being rewritten); otherwise [`SeedCorpus::check_committed`] fails on
//! any difference. [`SeedCorpus::replay`] runs every file of a seed directory, so a reproducer
//! minimised from a fuzzer crash and saved there (`cargo fuzz tmin`) becomes a regression test.

use std::fs;
use std::path::{Path, PathBuf};

/// One fuzz target: its name (the seed directory), its check, and its table of seeds.
pub struct SeedTarget {
    /// The fuzz target's name, also its directory under `fuzz/seeds/`.
    pub name: &'static str,
    /// The function the fuzz target calls; a panic is a failure.
    pub check: fn(&[u8]),
    /// The seeds the table generates.
    pub seeds: Vec<String>,
}

/// The seed corpora of one crate's fuzz targets.
pub struct SeedCorpus {
    root: PathBuf,
    targets: Vec<SeedTarget>,
}

impl SeedCorpus {
    /// `root` is the `fuzz/seeds` directory.
    pub fn new(root: impl AsRef<Path>, targets: Vec<SeedTarget>) -> SeedCorpus {
        SeedCorpus {
            root: root.as_ref().to_path_buf(),
            targets,
        }
    }

    /// Asserts that the committed seed files match the tables (rewrites them first with
    /// `VCH_WRITE_SEEDS` set; table seeds no longer in a table go, other files stay).
    ///
    /// # Panics
    /// On a missing or different seed file: this is a test assertion.
    pub fn check_committed(&self) {
        let write = std::env::var_os("VCH_WRITE_SEEDS").is_some();
        for target in &self.targets {
            let dir = self.root.join(target.name);
            if write && dir.exists() {
                let wanted: Vec<String> = target.seeds.iter().map(|s| file_name(s)).collect();
                for file in read_dir(&dir) {
                    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                    if let Some(name) = name.filter(|n| n.starts_with("seed-"))
                        && !wanted.contains(&name)
                    {
                        fs::remove_file(&file)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    }
                }
            }
            for seed in &target.seeds {
                let path = dir.join(file_name(seed));
                if write {
                    fs::create_dir_all(&dir)
                        .and_then(|()| fs::write(&path, seed))
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                let committed = fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (regenerate with VCH_WRITE_SEEDS=1)",
                        path.display()
                    )
                });
                assert_eq!(&committed, seed, "{}", path.display());
            }
        }
    }

    /// Runs every file in each target's seed directory through its check.
    ///
    /// # Panics
    /// When a seed fails its check, or a directory has fewer files than its table.
    pub fn replay(&self) {
        for target in &self.targets {
            let dir = self.root.join(target.name);
            let files = read_dir(&dir);
            assert!(
                files.len() >= target.seeds.len(),
                "{}: missing seeds in {}",
                target.name,
                dir.display()
            );
            for file in files {
                let data = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                if std::panic::catch_unwind(|| (target.check)(&data)).is_err() {
                    panic!(
                        "{}: seed {} fails the fuzz check",
                        target.name,
                        file.display()
                    );
                }
            }
        }
    }
}

/// The files of a directory, sorted.
fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| {
            f.map(|f| f.path())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        })
        .collect();
    files.sort();
    files
}

/// A stable file name from the content (FNV-1a), as corpus files are named by content.
fn file_name(seed: &str) -> String {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("seed-{hash:016x}")
}
