//! `delf bench build`: the distributed index build timed on real descriptors (issue 24). The vectors of
//! `delf bench vectors` (grown with their calibrated expansion to `--descriptors`) become a completed extraction
//! job of pseudo-images; the train step runs once; then the encode step runs as 1, 2, 4, ... real
//! `delf index encode` processes on fresh copies of the trained prefix, each timed from the first spawn to the last
//! exit, with every worker's peak RSS (`VmHWM` of `/proc/PID/status`, sampled until it exits); finalize follows.
//! Every worker count must give the same shard files (their CRCs are compared).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use delf_build::distributed::{CODEBOOKS_FILE, PLAN_FILE};
use delf_build::vectors_job::{VectorsJob, pseudo_images, write_vectors_job};
use delf_build::{BuildOptions, ShardCommit};
use delf_engine::Config;
use delf_search::manifest::PCA_FILE;
use delf_storage::Stores;

/// `delf bench build`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchBuildArgs {
    /// What `delf bench vectors` wrote (default `<home>/bench/vectors`).
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Descriptors in the corpus: the real ones grown with their calibrated expansion (docs/benchmarks.md).
    #[arg(long, default_value_t = 2_000_000)]
    pub descriptors: usize,
    /// Pseudo-images (1000 descriptors each) per extraction unit.
    #[arg(long, default_value_t = 25)]
    pub unit_images: usize,
    /// Shards of the index.
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// Index structure (default: chosen from the number of descriptors).
    #[arg(long)]
    pub spec: Option<String>,
    /// Encode worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<u32>,
    /// Threads per encode worker (its RAYON_NUM_THREADS): 1 shows how the build scales out with processes.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Folder for the features and the indexes (default: a temporary one, removed at the end); an earlier run's
    /// features and trained prefix there are reused.
    #[arg(long)]
    pub work: Option<PathBuf>,
}

/// Descriptors per pseudo-image (about what a real photo gives).
const PER_IMAGE: usize = 1000;

/// Held-out query descriptors that calibrate the expansion when the corpus is grown to a size `delf bench vectors`
/// did not calibrate (as many as `delf bench index` uses).
const CALIBRATION_QUERIES: usize = 1000;

/// One worker count's measurement.
struct Row {
    workers: u32,
    seconds: f64,
    peak_rss_mib: Vec<f64>,
    crcs: Vec<String>,
}

