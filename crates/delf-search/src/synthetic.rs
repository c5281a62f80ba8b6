//! A synthetic index on disk, with queries that truly match some of its images: for the cluster tests and
//! `delf bench cluster`, where the retrieval pipeline (ANN, votes, verification) must do real work without a model.
//! Image `i` holds `per_image` descriptors from [`SyntheticDescriptors`] at random keypoints; query `j` is image
//! `j * stride` seen through an affine change (scale 0.8, shift) with a little descriptor noise.

use std::path::Path;
use std::sync::Arc;

use delf_core::rng::SplitMix64;
use delf_core::{FeatureSet, Fingerprint, Keypoint};
use delf_index::{Codebooks, IndexSpec, NewImage, SearchParams, ShardedIndex, SyntheticDescriptors};

use crate::error::SearchError;
use crate::manifest::{IndexManifest, MANIFEST_FORMAT};

/// What to build.
#[derive(Debug, Clone)]
pub struct SyntheticIndex {
    /// Images.
    pub images: u32,
    /// Descriptors per image.
    pub per_image: usize,
    /// Descriptor dimension.
    pub dim: usize,
    /// Shards.
    pub shards: u32,
    /// Index structure.
    pub spec: IndexSpec,
    /// Stored search defaults.
    pub search: SearchParams,
    /// Descriptors sampled to train the codebooks (at most).
    pub train_sample: usize,
    /// Seed of everything.
    pub seed: u64,
}

/// The descriptor fingerprint of synthetic indexes.
pub const SYNTHETIC_FINGERPRINT: &str = "delf/synthetic";

impl SyntheticIndex {
    /// Builds the index in `dir` (manifest and shards; no PCA) and returns `queries` matching queries.
    pub fn build(&self, dir: &Path, queries: usize) -> Result<(IndexManifest, Vec<FeatureSet>), SearchError> {
        let (dim, n) = (self.dim, self.per_image);
        let synth = SyntheticDescriptors::new(dim, 20_000, 0.2, self.seed);
        let image = |i: u32| {
            let d = synth.sample(n, self.seed ^ (u64::from(i) << 20));
            let mut rng = SplitMix64(self.seed.wrapping_add(u64::from(i)));
            let k: Vec<[f32; 2]> =
                (0..n).map(|_| [rng.uniform() as f32 * 1024.0, rng.uniform() as f32 * 768.0]).collect();
            (d, k)
        };
        let stride = (self.images as usize / queries.max(1)).max(1) as u32;
        let mut train = Vec::with_capacity(self.train_sample.min(self.images as usize * n) * dim);
        let every = ((self.images as usize * n) / self.train_sample.max(1)).max(1);
        for i in 0..self.images {
            let (d, _) = image(i);
            for (j, row) in d.chunks_exact(dim).enumerate() {
                if (i as usize * n + j).is_multiple_of(every) {
                    train.extend_from_slice(row);
                }
            }
        }
        let codebooks = Arc::new(Codebooks::train(&train, dim, self.spec, &Default::default())?);
        drop(train);
        let mut index = ShardedIndex::new(Arc::clone(&codebooks), SYNTHETIC_FINGERPRINT, self.shards)?;
        let mut queries_out = Vec::new();
        for chunk in (0..self.images).collect::<Vec<_>>().chunks(256) {
            let parts: Vec<(String, Vec<f32>, Vec<[f32; 2]>)> =
                chunk.iter().map(|&i| (format!("synthetic/{i:08}.jpg"), image(i).0, image(i).1)).collect();
            let batch: Vec<NewImage<'_>> = chunk
                .iter()
                .zip(&parts)
                .map(|(&i, (name, d, k))| NewImage { number: i, name, descriptors: d, keypoints: k, scales: &[] })
                .collect();
            index.add_images(&batch, dim)?;
            for (&i, (_, d, k)) in chunk.iter().zip(&parts) {
                if i.is_multiple_of(stride) && queries_out.len() < queries {
                    queries_out.push(self.query_of(d, k, i));
                }
            }
        }
        index.save(dir)?;
        let manifest = IndexManifest {
            format: MANIFEST_FORMAT,
            delf_version: env!("CARGO_PKG_VERSION").into(),
            created_unix_s: 0,
            descriptor_fingerprint: SYNTHETIC_FINGERPRINT.into(),
            model: "synthetic descriptors (no model)".into(),
            extract: serde_json::json!({}),
            pca: String::new(),
            spec: self.spec.to_string(),
            codebooks_fingerprint: codebooks.fingerprint().to_string(),
            shards: self.shards,
            images: self.images as usize,
            descriptors: self.images as usize * n,
            skipped: Vec::new(),
            source: format!("synthetic (seed {})", self.seed),
            root: dir.to_path_buf(),
            search: self.search,
            timings_s: Vec::new(),
        };
        manifest.save(dir)?;
        Ok((manifest, queries_out))
    }

    fn query_of(&self, descriptors: &[f32], keypoints: &[[f32; 2]], i: u32) -> FeatureSet {
        let mut rng = SplitMix64(self.seed ^ 0x5eed ^ u64::from(i));
        let mut d = descriptors.to_vec();
        for row in d.chunks_exact_mut(self.dim) {
            row.iter_mut().for_each(|v| *v += 0.01 * rng.normal() as f32);
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
        let keypoints =
            keypoints.iter().map(|p| Keypoint { x: 0.8 * p[0] + 30.0, y: 0.8 * p[1] + 12.0, scale: 1.0, score: 1.0 });
        FeatureSet {
            width: 820,
            height: 615,
            dim: self.dim,
            keypoints: keypoints.collect(),
            descriptors: d,
            fingerprint: Fingerprint(SYNTHETIC_FINGERPRINT.into()),
        }
    }
}
