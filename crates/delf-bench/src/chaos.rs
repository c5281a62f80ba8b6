//! `delf bench chaos`: a bounded chaos run. A local cluster of real processes (3 Raft coordinators, 4 index nodes
//! serving 2 shards x 2 replicas, 2 verification workers) answers a steady stream of queries on real photos (sent
//! as precomputed features) while a seeded schedule ([`crate::chaos_schedule`]) SIGKILLs, SIGSTOPs and
//! restarts processes, and a writer commits a metadata label twice a second. Version 1 starts on two of the index
//! nodes; a third of the way in, version 2 (re-indexed without one photo) is registered and activated, and is placed
//! on the two nodes that joined empty; two thirds in, a rebalance evens the nodes out. At the end every process is
//! restored and every answer is checked: against one-process search on the version the answer names (or, for a
//! degraded answer, on the shards that answered), and every acknowledged write is read back from every
//! coordinator. The last line of `--json` holds the counts; the command fails when an answer was wrong or an
//! acknowledged write was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delf_cluster::convert;
use delf_core::FeatureSet;
use delf_core::rng::SplitMix64;
use delf_index::ScanKernel;
use delf_meta::client::Coordinators;
use delf_meta::{Applied, Command, MetaState};
use delf_proto::v1 as pb;
use delf_rpc::{Security, client};
use delf_search::IndexManifest;
use serde::Serialize;

use crate::chaos_cluster::ChaosCluster;
use crate::chaos_schedule::{self, Target};
use crate::cluster::percentile;
use crate::local_cluster::free_addrs;
use delf_engine::Config;
use delf_engine::Searcher;

/// `delf bench chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchChaosArgs {
    /// Seconds of queries, writes and faults (the setup before and the checks after are not counted).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Queries in flight at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Folder for the indexes, configuration, Raft folders and every process's log (default: a temporary one,
    /// removed at the end).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// One JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Photos of the database (opencv-doc); version 2 leaves out [`DROPPED`].
const DATABASE: [&str; 10] = [
    "graf1.png",
    "leuvenA.jpg",
    "box.png",
    "aloeL.jpg",
    "fruits.jpg",
    "home.jpg",
    "board.jpg",
    "left.jpg",
    "basketball1.png",
    "Blender_Suzanne1.jpg",
];
/// Left out of version 2, so that answers tell the versions apart.
const DROPPED: &str = "leuvenA.jpg";
/// Queries: other views of database photos, and photos of nothing in it.
const QUERIES: [&str; 10] = [
    "graf3.png",
    "leuvenB.jpg",
    "box_in_scene.png",
    "aloeR.jpg",
    "right.jpg",
    "basketball2.png",
    "Blender_Suzanne2.jpg",
    "messi5.jpg",
    "orange.jpg",
    "baboon.jpg",
];
/// The cluster's bearer token (every call of the run carries it).
const TOKEN: &str = "chaos-run-token";
/// Results per answer.
const TOP: usize = 10;

/// (image id, inliers) of each result, best first: what an answer is compared on (votes may differ: shards answer
/// only their K' nearest neighbours, docs/cluster.md).
type Answer = Vec<(String, u32)>;

/// The final JSON line.
#[derive(Debug, Serialize)]
struct Report {
    seconds: u64,
    seed: u64,
    queries: usize,
    answered: usize,
    degraded: usize,
    failed: usize,
    wrong: usize,
    faults: usize,
    faults_by_kind: BTreeMap<String, usize>,
    writes_committed: usize,
    /// Writes whose outcome the writer never learnt (timed out during a failover): neither counted committed nor
    /// lost.
    writes_unacknowledged: usize,
    writes_lost: usize,
    /// Answers per index version.
    versions: BTreeMap<String, usize>,
    /// Queries whose one-process answers differ between v1 and v2 (so an answer from the wrong version is seen).
    queries_telling_versions_apart: usize,
    queries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Why queries failed (first 5).
    failures: Vec<String>,
    /// Wrong answers (first 5).
    wrong_examples: Vec<String>,
    /// Degraded answers (first 5): the query, the version and the shards no replica of which answered in time.
    degraded_examples: Vec<String>,
    /// The version switch and the rebalance, as the state machine answered.
    events: Vec<String>,
}