/// Peak resident set so far of process `pid`, MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Waits for every child, sampling each one's peak RSS until it exits; fails if any failed.
fn wait_all(children: &mut [Child]) -> Result<Vec<f64>> {
    let mut peaks = vec![0.0f64; children.len()];
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for (i, c) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            if let Some(p) = peak_rss_mib(c.id()) {
                peaks[i] = peaks[i].max(p);
            }
            if let Some(status) = c.try_wait()? {
                ensure!(status.success(), "encode worker {i} failed: {status}");
                done[i] = true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(peaks)
}

/// Runs the benchmark and prints a table.
pub fn run(args: &BenchBuildArgs, config: &Config) -> Result<()> {
    if args.workers.is_empty() || args.workers.contains(&0) || args.shards == 0 || args.threads == 0 {
        bail!("need at least one worker count, each at least 1, at least one shard and one thread per worker");
    }
    let rt = delf_engine::io_runtime()?;
    let stores = Stores::new();
    let temp;
    let work: PathBuf = match &args.work {
        Some(w) => w.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work)?;

    // The features: real descriptors as a completed job of pseudo-images.
    let t = Instant::now();
    let (base, _, dim, label) =
        crate::index::load_vectors(args.vectors.as_deref(), args.descriptors, CALIBRATION_QUERIES, config)?;
    let dir = args.vectors.clone().unwrap_or_else(|| crate::vectors::default_dir(config));
    let pca = std::fs::read(dir.join(PCA_FILE)).with_context(|| format!("{}: the vectors' PCA", dir.display()))?;
    let n = base.len() / dim;
    let features = work.join("features");
    let features_s = features.to_string_lossy().into_owned();
    let job = VectorsJob {
        prefix: &features_s,
        fingerprint: "bench/vectors",
        dim,
        unit_size: args.unit_images,
        pca: Bytes::from(pca),
    };
    // A --work folder from an earlier run keeps its features (and its trained prefix, which train reuses).
    let existing = rt.block_on(delf_features::FeatureStore::new(stores.location(&features_s)?).manifest()).ok();
    let written = match existing {
        Some(m) if m.complete && m.descriptors as usize == n => m,
        _ => write_vectors_job(&rt, &stores, &job, &pseudo_images(&base, dim, PER_IMAGE, job.fingerprint))?,
    };
    drop(base);
    let features_bytes = written.features_bytes;
    eprintln!(
        "features: {n} descriptors ({label}) as {} pseudo-images in {} units, {:.0} MB of Parquet, written in {:.0} s",
        written.rows,
        written.units.len(),
        features_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // Train once.
    let trained = work.join("trained");
    let trained_s = trained.to_string_lossy().into_owned();
    let spec = args.spec.as_deref().map(str::parse).transpose()?;
    let opts = BuildOptions { shards: args.shards, spec, ..BuildOptions::new("") };
    let no_model: &delf_build::MakeReducer<'_> =
        &|_, _| Err(delf_build::BuildError::Input("the benchmark's features are already reduced".into()));
    let t = Instant::now();
    let mut silent = delf_build::Silent;
    let plan = delf_build::distributed::train(&rt, &stores, &features_s, &trained_s, &opts, no_model, &mut silent)?;
    let train_s = t.elapsed().as_secs_f64();
    eprintln!("trained {} in {train_s:.1} s", plan.spec);

    // Encode with each worker count, in real processes, on a fresh copy of the trained prefix.
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &w in &args.workers {
        let index = work.join(format!("index-w{w}"));
        if index.exists() {
            std::fs::remove_dir_all(&index)?;
        }
        std::fs::create_dir_all(&index)?;
        for f in [PLAN_FILE, CODEBOOKS_FILE, PCA_FILE] {
            std::fs::copy(trained.join(f), index.join(f))?;
        }
        let t = Instant::now();
        let mut children = (0..w)
            .map(|i| {
                Command::new(&exe)
                    .args(["-q", "index", "encode", "--index"])
                    .arg(&index)
                    .args(["--worker", &i.to_string(), "--workers", &w.to_string()])
                    .args(["--worker-id", &format!("bench-{i}")])
                    .env("DELF_LOG__LEVEL", "warn")
                    .env("RAYON_NUM_THREADS", args.threads.to_string())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("spawning an encode worker")
            })
            .collect::<Result<Vec<_>>>()?;
        let peaks = wait_all(&mut children)?;
        let seconds = t.elapsed().as_secs_f64();
        let index_s = index.to_string_lossy().into_owned();
        delf_build::distributed::finalize(&rt, &stores, &index_s)?;
        let crcs = (0..plan.shards)
            .map(|s| -> Result<String> {
                let record: ShardCommit =
                    serde_json::from_slice(&std::fs::read(index.join(format!("commits/shard-{s:04}.json")))?)?;
                Ok(record.crc32)
            })
            .collect::<Result<Vec<_>>>()?;
        eprintln!("{w} worker(s): {seconds:.1} s");
        rows.push(Row { workers: w, seconds, peak_rss_mib: peaks, crcs });
    }
    if let Some(first) = rows.first() {
        for r in &rows[1..] {
            ensure!(r.crcs == first.crcs, "{} workers wrote other shard files than {}", r.workers, first.workers);
        }
    }
    print_table(&rows, n, &plan, train_s, features_bytes, args.threads);
    if args.work.is_none() {
        remove_quietly(&work);
    }
    Ok(())
}

fn remove_quietly(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn print_table(
    rows: &[Row],
    n: usize,
    plan: &delf_build::BuildPlan,
    train_s: f64,
    features_bytes: u64,
    threads: usize,
) {
    println!(
        "{n} descriptors ({:.0} MB of features), {}, {} shards, {threads} thread(s) per encode worker; train step \
         {train_s:.1} s (once)",
        features_bytes as f64 / 1e6,
        plan.spec,
        plan.shards
    );
    println!(
        "| encode workers | shards per worker | wall s | speed-up | descriptors/s | peak RSS per worker, MiB (max) |"
    );
    println!("|---|---|---|---|---|---|");
    let one = rows.iter().find(|r| r.workers == 1).map(|r| r.seconds);
    for r in rows {
        let max = r.peak_rss_mib.iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {} | {:.1} | {} | {:.0} | {:.0} |",
            r.workers,
            plan.shards.div_ceil(r.workers),
            r.seconds,
            one.map_or("-".to_string(), |o| format!("{:.2}x", o / r.seconds)),
            n as f64 / r.seconds,
            max
        );
    }
}
