//! `delf bench cluster`: what one query costs on the whole cluster path (coordinator -> index nodes -> workers,
//! each a real `delf serve` process, talking gRPC over loopback sockets) against the number of shards and
//! replicas, on a synthetic index whose queries truly match (so votes and verification do real work): latency, the
//! coordinator's bytes in and out (protobuf bytes, from its own counters), CPU time of the coordinator and of the
//! index nodes summed (from the OS), and how often the cluster's top result is one-process search's top result.
//! Beside it, the same queries through one-process retrieval on the same index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delf_cluster::convert;
use delf_core::FeatureSet;
use delf_index::{DEFAULT_K, DEFAULT_NPROBE};
use delf_index::{ScanKernel, SearchParams, ShardedIndex};
use delf_proto::v1 as pb;
use delf_rpc::{Security, client};
use delf_search::synthetic::SyntheticIndex;
use delf_search::{IndexManifest, RetrievalConfig};
use serde::Serialize;

use crate::local_cluster::{LocalCluster, Usage};
use delf_engine::Config;

/// `delf bench cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchClusterArgs {
    /// Synthetic database images.
    #[arg(long, default_value_t = 2000)]
    pub images: u32,
    /// Descriptors per image (and per query).
    #[arg(long, default_value_t = 1000)]
    pub per_image: usize,
    /// Shard counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub shards: Vec<u32>,
    /// Replicas per shard.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub replicas: Vec<u32>,
    /// Workers (verification).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Timed queries per configuration (after 3 warm-up queries).
    #[arg(long, default_value_t = 60)]
    pub queries: usize,
    /// Queries in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Index structure.
    #[arg(long, default_value = "IVF1024,PQ20x8r")]
    pub spec: String,
    /// Cells probed per query descriptor.
    #[arg(long, default_value_t = DEFAULT_NPROBE)]
    pub nprobe: usize,
    /// Neighbours per query descriptor.
    #[arg(long, default_value_t = DEFAULT_K)]
    pub k: usize,
    /// One JSON object per configuration and line on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One configuration's figures, per timed query (the `--json` line).
#[derive(Debug, Serialize)]
struct Row {
    setup: String,
    shards: u32,
    /// 0 for one-process search.
    replicas: u32,
    queries: usize,
    queries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    ann_ms: f64,
    /// The coordinator's own work (merge, votes, correspondences, ranking); absent for one process.
    merge_ms: Option<f64>,
    verify_ms: f64,
    coordinator_bytes_in_per_query: Option<f64>,
    coordinator_bytes_out_per_query: Option<f64>,
    /// The parts of the two above exchanged with index nodes.
    index_bytes_in_per_query: Option<f64>,
    index_bytes_out_per_query: Option<f64>,
    coordinator_cpu_ms_per_query: Option<f64>,
    /// Summed over every index node process (one process: the whole search's CPU time).
    index_cpu_ms_per_query: Option<f64>,
    worker_cpu_ms_per_query: Option<f64>,
    /// Share of queries whose top result (or "no match") is one-process search's.
    top1_agreement: f64,
    /// Share of queries whose top result is the database image the query was made from.
    top1_correct: f64,
}

