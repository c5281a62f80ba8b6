//! An index node: one PQ shard of an index, loaded in the background from the index folder (local or object
//! storage, see [`delf_storage::mirror`]); health says NOT_SERVING and searches get UNAVAILABLE until it is loaded.
//! A search takes all descriptors of a query image at once and answers, per descriptor, the shard's top-K (the K the
//! caller asks: a coordinator asks each of S shards for its K' nearest, `delf_index::shard_cut`), either as
//! messages with the keypoint of every neighbour (unless asked `without_keypoints`) and the ids of the images named,
//! or as packed columns without either (`compact`, compact.rs); `Keypoints` answers the keypoints of given
//! features and the ids of given images, the coordinator's second round for the candidates it verifies.
//! The cells each descriptor probes may come with the request (assigned once by the coordinator for all shards,
//! from the centroids `Codebooks` hands out); otherwise the node assigns them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use delf_index::sharded::shard_file_name;
use delf_index::{ScanKernel, SearchParams, Shard};
use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1 as pb;
use delf_proto::v1::index_node_server::{IndexNode, IndexNodeServer};
use delf_search::IndexManifest;
use delf_search::manifest::MANIFEST_FILE;
use delf_storage::Stores;
use rustc_hash::FxHashMap;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::error::ClusterError;
use delf_rpc::BearerAuth;
use delf_rpc::Security;
use delf_rpc::metrics;

const READY: &str = "delf_shard_ready";
const READY_HELP: &str = "1 once the node's shard is loaded and served, 0 while loading";

/// Largest K (neighbours per query descriptor) a node accepts.
pub const MAX_K: u32 = 1024;
/// Largest number of query descriptors in one search.
pub const MAX_QUERY_DESCRIPTORS: usize = 100_000;
/// Largest number of keypoints asked for in one request.
pub const MAX_KEYPOINTS: usize = 1_000_000;

/// What an index node serves.
#[derive(Clone)]
pub struct IndexNodeOptions {
    /// The index folder or URI.
    pub index: String,
    /// Cache for files fetched from object storage.
    pub cache_dir: PathBuf,
    /// The shard this node serves.
    pub shard_id: u32,
    /// Object stores (credentials from the environment, or explicit options).
    pub stores: Arc<Stores>,
}

struct Loaded {
    shard: Shard,
    manifest: IndexManifest,
}

/// A shard of an index version: the version name (empty for the static index of `[cluster]`) and the shard id.
pub type ShardKey = (String, u32);

#[derive(Default)]
struct Shards {
    loaded: BTreeMap<ShardKey, Arc<Loaded>>,
    loading: BTreeSet<ShardKey>,
}

/// The IndexNode service: the shards a node holds. A node of a static cluster holds one shard of one index; under
/// Raft-managed metadata it holds whatever shards of whichever index versions it is assigned (two versions at once
/// during a re-index switch).
#[derive(Clone)]
pub struct IndexNodeService {
    /// The shard of a static node (what `Info` describes); None under Raft-managed metadata.
    static_shard: Option<u32>,
    shards: Arc<RwLock<Shards>>,
    kernel: ScanKernel,
}

fn key_text((version, shard): &ShardKey) -> String {
    format!("{version}/{shard}")
}

impl IndexNodeService {
    /// A static node for `shard_id`, not loaded yet.
    pub fn new(shard_id: u32) -> Self {
        Self { static_shard: Some(shard_id), shards: Arc::default(), kernel: ScanKernel::detect() }
    }

    /// A node holding no shard until told to load some ([`Self::load_shard`]).
    pub fn assignable() -> Self {
        Self { static_shard: None, shards: Arc::default(), kernel: ScanKernel::detect() }
    }

    /// Fetches (if remote) and loads the shard of a static node, then checks it against the manifest. Call once;
    /// searches are refused until it returns Ok.
    pub async fn load(&self, opts: &IndexNodeOptions) -> Result<(), ClusterError> {
        self.load_shard("", &opts.index, opts.shard_id, &opts.stores, &opts.cache_dir).await
    }

    /// Fetches (if remote) and loads shard `shard_id` of the index at `index` as version `version`, checked
    /// against the index's manifest. Searches naming that version and shard are served once it returns Ok.
    pub async fn load_shard(
        &self,
        version: &str,
        index: &str,
        shard_id: u32,
        stores: &Stores,
        cache_dir: &std::path::Path,
    ) -> Result<(), ClusterError> {
        let key: ShardKey = (version.to_string(), shard_id);
        self.write().loading.insert(key.clone());
        let result = load_checked(index, shard_id, stores, cache_dir).await;
        let mut shards = self.write();
        shards.loading.remove(&key);
        let loaded = result?;
        let shard = &loaded.shard;
        tracing::info!(
            version,
            shard = shard_id,
            images = shard.live_images(),
            descriptors = shard.live_vectors(),
            spec = %loaded.manifest.spec,
            "shard loaded"
        );
        let id = shard_id.to_string();
        let l = [("shard", id.as_str()), ("version", version)];
        metrics::set("delf_shard_images", "Live images in a shard this node serves", &l, shard.live_images() as f64);
        let descriptors = shard.live_vectors() as f64;
        metrics::set("delf_shard_descriptors", "Live descriptors in a shard this node serves", &l, descriptors);
        metrics::set(READY, READY_HELP, &l, 1.0);
        shards.loaded.insert(key, Arc::new(loaded));
        Ok(())
    }

