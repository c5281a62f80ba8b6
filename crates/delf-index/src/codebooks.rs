//! The trained quantizers of an index: coarse centroids (one per inverted list) and the product quantizer. One
//! codebook set is shared by every shard of an index, identified by its fingerprint, so distances from different
//! shards are comparable and can be merged.

use std::sync::OnceLock;

use delf_core::Fingerprint;

use crate::error::{IndexError, Result};
use crate::kmeans::{self, KMeansConfig};
use crate::linalg::{count_vectors, l2sq, nearest_centroids, row_norms};
use crate::pq::ProductQuantizer;
use crate::spec::IndexSpec;

/// Coarse quantizer + product quantizer.
#[derive(Debug, Clone)]
pub struct Codebooks {
    /// Structure.
    pub spec: IndexSpec,
    /// Dimensionality of the vectors.
    pub dim: usize,
    /// Coarse centroids, `nlist x dim`.
    pub coarse: Vec<f32>,
    coarse_norms: Vec<f32>,
    /// The product quantizer.
    pub pq: ProductQuantizer,
    fingerprint: Fingerprint,
    /// `||r_jk||^2` of every sub-centroid (`m x ksub`), the list-independent part of the residual table.
    pq_norms: Vec<f32>,
    /// [`Codebooks::list_term`] of every list, when it fits in [`PRECOMPUTED_TABLE_BYTES`]: made at the first
    /// search, so that what only encodes (an index build's workers) never holds it.
    list_terms: OnceLock<Option<Vec<f32>>>,
}

/// Largest per-list table kept in memory (`nlist x m x ksub` floats); beyond it the terms are computed per scan.
pub const PRECOMPUTED_TABLE_BYTES: usize = 512 << 20;

/// Settings of codebook training.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainConfig {
    /// k-means settings for the coarse quantizer.
    pub coarse: KMeansConfig,
    /// k-means settings for each PQ sub-quantizer.
    pub pq: KMeansConfig,
}

impl Codebooks {
    /// Trains both quantizers on the rows of `data`.
    pub fn train(data: &[f32], dim: usize, spec: IndexSpec, config: &TrainConfig) -> Result<Self> {
        spec.validate(dim)?;
        let n = count_vectors(data, dim)?;
        let needed = spec.nlist.max(spec.ksub());
        if n < needed {
            return Err(IndexError::NotEnoughTrainingData { what: spec.to_string(), got: n, needed });
        }
        let started = std::time::Instant::now();
        let coarse = kmeans::train(data, dim, spec.nlist, &config.coarse, "coarse quantizer")?;
        let coarse_s = started.elapsed().as_secs_f64();
        let coarse_norms = row_norms(&coarse, dim);
        // PQ trains on at most ksub * max_points_per_centroid vectors (of residuals when encoding residuals).
        let cap = spec.ksub() * config.pq.max_points_per_centroid.max(1);
        let mut rng = delf_core::rng::SplitMix64(config.pq.seed ^ 0x9E37);
        let mut sample = kmeans::gather(data, dim, &kmeans::sample_indices(n, cap, &mut rng));
        if spec.residual {
            let (ids, _) = nearest_centroids(&sample, &coarse, &coarse_norms, dim, 1);
            for (x, &c) in sample.chunks_exact_mut(dim).zip(&ids) {
                for (v, cv) in x.iter_mut().zip(&coarse[c as usize * dim..][..dim]) {
                    *v -= cv;
                }
            }
        }
        let pq = ProductQuantizer::train(&sample, dim, spec.m, spec.ksub(), &config.pq)?;
        tracing::info!(%spec, vectors = n, coarse_s, pq_s = started.elapsed().as_secs_f64() - coarse_s, "trained codebooks");
        Ok(Self::from_parts(spec, dim, coarse, pq))
    }

    /// Assembles codebooks from stored parts (used when loading a shard file).
    pub fn from_parts(spec: IndexSpec, dim: usize, coarse: Vec<f32>, pq: ProductQuantizer) -> Self {
        let fingerprint = fingerprint_of(&spec, dim, &coarse, &pq.centroids);
        let coarse_norms = row_norms(&coarse, dim);
        let pq_norms = pq.distance_table(&vec![0.0f32; dim]);
        Self { spec, dim, coarse, coarse_norms, pq, fingerprint, pq_norms, list_terms: OnceLock::new() }
    }

    /// The precomputed per-list terms, made on first use; `None` where they would not fit.
    fn list_terms(&self) -> Option<&[f32]> {
        let spec = self.spec;
        self.list_terms
            .get_or_init(|| {
                // Sequential on purpose: a parallel loop here could let this thread pick up another search task
                // that asks for the same cell while it is being initialised.
                (spec.residual && spec.nlist * spec.m * spec.ksub() * 4 <= PRECOMPUTED_TABLE_BYTES)
                    .then(|| (0..spec.nlist).flat_map(|l| self.compute_list_term(l)).collect())
            })
            .as_deref()
    }

    /// Identity of these codebooks (spec, dimensionality and every centroid).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Checks a descriptor buffer's dimensionality.
    pub fn check_dim(&self, data: &[f32], dim: usize) -> Result<usize> {
        if dim != self.dim {
            return Err(IndexError::DimensionMismatch { expected: self.dim, got: dim });
        }
        count_vectors(data, dim)
    }

    /// The `nprobe` nearest lists of each row, `(ids, squared distances)` flattened `n x nprobe`.
    pub fn probe(&self, data: &[f32], nprobe: usize) -> (Vec<u32>, Vec<f32>) {
        nearest_centroids(data, &self.coarse, &self.coarse_norms, self.dim, nprobe)
    }

