//! `delf bench index`: training time, encode rate, batched search speed, recall against exact search and bytes
//! per descriptor of our IVF-PQ, beside FAISS `IndexIVFPQ` and its 4-bit fast-scan `IVFn,PQmx4fsr` (`--fastscan`) on
//! the same vectors, parameters and threads, plus a
//! projection to a larger index from the measured cost per scanned code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_engine::Config;
use delf_index::{
    Codebooks, Expansion, IndexSpec, Neighbor, NewImage, PowerLaw, ScanKernel, SearchParams, ShardedIndex, TrainConfig,
    exact_search, npy,
};
use delf_index::{DEFAULT_K, DEFAULT_NPROBE};

/// `delf bench index`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchIndexArgs {
    /// What `delf bench vectors` wrote (a folder; default `<home>/bench/vectors`), or one .npy float32 array whose
    /// last --queries rows are held out as queries.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Grow the base to this many vectors with the expansion `delf bench vectors` calibrated (0 = as it is).
    #[arg(long, default_value_t = 0)]
    pub expand_to: usize,
    /// Index structure, e.g. IVF4096,PQ20x8r or IVF4096,PQ20x4fsr; repeat for one row each (default: chosen from
    /// the database size). FAISS IndexIVFPQ takes the first one's parameters.
    #[arg(long)]
    pub spec: Vec<String>,
    /// Cells probed per query descriptor.
    #[arg(long, default_value_t = DEFAULT_NPROBE)]
    pub nprobe: usize,
    /// Neighbours per query descriptor.
    #[arg(long, default_value_t = DEFAULT_K)]
    pub k: usize,
    /// Query descriptors, searched as one batch (a query image has about 1000).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Threads for every stage, ours and FAISS's.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Database size to project the measured per-code cost to.
    #[arg(long, default_value_t = 100_000_000)]
    pub project: usize,
    /// k-means iterations of the coarse quantizer, for both libraries (default: each its own, 20 ours and 10
    /// FAISS's): training time is compared at equal work only when this is set.
    #[arg(long)]
    pub coarse_iterations: Option<usize>,
    /// Sub-quantizer counts of FAISS 4-bit fast-scan rows (IVFn,PQmx4fsr) beside IndexIVFPQ; empty = none.
    #[arg(long, value_delimiter = ',', default_value = "20,10")]
    pub fastscan: Vec<usize>,
    /// Python with faiss-cpu for the baseline (scripts/setup.sh installs one); `none` skips it.
    #[arg(long, env = "DELFRS_PYTHON", default_value = ".cache/venv/bin/python")]
    pub python: String,
}

/// Vectors per pseudo-image when adding (feature numbers are u16).
const PER_IMAGE: usize = delf_index::expand::FEATURES_PER_LABEL;

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn recall(found: &[Vec<Neighbor>], exact: &[Vec<Neighbor>], r: usize) -> f64 {
    let hit = |(f, e): (&Vec<Neighbor>, &Vec<Neighbor>)| {
        e.first().is_some_and(|nn| f.iter().take(r).any(|n| (n.image, n.feature) == (nn.image, nn.feature)))
    };
    found.iter().zip(exact).filter(|p| hit(*p)).count() as f64 / found.len().max(1) as f64
}

/// The benchmark vectors: base, `query_rows` held-out query rows, dimension, and a label saying what they are. `vectors`
/// is what `delf bench vectors` wrote (default: its folder under the home) or one .npy array; the base is grown to
/// `expand_to` rows (0 = as it is) with the calibrated expansion.
pub(crate) fn load_vectors(
    vectors: Option<&std::path::Path>,
    expand_to: usize,
    query_rows: usize,
    config: &Config,
) -> Result<(Vec<f32>, Vec<f32>, usize, String)> {
    let path = vectors.map_or_else(|| crate::vectors::default_dir(config), std::path::Path::to_path_buf);
    if path.is_file() {
        if expand_to > 0 {
            bail!("--expand-to needs what `delf bench vectors` wrote (a folder), not one array");
        }
        let (all, dim) = npy::read_f32(&path)?;
        let n = all.len() / dim;
        if n <= query_rows {
            bail!("{} holds {n} vectors: need more than the {} held-out queries", path.display(), query_rows);
        }
        let split = (n - query_rows) * dim;
        return Ok((all[..split].to_vec(), all[split..].to_vec(), dim, path.display().to_string()));
    }
    let (base, mut queries, dim, record) = crate::vectors::load(&path)?;
    queries.truncate(query_rows * dim);
    let n = base.len() / dim;
    let label = format!("real descriptors of {} photos and their views ({})", record["photos"], path.display());
    if expand_to <= n {
        return Ok((base, queries, dim, label));
    }
    let stored = &record["expanded"];
    let expansion = match serde_json::from_value::<Expansion>(stored["expansion"].clone()) {
        Ok(e) if e.total == expand_to => e,
        _ => {
            let law: PowerLaw = serde_json::from_value(record["power_law"].clone())
                .context("vectors.json holds no distance curve: run `delf bench vectors` again")?;
            let seed = record["seed"].as_u64().unwrap_or(1);
            Expansion::calibrate(&base, &queries, dim, expand_to, law.at(expand_to), seed)?
        }
    };
    let grown = expansion.expand(&base, dim)?;
    let label =
        format!("{label}, grown from {n} to {} (reach {:.3}, docs/benchmarks.md)", expansion.total, expansion.reach);
    Ok((grown, queries, dim, label))
}

