//! The coordinator: the cluster's entry point. A query's descriptors (extracted on a worker when the client sends
//! a photo) go to one replica of every shard at once; a replica that fails or is slower than
//! `cluster.shard_timeout_ms` is replaced by the next replica of its shard, within the query's deadline. The
//! per-shard top-K lists are merged into the global top-K per query descriptor (the same total order as one
//! process, so the same lists), votes are counted per image, the correspondences of the best-voted candidates are
//! built from their keypoints, fetched from the shards in a second, small round (neighbours come without
//! keypoints), and verification is split into batches spread over the workers
//! (a failed batch is retried on another worker). Ranking is `delf_search::rank`: answers equal `delf search`.
//! A photo whose upright search finds too little is searched again at the configured rotations
//! (`RetrievalConfig::rotations`): a worker extracts the rotated passes, only their descriptors are searched, and
//! every candidate is verified again with the whole query, as `delf search` does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use delf_core::FeatureSet;
use delf_index::{Neighbor, merge_cut_lists};
use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1 as pb;
use delf_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use delf_proto::v1::index_node_client::IndexNodeClient;
use delf_proto::v1::worker_client::WorkerClient;
use delf_search::{IndexManifest, RetrievalConfig, VerifiedImage, candidate_points, correspondences, rank, vote};
use delf_verify::{FittedModel, Point};
use futures::future::join_all;
use rustc_hash::{FxHashMap, FxHashSet};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::cells::CellAssigner;
use crate::config::{ClusterConfig, ShardFailurePolicy, ShardReplicas};
use crate::error::ClusterError;
use delf_rpc::BearerAuth;
use delf_rpc::Security;
use delf_rpc::client;
use delf_rpc::failover::{self, Attempt, Event, Failure, Retry};
use delf_rpc::metrics;

struct Replica {
    addr: String,
    client: IndexNodeClient<Channel>,
}

impl failover::Endpoint for Replica {
    fn addr(&self) -> &str {
        &self.addr
    }
}

struct ShardRoute {
    id: u32,
    replicas: Vec<Replica>,
    // Rotates the first replica tried, spreading load over replicas.
    next: AtomicUsize,
}

struct WorkerEndpoint {
    addr: String,
    client: WorkerClient<Channel>,
    channel: Channel,
}

impl failover::Endpoint for WorkerEndpoint {
    fn addr(&self) -> &str {
        &self.addr
    }
}

/// Which index version the coordinator serves and who serves it: from `[cluster]` (static membership) or from the
/// Raft-replicated metadata (`delf-meta`), replaced whole when it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The index version's name (empty for the static index of `[cluster]`), sent with every shard search.
    pub version: String,
    /// The version's manifest.
    pub manifest: IndexManifest,
    /// Every shard of the version and the nodes serving it (shards `0..manifest.shards`; a shard with no replica
    /// is answered as missing, per the failure policy).
    pub shards: Vec<ShardReplicas>,
    /// `host:port` of every worker.
    pub workers: Vec<String>,
}

/// A topology with its clients; a query keeps the one it started with to the end.
struct Routing {
    version: String,
    shards: Vec<ShardRoute>,
    workers: Vec<WorkerEndpoint>,
    manifest: IndexManifest,
    retrieval: RetrievalConfig,
    /// The version's centroids, fetched once: every query's cells are assigned here, once for all shards.
    cells: CellAssigner,
}

struct Inner {
    routing: RwLock<Option<Arc<Routing>>>,
    channels: client::Channels,
    next_worker: AtomicUsize,
    retrieval: RetrievalConfig,
    config: ClusterConfig,
    security: Security,
}

/// The Coordinator service.
#[derive(Clone)]
pub struct CoordinatorService {
    inner: Arc<Inner>,
}

/// A shard's answer, decoded and checked. Ids stay as they came: the coordinator looks up only those of the
/// candidates it verifies. Neighbours come without keypoints: those of the verified candidates' correspondences are
/// fetched in a second round ([`CoordinatorService::locate`]).
struct ShardAnswer {
    lists: Vec<Vec<Neighbor>>,
    ids: Vec<pb::ImageRef>,
}

/// What the second round asks one shard for: keypoints of (image, feature) pairs, and ids of images.
#[derive(Clone, Default)]
struct Wanted {
    keypoints: Vec<(u32, u16)>,
    ids: Vec<u32>,
}

impl Wanted {
    fn is_empty(&self) -> bool {
        self.keypoints.is_empty() && self.ids.is_empty()
    }
}

enum ShardOutcome<T> {
    Answer(T),
    /// No replica answered: what each said.
    Down(Vec<String>),
}

/// What every round of one query works under: the index version it started on, its settings, what a missing shard
/// does, its id in logs and calls, and when it must be answered.
#[derive(Clone, Copy)]
struct QueryScope<'a> {
    routing: &'a Routing,
    rc: &'a RetrievalConfig,
    policy: ShardFailurePolicy,
    request_id: &'a str,
    deadline: Instant,
}

/// What the shards answered for one query, over its stages (upright, then rotated passes).
#[derive(Default)]
struct Gathered {
    /// The global top-K per query descriptor, in query descriptor order.
    neighbors: Vec<Vec<Neighbor>>,
    /// Keypoints `(x, y, scale)` fetched so far, by (image, feature): those of the verified candidates'
    /// correspondences (scale NaN where the shard stores none).
    keypoints: FxHashMap<(u32, u16), [f32; 3]>,
    /// Where a shard's cut answer may have left neighbours out of a list: (list, shard) -> the squared distance
    /// from which that shard's unlisted neighbours lie (`delf_index::shard_cut`).
    cuts: FxHashMap<(u32, u32), f32>,
    /// The ids of the images the shards named (in the keypoints round, for compact answers).
    ids: Vec<pb::ImageRef>,
    /// Time spent merging, building correspondences and ranking.
    merge: Duration,
}

