//! A worker: stateless, horizontally scalable. `Extract` turns an encoded photo into features with the extractor
//! the binary plugs in ([`QueryExtractor`]; libtorch stays out of this crate); `Verify` runs RANSAC on the
//! correspondences of a batch of candidates with the coordinator's settings, exactly as one-process search does
//! ([`delf_verify::verify_correspondences`]).

use std::sync::Arc;

use delf_core::FeatureSet;
use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1 as pb;
use delf_proto::v1::worker_server::{Worker, WorkerServer};
use delf_verify::{FittedModel, Point, verify_correspondences};
use rayon::prelude::*;
use tokio::sync::Semaphore;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::error::ClusterError;
use delf_rpc::BearerAuth;
use delf_rpc::Security;
use delf_rpc::metrics;

/// Largest number of candidates in one verification call.
pub const MAX_CANDIDATES: usize = 10_000;
/// Largest number of correspondences of one candidate.
pub const MAX_CORRESPONDENCES: usize = 100_000;

/// Why an image could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractFailure {
    /// The bytes are not a usable image (corrupt, too large, unsupported): the caller's input.
    #[error("{0}")]
    BadImage(String),
    /// The extractor failed.
    #[error("{0}")]
    Failed(String),
    /// The extractor does not offer what was asked (rotated passes).
    #[error("{0}")]
    Unsupported(String),
}

/// Most rotated passes one extraction call may ask for.
pub const MAX_ROTATIONS: usize = 64;

/// Feature extraction as a worker needs it: blocking, called from a thread that may block.
pub trait QueryExtractor: Send + Sync + 'static {
    /// Fingerprint of the descriptors it produces.
    fn fingerprint(&self) -> String;
    /// Decodes `bytes` (EXIF orientation applied, size limits enforced) and extracts the features.
    fn extract(&self, bytes: Vec<u8>) -> Result<FeatureSet, ExtractFailure>;
    /// Decodes `bytes` and extracts the features of the image turned by each of `degrees` (counter-clockwise),
    /// keypoints mapped back into the upright image's coordinates: one set per rotation, in the order of `degrees`.
    fn extract_rotations(&self, bytes: Vec<u8>, degrees: &[f64]) -> Result<Vec<FeatureSet>, ExtractFailure> {
        let _ = (bytes, degrees);
        Err(ExtractFailure::Unsupported("this worker's extractor has no rotated passes".into()))
    }
}

/// The Worker service.
#[derive(Clone)]
pub struct WorkerService {
    extractor: Option<Arc<dyn QueryExtractor>>,
    // Extraction uses every core (libtorch threads); one at a time, the others wait in order.
    extract_slots: Arc<Semaphore>,
}

impl WorkerService {
    /// A worker; without an extractor, `Extract` answers UNIMPLEMENTED and only `Verify` is served.
    pub fn new(extractor: Option<Arc<dyn QueryExtractor>>) -> Self {
        Self { extractor, extract_slots: Arc::new(Semaphore::new(1)) }
    }

    /// The gRPC service with message limits and the token check.
    pub fn into_server(self, auth: BearerAuth) -> InterceptedService<WorkerServer<Self>, BearerAuth> {
        let server = WorkerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        InterceptedService::new(server, auth)
    }
}

fn points(xy: &[f32]) -> Vec<Point> {
    xy.chunks_exact(2).map(|p| Point::new(f64::from(p[0]), f64::from(p[1]))).collect()
}

fn check_candidate(c: &pb::Candidate) -> Result<(), Status> {
    let bad = |m: String| Err(Status::invalid_argument(format!("candidate {}: {m}", c.image)));
    if c.query_xy.len() != c.db_xy.len() || !c.query_xy.len().is_multiple_of(2) {
        return bad(format!(
            "{} query and {} database coordinates (need equal, even counts)",
            c.query_xy.len(),
            c.db_xy.len()
        ));
    }
    if c.query_xy.len() / 2 > MAX_CORRESPONDENCES {
        return bad(format!("more than {MAX_CORRESPONDENCES} correspondences"));
    }
    if c.query_xy.iter().chain(&c.db_xy).any(|v| !v.is_finite()) {
        return bad("a coordinate is NaN or infinite".into());
    }
    if !c.scale_ratios.is_empty() && c.scale_ratios.len() * 2 != c.query_xy.len() {
        return bad(format!("{} scale ratios for {} correspondences", c.scale_ratios.len(), c.query_xy.len() / 2));
    }
    Ok(())
}

