//! `delf serve coordinator|index-node|worker`: one cluster role, configured by the `[cluster]` section that every
//! role of a cluster shares (docs/cluster.md). Runs until SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use delf_cluster::coordinator::CoordinatorService;
use delf_cluster::index_node::{IndexNodeOptions, IndexNodeService};
use delf_cluster::worker::{ExtractFailure, QueryExtractor};
use delf_core::FeatureSet;
use delf_engine::config::{Config, ExtractSettings};
use delf_engine::model;
use delf_image::DecodeLimits;
use delf_meta::NodeRole;
use delf_meta::agent::{Agent, ShardHost};
use delf_meta::client::Coordinators;
use delf_meta::service::MetaService;
use delf_meta::transport::Transport;
use delf_search::IndexManifest;
use delf_search::manifest::{MANIFEST_FILE, PCA_FILE};
use tonic::service::Routes;

use crate::cli::{Role, ServeArgs};

/// Runs the role.
pub fn run(args: &ServeArgs, config: &Config) -> Result<()> {
    let cluster = &config.cluster;
    let meta = &config.meta;
    if meta.enabled() {
        meta.validate()?;
        cluster.validate_membership()?;
        if meta.retire_grace_ms < cluster.deadline_ms {
            bail!(delf_meta::MetaError::Config(format!(
                "meta.retire_grace_ms ({}) must be at least cluster.deadline_ms ({}): a query that started on a \
                 retired version must be able to finish on it",
                meta.retire_grace_ms, cluster.deadline_ms
            )));
        }
    } else {
        cluster.validate()?;
    }
    let cache = cluster.cache_dir.clone().unwrap_or_else(|| config.home.join("cluster-cache"));
    let security = cluster.security()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Channels to peers are made (lazily connected) inside the runtime.
    let _in_runtime = rt.enter();
    let stores = Arc::new(delf_storage::Stores::new());
    if let Some(addr) = &args.metrics_listen {
        let listener = rt.block_on(delf_rpc::metrics::bind(addr))?;
        rt.spawn(delf_rpc::metrics::run(listener));
    }
    let listen = || args.listen.clone().context("--listen host:port is required for this role");
    // Index nodes and workers of a Raft-managed cluster register and heartbeat.
    let agent = |role: NodeRole, host: Option<ShardHost>| -> Result<Agent> {
        let address = args.advertise.clone().map_or_else(listen, Ok)?;
        Ok(Agent {
            node: args.node.clone().unwrap_or_else(|| address.clone()),
            role,
            address,
            coordinators: Coordinators::new(&meta.addresses(), &security, meta.request_timeout())?,
            interval: Duration::from_millis(meta.heartbeat_ms),
            grace: Duration::from_millis(meta.retire_grace_ms),
            host,
        })
    };
    match args.role {
        Role::IndexNode if meta.enabled() => {
            if args.shard.is_some() {
                bail!(delf_meta::MetaError::Config(
                    "--shard is for static clusters; under [meta] the coordinators assign shards".into()
                ));
            }
            let service = IndexNodeService::assignable();
            let host = ShardHost { service: service.clone(), stores, cache_dir: cache };
            rt.spawn(agent(NodeRole::IndexNode, Some(host))?.run());
            rt.block_on(delf_cluster::index_node::serve_assignable(&listen()?, service, &security))?;
        }
        Role::IndexNode => {
            let Some(shard_id) = args.shard else {
                bail!(crate::exit::Usage(
                    "--shard is required for an index node of a static cluster (or configure [meta])".into()
                ));
            };
            let opts = IndexNodeOptions { index: cluster.index.clone(), cache_dir: cache, shard_id, stores };
            rt.block_on(delf_cluster::index_node::serve(&listen()?, opts, &security))?;
        }
        Role::Worker => {
            let extractor: Option<Arc<dyn QueryExtractor>> = if args.no_extract {
                None
            } else {
                if cluster.index.trim().is_empty() {
                    bail!(delf_cluster::ClusterError::Config(
                        "cluster.index is not set (workers load the model settings and PCA of that index)".into()
                    ));
                }
                let files = [MANIFEST_FILE.to_string(), PCA_FILE.to_string()];
                let dir = rt.block_on(delf_storage::mirror::local_folder(&stores, &cluster.index, &cache, &files))?;
                let manifest = IndexManifest::load(&dir)?;
                Some(Arc::new(ModelThread::start(config, &manifest, &dir, args.device.clone())?))
            };
            if meta.enabled() {
                rt.spawn(agent(NodeRole::Worker, None)?.run());
            }
            rt.block_on(delf_cluster::worker::serve(&listen()?, extractor, &security))?;
        }
        Role::Coordinator if meta.enabled() => {
            meta.validate_for_coordinator()?;
            let listen = args.listen.clone().unwrap_or_else(|| cluster.coordinator.clone());
            let dir = meta.data_dir.clone().unwrap_or_else(|| config.home.join("meta").join(meta.id.to_string()));
            let peers = meta.peers();
            let mut transport = None;
            let raft = delf_meta::node::start(meta, &dir, |handle| {
                let t = Transport::new(handle, peers, security.clone(), Duration::from_secs(2), rt.handle().clone());
                transport = Some(Arc::clone(&t));
                t
            })?;
            let transport = transport.context("the Raft transport was not built")?;
            let base = config.retrieval();
            let service = CoordinatorService::without_topology(cluster, base)?;
            let meta_service = MetaService::new(raft.clone(), transport, meta, &security);
            rt.spawn(meta_service.clone().watch_liveness());
            rt.spawn(delf_meta::topology::follow(
                raft.clone(),
                service.clone(),
                meta.index_name.clone(),
                cluster.workers.clone(),
                stores,
                cache,
            ));
            let routes = Routes::new(meta_service.into_server(security.auth()));
            rt.block_on(async {
                tokio::select! {
                    r = delf_cluster::coordinator::serve(&listen, service, routes) => Ok(r?),
                    reason = raft.stopped() => Err(anyhow::anyhow!("Raft stopped: {reason}")),
                }
            })?;
        }
        Role::Coordinator => {
            let listen = args.listen.clone().unwrap_or_else(|| cluster.coordinator.clone());
            let files = [MANIFEST_FILE.to_string()];
            let dir = rt.block_on(delf_storage::mirror::local_folder(&stores, &cluster.index, &cache, &files))?;
            let manifest = IndexManifest::load(&dir)?;
            let retrieval = config.retrieval().for_index(&manifest);
            let service = CoordinatorService::new(cluster, manifest, retrieval)?;
            rt.block_on(delf_cluster::coordinator::serve(&listen, service, Routes::default()))?;
        }
    }
    Ok(())
}