impl CoordinatorService {
    /// A coordinator for the index described by `manifest`, with the cluster's static membership and the default
    /// retrieval settings (`retrieval.search` should be the manifest's).
    pub fn new(
        config: &ClusterConfig,
        manifest: IndexManifest,
        retrieval: RetrievalConfig,
    ) -> Result<Self, ClusterError> {
        config.validate_for_coordinator()?;
        let this = Self::without_topology(config, retrieval)?;
        let topology = Topology {
            version: String::new(),
            manifest,
            shards: config.shards.clone(),
            workers: config.workers.clone(),
        };
        this.set_topology(topology)?;
        Ok(this)
    }

    /// A coordinator whose topology comes later ([`Self::set_topology`]); until then searches get UNAVAILABLE.
    /// `retrieval.search` is replaced by each topology's manifest.
    pub fn without_topology(config: &ClusterConfig, retrieval: RetrievalConfig) -> Result<Self, ClusterError> {
        config.validate_membership()?;
        let security = config.security()?;
        let inner = Inner {
            routing: RwLock::new(None),
            channels: client::Channels::new(Duration::from_millis(config.connect_timeout_ms), &security),
            next_worker: AtomicUsize::new(0),
            retrieval,
            config: config.clone(),
            security,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Serves `topology` from now on; queries already running finish on the one they started with.
    pub fn set_topology(&self, topology: Topology) -> Result<(), ClusterError> {
        let routing = self.inner.routing_for(topology)?;
        tracing::info!(
            version = %routing.version,
            shards = routing.shards.len(),
            workers = routing.workers.len(),
            spec = %routing.manifest.spec,
            "serving topology"
        );
        *self.inner.routing.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(routing));
        Ok(())
    }

    /// The version served now (None before the first topology).
    pub fn version(&self) -> Option<String> {
        self.inner.current().ok().map(|r| r.version.clone())
    }

    /// The gRPC service with message limits and the token check.
    pub fn into_server(self, auth: BearerAuth) -> InterceptedService<CoordinatorServer<Self>, BearerAuth> {
        let server = CoordinatorServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        InterceptedService::new(server, auth)
    }
}

const HEDGED: &str = "delf_hedged_requests_total";

fn decode_shard(r: pb::ShardSearchResponse, shard: u32, count: u32, nq: usize) -> Result<ShardAnswer, String> {
    if r.shard_id != shard {
        return Err(format!("answered shard {} instead of {shard}", r.shard_id));
    }
    if let Some(compact) = r.compact {
        let lists = crate::compact::decode(compact, nq, |image| image % count == shard)?;
        return Ok(ShardAnswer { lists, ids: r.images });
    }
    if r.lists.len() != nq {
        return Err(format!("answered shard {} with {} lists for {nq} query descriptors", r.shard_id, r.lists.len()));
    }
    let mut lists = Vec::with_capacity(nq);
    for list in r.lists {
        let mut out = Vec::with_capacity(list.neighbors.len());
        for n in list.neighbors {
            let feature = u16::try_from(n.feature).map_err(|_| format!("feature number {} out of range", n.feature))?;
            if n.image % count != shard || !n.distance.is_finite() {
                return Err(format!(
                    "neighbour image {} distance {} does not belong to this shard",
                    n.image, n.distance
                ));
            }
            out.push(Neighbor { distance: n.distance, image: n.image, feature });
        }
        lists.push(out);
    }
    Ok(ShardAnswer { lists, ids: r.images })
}

/// A shard none of whose replicas answered: the query fails (`policy` Fail) or its answer is marked degraded with
/// the shard missing.
fn shard_down(
    shard: u32,
    errors: &[String],
    policy: ShardFailurePolicy,
    request_id: &str,
    response: &mut pb::SearchResponse,
) -> Result<(), Status> {
    let errors_text = errors.join("; ");
    tracing::error!(%request_id, shard, errors = %errors_text, "no replica answered");
    if policy == ShardFailurePolicy::Fail {
        return Err(Status::unavailable(format!("no replica of shard {shard} answered: {errors_text}")));
    }
    response.degraded = true;
    if !response.missing_shards.contains(&shard) {
        response.missing_shards.push(shard);
    }
    Ok(())
}

/// Refuses query features of another model than the index's.
fn check_fingerprint(routing: &Routing, features: &FeatureSet) -> Result<(), Status> {
    if features.fingerprint.as_str() != routing.manifest.descriptor_fingerprint {
        return Err(Status::failed_precondition(format!(
            "the query's descriptors are {}, the index holds {}",
            features.fingerprint, routing.manifest.descriptor_fingerprint
        )));
    }
    Ok(())
}

/// Counts the protobuf bytes of a message the coordinator `direction` ("sent" or "received") to or from `peer`
/// ("client", "index_node" or "worker"): the traffic a query causes, without gRPC and HTTP/2 framing.
fn traffic(peer: &str, direction: &str, message: &impl delf_proto::prost::Message) {
    metrics::count(
        "delf_coordinator_message_bytes_total",
        "Protobuf bytes of the messages the coordinator sent and received, by peer (without gRPC framing)",
        &[("peer", peer), ("direction", direction)],
        message.encoded_len() as f64,
    );
}

fn model_from_pb(m: &[f64]) -> Option<FittedModel> {
    match m.len() {
        6 => Some(FittedModel::Affine { m: m.try_into().ok()? }),
        9 => Some(FittedModel::Homography { h: m.try_into().ok()? }),
        _ => None,
    }
}

fn xy(points: &[Point]) -> Vec<f32> {
    points.iter().flat_map(|p| [p.x as f32, p.y as f32]).collect()
}

impl Inner {
    fn token(&self) -> Option<&str> {
        self.security.token()
    }