/// The model's parameters on the wire (affine: 6 values).
fn model_to_pb(model: Option<FittedModel>) -> Vec<f64> {
    match model {
        Some(FittedModel::Affine { m }) => m.to_vec(),
        Some(FittedModel::Homography { h }) => h.to_vec(),
        None => Vec::new(),
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn extract(&self, request: Request<pb::ExtractRequest>) -> Result<Response<pb::ExtractResponse>, Status> {
        let started = std::time::Instant::now();
        let _busy = InFlight::new("extract");
        let result = self.run_extract(request).await;
        metrics::call("worker", "Extract", metrics::code_of(&result), started);
        result
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let started = std::time::Instant::now();
        let _busy = InFlight::new("verify");
        let result = self.run_verify(request).await;
        metrics::call("worker", "Verify", metrics::code_of(&result), started);
        result
    }
}

/// Counts a call in `delf_worker_in_flight` while it lives (waiting for the model included).
struct InFlight(&'static str);

impl InFlight {
    fn new(kind: &'static str) -> Self {
        metrics::add(IN_FLIGHT, IN_FLIGHT_HELP, &[("kind", kind)], 1.0);
        Self(kind)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::add(IN_FLIGHT, IN_FLIGHT_HELP, &[("kind", self.0)], -1.0);
    }
}

const IN_FLIGHT: &str = "delf_worker_in_flight";
const IN_FLIGHT_HELP: &str = "Calls being served (or waiting for the model), by kind: extract, verify";

impl WorkerService {
    async fn run_extract(&self, request: Request<pb::ExtractRequest>) -> Result<Response<pb::ExtractResponse>, Status> {
        let Some(extractor) = self.extractor.clone() else {
            return Err(Status::unimplemented("this worker was started without an extractor"));
        };
        let r = request.into_inner();
        let fingerprint = extractor.fingerprint();
        if !r.descriptor_fingerprint.is_empty() && r.descriptor_fingerprint != fingerprint {
            return Err(Status::failed_precondition(format!(
                "this worker extracts {fingerprint}, the caller needs {}",
                r.descriptor_fingerprint
            )));
        }
        if r.rotations.len() > MAX_ROTATIONS || r.rotations.iter().any(|d| !d.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "rotations: at most {MAX_ROTATIONS} finite angles (got {})",
                r.rotations.len()
            )));
        }
        let _slot = self.extract_slots.acquire().await.map_err(|_| Status::unavailable("worker stopping"))?;
        let started = std::time::Instant::now();
        let (request_id, image, rotations) = (r.request_id, r.image, r.rotations);
        let asked = rotations.len();
        let passes = tokio::task::spawn_blocking(move || {
            if rotations.is_empty() {
                extractor.extract(image).map(|f| vec![f])
            } else {
                extractor.extract_rotations(image, &rotations)
            }
        })
        .await
        .map_err(|e| Status::internal(format!("extraction task failed: {e}")))?
        .map_err(|e| match e {
            ExtractFailure::BadImage(m) => Status::invalid_argument(m),
            ExtractFailure::Failed(m) => Status::internal(m),
            ExtractFailure::Unsupported(m) => Status::unimplemented(m),
        })?;
        if passes.len() != asked.max(1) {
            return Err(Status::internal(format!("the extractor gave {} passes for {asked} rotations", passes.len())));
        }
        let mut passes = passes.into_iter();
        let mut features = passes.next().unwrap_or_else(|| unreachable!("checked above"));
        let first = features.len();
        let rest = features
            .extend_passes(passes)
            .map_err(|e| Status::internal(format!("the passes do not fit together: {e}")))?;
        let pass_lengths =
            if asked == 0 { Vec::new() } else { std::iter::once(first).chain(rest).map(|n| n as u32).collect() };
        tracing::debug!(
            %request_id,
            features = features.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "extracted"
        );
        Ok(Response::new(pb::ExtractResponse {
            features: Some(crate::convert::features_to_pb(&features)),
            pass_lengths,
        }))
    }

    async fn run_verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let r = request.into_inner();
        let settings = r.settings.as_ref().ok_or_else(|| Status::invalid_argument("settings are required"))?;
        let config = crate::convert::verify_settings_from_pb(settings)?;
        if r.candidates.len() > MAX_CANDIDATES {
            return Err(Status::invalid_argument(format!("more than {MAX_CANDIDATES} candidates")));
        }
        r.candidates.iter().try_for_each(check_candidate)?;
        let started = std::time::Instant::now();
        let n = r.candidates.len();
        metrics::count("delf_verified_candidates_total", "Candidates verified (RANSAC runs)", &[], n as f64);
        let results = tokio::task::spawn_blocking(move || {
            r.candidates
                .par_iter()
                .map(|c| {
                    let (src, dst) = (points(&c.query_xy), points(&c.db_xy));
                    let (model, inlier, _) = verify_correspondences(&src, &dst, &c.scale_ratios, &config);
                    let inliers = inlier.iter().filter(|&&b| b).count() as u32;
                    pb::Verified { image: c.image, inliers, model: model_to_pb(model), inlier }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(format!("verification task failed: {e}")))?;
        tracing::debug!(candidates = n, ms = started.elapsed().as_secs_f64() * 1e3, "verified");
        Ok(Response::new(pb::VerifyResponse { results }))
    }
}

/// Serves a worker on `listen` until SIGTERM / Ctrl-C.
pub async fn serve(
    listen: &str,
    extractor: Option<Arc<dyn QueryExtractor>>,
    security: &Security,
) -> Result<(), ClusterError> {
    let incoming = delf_rpc::addr::bind(listen)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<WorkerServer<WorkerService>>().await;
    tracing::info!(addr = %listen, extract = extractor.is_some(), "worker listening");
    delf_rpc::server::builder(security)?
        .add_service(health)
        .add_service(delf_rpc::server::reflection()?)
        .add_service(WorkerService::new(extractor).into_server(security.auth()))
        .serve_with_incoming_shutdown(incoming, delf_rpc::server::shutdown_signal())
        .await?;
    Ok(())
}