/// The `p`-quantile (0-1) of sorted values, nearest rank; `NaN` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the table (or the JSON lines).
pub fn run(args: &BenchClusterArgs, config: &Config) -> Result<()> {
    if args.shards.is_empty() || args.replicas.is_empty() || args.workers == 0 || args.concurrency == 0 {
        bail!("need at least one shard count, one replica count, one worker and a concurrency of 1 or more");
    }
    if args.shards.contains(&0) || args.replicas.contains(&0) {
        bail!("shard and replica counts start at 1");
    }
    let queries_n = args.queries.max(1);
    eprintln!(
        "synthetic index: {} images x {} descriptors ({} descriptors), {}, k {}, nprobe {}; {} queries of {} \
         descriptors, {} in flight, {} worker(s); every role its own process; {} CPU threads",
        args.images,
        args.per_image,
        args.images as usize * args.per_image,
        args.spec,
        args.k,
        args.nprobe,
        queries_n,
        args.per_image,
        args.concurrency,
        args.workers,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut rows = Vec::new();
    let mut emit = |row: Row| -> Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        }
        rows.push(row);
        Ok(())
    };
    for &shards in &args.shards {
        let dir = tempfile::tempdir()?;
        let synthetic = SyntheticIndex {
            images: args.images,
            per_image: args.per_image,
            dim: 40,
            shards,
            spec: args.spec.parse()?,
            search: SearchParams { k: args.k, nprobe: args.nprobe, max_distance: None },
            train_sample: 100_000,
            seed: 11,
        };
        let started = Instant::now();
        let (manifest, queries) = synthetic.build(dir.path(), queries_n)?;
        eprintln!("built {shards}-shard index in {:.1} s", started.elapsed().as_secs_f64());
        let mut rc = config.retrieval().for_index(&manifest);
        rc.top = 10;
        let expected: Vec<String> = (0..queries.len())
            .map(|j| format!("synthetic/{:08}.jpg", j as u32 * (args.images / queries_n as u32).max(1)))
            .collect();
        // One-process answers on the same index: what the cluster's top results are compared with.
        let (row, baseline) = one_process(dir.path(), &manifest, &queries, &rc, &expected)?;
        if shards == args.shards[0] {
            emit(row)?;
        }
        for &replicas in &args.replicas {
            emit(cluster(args, dir.path(), &manifest, &queries, &expected, &baseline, replicas)?)?;
        }
    }
    if !args.json {
        print_table(&rows);
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let opt = |v: Option<f64>, scale: f64| v.map_or("-".to_string(), |v| format!("{:.1}", v / scale));
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "setup",
        "q/s",
        "p50 ms",
        "p99 ms",
        "merge",
        "verify",
        "in KB",
        "out KB",
        "coord ms",
        "index ms",
        "top-1=",
        "correct"
    );
    for r in rows {
        println!(
            "{:<24} {:>7.1} {:>7.1} {:>7.1} {:>7} {:>7.1} {:>8} {:>8} {:>8} {:>8} {:>7.3} {:>7.3}",
            r.setup,
            r.queries_per_s,
            r.p50_ms,
            r.p99_ms,
            opt(r.merge_ms, 1.0),
            r.verify_ms,
            opt(r.coordinator_bytes_in_per_query, 1e3),
            opt(r.coordinator_bytes_out_per_query, 1e3),
            opt(r.coordinator_cpu_ms_per_query, 1.0),
            opt(r.index_cpu_ms_per_query, 1.0),
            r.top1_agreement,
            r.top1_correct,
        );
    }
    println!(
        "per timed query: merge = the coordinator's own work (merging shard lists, votes, correspondences, ranking); \
         in/out KB = protobuf bytes the coordinator received/sent (clients, index nodes, workers); coord ms / index \
         ms = CPU time (user + system) of the coordinator process / of all index node processes summed (one \
         process: the whole search); top-1= = share of queries whose top result (or no match) is one-process \
         search's; latencies are the client's."
    );
}