    fn current(&self) -> Result<Arc<Routing>, Status> {
        self.routing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Status::unavailable("no index version is active yet (delf cluster activate)"))
    }

    fn routing_for(&self, t: Topology) -> Result<Routing, ClusterError> {
        let ids: Vec<u32> = t.shards.iter().map(|s| s.id).collect();
        if ids.len() != t.manifest.shards as usize || (0..t.manifest.shards).any(|i| !ids.contains(&i)) {
            return Err(ClusterError::Config(format!(
                "the topology of version {:?} lists shards {ids:?}, the index has {}",
                t.version, t.manifest.shards
            )));
        }
        if t.workers.is_empty() {
            return Err(ClusterError::Config("no workers (verification runs on workers)".into()));
        }
        let mut shards: Vec<ShardRoute> = t
            .shards
            .iter()
            .map(|s| {
                let replicas = s
                    .replicas
                    .iter()
                    .map(|a| Ok(Replica { addr: a.clone(), client: client::index_node(self.channels.get(a)?) }))
                    .collect::<Result<_, ClusterError>>()?;
                Ok(ShardRoute { id: s.id, replicas, next: AtomicUsize::new(0) })
            })
            .collect::<Result<_, ClusterError>>()?;
        shards.sort_by_key(|s| s.id);
        let workers = t
            .workers
            .iter()
            .map(|a| {
                let channel = self.channels.get(a)?;
                Ok(WorkerEndpoint { addr: a.clone(), client: client::worker(channel.clone()), channel })
            })
            .collect::<Result<_, ClusterError>>()?;
        let mut retrieval = self.retrieval.clone();
        retrieval.search = t.manifest.search;
        Ok(Routing { version: t.version, shards, workers, manifest: t.manifest, retrieval, cells: CellAssigner::new() })
    }

    /// Searches one shard: [`Self::on_replicas`] with the search and a check of the answer.
    async fn search_shard(
        &self,
        shard_count: u32,
        shard: &ShardRoute,
        request: &pb::ShardSearchRequest,
        request_id: &str,
        deadline: Instant,
    ) -> Result<ShardOutcome<ShardAnswer>, Status> {
        let nq = request.descriptors.len() / request.dim.max(1) as usize;
        self.on_replicas(shard, request_id, deadline, |mut node, t| async move {
            let mut message = request.clone();
            message.shard_id = shard.id;
            traffic("index_node", "sent", &message);
            let call = client::request(message, request_id, self.token(), t);
            match node.search(call).await {
                Ok(r) => {
                    traffic("index_node", "received", r.get_ref());
                    match decode_shard(r.into_inner(), shard.id, shard_count, nq) {
                        Ok(answer) => Attempt::Answer(answer),
                        Err(e) => Attempt::Failed(format!("bad answer: {e}")),
                    }
                }
                Err(s) => Retry::Read.classify(s, t),
            }
        })
        .await
    }