/// Runs the benchmark and prints a table.
pub fn run(args: &BenchIndexArgs, config: &Config) -> Result<()> {
    if args.threads == 0 || args.queries == 0 {
        bail!("need at least one thread and one query");
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    pool.install(|| run_in_pool(args, config))
}

fn run_in_pool(args: &BenchIndexArgs, config: &Config) -> Result<()> {
    let (base, queries, dim, label) = load_vectors(args.vectors.as_deref(), args.expand_to, args.queries, config)?;
    let nq = queries.len() / dim;
    let n = base.len() / dim;
    let mut specs = args.spec.iter().map(|s| s.parse::<IndexSpec>()).collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        specs.push(IndexSpec::auto(n, dim));
    }
    let params = SearchParams { k: args.k, nprobe: args.nprobe, max_distance: None };
    for spec in &specs {
        spec.validate(dim)?;
        params.validate(spec)?;
    }
    let kernel = ScanKernel::detect();
    let names: Vec<String> = specs.iter().map(IndexSpec::to_string).collect();
    println!(
        "{label}: {n} database vectors, {nq} queries ({dim}-d) | {} | {params} | {} threads | scan kernel {}",
        names.join(" + "),
        args.threads,
        kernel.name()
    );
    let mut train = TrainConfig::default();
    if let Some(iterations) = args.coarse_iterations {
        train.coarse.iterations = iterations;
    }
    println!(
        "coarse k-means: delf-index {} iterations at most (k-means++ seeding, stops when no point moves); FAISS's \
         count is in its row (random seeding)",
        train.coarse.iterations
    );
    let labels = delf_index::expand::row_labels(n);
    let (exact, exact_s) = timed(|| exact_search(&base, &labels, &queries, dim, args.k));
    println!(
        "| implementation | train s | add vectors/s | search descriptors/s | ms per {nq}-descriptor batch | recall@1 | recall@10 | recall@{} | bytes/descriptor |",
        args.k
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut notes = vec![format!("exact search (SGEMM brute force) took {exact_s:.1} s")];
    for spec in &specs {
        notes.extend(ours(*spec, &base, &queries, dim, &exact, &train, args)?);
    }
    if args.python != "none" {
        let gt: Vec<i64> = exact
            .iter()
            .map(|e| e.first().map_or(-1, |nn| (nn.image as usize * PER_IMAGE + nn.feature as usize) as i64))
            .collect();
        // FAISS IndexIVFPQ takes the parameters of the first spec (its 4-bit fast-scan rows come from --fastscan).
        match faiss(&base, &queries, &gt, dim, &specs[0], args) {
            Ok(f) => {
                let row = |name: String, r: &serde_json::Value, bytes_note: &str| {
                    let search_s = r["search_s_per_batch"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "| {name}, coarse niter {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.3} | {:.3} | {:.3} | {} ({bytes_note}) |",
                        r["coarse_niter"].as_u64().map_or_else(|| "?".to_string(), |i| i.to_string()),
                        r["train_s"].as_f64().unwrap_or(f64::NAN),
                        r["add_vectors_per_s"].as_f64().unwrap_or(f64::NAN),
                        nq as f64 / search_s,
                        search_s * 1e3,
                        r["recall"][0].as_f64().unwrap_or(f64::NAN),
                        r["recall"][1].as_f64().unwrap_or(f64::NAN),
                        r["recall"][2].as_f64().unwrap_or(f64::NAN),
                        r["bytes_per_descriptor"].as_u64().unwrap_or(0),
                    );
                };
                let version = f["faiss"].as_str().unwrap_or("?");
                let same = specs[0];
                let name = format!("FAISS {version} IndexIVFPQ IVF{},PQ{}x{}", same.nlist, same.m, same.nbits);
                row(name, &f, "code + int64 id; no keypoint");
                for fs in f["fastscan"].as_array().into_iter().flatten() {
                    let name = format!("FAISS {version} {} (4-bit fast-scan)", fs["spec"].as_str().unwrap_or("?"));
                    row(name, fs, "code + int64 id; no keypoint");
                }
            }
            Err(e) => println!("| FAISS | failed: {e:#} | | | | | | | |"),
        }
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// Builds and measures our index with `spec`: prints its table row and returns notes (retrieval latency, cost per
/// scanned code, the projection) printed after the table.
fn ours(
    spec: IndexSpec,
    base: &[f32],
    queries: &[f32],
    dim: usize,
    exact: &[Vec<Neighbor>],
    train: &TrainConfig,
    args: &BenchIndexArgs,
) -> Result<Vec<String>> {
    let (n, nq) = (base.len() / dim, queries.len() / dim);
    let params = SearchParams { k: args.k, nprobe: args.nprobe, max_distance: None };
    let kernel = ScanKernel::detect();
    let (codebooks, train_s) = timed(|| Codebooks::train(base, dim, spec, train));
    let codebooks = Arc::new(codebooks?);
    let mut index = ShardedIndex::new(Arc::clone(&codebooks), "bench", 1)?;
    let mut g = delf_core::rng::SplitMix64(3);
    let keypoints: Vec<[f32; 2]> =
        (0..PER_IMAGE).map(|_| [(g.uniform() * 1024.0) as f32, (g.uniform() * 768.0) as f32]).collect();
    let names: Vec<String> = (0..n.div_ceil(PER_IMAGE)).map(|i| i.to_string()).collect();
    let (added, add_s) = timed(|| -> Result<()> {
        for (chunk, group) in base.chunks(PER_IMAGE * dim * 64).enumerate() {
            let batch: Vec<NewImage<'_>> = group
                .chunks(PER_IMAGE * dim)
                .enumerate()
                .map(|(j, d)| {
                    let number = chunk * 64 + j;
                    NewImage {
                        number: number as u32,
                        name: &names[number],
                        descriptors: d,
                        keypoints: &keypoints[..d.len() / dim],
                        scales: &[],
                    }
                })
                .collect();
            index.add_images(&batch, dim)?;
        }
        Ok(())
    });
    added?;
    let shard = &index.shards()[0];

    // Search: the whole query set as one batch, repeated for at least two seconds.
    index.search(queries, dim, &params, kernel)?;
    let (mut reps, t) = (0usize, Instant::now());
    let found = loop {
        let r = index.search(queries, dim, &params, kernel)?;
        reps += 1;
        if t.elapsed().as_secs_f64() >= 2.0 {
            break r;
        }
    };
    let search_s = t.elapsed().as_secs_f64() / reps as f64;
    let (_, probe_s) = timed(|| codebooks.probe(queries, args.nprobe));
    let (probes, _) = codebooks.probe(queries, args.nprobe);
    let scanned: usize = probes.iter().map(|&l| shard.list_len(l as usize)).sum();
    let rec = [recall(&found, exact, 1), recall(&found, exact, 10), recall(&found, exact, args.k)];
    println!(
        "| delf-index {spec} | {train_s:.1} | {:.0} | {:.0} | {:.1} | {:.3} | {:.3} | {:.3} | {:.1} resident (code {} + packed ids); {:.1} with keypoints |",
        n as f64 / add_s,
        nq as f64 / search_s,
        search_s * 1e3,
        rec[0],
        rec[1],
        rec[2],
        shard.resident_bytes_per_descriptor(),
        spec.code_bytes(),
        shard.bytes_per_descriptor()
    );
    let (ann_ms, verify_ms) = retrieval_latency(&index, queries, dim, args)?;
    let mut notes = vec![
        load_note(spec, shard)?,
        format!(
            "{spec}: retrieval of one {nq}-descriptor query (delf_search::retrieve: ANN + votes, then RANSAC of the {} \
         best-voted images on random keypoints, i.e. all-outlier worst case): ANN + votes {ann_ms:.1} ms, \
         verification {verify_ms:.1} ms, total {:.1} ms (median of 5)",
            delf_search::RetrievalConfig::default().candidates,
            ann_ms + verify_ms
        ),
    ];
    let ns_per_code = (search_s - probe_s).max(0.0) * 1e9 / scanned.max(1) as f64;
    notes.push(format!(
        "{spec}: coarse assignment {:.1} ms of each batch; {:.0} codes scanned per query descriptor, \
         {ns_per_code:.2} ns per scanned code (LUTs, scan, top-k)",
        probe_s * 1e3,
        scanned as f64 / nq as f64
    ));
    if args.project > n {
        let big = IndexSpec { nlist: IndexSpec::auto(args.project, dim).nlist, ..spec };
        let codes = args.nprobe as f64 * args.project as f64 / big.nlist as f64;
        let coarse_ms = probe_s * 1e3 * big.nlist as f64 / spec.nlist as f64;
        let scan_ms = codes * nq as f64 * ns_per_code / 1e6;
        notes.push(format!(
            "{spec}: projection to {} vectors with {big}: {codes:.0} codes per query descriptor; per {nq}-descriptor \
             batch {:.0} ms = coarse {coarse_ms:.0} + scan {scan_ms:.0} on {} threads (assumes cost per code stays \
             as measured, i.e. lists still stream from memory at this rate); {:.1} GB of codes + ids + keypoints",
            args.project,
            coarse_ms + scan_ms,
            args.threads,
            shard.bytes_per_descriptor() * args.project as f64 / 1e9
        ));
    }
    Ok(notes)
}

/// Saves the shard to a temporary file and loads it back (memory-mapped; every section's CRC-32 checked): the file
/// size and load time.
fn load_note(spec: IndexSpec, shard: &delf_index::Shard) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("delf-bench-shard-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("shard.dshard");
    let (saved, save_s) = timed(|| delf_index::file::save(shard, &path));
    saved?;
    let size = std::fs::metadata(&path)?.len();
    let (loaded, load_s) = timed(|| delf_index::file::load(&path));
    let entries = loaded?.stored_vectors();
    std::fs::remove_dir_all(&dir).ok();
    Ok(format!(
        "{spec}: shard file {:.1} MB for {entries} descriptors, saved in {save_s:.2} s, loaded (mapped, checksums \
         checked) in {load_s:.2} s",
        size as f64 / 1e6
    ))
}

/// Median ANN and verification milliseconds of `retrieve` for the query batch as one image, with random keypoints
/// on both sides (so verification meets all-outlier correspondences and runs its full trial budget).
fn retrieval_latency(index: &ShardedIndex, queries: &[f32], dim: usize, args: &BenchIndexArgs) -> Result<(f64, f64)> {
    let mut g = delf_core::rng::SplitMix64(17);
    let n = queries.len() / dim;
    let keypoints = (0..n)
        .map(|_| delf_core::Keypoint {
            x: (g.uniform() * 1024.0) as f32,
            y: (g.uniform() * 768.0) as f32,
            scale: 1.0,
            score: 1.0,
        })
        .collect();
    let query = delf_core::FeatureSet {
        width: 1024,
        height: 768,
        dim,
        keypoints,
        descriptors: queries.to_vec(),
        fingerprint: delf_core::Fingerprint("bench".into()),
    };
    let config = delf_search::RetrievalConfig {
        search: SearchParams { k: args.k, nprobe: args.nprobe, max_distance: None },
        ..Default::default()
    };
    let mut runs: Vec<(f64, f64)> = (0..5)
        .map(|_| delf_search::retrieve(index, &query, &config, ScanKernel::detect()).map(|r| (r.ann_ms, r.verify_ms)))
        .collect::<Result<_, _>>()?;
    runs.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
    Ok(runs[2])
}

fn faiss(
    base: &[f32],
    queries: &[f32],
    gt: &[i64],
    dim: usize,
    spec: &IndexSpec,
    args: &BenchIndexArgs,
) -> Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("delf-bench-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    npy::write_f32(&dir.join("base.npy"), base, dim)?;
    npy::write_f32(&dir.join("queries.npy"), queries, dim)?;
    npy::write_i64(&dir.join("gt.npy"), gt, 1)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python/bench_faiss_ivfpq.py");
    let out = Command::new(&args.python)
        .arg(&script)
        .arg("--dir")
        .arg(&dir)
        .args(["--nlist", &spec.nlist.to_string(), "--m", &spec.m.to_string(), "--nbits", &spec.nbits.to_string()])
        .args([
            "--nprobe",
            &args.nprobe.to_string(),
            "--k",
            &args.k.to_string(),
            "--threads",
            &args.threads.to_string(),
        ])
        .args(args.coarse_iterations.map(|i| format!("--coarse-niter={i}")))
        .args((!args.fastscan.is_empty()).then(|| {
            format!("--fastscan={}", args.fastscan.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
        }))
        .output()
        .with_context(|| format!("running {} (scripts/setup.sh installs faiss-cpu in .cache/venv)", args.python));
    std::fs::remove_dir_all(&dir).ok();
    let out = out?;
    if !out.status.success() {
        bail!("FAISS baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
