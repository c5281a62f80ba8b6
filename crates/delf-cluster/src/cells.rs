//! The coordinator's cell assignment: every query descriptor is assigned to its `nprobe` nearest coarse cells once,
//! here, and the cells travel with the descriptors to every shard (`ShardSearchRequest.probes`), instead of every
//! index node repeating the same assignment against the same shared centroids.
//!
//! The centroids come from an index node (`IndexNode.Codebooks`, asked through the coordinator's replica failover)
//! the first time a routing (an index version) needs them, checked against the codebooks fingerprint of the
//! version's manifest. While no node hands them out (a node of an older release, or none reachable), queries go
//! without cells and each node assigns them itself, with the same result; another fetch is tried after
//! [`RETRY_AFTER`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delf_index::{CoarseQuantizer, IndexSpec};
use delf_proto::v1 as pb;

/// How long the coordinator goes without cells after a failed fetch of the centroids.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

enum State {
    /// Not fetched yet, or the last fetch failed (no new one before the instant).
    Missing(Option<Instant>),
    Ready(Arc<CoarseQuantizer>),
}

/// The centroids of one index version, fetched once, and the assignment of query descriptors to cells.
pub(crate) struct CellAssigner {
    state: Mutex<State>,
}

impl CellAssigner {
    pub fn new() -> Self {
        Self { state: Mutex::new(State::Missing(None)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The centroids if already fetched; `Err(true)` when a fetch should be tried now.
    fn cached(&self) -> Result<Arc<CoarseQuantizer>, bool> {
        match &*self.lock() {
            State::Ready(q) => Ok(Arc::clone(q)),
            State::Missing(Some(retry_at)) if Instant::now() < *retry_at => Err(false),
            State::Missing(_) => Err(true),
        }
    }

    /// The cells of every descriptor (`n x nprobe`, nearest first), or empty when the centroids are not at hand
    /// (each node then assigns them). `fetch` is awaited only when a fetch is due.
    pub async fn probes(
        &self,
        fetch: impl Future<Output = Result<CoarseQuantizer, String>>,
        descriptors: &[f32],
        dim: usize,
        nprobe: usize,
        request_id: &str,
    ) -> Vec<u32> {
        let quantizer = match self.cached() {
            Ok(q) => q,
            Err(false) => return Vec::new(),
            Err(true) => match fetch.await {
                Ok(q) => {
                    tracing::info!(%request_id, spec = %q.spec, "coordinator assigns cells for every shard");
                    let q = Arc::new(q);
                    *self.lock() = State::Ready(Arc::clone(&q));
                    q
                }
                Err(error) => {
                    tracing::warn!(
                        %request_id, %error, retry_after_s = RETRY_AFTER.as_secs(),
                        "could not get the index's centroids; index nodes assign cells themselves"
                    );
                    *self.lock() = State::Missing(Some(Instant::now() + RETRY_AFTER));
                    return Vec::new();
                }
            },
        };
        // A bad query (wrong dimensionality, nprobe out of range) goes without cells: the nodes answer it with the
        // typed error.
        quantizer.probe(descriptors, dim, nprobe).unwrap_or_default()
    }
}

/// A node's centroids, checked against the manifest's codebooks `fingerprint`.
pub(crate) fn decode(r: pb::CodebooksResponse, fingerprint: &str) -> Result<CoarseQuantizer, String> {
    let spec: IndexSpec = r.spec.parse().map_err(|e| format!("spec {:?}: {e}", r.spec))?;
    CoarseQuantizer::from_parts(spec, r.dim as usize, r.coarse, &r.pq_centroids, fingerprint).map_err(|e| e.to_string())
}