    /// Stops serving a shard (searches already running on it finish; its memory is freed after them).
    pub fn unload(&self, version: &str, shard_id: u32) {
        if self.write().loaded.remove(&(version.to_string(), shard_id)).is_some() {
            let id = shard_id.to_string();
            metrics::set(READY, READY_HELP, &[("shard", id.as_str()), ("version", version)], 0.0);
            tracing::info!(version, shard = shard_id, "shard unloaded");
        }
    }

    /// The shards loaded and served.
    pub fn serving(&self) -> Vec<ShardKey> {
        self.read().loaded.keys().cloned().collect()
    }

    /// The shards being loaded.
    pub fn loading(&self) -> Vec<ShardKey> {
        self.read().loading.iter().cloned().collect()
    }

    /// True once a static node's shard is loaded (under Raft-managed metadata: once any shard is).
    pub fn is_ready(&self) -> bool {
        let shards = self.read();
        match self.static_shard {
            Some(id) => shards.loaded.contains_key(&(String::new(), id)),
            None => !shards.loaded.is_empty(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Shards> {
        self.shards.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Shards> {
        self.shards.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shard a request names, or why it cannot be served.
    fn find(&self, version: &str, shard_id: u32) -> Result<Arc<Loaded>, Status> {
        let shards = self.read();
        let key = (version.to_string(), shard_id);
        if let Some(l) = shards.loaded.get(&key) {
            return Ok(Arc::clone(l));
        }
        if shards.loading.contains(&key) || (shards.loaded.is_empty() && self.static_shard == Some(shard_id)) {
            return Err(Status::unavailable(format!("shard {} is still loading", key_text(&key))));
        }
        let serving: Vec<String> = shards.loaded.keys().map(key_text).collect();
        Err(Status::not_found(format!(
            "this node does not serve shard {} (it serves: {})",
            key_text(&key),
            if serving.is_empty() { "nothing yet".to_string() } else { serving.join(", ") }
        )))
    }

    /// The gRPC service with message limits and the token check.
    pub fn into_server(self, auth: BearerAuth) -> InterceptedService<IndexNodeServer<Self>, BearerAuth> {
        let server = IndexNodeServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        InterceptedService::new(server, auth)
    }
}

/// Loads shard `shard_id` of the index at `index` and checks it against the index's manifest.
async fn load_checked(
    index: &str,
    shard_id: u32,
    stores: &Stores,
    cache_dir: &std::path::Path,
) -> Result<Loaded, ClusterError> {
    let dir = delf_storage::mirror::local_folder(stores, index, cache_dir, &[MANIFEST_FILE.to_string()]).await?;
    let manifest = IndexManifest::load(&dir)?;
    if shard_id >= manifest.shards {
        return Err(ClusterError::Config(format!(
            "shard {shard_id} does not exist: the index at {index} has {} shards",
            manifest.shards
        )));
    }
    let name = shard_file_name(shard_id, manifest.shards);
    let dir = delf_storage::mirror::local_folder(stores, index, cache_dir, std::slice::from_ref(&name)).await?;
    let path = dir.join(&name);
    let shard = tokio::task::spawn_blocking(move || delf_index::file::load(&path))
        .await
        .map_err(|e| ClusterError::Config(format!("loading the shard panicked: {e}")))??;
    let info = shard.info();
    let bad = |what: String| Err(ClusterError::Config(format!("{name} does not match the manifest: {what}")));
    if info.shard_id != shard_id || info.shard_count != manifest.shards {
        return bad(format!("holds shard {} of {}", info.shard_id, info.shard_count));
    }
    if info.descriptor_fingerprint != manifest.descriptor_fingerprint {
        return bad(format!("descriptors {}", info.descriptor_fingerprint));
    }
    if shard.codebooks().fingerprint().as_str() != manifest.codebooks_fingerprint {
        return bad(format!("codebooks {}", shard.codebooks().fingerprint()));
    }
    Ok(Loaded { shard, manifest })
}

fn check_request(r: &pb::ShardSearchRequest, loaded: &Loaded) -> Result<SearchParams, Status> {
    let expected = &loaded.manifest.descriptor_fingerprint;
    if &r.descriptor_fingerprint != expected {
        return Err(Status::failed_precondition(format!(
            "descriptor fingerprint {:?}; this shard holds {expected}",
            r.descriptor_fingerprint
        )));
    }
    if r.k == 0 || r.k > MAX_K {
        return Err(Status::invalid_argument(format!("k {} is outside 1..={MAX_K}", r.k)));
    }
    let dim = r.dim as usize;
    if dim == 0 || !r.descriptors.len().is_multiple_of(dim) {
        return Err(Status::invalid_argument(format!(
            "{} descriptor values are not a whole number of {dim}-d descriptors",
            r.descriptors.len()
        )));
    }
    if r.descriptors.len() / dim > MAX_QUERY_DESCRIPTORS {
        return Err(Status::invalid_argument(format!("more than {MAX_QUERY_DESCRIPTORS} query descriptors")));
    }
    let mut params = loaded.manifest.search;
    params.k = r.k as usize;
    if r.nprobe > 0 {
        params.nprobe = r.nprobe as usize;
    }
    params.max_distance = r.max_distance;
    params.validate(&loaded.shard.codebooks().spec).map_err(|e| crate::convert::index_status(&e))?;
    Ok(params)
}

/// The keypoints of the requested (image, feature) pairs, NaN for those the shard does not hold.
fn keypoints_of(r: &pb::KeypointsRequest, shard: &Shard) -> Result<pb::KeypointsResponse, Status> {
    if r.images.len() != r.features.len() {
        return Err(Status::invalid_argument(format!(
            "{} images and {} features: the lists pair up",
            r.images.len(),
            r.features.len()
        )));
    }
    if r.images.len() > MAX_KEYPOINTS || r.id_images.len() > MAX_KEYPOINTS {
        return Err(Status::invalid_argument(format!("more than {MAX_KEYPOINTS} keypoints or ids in one request")));
    }
    let (mut xy, mut scales) = (Vec::with_capacity(r.images.len() * 2), Vec::with_capacity(r.images.len()));
    for (&image, &feature) in r.images.iter().zip(&r.features) {
        let [x, y, scale] = u16::try_from(feature).ok().and_then(|f| shard.keypoint(image, f)).unwrap_or([f32::NAN; 3]);
        xy.extend([x, y]);
        scales.push(scale);
    }
    let images = r
        .id_images
        .iter()
        .filter_map(|&image| shard.image(image).map(|e| pb::ImageRef { image, id: e.name.clone() }))
        .collect();
    Ok(pb::KeypointsResponse { xy, images, scales })
}

#[tonic::async_trait]
impl IndexNode for IndexNodeService {
    async fn search(
        &self,
        request: Request<pb::ShardSearchRequest>,
    ) -> Result<Response<pb::ShardSearchResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.search_shard(request).await;
        metrics::call("index_node", "Search", metrics::code_of(&result), started);
        result
    }

    async fn codebooks(
        &self,
        request: Request<pb::CodebooksRequest>,
    ) -> Result<Response<pb::CodebooksResponse>, Status> {
        let r = request.into_inner();
        let loaded = self.find(&r.version, r.shard_id)?;
        let cb = loaded.shard.codebooks();
        Ok(Response::new(pb::CodebooksResponse {
            spec: cb.spec.to_string(),
            dim: cb.dim as u32,
            coarse: cb.coarse.clone(),
            pq_centroids: cb.pq.centroids.clone(),
            fingerprint: cb.fingerprint().to_string(),
        }))
    }

    async fn keypoints(
        &self,
        request: Request<pb::KeypointsRequest>,
    ) -> Result<Response<pb::KeypointsResponse>, Status> {
        let started = std::time::Instant::now();
        let r = request.into_inner();
        let result = self.find(&r.version, r.shard_id).and_then(|loaded| keypoints_of(&r, &loaded.shard));
        metrics::call("index_node", "Keypoints", metrics::code_of(&result), started);
        result.map(Response::new)
    }

    async fn info(&self, _request: Request<pb::ShardInfoRequest>) -> Result<Response<pb::ShardInfo>, Status> {
        let shards = self.read();
        let mut info = pb::ShardInfo {
            shard_id: self.static_shard.unwrap_or_default(),
            serving: shards.loaded.keys().map(key_text).collect(),
            ..Default::default()
        };
        let described = match self.static_shard {
            Some(id) => shards.loaded.get(&(String::new(), id)),
            None => shards.loaded.values().next(),
        };
        if let Some(l) = described {
            let shard_info = l.shard.info();
            info.shard_id = shard_info.shard_id;
            info.shard_count = l.manifest.shards;
            info.spec = l.manifest.spec.clone();
            info.descriptor_fingerprint = l.manifest.descriptor_fingerprint.clone();
            info.codebooks_fingerprint = l.manifest.codebooks_fingerprint.clone();
            info.live_images = l.shard.live_images() as u64;
            info.live_descriptors = l.shard.live_vectors() as u64;
            info.ready = true;
        }
        Ok(Response::new(info))
    }
}

impl IndexNodeService {
    async fn search_shard(
        &self,
        request: Request<pb::ShardSearchRequest>,
    ) -> Result<Response<pb::ShardSearchResponse>, Status> {
        let r = request.into_inner();
        let loaded = self.find(&r.version, r.shard_id)?;
        let span = tracing::debug_span!("shard_search", request_id = %r.request_id, shard = r.shard_id);
        let _enter = span.enter();
        let kernel = self.kernel;
        let started = std::time::Instant::now();
        let response = tokio::task::spawn_blocking(move || {
            let params = check_request(&r, &loaded)?;
            let shard = &loaded.shard;
            let dim = r.dim as usize;
            let lists = if shard.live_vectors() == 0 {
                vec![Vec::new(); r.descriptors.len() / dim]
            } else {
                let probes = (!r.probes.is_empty()).then_some(r.probes.as_slice());
                delf_index::search_probed(&[shard], &r.descriptors, dim, probes, &params, kernel)
                    .map_err(|e| crate::convert::index_status(&e))?
            };
            if r.compact {
                let compact = Some(crate::compact::encode(&lists));
                return Ok(pb::ShardSearchResponse { shard_id: r.shard_id, compact, ..Default::default() });
            }
            let mut images = FxHashMap::default();
            let lists = lists
                .into_iter()
                .map(|list| pb::NeighborList {
                    neighbors: list
                        .into_iter()
                        .map(|n| {
                            images.entry(n.image).or_insert_with(|| shard.image(n.image).map(|e| e.name.clone()));
                            let [x, y, _] = if r.without_keypoints {
                                [0.0; 3]
                            } else {
                                shard.keypoint(n.image, n.feature).unwrap_or([f32::NAN; 3])
                            };
                            pb::Neighbor { image: n.image, feature: u32::from(n.feature), distance: n.distance, x, y }
                        })
                        .collect(),
                })
                .collect();
            let images =
                images.into_iter().map(|(image, id)| pb::ImageRef { image, id: id.unwrap_or_default() }).collect();
            Ok::<_, Status>(pb::ShardSearchResponse { shard_id: r.shard_id, lists, images, compact: None })
        })
        .await
        .map_err(|e| Status::internal(format!("search task failed: {e}")))??;
        tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "shard searched");
        Ok(Response::new(response))
    }
}

/// Serves shard `opts.shard_id` on `listen` until SIGTERM / Ctrl-C: health NOT_SERVING while loading, SERVING once
/// loaded. A shard that cannot be loaded stops the node with the error.
pub async fn serve(listen: &str, opts: IndexNodeOptions, security: &Security) -> Result<(), ClusterError> {
    let incoming = delf_rpc::addr::bind(listen)?;
    let service = IndexNodeService::new(opts.shard_id);
    metrics::set(READY, READY_HELP, &[("shard", opts.shard_id.to_string().as_str()), ("version", "")], 0.0);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_not_serving::<IndexNodeServer<IndexNodeService>>().await;
    tracing::info!(addr = %listen, shard = opts.shard_id, index = %opts.index, "index node listening; loading");
    let loader = {
        let service = service.clone();
        async move {
            service.load(&opts).await?;
            reporter.set_serving::<IndexNodeServer<IndexNodeService>>().await;
            Ok::<_, ClusterError>(())
        }
    };
    let server = delf_rpc::server::builder(security)?
        .add_service(health)
        .add_service(delf_rpc::server::reflection()?)
        .add_service(service.into_server(security.auth()))
        .serve_with_incoming_shutdown(incoming, delf_rpc::server::shutdown_signal());
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return Ok(r?),
        r = loader => r?,
    }
    Ok(server.await?)
}

/// Serves an assignable node (Raft-managed cluster) on `listen` until SIGTERM / Ctrl-C: health SERVING from the
/// start (the node is alive; coordinators route to a shard only once the node reported it loaded), shards loaded
/// and unloaded as assigned (`delf-meta`'s agent calls [`IndexNodeService::load_shard`] and
/// [`IndexNodeService::unload`]).
pub async fn serve_assignable(
    listen: &str,
    service: IndexNodeService,
    security: &Security,
) -> Result<(), ClusterError> {
    let incoming = delf_rpc::addr::bind(listen)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<IndexNodeServer<IndexNodeService>>().await;
    tracing::info!(addr = %listen, "index node listening; shards follow the assignment");
    delf_rpc::server::builder(security)?
        .add_service(health)
        .add_service(delf_rpc::server::reflection()?)
        .add_service(service.into_server(security.auth()))
        .serve_with_incoming_shutdown(incoming, delf_rpc::server::shutdown_signal())
        .await?;
    Ok(())
}