    /// Calls one replica of `shard` after another (starting at a rotating one) until one answers within its time
    /// (`cluster.shard_timeout_ms`, within the query's deadline); with `cluster.hedge_after_ms`, the next replica is
    /// also asked when the current one is slower than that, and the first good answer wins (`delf_rpc::failover`,
    /// [`Retry::Read`]). `call` gets a replica's client and its time and says how the try ended: an
    /// [`Attempt::Stop`] (a request no replica would accept) fails the query at once.
    async fn on_replicas<T, F, Fut>(
        &self,
        shard: &ShardRoute,
        request_id: &str,
        deadline: Instant,
        call: F,
    ) -> Result<ShardOutcome<T>, Status>
    where
        F: Fn(IndexNodeClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        if shard.replicas.is_empty() {
            return Ok(ShardOutcome::Down(vec!["no replica has it loaded (none ready in the routing)".into()]));
        }
        let policy = failover::Policy {
            hedge_after: self.config.hedge_after_ms.map(Duration::from_millis),
            ..failover::Policy::once(Duration::from_millis(self.config.shard_timeout_ms), Retry::Read)
        };
        let first = shard.next.fetch_add(1, Ordering::Relaxed);
        let observe = |replica: &Replica, event: Event<'_>| {
            let shard_label = shard.id.to_string();
            match event {
                Event::Failed(error) => {
                    tracing::warn!(
                        %request_id, shard = shard.id, replica = %replica.addr, %error,
                        "replica failed; trying the next one"
                    );
                    let labels = [("shard", shard_label.as_str()), ("replica", replica.addr.as_str())];
                    metrics::count(
                        "delf_replica_failures_total",
                        "Replica calls that failed or timed out (then the next replica was tried)",
                        &labels,
                        1.0,
                    );
                }
                Event::Hedged => {
                    let labels = [("shard", shard_label.as_str())];
                    metrics::count(HEDGED, "Second replicas asked because the first was slow", &labels, 1.0);
                }
            }
        };
        let answer =
            failover::call(&shard.replicas, first, deadline, &policy, observe, |r, t| call(r.client.clone(), t)).await;
        match answer {
            Ok(answer) => Ok(ShardOutcome::Answer(answer)),
            Err(Failure::Stopped(s)) => Err(s),
            Err(f) => Ok(ShardOutcome::Down(f.lines())),
        }
    }

    /// Calls workers one after another (starting at the next in rotation) until one answers
    /// (`delf_rpc::failover`, [`Retry::Read`]). `work` is how many extractions' (or verification batches') worth
    /// the call is: each try may take `worker_timeout_ms` per unit.
    async fn on_workers<T, F, Fut>(
        &self,
        workers: &[WorkerEndpoint],
        what: &str,
        request_id: &str,
        deadline: Instant,
        work: u32,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(WorkerClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let per_try = Duration::from_millis(self.config.worker_timeout_ms) * work.max(1);
        let policy = failover::Policy::once(per_try, Retry::Read);
        let first = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let observe = |w: &WorkerEndpoint, event: Event<'_>| {
            if let Event::Failed(error) = event {
                tracing::warn!(%request_id, worker = %w.addr, %error, "{what} failed on a worker; trying another");
                let labels = [("worker", w.addr.as_str()), ("call", what)];
                metrics::count(
                    "delf_worker_failures_total",
                    "Worker calls that failed or timed out (then another worker was tried)",
                    &labels,
                    1.0,
                );
            }
        };
        let answer = failover::call(workers, first, deadline, &policy, observe, |w, t| {
            let fut = call(w.client.clone(), t);
            async move { policy.retry.judge(fut.await, t) }
        })
        .await;
        match answer {
            Ok(answer) => Ok(answer),
            Err(Failure::Stopped(s)) => Err(s),
            Err(Failure::Exhausted { errors, deadline_passed: true }) if errors.is_empty() => {
                Err(Status::deadline_exceeded("the query's deadline passed"))
            }
            Err(f) => Err(Status::unavailable(format!("{what} failed on every worker: {}", f.summary()))),
        }
    }

    /// The query's features: as the client sent them, or extracted by a worker from its photo.
    async fn query_features(
        &self,
        routing: &Routing,
        query: Option<pb::search_request::Query>,
        id: &str,
        deadline: Instant,
    ) -> Result<FeatureSet, Status> {
        match query {
            Some(pb::search_request::Query::Features(f)) => {
                let features = crate::convert::features_from_pb(f)?;
                check_fingerprint(routing, &features)?;
                Ok(features)
            }
            Some(pb::search_request::Query::Image(bytes)) => {
                if bytes.is_empty() {
                    return Err(Status::invalid_argument("the query image is empty"));
                }
                Ok(self.extract(routing, bytes, &[], id, deadline).await?.0)
            }
            None => Err(Status::invalid_argument("the request has neither an image nor features")),
        }
    }

    /// The features of the photo's rotated passes, in the order of `rotations`, and the number of features of each
    /// pass: split into one contiguous group per worker (at most), extracted in parallel, concatenated in order
    /// (each pass is extracted on its own, so the result is what one worker would give for all of them).
    async fn rotated_features(
        &self,
        routing: &Routing,
        bytes: Vec<u8>,
        rotations: &[f64],
        id: &str,
        deadline: Instant,
    ) -> Result<(FeatureSet, Vec<usize>), Status> {
        let groups = routing.workers.len().clamp(1, rotations.len().max(1));
        let per_group = rotations.len().div_ceil(groups).max(1);
        let parts =
            join_all(rotations.chunks(per_group).map(|g| self.extract(routing, bytes.clone(), g, id, deadline))).await;
        let mut parts = parts.into_iter();
        let (mut all, mut passes) = parts.next().ok_or_else(|| Status::internal("no rotation to extract"))??;
        for part in parts {
            let (features, lengths) = part?;
            passes.extend(lengths);
            all.extend(features).map_err(|e| Status::internal(format!("rotated passes do not fit together: {e}")))?;
        }
        Ok((all, passes))
    }

    /// A worker's extraction of `bytes` (upright, or the passes at `rotations`), checked against the index, with the
    /// number of features of each pass (one pass when the worker does not say: an older worker, or upright).
    async fn extract(
        &self,
        routing: &Routing,
        bytes: Vec<u8>,
        rotations: &[f64],
        id: &str,
        deadline: Instant,
    ) -> Result<(FeatureSet, Vec<usize>), Status> {
        let request = pb::ExtractRequest {
            request_id: id.to_string(),
            image: bytes,
            descriptor_fingerprint: routing.manifest.descriptor_fingerprint.clone(),
            rotations: rotations.to_vec(),
        };
        let work = rotations.len().max(1) as u32;
        let answer = self
            .on_workers(&routing.workers, "extraction", id, deadline, work, |mut c, t| {
                let r = client::request(request.clone(), id, self.token(), t);
                traffic("worker", "sent", &request);
                async move {
                    let answer = c.extract(r).await;
                    answer.inspect(|a| traffic("worker", "received", a.get_ref()))
                }
            })
            .await?;
        let features =
            answer.features.ok_or_else(|| Status::internal("a worker answered an extraction without features"))?;
        let features = crate::convert::features_from_pb(features)?;
        check_fingerprint(routing, &features)?;
        let mut passes: Vec<usize> = answer.pass_lengths.iter().map(|&n| n as usize).collect();
        if passes.is_empty() {
            passes.push(features.len());
        }
        delf_search::check_passes(&passes, features.len())
            .map_err(|e| Status::internal(format!("a worker's extraction: {e}")))?;
        Ok((features, passes))
    }

    fn settings(&self, routing: &Routing, r: &pb::SearchRequest) -> (RetrievalConfig, ShardFailurePolicy, Duration) {
        let mut rc = routing.retrieval.clone();
        if r.top > 0 {
            rc.top = r.top as usize;
        }
        if r.candidates > 0 {
            rc.candidates = r.candidates as usize;
        }
        if r.nprobe > 0 {
            rc.search.nprobe = r.nprobe as usize;
        }
        if let Some(m) = r.min_inliers {
            rc.verify.policy.min_inliers = m as usize;
        }
        let policy = match r.on_shard_failure() {
            pb::ShardFailurePolicy::Unspecified => self.config.on_shard_failure,
            pb::ShardFailurePolicy::Partial => ShardFailurePolicy::Partial,
            pb::ShardFailurePolicy::Fail => ShardFailurePolicy::Fail,
        };
        let deadline =
            if r.deadline_ms > 0 { Duration::from_millis(u64::from(r.deadline_ms)) } else { self.config.deadline() };
        (rc, policy, deadline)
    }

    /// Searches `descriptors` (rows of `dim`) on one replica of every shard: the global top-K per descriptor, and
    /// the shards' keypoints and image ids added to `gathered`. A shard with no answering replica fails the query
    /// or marks the answer degraded, per `policy`.
    async fn fan_out(
        &self,
        scope: &QueryScope<'_>,
        descriptors: &[f32],
        dim: usize,
        response: &mut pb::SearchResponse,
        gathered: &mut Gathered,
    ) -> Result<(), Status> {
        let QueryScope { routing, rc, policy, request_id, deadline } = *scope;
        let nq = descriptors.len() / dim.max(1);
        if nq == 0 {
            return Ok(());
        }
        let fetch = self.fetch_coarse(routing, request_id, deadline);
        let probes = routing.cells.probes(fetch, descriptors, dim, rc.search.nprobe, request_id).await;
        let count = routing.manifest.shards;
        // Each shard answers only as many neighbours per descriptor as can plausibly enter the global top-K.
        let k_part = delf_index::shard_k(rc.search.k, count as usize, self.config.shard_answer_loss);
        let request = pb::ShardSearchRequest {
            request_id: request_id.to_string(),
            shard_id: 0,
            descriptor_fingerprint: routing.manifest.descriptor_fingerprint.clone(),
            dim: dim as u32,
            descriptors: descriptors.to_vec(),
            k: k_part as u32,
            nprobe: rc.search.nprobe as u32,
            max_distance: rc.search.max_distance,
            version: routing.version.clone(),
            probes,
            without_keypoints: true,
            compact: true,
        };
        let outcomes =
            join_all(routing.shards.iter().map(|s| self.search_shard(count, s, &request, request_id, deadline))).await;
        let merge_started = Instant::now();
        let (mut parts, mut answered) = (Vec::new(), Vec::new());
        for (shard, outcome) in routing.shards.iter().zip(outcomes) {
            match outcome? {
                ShardOutcome::Answer(a) => {
                    parts.push(a.lists);
                    answered.push(shard.id);
                    gathered.ids.extend(a.ids);
                }
                ShardOutcome::Down(errors) => shard_down(shard.id, &errors, policy, request_id, response)?,
            }
        }
        let offset = gathered.neighbors.len() as u32;
        if parts.is_empty() {
            gathered.neighbors.extend(vec![Vec::new(); nq]);
        } else {
            let (lists, cuts) = merge_cut_lists(parts, rc.search.k, k_part);
            gathered.neighbors.extend(lists);
            gathered.cuts.extend(cuts.iter().map(|c| ((offset + c.list, answered[c.part as usize]), c.distance)));
        }
        gathered.merge += merge_started.elapsed();
        Ok(())
    }

    /// The index's centroids from the first shard with a replica that hands them out ([`Self::on_replicas`]),
    /// within `cluster.connect_timeout_ms` (at least 1 s) of the query's time, so that a query never waits long for
    /// what is only a saving.
    async fn fetch_coarse(
        &self,
        routing: &Routing,
        request_id: &str,
        deadline: Instant,
    ) -> Result<delf_index::CoarseQuantizer, String> {
        let deadline = deadline.min(Instant::now() + Duration::from_millis(self.config.connect_timeout_ms.max(1000)));
        let fingerprint = routing.manifest.codebooks_fingerprint.as_str();
        let mut errors = Vec::new();
        for shard in &routing.shards {
            let request = &pb::CodebooksRequest { version: routing.version.clone(), shard_id: shard.id };
            let outcome = self.on_replicas(shard, request_id, deadline, |mut node, t| async move {
                let call = client::request(request.clone(), request_id, self.token(), t);
                traffic("index_node", "sent", request);
                match node.codebooks(call).await {
                    Ok(r) => {
                        traffic("index_node", "received", r.get_ref());
                        crate::cells::decode(r.into_inner(), fingerprint).map_or_else(Attempt::Failed, Attempt::Answer)
                    }
                    // Any refusal here only means this shard's codebooks are not to be had: try the next one.
                    Err(s) => Attempt::Failed(failover::describe(&s, t)),
                }
            });
            match outcome.await {
                Ok(ShardOutcome::Answer(q)) => return Ok(q),
                Ok(ShardOutcome::Down(e)) => errors.extend(e),
                Err(s) => errors.push(s.message().to_string()),
            }
        }
        Err(errors.join("; "))
    }

    /// The second round of a query: fetches, from one replica of each shard concerned, the keypoints of the
    /// candidates' putative correspondences that are not known yet. A shard none of whose replicas answers fails
    /// the query or leaves its candidates unverifiable (answer degraded), per `policy`.
    async fn locate(
        &self,
        scope: &QueryScope<'_>,
        candidates: &[(u32, usize)],
        matches: &std::collections::HashMap<u32, Vec<delf_verify::Match>>,
        gathered: &mut Gathered,
        response: &mut pb::SearchResponse,
    ) -> Result<(), Status> {
        let QueryScope { routing, policy, request_id, deadline, .. } = *scope;
        let count = routing.manifest.shards;
        let mut wanted: Vec<Wanted> = vec![Wanted::default(); routing.shards.len()];
        for (&image, putative) in matches {
            for m in putative {
                let Ok(feature) = u16::try_from(m.train) else { continue };
                if !gathered.keypoints.contains_key(&(image, feature)) {
                    wanted[(image % count) as usize].keypoints.push((image, feature));
                }
            }
        }
        let known: FxHashSet<u32> = gathered.ids.iter().map(|r| r.image).collect();
        for &(image, _) in candidates.iter().filter(|(image, _)| !known.contains(image)) {
            wanted[(image % count) as usize].ids.push(image);
        }
        let calls = routing.shards.iter().zip(&mut wanted).filter(|(_, w)| !w.is_empty()).map(|(shard, w)| {
            w.keypoints.sort_unstable();
            w.keypoints.dedup();
            let w = &*w;
            async move { (shard, w, self.keypoints_from(routing, shard, w, request_id, deadline).await) }
        });
        for (shard, w, outcome) in join_all(calls).await {
            match outcome? {
                ShardOutcome::Answer(answer) => {
                    let scale = |i: usize| answer.scales.get(i).copied().unwrap_or(f32::NAN);
                    let points = w.keypoints.iter().zip(answer.xy.chunks_exact(2)).enumerate();
                    gathered.keypoints.extend(points.map(|(i, (&key, p))| (key, [p[0], p[1], scale(i)])));
                    gathered.ids.extend(answer.images.into_iter().filter(|r| w.ids.contains(&r.image)));
                }
                ShardOutcome::Down(errors) => shard_down(shard.id, &errors, policy, request_id, response)?,
            }
        }
        Ok(())
    }

    /// What `wanted` asks of one replica of `shard` ([`Self::on_replicas`]): `x, y` per keypoint, and ids.
    async fn keypoints_from(
        &self,
        routing: &Routing,
        shard: &ShardRoute,
        wanted: &Wanted,
        request_id: &str,
        deadline: Instant,
    ) -> Result<ShardOutcome<pb::KeypointsResponse>, Status> {
        let pairs = &wanted.keypoints;
        let request = &pb::KeypointsRequest {
            request_id: request_id.to_string(),
            version: routing.version.clone(),
            shard_id: shard.id,
            images: pairs.iter().map(|p| p.0).collect(),
            features: pairs.iter().map(|p| u32::from(p.1)).collect(),
            id_images: wanted.ids.clone(),
        };
        self.on_replicas(shard, request_id, deadline, |mut node, t| async move {
            let call = client::request(request.clone(), request_id, self.token(), t);
            traffic("index_node", "sent", request);
            let answer = node.keypoints(call).await;
            if let Ok(r) = &answer {
                traffic("index_node", "received", r.get_ref());
            }
            match answer {
                Ok(r) if r.get_ref().xy.len() == 2 * pairs.len() => Attempt::Answer(r.into_inner()),
                Ok(r) => Attempt::Failed(format!(
                    "bad answer: {} values for {} keypoints",
                    r.get_ref().xy.len(),
                    pairs.len()
                )),
                Err(s) => Retry::Read.classify(s, t),
            }
        })
        .await
    }

    /// Votes over the gathered neighbours, builds the correspondences of the best-voted candidates, fetches their
    /// keypoints ([`Self::locate`]), has the workers verify them (batches spread over workers) and ranks them:
    /// `delf_search::rank`, as one process does.
    async fn verify_and_rank(
        &self,
        scope: &QueryScope<'_>,
        query: &FeatureSet,
        passes: &[usize],
        gathered: &mut Gathered,
        response: &mut pb::SearchResponse,
    ) -> Result<(Vec<VerifiedImage>, usize), Status> {
        let QueryScope { routing, rc, request_id, deadline, .. } = *scope;
        let t = Instant::now();
        let candidates = vote(&gathered.neighbors, rc.candidates);
        let wanted: FxHashSet<u32> = candidates.iter().map(|&(image, _)| image).collect();
        let count = routing.manifest.shards;
        let cuts = &gathered.cuts;
        let unseen = |q: usize, image: u32| cuts.get(&(q as u32, image % count)).copied().unwrap_or(f32::INFINITY);
        let matches = correspondences(&gathered.neighbors, &wanted, passes, rc, unseen);
        gathered.merge += t.elapsed();
        self.locate(scope, &candidates, &matches, gathered, response).await?;
        let t = Instant::now();
        let keypoints = &gathered.keypoints;
        let mut ids: FxHashMap<u32, String> = FxHashMap::default();
        ids.extend(gathered.ids.iter().filter(|r| wanted.contains(&r.image)).map(|r| (r.image, r.id.clone())));
        let mut pending: Vec<(VerifiedImage, pb::Candidate)> = Vec::with_capacity(candidates.len());
        for &(image, votes) in &candidates {
            let Some(id) = ids.get(&image) else { continue };
            if response.missing_shards.contains(&(image % count)) {
                // Its shard did not hand out the keypoints: it cannot be verified in this answer (degraded).
                continue;
            }
            let putative = matches.get(&image).map_or(&[][..], Vec::as_slice);
            let kp = |f: u32| {
                u16::try_from(f).ok().and_then(|f| keypoints.get(&(image, f)).copied()).unwrap_or([f32::NAN; 3])
            };
            let (query_points, db_points, scale_ratios) = candidate_points(putative, query, kp);
            let candidate = pb::Candidate { image, query_xy: xy(&query_points), db_xy: xy(&db_points), scale_ratios };
            let v = VerifiedImage {
                image,
                id: id.clone(),
                votes,
                score: 0,
                pass: delf_search::pass_of(putative, passes),
                model: None,
                query_points,
                db_points,
                inliers: Vec::new(),
            };
            pending.push((v, candidate));
        }
        gathered.merge += t.elapsed();
        let settings = crate::convert::verify_settings_to_pb(&rc.verify);
        let batches: Vec<pb::VerifyRequest> = pending
            .chunks(self.config.verify_batch)
            .map(|chunk| pb::VerifyRequest {
                request_id: request_id.to_string(),
                candidates: chunk.iter().map(|(_, c)| c.clone()).collect(),
                settings: Some(settings.clone()),
            })
            .collect();
        let verified = join_all(batches.iter().map(|b| {
            self.on_workers(&routing.workers, "verification", request_id, deadline, 1, |mut c, t| {
                let r = client::request(b.clone(), request_id, self.token(), t);
                traffic("worker", "sent", b);
                async move {
                    let answer = c.verify(r).await;
                    answer.inspect(|a| traffic("worker", "received", a.get_ref()))
                }
            })
        }))
        .await;
        let mut results = Vec::with_capacity(pending.len());
        let mut pending = pending.into_iter();
        for (batch, answer) in batches.iter().zip(verified) {
            let answer = answer?;
            if answer.results.len() != batch.candidates.len() {
                return Err(Status::internal("a worker answered a different number of candidates"));
            }
            for (res, (mut v, c)) in answer.results.into_iter().zip(pending.by_ref()) {
                if res.image != c.image || res.inlier.len() != v.query_points.len() {
                    return Err(Status::internal(format!("a worker's answer for image {} does not match", c.image)));
                }
                v.score = res.inlier.iter().filter(|&&b| b).count();
                v.model = model_from_pb(&res.model);
                v.inliers = res.inlier;
                results.push(v);
            }
        }
        let verified = results.len();
        let ranking = Instant::now();
        let ranked = rank(results, rc);
        gathered.merge += ranking.elapsed();
        Ok((ranked, verified))
    }

    async fn search(&self, r: pb::SearchRequest, request_id: String) -> Result<pb::SearchResponse, Status> {
        let started = Instant::now();
        // The version this query runs on to the end, even if another one is activated meanwhile.
        let routing = self.current()?;
        let (rc, policy, budget) = self.settings(&routing, &r);
        let deadline = started + budget;
        // A photo can be searched again at the rotations; features sent by the client cannot.
        let rotatable = match &r.query {
            Some(pb::search_request::Query::Image(bytes)) if !rc.rotations.is_empty() => Some(bytes.clone()),
            _ => None,
        };
        let mut query = self.query_features(&routing, r.query, &request_id, deadline).await?;
        let mut extract_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut response = pb::SearchResponse {
            request_id: request_id.clone(),
            version: routing.version.clone(),
            ..Default::default()
        };
        let (mut ann, mut verify) = (Duration::ZERO, Duration::ZERO);
        let mut gathered = Gathered::default();
        let mut outcome = None;

        let scope = QueryScope { routing: &routing, rc: &rc, policy, request_id: &request_id, deadline };

        // The upright query (unless every rotation is searched at once: `rotations_below` = 0).
        if rotatable.is_none() || rc.rotations_below > 0 {
            let t = Instant::now();
            self.fan_out(&scope, &query.descriptors, query.dim, &mut response, &mut gathered).await?;
            ann += t.elapsed();
            let t = Instant::now();
            let ranked = self.verify_and_rank(&scope, &query, &[], &mut gathered, &mut response).await?;
            verify += t.elapsed();
            outcome = Some(ranked);
        }
        // The rotated passes, extracted by a worker: only their descriptors are searched (the upright ones' lists
        // are kept), then every candidate is verified again with its best pass, as `delf search` does.
        let best = outcome.as_ref().map(|(ranked, _)| ranked.first().map(|v| v.score));
        if let Some(bytes) = rotatable
            && best.is_none_or(|b| rc.wants_rotations(b))
        {
            tracing::debug!(%request_id, upright_best = ?best.flatten(), rotations = rc.rotations.len(), "searching the rotated passes");
            let t = Instant::now();
            let (rotated, rotated_passes) =
                self.rotated_features(&routing, bytes, &rc.rotations, &request_id, deadline).await?;
            extract_ms += t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let offset = if outcome.is_some() { query.descriptors.len() } else { 0 };
            // The upright features lead the query whether or not they were searched alone first.
            let mut passes = vec![query.len()];
            passes.extend(rotated_passes);
            // One rotated pass's worth of descriptors per shard request, so that `shard_timeout_ms` keeps meaning
            // "slower than a query should take" (all passes at once would be several queries' worth).
            let per_request = rotated.len().div_ceil(rc.rotations.len()).max(1) * rotated.dim;
            query
                .extend(rotated)
                .map_err(|e| Status::internal(format!("the rotated passes do not fit the query: {e}")))?;
            let dim = query.dim;
            for chunk in query.descriptors[offset..].chunks(per_request) {
                self.fan_out(&scope, chunk, dim, &mut response, &mut gathered).await?;
            }
            ann += t.elapsed();
            let t = Instant::now();
            outcome = Some(self.verify_and_rank(&scope, &query, &passes, &mut gathered, &mut response).await?);
            verify += t.elapsed();
        }
        let (ranked, verified) = outcome.unwrap_or_default();
        response.verified = verified as u32;
        response.results = ranked
            .iter()
            .enumerate()
            .map(|(i, v)| pb::Match {
                image_id: v.id.clone(),
                score: v.score as u32,
                votes: v.votes as u32,
                rank: i as u32 + 1,
            })
            .collect();
        response.timing = Some(pb::Timing {
            extract_ms,
            ann_ms: ann.as_secs_f64() * 1e3,
            verify_ms: verify.as_secs_f64() * 1e3,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            merge_ms: gathered.merge.as_secs_f64() * 1e3,
        });
        Ok(response)
    }

    async fn status(&self) -> Result<pb::ClusterStatusResponse, Status> {
        let routing = self.current()?;
        let t = Duration::from_millis(self.config.connect_timeout_ms.max(1000));
        let id = client::new_request_id();
        let shards = join_all(routing.shards.iter().map(|s| async {
            let healthy = join_all(s.replicas.iter().map(|r| async {
                let mut node = r.client.clone();
                let call = node.info(client::request(pb::ShardInfoRequest {}, &id, self.token(), t));
                matches!(tokio::time::timeout(t, call).await, Ok(Ok(info)) if info.get_ref().ready)
            }))
            .await;
            pb::ShardStatus { shard_id: s.id, replicas: s.replicas.iter().map(|r| r.addr.clone()).collect(), healthy }
        }))
        .await;
        let workers_healthy = join_all(routing.workers.iter().map(|w| async {
            let mut health = tonic_health::pb::health_client::HealthClient::new(w.channel.clone());
            let req = tonic_health::pb::HealthCheckRequest { service: "delf.v1.Worker".into() };
            matches!(tokio::time::timeout(t, health.check(req)).await, Ok(Ok(r)) if r.get_ref().status == 1)
        }))
        .await;
        let m = &routing.manifest;
        Ok(pb::ClusterStatusResponse {
            index_spec: m.spec.clone(),
            descriptor_fingerprint: m.descriptor_fingerprint.clone(),
            shards,
            workers: routing.workers.iter().map(|w| w.addr.clone()).collect(),
            workers_healthy,
            shard_count: m.shards,
            images: m.images as u64,
            descriptors: m.descriptors as u64,
            version: routing.version.clone(),
        })
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn search(&self, request: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let started = Instant::now();
        let from_metadata = client::request_id_of(&request);
        let r = request.into_inner();
        traffic("client", "received", &r);
        let request_id = Some(r.request_id.clone())
            .filter(|s| !s.is_empty())
            .or(from_metadata)
            .unwrap_or_else(client::new_request_id);
        let span = tracing::info_span!("search", request_id = %request_id);
        let inner = Arc::clone(&self.inner);
        let result = inner.search(r, request_id.clone()).instrument(span).await;
        match &result {
            Ok(r) => tracing::info!(
                %request_id,
                results = r.results.len(),
                degraded = r.degraded,
                ms = r.timing.as_ref().map_or(0.0, |t| t.total_ms),
                "query answered"
            ),
            Err(s) => tracing::warn!(%request_id, code = ?s.code(), message = s.message(), "query failed"),
        }
        metrics::call("coordinator", "Search", metrics::code_of(&result), started);
        if let Ok(r) = &result {
            traffic("client", "sent", r);
            if r.degraded {
                metrics::count("delf_degraded_answers_total", "Answers missing some shard (policy partial)", &[], 1.0);
            }
            if let Some(t) = &r.timing {
                for (stage, ms) in
                    [("extract", t.extract_ms), ("ann", t.ann_ms), ("verify", t.verify_ms), ("merge", t.merge_ms)]
                {
                    let d = Duration::from_secs_f64(ms.max(0.0) / 1e3);
                    metrics::observe(
                        "delf_query_stage_seconds",
                        "Time per query stage on the coordinator",
                        &[("stage", stage)],
                        d,
                    );
                }
            }
        }
        result.map(Response::new)
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(self.inner.status().await?))
    }
}

/// Serves the coordinator on `listen` until SIGTERM / Ctrl-C, with `extra` services on the same port (the
/// Raft metadata service of a Raft-managed cluster; empty otherwise).
pub async fn serve(listen: &str, service: CoordinatorService, extra: Routes) -> Result<(), ClusterError> {
    let incoming = delf_rpc::addr::bind(listen)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<CoordinatorServer<CoordinatorService>>().await;
    tracing::info!(addr = %listen, version = ?service.version(), "coordinator listening");
    let security = service.inner.security.clone();
    let routes = extra
        .add_service(health)
        .add_service(delf_rpc::server::reflection()?)
        .add_service(service.into_server(security.auth()));
    delf_rpc::server::builder(&security)?
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, delf_rpc::server::shutdown_signal())
        .await?;
    Ok(())
}
