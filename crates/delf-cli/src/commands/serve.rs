//! `delf serve coordinator|index-node|worker`: one cluster role, configured by the `[cluster]` section that every
//! role of a cluster shares (docs/cluster.md). Runs until SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context, Result, bail};
use delf_cluster::coordinator::CoordinatorService;
use delf_cluster::index_node::IndexNodeOptions;
use delf_cluster::worker::{ExtractFailure, QueryExtractor};
use delf_core::FeatureSet;
use delf_image::DecodeLimits;
use delf_search::manifest::{MANIFEST_FILE, PCA_FILE};
use delf_search::{IndexManifest, RetrievalConfig};

use crate::cli::{Role, ServeArgs};
use crate::commands::model;
use crate::config::{Config, ExtractSettings};

/// Runs the role.
pub fn run(args: &ServeArgs, config: &Config) -> Result<()> {
    let cluster = &config.cluster;
    cluster.validate()?;
    let cache = cluster.cache_dir.clone().unwrap_or_else(|| config.home.join("cluster-cache"));
    let security = cluster.security()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Channels to peers are made (lazily connected) inside the runtime.
    let _in_runtime = rt.enter();
    let stores = delf_features::Stores::new();
    if let Some(addr) = &args.metrics_listen {
        let listener = rt.block_on(delf_cluster::metrics::bind(addr))?;
        rt.spawn(delf_cluster::metrics::run(listener));
    }
    let listen = || args.listen.clone().context("--listen host:port is required for this role");
    match args.role {
        Role::IndexNode => {
            let shard_id = args.shard.context("--shard is required for an index node")?;
            let stores = Arc::new(stores);
            let opts = IndexNodeOptions { index: cluster.index.clone(), cache_dir: cache, shard_id, stores };
            rt.block_on(delf_cluster::index_node::serve(&listen()?, opts, &security))?;
        }
        Role::Worker => {
            let extractor: Option<Arc<dyn QueryExtractor>> = if args.no_extract {
                None
            } else {
                let files = [MANIFEST_FILE.to_string(), PCA_FILE.to_string()];
                let dir =
                    rt.block_on(delf_cluster::index_files::local_folder(&stores, &cluster.index, &cache, &files))?;
                let manifest = IndexManifest::load(&dir)?;
                Some(Arc::new(ModelThread::start(config, &manifest, &dir, args.device.clone())?))
            };
            rt.block_on(delf_cluster::worker::serve(&listen()?, extractor, &security))?;
        }
        Role::Coordinator => {
            let listen = args.listen.clone().unwrap_or_else(|| cluster.coordinator.clone());
            let files = [MANIFEST_FILE.to_string()];
            let dir = rt.block_on(delf_cluster::index_files::local_folder(&stores, &cluster.index, &cache, &files))?;
            let manifest = IndexManifest::load(&dir)?;
            let retrieval = retrieval_config(config, &manifest);
            let service = CoordinatorService::new(cluster, manifest, retrieval)?;
            rt.block_on(delf_cluster::coordinator::serve(&listen, service))?;
        }
    }
    Ok(())
}

/// The retrieval defaults of one-process `delf search` on this index: the index's ANN parameters, the
/// configuration's verification and search sections.
pub fn retrieval_config(config: &Config, manifest: &IndexManifest) -> RetrievalConfig {
    let mut rc = RetrievalConfig { candidates: config.search.candidates.max(1), ..RetrievalConfig::default() };
    rc.search = manifest.search;
    rc.verify = config.verify.to_config();
    rc.verify.policy.min_inliers = config.search.min_inliers;
    rc
}

type Job = (Vec<u8>, mpsc::SyncSender<Result<FeatureSet, ExtractFailure>>);

/// The model on a thread of its own (libtorch objects never cross threads); requests queue in order.
struct ModelThread {
    fingerprint: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl ModelThread {
    /// Loads the model with the index's extraction settings and PCA, and checks it makes the index's descriptors.
    fn start(config: &Config, manifest: &IndexManifest, dir: &Path, device: Option<String>) -> Result<Self> {
        let settings: ExtractSettings = serde_json::from_value(manifest.extract.clone())
            .context("the manifest's extraction settings are not readable by this build")?;
        let pca: PathBuf = dir.join(PCA_FILE);
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<String>>(1);
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
            for (bytes, reply) in inbox {
                let result = delf_image::decode_bytes(&bytes, &DecodeLimits::default())
                    .map_err(|e| ExtractFailure::BadImage(e.to_string()))
                    .and_then(|img| {
                        extractor.extract(&img.rgb).map_err(|e| match e {
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
}

impl QueryExtractor for ModelThread {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn extract(&self, bytes: Vec<u8>) -> Result<FeatureSet, ExtractFailure> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent =
            self.jobs.lock().map_err(|_| ExtractFailure::Failed("model thread poisoned".into()))?.send((bytes, reply));
        sent.map_err(|_| ExtractFailure::Failed("the model thread stopped".into()))?;
        answer.recv().map_err(|_| ExtractFailure::Failed("the model thread stopped".into()))?
    }
}