/// Searches every query in this process; returns the row and each query's top result.
fn one_process(
    dir: &std::path::Path,
    manifest: &IndexManifest,
    queries: &[FeatureSet],
    rc: &RetrievalConfig,
    expected: &[String],
) -> Result<(Row, Vec<Option<String>>)> {
    let index = manifest.open_index(dir)?;
    let kernel = ScanKernel::detect();
    let run = |index: &ShardedIndex, q: &FeatureSet| delf_search::retrieve(index, q, rc, kernel);
    for q in queries.iter().take(3) {
        run(&index, q)?;
    }
    let (mut lat, mut ann, mut verify, mut top) = (Vec::new(), 0.0, 0.0, Vec::new());
    let me = std::process::id();
    let cpu_before = crate::local_cluster::cpu_ms(me)?;
    let started = Instant::now();
    for q in queries {
        let t = Instant::now();
        let r = run(&index, q)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        ann += r.ann_ms;
        verify += r.verify_ms;
        top.push(r.results.first().map(|v| v.id.clone()));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = crate::local_cluster::cpu_ms(me)? - cpu_before;
    lat.sort_by(f64::total_cmp);
    let n = queries.len() as f64;
    let correct = top.iter().zip(expected).filter(|(t, e)| t.as_ref() == Some(*e)).count();
    let row = Row {
        setup: format!("one process, {} shard(s)", manifest.shards),
        shards: manifest.shards,
        replicas: 0,
        queries: queries.len(),
        queries_per_s: n / secs,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        ann_ms: ann / n,
        merge_ms: None,
        verify_ms: verify / n,
        coordinator_bytes_in_per_query: None,
        coordinator_bytes_out_per_query: None,
        index_bytes_in_per_query: None,
        index_bytes_out_per_query: None,
        coordinator_cpu_ms_per_query: None,
        index_cpu_ms_per_query: Some(cpu / n),
        worker_cpu_ms_per_query: None,
        top1_agreement: 1.0,
        top1_correct: correct as f64 / n,
    };
    Ok((row, top))
}

/// Starts the cluster as processes, waits until every replica is loaded, and times the queries.
fn cluster(
    args: &BenchClusterArgs,
    dir: &std::path::Path,
    manifest: &IndexManifest,
    queries: &[FeatureSet],
    expected: &[String],
    baseline: &[Option<String>],
    replicas: u32,
) -> Result<Row> {
    let work = tempfile::tempdir()?;
    let started = Instant::now();
    let mut local = LocalCluster::start(dir, manifest.shards, replicas, args.workers, work.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _in_runtime = rt.enter();
    let requests: Vec<pb::SearchRequest> = queries
        .iter()
        .map(|q| pb::SearchRequest {
            query: Some(pb::search_request::Query::Features(convert::features_to_pb(q))),
            top: 10,
            ..Default::default()
        })
        .collect();
    let coordinator =
        client::coordinator(client::channel(&local.config.coordinator, Duration::from_secs(1), &Security::none())?);
    let (done, secs, used) = rt.block_on(async {
        // Ready: the coordinator's status shows every replica loaded.
        loop {
            let mut c = coordinator.clone();
            if let Ok(s) = c.cluster_status(pb::ClusterStatusRequest {}).await
                && s.get_ref().shards.iter().all(|s| s.healthy.iter().all(|h| *h))
            {
                break;
            }
            local.check_running()?;
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the cluster did not become ready in 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "{} shard(s) x {replicas}: {} processes ready in {:.1} s",
            manifest.shards,
            manifest.shards * replicas + args.workers + 1,
            started.elapsed().as_secs_f64()
        );
        for r in requests.iter().take(3) {
            coordinator.clone().search(r.clone()).await.context("warm-up query")?;
        }
        let before = local.usage()?;
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = Arc::new(requests);
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (next, requests, mut c) = (Arc::clone(&next), Arc::clone(&requests), coordinator.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(r) = requests.get(i) else { break };
                        let t = Instant::now();
                        let answer = c.search(r.clone()).await?.into_inner();
                        out.push((i, t.elapsed().as_secs_f64() * 1e3, answer));
                    }
                    Ok::<_, tonic::Status>(out)
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.extend(t.await??);
        }
        let secs = started.elapsed().as_secs_f64();
        let used: Usage = local.usage()? - before;
        Ok((done, secs, used))
    })?;
    drop(local);
    rt.shutdown_timeout(Duration::from_secs(1));
    let mut lat: Vec<f64> = done.iter().map(|d| d.1).collect();
    lat.sort_by(f64::total_cmp);
    let n = done.len() as f64;
    let timing = |f: fn(&pb::Timing) -> f64| done.iter().map(|d| d.2.timing.as_ref().map_or(0.0, f)).sum::<f64>() / n;
    let top = |a: &pb::SearchResponse| a.results.first().map(|m| m.image_id.clone());
    let agree = done.iter().filter(|(i, _, a)| top(a) == baseline[*i]).count();
    let correct = done.iter().filter(|(i, _, a)| top(a).as_ref() == Some(&expected[*i])).count();
    Ok(Row {
        setup: format!("cluster, {} shard(s) x {replicas}", manifest.shards),
        shards: manifest.shards,
        replicas,
        queries: done.len(),
        queries_per_s: n / secs,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        ann_ms: timing(|t| t.ann_ms),
        merge_ms: Some(timing(|t| t.merge_ms)),
        verify_ms: timing(|t| t.verify_ms),
        coordinator_bytes_in_per_query: Some(used.bytes_in / n),
        coordinator_bytes_out_per_query: Some(used.bytes_out / n),
        index_bytes_in_per_query: Some(used.index_bytes_in / n),
        index_bytes_out_per_query: Some(used.index_bytes_out / n),
        coordinator_cpu_ms_per_query: Some(used.coordinator_cpu_ms / n),
        index_cpu_ms_per_query: Some(used.index_cpu_ms / n),
        worker_cpu_ms_per_query: Some(used.worker_cpu_ms / n),
        top1_agreement: agree as f64 / n,
        top1_correct: correct as f64 / n,
    })
}
