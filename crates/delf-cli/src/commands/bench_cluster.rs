//! `delf bench cluster`: queries/s and latency of the whole cluster path (coordinator -> index nodes -> workers,
//! real gRPC over loopback sockets, every role in this process) against the number of shards and replicas, on a
//! synthetic index whose queries truly match (so votes and verification do real work). Beside it, the same
//! queries through one-process retrieval on the same index, and the coordinator's own work per query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delf_cluster::config::{ClusterConfig, ShardReplicas};
use delf_cluster::convert;
use delf_cluster::coordinator::CoordinatorService;
use delf_cluster::index_node::IndexNodeOptions;
use delf_core::FeatureSet;
use delf_index::{ScanKernel, SearchParams, ShardedIndex};
use delf_proto::v1 as pb;
use delf_rpc::{Security, client};
use delf_search::synthetic::SyntheticIndex;
use delf_search::{IndexManifest, RetrievalConfig};

use crate::cli::BenchClusterArgs;
use crate::config::Config;

struct Row {
    label: String,
    qps: f64,
    p50: f64,
    p99: f64,
    ann: f64,
    merge: f64,
    verify: f64,
    correct: usize,
    total: usize,
}

/// The `p`-quantile (0-1) of sorted values, nearest rank; `NaN` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn free_addr() -> Result<String> {
    Ok(format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
}

/// Runs the table.
pub fn run(args: &BenchClusterArgs, config: &Config) -> Result<()> {
    if args.shards.is_empty() || args.replicas.is_empty() || args.workers == 0 || args.concurrency == 0 {
        bail!("need at least one shard count, one replica count, one worker and a concurrency of 1 or more");
    }
    let queries_n = args.queries.max(1);
    println!(
        "synthetic index: {} images x {} descriptors ({} descriptors), {}, k {}, nprobe {}; {} queries of {} \
         descriptors, {} in flight, {} worker(s); {} CPU threads",
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
        if shards == args.shards[0] {
            rows.push(one_process(dir.path(), &manifest, &queries, &rc, &expected)?);
        }
        for &replicas in &args.replicas {
            rows.push(cluster(args, dir.path(), &manifest, &queries, &rc, &expected, replicas)?);
        }
    }
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "setup", "queries/s", "p50 ms", "p99 ms", "ann ms", "merge ms", "verify ms", "top-1"
    );
    for r in rows {
        // One process has no coordinator, so no merge of shard answers.
        let merge = if r.merge.is_nan() { "-".to_string() } else { format!("{:.2}", r.merge) };
        println!(
            "{:<26} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9.1} {:>4}/{:<3}",
            r.label, r.qps, r.p50, r.p99, r.ann, merge, r.verify, r.correct, r.total
        );
    }
    println!(
        "ann/merge/verify: means of the coordinator's per-query timings (merge = its own work: merging the per-shard \
         lists, votes, correspondences, ranking). Latencies are measured by the client."
    );
    Ok(())
}