/// What one query got.
struct Outcome {
    query: usize,
    latency_ms: f64,
    answer: Result<pb::SearchResponse, String>,
}

/// Runs the chaos benchmark.
pub fn run(args: &BenchChaosArgs, config: &Config) -> Result<()> {
    if args.seconds == 0 || args.concurrency == 0 {
        bail!("--seconds and --concurrency must be positive");
    }
    let tmp = tempfile::tempdir()?;
    let work = match &args.work {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let photos = config.home.join("data").join("opencv-doc");
    let path = |f: &str| -> Result<PathBuf> {
        let p = photos.join(f);
        if !p.is_file() {
            bail!("{} missing: the chaos run uses the opencv-doc photos that scripts/setup.sh installs", p.display());
        }
        Ok(p)
    };
    let database: Vec<PathBuf> = DATABASE.iter().map(|f| path(f)).collect::<Result<_>>()?;
    let queries: Vec<PathBuf> = QUERIES.iter().map(|f| path(f)).collect::<Result<_>>()?;

    // Two index versions, built by this binary as a user would; version 2 shares version 1's PCA.
    let started = Instant::now();
    let v1 = build_index(&work, "v1", &database, None)?;
    let v2_photos: Vec<PathBuf> = database.iter().filter(|p| !p.ends_with(DROPPED)).cloned().collect();
    let v2 = build_index(&work, "v2", &v2_photos, Some(&v1.join(delf_search::manifest::PCA_FILE)))?;
    eprintln!("built versions v1 and v2 (2 shards each) in {:.1} s", started.elapsed().as_secs_f64());

    // The queries' features (extracted once, as the index's settings say) and one-process answers on each version.
    let searcher = Searcher::open(&v1, config, Some("cpu"))?;
    let features: Vec<FeatureSet> = queries
        .iter()
        .map(|q| Ok(searcher.extractor.extract(&delf_engine::model::read_image(q)?.rgb)?))
        .collect::<Result<_>>()?;
    drop(searcher);
    let mut oracle = Oracle::new(config, &[("v1", v1.clone()), ("v2", v2.clone())], &features)?;

    // The cluster.
    let mut addrs = free_addrs(3 + 4 + 2)?.into_iter();
    let coordinator_addrs: Vec<String> = addrs.by_ref().take(3).collect();
    let node_addrs: Vec<String> = addrs.by_ref().take(4).collect();
    let worker_addrs: Vec<String> = addrs.collect();
    let config_file = work.join("delf.toml");
    write_config(&config_file, &v1, &coordinator_addrs, &worker_addrs)?;
    let mut cluster = ChaosCluster::new(&config_file, &work, &coordinator_addrs)?;
    cluster.start_coordinators()?;
    for a in &node_addrs[..2] {
        cluster.add_index_node(a)?;
    }
    for a in &worker_addrs {
        cluster.add_worker(a)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let _in_runtime = rt.enter();
    let security = Security::new(Some(TOKEN.into()), None)?;
    let meta = Coordinators::new(&coordinator_addrs, &security, Duration::from_secs(30))?;
    let started = Instant::now();
    // Version 1 on two index nodes (each holds a replica of both shards); two more nodes join afterwards and get
    // nothing until version 2 is placed (on the least loaded nodes: the new ones) and the rebalance evens out.
    let registered = |cluster: &mut ChaosCluster, n: usize| {
        wait_until("index nodes registered", Duration::from_secs(120), cluster, || {
            rt.block_on(meta.state(false))
                .is_ok_and(|(s, _)| (1..=n).all(|i| s.nodes.get(&format!("node{i}")).is_some_and(|r| r.up)))
        })
    };
    registered(&mut cluster, 2)?;
    register_and_activate(&rt, &meta, "v1", &v1, &mut cluster)?;
    for a in &node_addrs[2..] {
        cluster.add_index_node(a)?;
    }
    registered(&mut cluster, 4)?;
    let coordinators: Vec<_> = coordinator_addrs
        .iter()
        .map(|a| Ok(client::coordinator(client::channel(a, Duration::from_secs(1), &security)?)))
        .collect::<Result<_>>()?;
    let requests: Arc<Vec<pb::SearchRequest>> = Arc::new(
        features
            .iter()
            .map(|f| pb::SearchRequest {
                query: Some(pb::search_request::Query::Features(convert::features_to_pb(f))),
                top: TOP as u32,
                ..Default::default()
            })
            .collect(),
    );
    // Every coordinator answers before the clock starts.
    for c in &coordinators {
        wait_until("every coordinator answers a query", Duration::from_secs(120), &mut cluster, || {
            rt.block_on(search_once(c.clone(), &requests[0], Duration::from_secs(10))).is_ok()
        })?;
    }
    eprintln!(
        "cluster up in {:.1} s: 3 coordinators, 4 index nodes, 2 workers, v1 (2 shards x 2 replicas) active; {} s of \
         chaos, seed {}",
        started.elapsed().as_secs_f64(),
        args.seconds,
        args.seed
    );

    // Load: queries and metadata writes.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let clock = Instant::now();
    let query_tasks: Vec<_> = (0..args.concurrency)
        .map(|t| {
            let (stop, outcomes, requests, coordinators) =
                (Arc::clone(&stop), Arc::clone(&outcomes), Arc::clone(&requests), coordinators.clone());
            rt.spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let q = i % requests.len();
                    let t0 = Instant::now();
                    let answer = query_any(&coordinators, i, &requests[q]).await;
                    let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
                    outcomes.lock().map_err(|_| ())?.push(Outcome { query: q, latency_ms, answer });
                    i += 1;
                }
                Ok::<_, ()>(())
            })
        })
        .collect();
    let writer = {
        let (stop, meta) = (Arc::clone(&stop), meta.clone());
        rt.spawn(async move {
            let (mut committed, mut unacknowledged) = (Vec::new(), 0usize);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("chaos-{i}"), i.to_string());
                let command = Command::SetLabel { key: key.clone(), value: value.clone() };
                match tokio::time::timeout(Duration::from_secs(10), meta.propose(&command)).await {
                    Ok(Ok((_, Applied::Ok(_)))) => committed.push((key, value)),
                    _ => unacknowledged += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (committed, unacknowledged)
        })
    };

    // Whether every replica is ready, read from the replicated state four times a second: (ready, when the read
    // started).
    let readiness = Arc::new(Mutex::new((false, clock)));
    let sampler = {
        let (stop, meta, readiness) = (Arc::clone(&stop), meta.clone(), Arc::clone(&readiness));
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let ready = every_replica_ready(&meta).await.unwrap_or(false);
                if let Ok(mut r) = readiness.lock() {
                    *r = (ready, asked);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // The fault schedule, with the version switch and a rebalance in the middle.
    let run = Duration::from_secs(args.seconds);
    let mut rng = SplitMix64(args.seed);
    // (target, index, fault ends, recovered): a fault counts until its process accepts connections again.
    let mut faulted: Vec<(Target, usize, Instant, bool)> = Vec::new();
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut next_at = clock + chaos_schedule::next_gap(&mut rng);
    let mut last_index_recovery = clock;
    // Each milestone runs as a task while the faults go on, and ends with a note for the report.
    let (mut switch_at, mut rebalance_at) = (Some(run / 3), Some(run * 2 / 3));
    let mut background: Vec<tokio::task::JoinHandle<String>> = Vec::new();
    while clock.elapsed() < run {
        let now = Instant::now();
        let mut still = Vec::with_capacity(faulted.len());
        for mut f in faulted.drain(..) {
            if f.2 <= now && !f.3 {
                cluster.recover(f.0, f.1)?;
                f.3 = true;
            }
            if f.3 && cluster.listening(f.0, f.1)? {
                if f.0 == Target::IndexNode {
                    last_index_recovery = now;
                }
            } else {
                still.push(f);
            }
        }
        faulted = still;
        cluster.check_running()?;
        if switch_at.is_some_and(|at| clock.elapsed() >= at) {
            switch_at = None;
            let (meta, v2) = (meta.clone(), v2.clone());
            background.push(rt.spawn(async move { switch(&meta, "v2", &v2).await }));
        }
        if rebalance_at.is_some_and(|at| clock.elapsed() >= at) {
            rebalance_at = None;
            let meta = meta.clone();
            background.push(rt.spawn(async move { rebalance(&meta).await }));
        }
        if now >= next_at {
            next_at = now + chaos_schedule::next_gap(&mut rng);
            // Ready as read at least 3 s after the last index node came back (a restarted node reports what it
            // has loaded only once it is loaded), and no older than a second.
            let (ready, asked) = *readiness.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let every_replica_ready = ready
                && asked >= last_index_recovery + Duration::from_secs(3)
                && now.duration_since(asked) < Duration::from_secs(1);
            let state = chaos_schedule::Cluster {
                coordinators: cluster.coordinators.len(),
                index_nodes: cluster.index_nodes.len(),
                workers: cluster.workers.len(),
                faulted: faulted.iter().map(|f| (f.0, f.1)).collect(),
                every_replica_ready,
            };
            if let Some(f) = chaos_schedule::next_fault(&mut rng, &state) {
                cluster.fault(f.target, f.index, f.kind)?;
                let (kind, name) = (f.kind.as_str(), cluster.name(f.target, f.index)?);
                eprintln!("{:6.1} s  {kind} {name} for {} ms", clock.elapsed().as_secs_f64(), f.lasts.as_millis());
                *faults.entry(format!("{kind} {}", f.target.as_str())).or_default() += 1;
                faulted.push((f.target, f.index, Instant::now() + f.lasts, false));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (target, index, _, _) in faulted.drain(..) {
        cluster.recover(target, index)?;
    }
    let elapsed = clock.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(sampler)?;
    for t in query_tasks {
        rt.block_on(t)?.map_err(|_| anyhow::anyhow!("a query task failed"))?;
    }
    let (committed, unacknowledged) = rt.block_on(writer)?;
    let events = background.into_iter().map(|b| rt.block_on(b)).collect::<Result<Vec<String>, _>>()?;

    // Every acknowledged write, read back from every coordinator once it has caught up.
    let mut lost: BTreeSet<String> = BTreeSet::new();
    for addr in &coordinator_addrs {
        let one = Coordinators::new(std::slice::from_ref(addr), &security, Duration::from_secs(5))?;
        let has_all = |s: &MetaState| committed.iter().all(|(k, v)| s.labels.get(k) == Some(v));
        let deadline = Instant::now() + Duration::from_secs(60);
        let state = loop {
            let state = rt.block_on(one.state(true)).ok().map(|(s, _)| s);
            if state.as_ref().is_some_and(has_all) || Instant::now() > deadline {
                break state.unwrap_or_default();
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        lost.extend(committed.iter().filter(|(k, v)| state.labels.get(k) != Some(v)).map(|(k, _)| k.clone()));
    }

    // Every answer, checked.
    let outcomes = std::mem::take(&mut *outcomes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut report = Report {
        seconds: args.seconds,
        seed: args.seed,
        queries: outcomes.len(),
        answered: 0,
        degraded: 0,
        failed: 0,
        wrong: 0,
        faults: faults.values().sum(),
        faults_by_kind: faults,
        writes_committed: committed.len(),
        writes_unacknowledged: unacknowledged,
        writes_lost: lost.len(),
        versions: BTreeMap::new(),
        queries_telling_versions_apart: (0..features.len())
            .map(|q| Ok(oracle.answer("v1", &BTreeSet::new(), q)? != oracle.answer("v2", &BTreeSet::new(), q)?))
            .collect::<Result<Vec<bool>>>()?
            .into_iter()
            .filter(|d| *d)
            .count(),
        queries_per_s: outcomes.len() as f64 / elapsed,
        p50_ms: 0.0,
        p99_ms: 0.0,
        failures: Vec::new(),
        wrong_examples: Vec::new(),
        degraded_examples: Vec::new(),
        events,
    };
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&latencies, 0.5);
    report.p99_ms = percentile(&latencies, 0.99);
    for o in &outcomes {
        let r = match &o.answer {
            Ok(r) => r,
            Err(e) => {
                report.failed += 1;
                if report.failures.len() < 5 {
                    report.failures.push(format!("{}: {e}", QUERIES[o.query]));
                }
                continue;
            }
        };
        report.answered += 1;
        if r.degraded {
            report.degraded += 1;
            if report.degraded_examples.len() < 5 {
                report.degraded_examples.push(format!(
                    "{} on {:?}: shards {:?} missing, {} results",
                    QUERIES[o.query],
                    r.version,
                    r.missing_shards,
                    r.results.len()
                ));
            }
        }
        *report.versions.entry(r.version.clone()).or_default() += 1;
        let got: Answer = r.results.iter().map(|m| (m.image_id.clone(), m.score)).collect();
        let missing: BTreeSet<u32> = r.missing_shards.iter().copied().collect();
        let expected = oracle.answer(&r.version, &missing, o.query)?;
        if expected.as_ref() != Some(&got) {
            report.wrong += 1;
            if report.wrong_examples.len() < 5 {
                report.wrong_examples.push(format!(
                    "{} on {:?} (missing shards {missing:?}): got {got:?}, one process gives {expected:?}",
                    QUERIES[o.query], r.version
                ));
            }
        }
    }
    drop(cluster);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if report.wrong > 0 || report.writes_lost > 0 {
        bail!(
            "the chaos run found {} wrong answers and {} lost acknowledged writes (logs: run with --work DIR)",
            report.wrong,
            report.writes_lost
        );
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "{} s, seed {}: {} queries ({:.1}/s, p50 {:.0} ms, p99 {:.0} ms): {} answered ({} degraded), {} failed, {} wrong",
        r.seconds, r.seed, r.queries, r.queries_per_s, r.p50_ms, r.p99_ms, r.answered, r.degraded, r.failed, r.wrong
    );
    println!(
        "answers per version: {:?} ({} of {} queries tell the versions apart)",
        r.versions,
        r.queries_telling_versions_apart,
        QUERIES.len()
    );
    println!("faults: {} ({:?})", r.faults, r.faults_by_kind);
    println!(
        "metadata writes: {} acknowledged, {} unacknowledged, {} acknowledged writes lost",
        r.writes_committed, r.writes_unacknowledged, r.writes_lost
    );
    for e in &r.events {
        println!("  {e}");
    }
    for d in &r.degraded_examples {
        println!("  degraded: {d}");
    }
    for f in &r.failures {
        println!("  failed: {f}");
    }
    for w in &r.wrong_examples {
        println!("  WRONG: {w}");
    }
}

/// One-process answers per (version, shards that did not answer, query), computed when first needed.
struct Oracle {
    config: Config,
    versions: BTreeMap<String, PathBuf>,
    features: Vec<FeatureSet>,
    answers: BTreeMap<(String, BTreeSet<u32>), Vec<Answer>>,
}

impl Oracle {
    fn new(config: &Config, versions: &[(&str, PathBuf)], features: &[FeatureSet]) -> Result<Self> {
        let mut o = Self {
            config: config.clone(),
            versions: versions.iter().map(|(n, p)| (n.to_string(), p.clone())).collect(),
            features: features.to_vec(),
            answers: BTreeMap::new(),
        };
        // The full answers up front: a wrong setting fails before the cluster starts.
        for (name, _) in versions {
            o.answer(name, &BTreeSet::new(), 0)?;
        }
        Ok(o)
    }

    /// What one-process search on `version` without the images of shards `missing` answers to query `q` (None
    /// for a version this run did not build).
    fn answer(&mut self, version: &str, missing: &BTreeSet<u32>, q: usize) -> Result<Option<Answer>> {
        let Some(dir) = self.versions.get(version) else { return Ok(None) };
        let key = (version.to_string(), missing.clone());
        if !self.answers.contains_key(&key) {
            let manifest = IndexManifest::load(dir)?;
            let mut index = manifest.open_index(dir)?;
            for &s in missing {
                let names: Vec<String> = index
                    .shards()
                    .get(s as usize)
                    .with_context(|| format!("shard {s} of {version}"))?
                    .images()
                    .iter()
                    .map(|i| i.name.clone())
                    .collect();
                for n in names {
                    index.delete_image(&n)?;
                }
            }
            let mut rc = self.config.retrieval().for_index(&manifest);
            rc.top = TOP;
            let kernel = ScanKernel::detect();
            let answers = if index.live_images() == 0 {
                // No shard answered: nothing can be found.
                vec![Vec::new(); self.features.len()]
            } else {
                self.features
                    .iter()
                    .map(|f| {
                        let r = delf_search::retrieve(&index, f, &rc, kernel)?;
                        Ok(r.results.iter().map(|v| (v.id.clone(), v.score as u32)).collect())
                    })
                    .collect::<Result<_>>()?
            };
            self.answers.insert(key.clone(), answers);
        }
        Ok(self.answers[&key].get(q).cloned())
    }
}

/// Builds an index of `photos` with 2 shards in `<work>/<name>` (`delf index build`, photos at most 640 px a side;
/// extracted features are cached in `<work>/features`, so the second version extracts nothing again).
fn build_index(work: &Path, name: &str, photos: &[PathBuf], pca: Option<&Path>) -> Result<PathBuf> {
    let list = work.join(format!("{name}.txt"));
    std::fs::write(&list, photos.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n"))?;
    let out = work.join(name);
    let mut c = std::process::Command::new(std::env::current_exe()?);
    c.env("DELF_EXTRACT__MAX_SIDE", "640")
        .env("DELF_FEATURE_CACHE", work.join("features"))
        .env("DELF_LOG__LEVEL", "warn")
        .arg("index")
        .arg("build")
        .arg(&list)
        .arg("--out")
        .arg(&out)
        .args(["--shards", "2", "--spec", "IVF16,PQ20x8r", "--device", "cpu"]);
    if let Some(pca) = pca {
        c.arg("--pca").arg(pca);
    }
    let done = c.output().context("running delf index build")?;
    if !done.status.success() {
        bail!("delf index build {name} failed:\n{}", String::from_utf8_lossy(&done.stderr));
    }
    Ok(out)
}

/// The configuration every process of the run reads: the Raft coordinators, the workers, the shipped Raft timing,
/// and replica timeouts as an operator would set them for processes that may stop: the next replica of a shard is
/// also asked when one has not answered in 750 ms (hedging), and a replica is given up after 4 s (on 2 shared cores
/// a busy replica can take over a second).
fn write_config(path: &Path, index: &Path, coordinators: &[String], workers: &[String]) -> Result<()> {
    let peers: Vec<String> =
        coordinators.iter().enumerate().map(|(i, a)| format!("{{ id = {}, address = {a:?} }}", i + 1)).collect();
    let toml = format!(
        "[cluster]\nindex = {:?}\nworkers = {workers:?}\ntoken = {TOKEN:?}\ndeadline_ms = 10000\n\
         shard_timeout_ms = 4000\nhedge_after_ms = 750\nworker_timeout_ms = 3000\n\
         [meta]\ntick_ms = 100\nelection_ticks = 10\nheartbeat_ticks = 2\nsnapshot_every = 50\nheartbeat_ms = 300\n\
         node_timeout_ms = 3000\nretire_grace_ms = 15000\ncoordinators = [{}]\n",
        index.display().to_string(),
        peers.join(", ")
    );
    std::fs::write(path, toml).with_context(|| format!("writing {}", path.display()))
}

/// Polls `done` until it holds, failing after `within` or when a process exits by itself.
fn wait_until(what: &str, within: Duration, cluster: &mut ChaosCluster, mut done: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !done() {
        cluster.check_running()?;
        if started.elapsed() > within {
            bail!("{what}: not within {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Registers version `name` (2 replicas per shard) and activates it once every shard has a ready replica.
fn register_and_activate(
    rt: &tokio::runtime::Runtime,
    meta: &Coordinators,
    name: &str,
    dir: &Path,
    cluster: &mut ChaosCluster,
) -> Result<()> {
    let register = register_command(name, dir)?;
    wait_until("a Raft leader takes the first version", Duration::from_secs(60), cluster, || {
        rt.block_on(meta.propose(&register)).is_ok()
    })?;
    let activate = Command::Activate { version: name.into() };
    wait_until("the first version activated", Duration::from_secs(120), cluster, || {
        matches!(rt.block_on(meta.propose(&activate)), Ok((_, Applied::Ok(_))))
    })
}

fn register_command(name: &str, dir: &Path) -> Result<Command> {
    let manifest = IndexManifest::load(dir)?;
    Ok(Command::RegisterVersion {
        version: name.into(),
        index_name: delf_meta::MetaConfig::default().index_name,
        uri: dir.display().to_string(),
        shards: manifest.shards,
        descriptor_fingerprint: manifest.descriptor_fingerprint,
        replicas: 2,
    })
}

/// Registers and activates version `name` while the chaos goes on; what happened, for the report.
async fn switch(meta: &Coordinators, name: &str, dir: &Path) -> String {
    let register = match register_command(name, dir) {
        Ok(c) => c,
        Err(e) => return format!("switch to {name}: {e:#}"),
    };
    if let Err(s) = meta.propose(&register).await {
        return format!("switch to {name}: registration failed: {}", s.message());
    }
    let started = Instant::now();
    match meta.activate_when_ready(name, Duration::from_secs(60)).await {
        Ok((_, Applied::Ok(n))) => format!("switch after {:.1} s: {n}", started.elapsed().as_secs_f64()),
        Ok((_, Applied::Refused(n))) => format!("switch to {name} refused: {n}"),
        Err(s) => format!("switch to {name} failed: {}", s.message()),
    }
}

/// Evens out the index nodes while the chaos goes on; what the state machine said, for the report.
async fn rebalance(meta: &Coordinators) -> String {
    match meta.propose(&Command::Rebalance {}).await {
        Ok((_, Applied::Ok(n))) => format!("rebalance: {n}"),
        Ok((_, Applied::Refused(n))) => format!("rebalance refused: {n}"),
        Err(s) => format!("rebalance failed: {}", s.message()),
    }
}

/// Whether every shard of every version that is served or loading has all its replicas assigned, up and loaded,
/// with no move in progress: then one index node may go down.
async fn every_replica_ready(meta: &Coordinators) -> Result<bool> {
    let (state, _) = tokio::time::timeout(Duration::from_secs(3), meta.state(false)).await??;
    Ok(state.versions.iter().filter(|(_, v)| v.state != delf_meta::VersionState::Retired).all(|(name, v)| {
        v.moving.is_empty() && (0..v.shards).all(|s| state.ready_replicas(name, s).len() >= v.replicas as usize)
    }))
}

/// One search on one coordinator, within `timeout` (a stopped coordinator never answers).
async fn search_once(
    mut c: delf_proto::v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    request: &pb::SearchRequest,
    timeout: Duration,
) -> Result<pb::SearchResponse, String> {
    let r = client::request(request.clone(), &client::new_request_id(), Some(TOKEN), timeout);
    match tokio::time::timeout(timeout, c.search(r)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// A query as a client with every coordinator's address sends it: to one coordinator (round robin), and to the
/// next when that one fails or does not answer in 12 s (a query's deadline is 10 s).
async fn query_any(
    coordinators: &[delf_proto::v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>],
    i: usize,
    request: &pb::SearchRequest,
) -> Result<pb::SearchResponse, String> {
    let mut errors = Vec::new();
    for attempt in 0..coordinators.len() {
        let c = coordinators[(i + attempt) % coordinators.len()].clone();
        match search_once(c, request, Duration::from_secs(12)).await {
            Ok(r) => return Ok(r),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}