    /// Coarse centroid of list `l`.
    pub fn centroid(&self, l: usize) -> &[f32] {
        &self.coarse[l * self.dim..][..self.dim]
    }

    /// List and PQ code of each row of `data`.
    pub fn encode(&self, data: &[f32]) -> (Vec<u32>, Vec<u8>) {
        let (lists, _) = self.probe(data, 1);
        if !self.spec.residual {
            return (lists, self.pq.encode(data));
        }
        let mut res = data.to_vec();
        for (x, &l) in res.chunks_exact_mut(self.dim).zip(&lists) {
            for (v, c) in x.iter_mut().zip(self.centroid(l as usize)) {
                *v -= c;
            }
        }
        (lists, self.pq.encode(&res))
    }

    /// Per-list term of the residual lookup table: `||r_jk||^2 + 2 <c_lj, r_jk>` (`m x ksub`), precomputed or
    /// computed now (the same arithmetic either way).
    pub(crate) fn list_term(&self, l: usize) -> std::borrow::Cow<'_, [f32]> {
        let size = self.spec.m * self.spec.ksub();
        match self.list_terms() {
            Some(t) => std::borrow::Cow::Borrowed(&t[l * size..][..size]),
            None => std::borrow::Cow::Owned(self.compute_list_term(l)),
        }
    }

    fn compute_list_term(&self, l: usize) -> Vec<f32> {
        let ip = self.pq.inner_product_table(self.centroid(l));
        self.pq_norms.iter().zip(&ip).map(|(n, i)| n + 2.0 * i).collect()
    }

    /// Query part of the lookup table: for residual codebooks `<q_j, r_jk>`, otherwise `||q_j - r_jk||^2`.
    pub(crate) fn query_table(&self, q: &[f32]) -> Vec<f32> {
        if self.spec.residual { self.pq.inner_product_table(q) } else { self.pq.distance_table(q) }
    }

    /// Squared distance from a query to list `l`'s centroid, the constant of its lookup table (0 without residuals).
    pub(crate) fn list_base(&self, q: &[f32], l: usize) -> f32 {
        if self.spec.residual { l2sq(q, self.centroid(l)) } else { 0.0 }
    }
}

/// The identity of a codebook set: spec, dimensionality and every centroid.
fn fingerprint_of(spec: &IndexSpec, dim: usize, coarse: &[f32], pq_centroids: &[f32]) -> Fingerprint {
    Fingerprint::of(
        "codebooks",
        &[
            spec.to_string().as_bytes(),
            &(dim as u64).to_le_bytes(),
            bytemuck::cast_slice(coarse),
            bytemuck::cast_slice(pq_centroids),
        ],
    )
}

/// The coarse quantizer of a codebook set, without the product quantizer's tables (a few hundred KB instead of the
/// tens of MB of precomputed residual terms). It assigns descriptors to cells exactly as [`Codebooks::probe`] does
/// (same arithmetic, same order), so cells computed once by a coordinator can be sent to every shard
/// ([`crate::search::search_probed`]).
#[derive(Debug, Clone)]
pub struct CoarseQuantizer {
    /// Structure of the index the centroids belong to.
    pub spec: IndexSpec,
    /// Dimensionality of the vectors.
    pub dim: usize,
    coarse: Vec<f32>,
    norms: Vec<f32>,
}

impl CoarseQuantizer {
    /// Rebuilds the coarse quantizer from transmitted parts, checking them against the codebooks fingerprint the
    /// index's manifest names (the PQ centroids are needed only for that check).
    pub fn from_parts(
        spec: IndexSpec,
        dim: usize,
        coarse: Vec<f32>,
        pq_centroids: &[f32],
        expected: &str,
    ) -> Result<Self> {
        spec.validate(dim)?;
        if coarse.len() != spec.nlist * dim {
            return Err(IndexError::invalid(
                "coarse centroids",
                coarse.len(),
                format!("{spec} at {dim} dimensions has {} values", spec.nlist * dim),
            ));
        }
        if pq_centroids.len() != spec.ksub() * dim {
            return Err(IndexError::invalid(
                "pq centroids",
                pq_centroids.len(),
                format!("{spec} at {dim} dimensions has {} values", spec.ksub() * dim),
            ));
        }
        let fingerprint = fingerprint_of(&spec, dim, &coarse, pq_centroids);
        if fingerprint.as_str() != expected {
            return Err(IndexError::invalid(
                "codebooks",
                fingerprint.as_str(),
                format!("the centroids do not make the expected fingerprint {expected}"),
            ));
        }
        let norms = row_norms(&coarse, dim);
        Ok(Self { spec, dim, coarse, norms })
    }

    /// The `nprobe` nearest cells of each row of `data` (`n x nprobe`, nearest first), as [`Codebooks::probe`].
    pub fn probe(&self, data: &[f32], dim: usize, nprobe: usize) -> Result<Vec<u32>> {
        if dim != self.dim {
            return Err(IndexError::DimensionMismatch { expected: self.dim, got: dim });
        }
        count_vectors(data, dim)?;
        if nprobe == 0 || nprobe > self.spec.nlist {
            return Err(IndexError::invalid("nprobe", nprobe, format!("must be in 1..={}", self.spec.nlist)));
        }
        Ok(nearest_centroids(data, &self.coarse, &self.norms, dim, nprobe).0)
    }
}