fn one_process(
    dir: &std::path::Path,
    manifest: &IndexManifest,
    queries: &[FeatureSet],
    rc: &RetrievalConfig,
    expected: &[String],
) -> Result<Row> {
    let index = manifest.open_index(dir)?;
    let kernel = ScanKernel::detect();
    let run = |index: &ShardedIndex, q: &FeatureSet| delf_search::retrieve(index, q, rc, kernel);
    for q in queries.iter().take(3) {
        run(&index, q)?;
    }
    let (mut lat, mut ann, mut verify, mut correct) = (Vec::new(), 0.0, 0.0, 0);
    let started = Instant::now();
    for (q, want) in queries.iter().zip(expected) {
        let t = Instant::now();
        let r = run(&index, q)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        ann += r.ann_ms;
        verify += r.verify_ms;
        correct += usize::from(r.results.first().is_some_and(|v| &v.id == want));
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let n = queries.len() as f64;
    Ok(Row {
        label: format!("one process, {} shard(s)", manifest.shards),
        qps: n / secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        ann: ann / n,
        merge: f64::NAN,
        verify: verify / n,
        correct,
        total: queries.len(),
    })
}

#[allow(clippy::too_many_arguments)]
fn cluster(
    args: &BenchClusterArgs,
    dir: &std::path::Path,
    manifest: &IndexManifest,
    queries: &[FeatureSet],
    rc: &RetrievalConfig,
    expected: &[String],
    replicas: u32,
) -> Result<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _in_runtime = rt.enter();
    let shards: Vec<ShardReplicas> = (0..manifest.shards)
        .map(|id| Ok(ShardReplicas { id, replicas: (0..replicas).map(|_| free_addr()).collect::<Result<_>>()? }))
        .collect::<Result<_>>()?;
    let workers: Vec<String> = (0..args.workers).map(|_| free_addr()).collect::<Result<_>>()?;
    let config = ClusterConfig {
        index: dir.display().to_string(),
        coordinator: free_addr()?,
        shards: shards.clone(),
        workers: workers.clone(),
        deadline_ms: 120_000,
        shard_timeout_ms: 60_000,
        worker_timeout_ms: 60_000,
        ..ClusterConfig::default()
    };
    let stores = Arc::new(delf_storage::Stores::new());
    let mut nodes = Vec::new();
    for s in &shards {
        for addr in &s.replicas {
            let opts = IndexNodeOptions {
                index: config.index.clone(),
                cache_dir: dir.join("cache"),
                shard_id: s.id,
                stores: Arc::clone(&stores),
            };
            let addr = addr.clone();
            nodes.push(rt.spawn(async move { delf_cluster::index_node::serve(&addr, opts, &Security::none()).await }));
        }
    }
    for addr in workers {
        rt.spawn(async move { delf_cluster::worker::serve(&addr, None, &Security::none()).await });
    }
    let service = CoordinatorService::new(&config, manifest.clone(), rc.clone())?;
    let addr = config.coordinator.clone();
    rt.spawn(async move { delf_cluster::coordinator::serve(&addr, service, Default::default()).await });

    let requests: Vec<pb::SearchRequest> = queries
        .iter()
        .map(|q| pb::SearchRequest {
            query: Some(pb::search_request::Query::Features(convert::features_to_pb(q))),
            top: 10,
            ..Default::default()
        })
        .collect();
    let coordinator =
        client::coordinator(client::channel(&config.coordinator, Duration::from_secs(1), &Security::none())?);
    let row = rt.block_on(async {
        // Ready: the coordinator's status shows every replica loaded.
        let started = Instant::now();
        loop {
            let mut c = coordinator.clone();
            if let Ok(s) = c.cluster_status(pb::ClusterStatusRequest {}).await
                && s.get_ref().shards.iter().all(|s| s.healthy.iter().all(|h| *h))
            {
                break;
            }
            if nodes.iter().any(|n| n.is_finished()) {
                bail!("an index node stopped while loading");
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the cluster did not become ready in 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for r in requests.iter().take(3) {
            coordinator.clone().search(r.clone()).await.context("warm-up query")?;
        }
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
        let mut lat: Vec<f64> = done.iter().map(|d| d.1).collect();
        lat.sort_by(f64::total_cmp);
        let n = done.len() as f64;
        let timing =
            |f: fn(&pb::Timing) -> f64| done.iter().map(|d| d.2.timing.as_ref().map_or(0.0, f)).sum::<f64>() / n;
        let correct =
            done.iter().filter(|(i, _, a)| a.results.first().is_some_and(|m| m.image_id == expected[*i])).count();
        Ok(Row {
            label: format!("cluster, {} shard(s) x {replicas}", manifest.shards),
            qps: n / secs,
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
            ann: timing(|t| t.ann_ms),
            merge: timing(|t| t.merge_ms),
            verify: timing(|t| t.verify_ms),
            correct,
            total: done.len(),
        })
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(row)
}