/// An encoded image, the rotations to extract it at (empty: upright), and where the answer goes.
type Job = (Vec<u8>, Vec<f64>, mpsc::SyncSender<Result<Vec<FeatureSet>, ExtractFailure>>);

/// The model on a thread of its own (libtorch objects never cross threads); requests queue in order.
struct ModelThread {
    fingerprint: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl ModelThread {
    /// Loads the model with the index's extraction settings and PCA, and checks it makes the index's descriptors.
    fn start(config: &Config, manifest: &IndexManifest, dir: &Path, device: Option<String>) -> Result<Self> {
        let settings = ExtractSettings::from_stored(&manifest.extract, "manifest", config)?;
        let pca: PathBuf = dir.join(PCA_FILE);
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<String>>(1);
        let rotated_pass = config.search.rotated_pass();
        let config = config.clone();
        std::thread::Builder::new().name("delf-model".into()).spawn(move || {
            let extractor = (|| {
                let device = model::device(device.as_deref(), &config)?;
                model::extractor(&config, settings.to_config(), Some(&pca), device)
            })();
            let extractor = match extractor {
                Ok(e) => {
                    let _ = ready_tx.send(Ok(e.fingerprint().to_string()));
                    e
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            for (bytes, rotations, reply) in inbox {
                let result = delf_image::decode_bytes(&bytes, &DecodeLimits::default())
                    .map_err(|e| ExtractFailure::BadImage(e.to_string()))
                    .and_then(|img| {
                        let features = if rotations.is_empty() {
                            extractor.extract(&img.rgb).map(|f| vec![f])
                        } else {
                            extractor.extract_rotations(&img.rgb, &rotations, rotated_pass)
                        };
                        features.map_err(|e| match e {
                            delf_model::ModelError::Image(e) => ExtractFailure::BadImage(e.to_string()),
                            e => ExtractFailure::Failed(e.to_string()),
                        })
                    });
                let _ = reply.send(result);
            }
        })?;
        let fingerprint = ready.recv().context("the model thread stopped while loading")??;
        if fingerprint != manifest.descriptor_fingerprint {
            bail!(delf_search::SearchError::FingerprintMismatch {
                index: manifest.descriptor_fingerprint.clone(),
                query: fingerprint,
            });
        }
        tracing::info!(%fingerprint, "worker model loaded");
        Ok(Self { fingerprint, jobs: Mutex::new(jobs) })
    }

    /// Queues one extraction on the model thread and waits for it: the upright set, or one set per rotation.
    fn ask(&self, bytes: Vec<u8>, rotations: Vec<f64>) -> Result<Vec<FeatureSet>, ExtractFailure> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || ExtractFailure::Failed("the model thread stopped".into());
        let jobs = self.jobs.lock().map_err(|_| ExtractFailure::Failed("model thread poisoned".into()))?;
        jobs.send((bytes, rotations, reply)).map_err(|_| stopped())?;
        drop(jobs);
        answer.recv().map_err(|_| stopped())?
    }
}

impl QueryExtractor for ModelThread {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn extract(&self, bytes: Vec<u8>) -> Result<FeatureSet, ExtractFailure> {
        self.ask(bytes, Vec::new())?.pop().ok_or_else(|| ExtractFailure::Failed("no features came back".into()))
    }

    fn extract_rotations(&self, bytes: Vec<u8>, degrees: &[f64]) -> Result<Vec<FeatureSet>, ExtractFailure> {
        self.ask(bytes, degrees.to_vec())
    }
}
