//! Seeded k-means for the coarse quantizer and the PQ codebooks: a bounded random sample, k-means++ seeding on a
//! subset of it, then Lloyd iterations with SGEMM-based assignment (multi-threaded) and splitting of empty clusters.

use delf_core::rng::SplitMix64;
use rayon::prelude::*;

use crate::error::{IndexError, Result};
use crate::linalg::{count_vectors, l2sq, nearest_centroids, row_norms};

/// k-means settings. The defaults follow FAISS (at most 256 training points per centroid) with k-means++ seeding.
#[derive(Debug, Clone, Copy)]
pub struct KMeansConfig {
    /// Lloyd iterations.
    pub iterations: usize,
    /// Training sample is capped at `k * max_points_per_centroid` vectors.
    pub max_points_per_centroid: usize,
    /// k-means++ seeding runs on at most `k * seeding_points_per_centroid` vectors of the sample.
    pub seeding_points_per_centroid: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self { iterations: 20, max_points_per_centroid: 256, seeding_points_per_centroid: 8, seed: 0x00DE_1F5E_ED00 }
    }
}

/// `m` distinct indices out of `0..n`, in random order (partial Fisher-Yates).
pub(crate) fn sample_indices(n: usize, m: usize, rng: &mut SplitMix64) -> Vec<u32> {
    let mut all: Vec<u32> = (0..n as u32).collect();
    let m = m.min(n);
    for i in 0..m {
        let j = i + rng.below(n - i);
        all.swap(i, j);
    }
    all.truncate(m);
    all
}

/// The rows `idx` of `data`, copied into one buffer.
pub(crate) fn gather(data: &[f32], dim: usize, idx: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&data[i as usize * dim..][..dim]);
    }
    out
}

/// Trains `k` centroids on the `dim`-d rows of `data`; returns them flattened `k x dim`. `what` names the
/// codebook in errors and logs.
pub fn train(data: &[f32], dim: usize, k: usize, config: &KMeansConfig, what: &str) -> Result<Vec<f32>> {
    let n = count_vectors(data, dim)?;
    if k == 0 {
        return Err(IndexError::invalid("k", k, "k-means needs at least one centroid"));
    }
    if n < k {
        return Err(IndexError::NotEnoughTrainingData { what: what.to_string(), got: n, needed: k });
    }
    let mut rng = SplitMix64(config.seed);
    let cap = k.saturating_mul(config.max_points_per_centroid.max(1));
    let sample = if n > cap { gather(data, dim, &sample_indices(n, cap, &mut rng)) } else { data.to_vec() };
    let ns = sample.len() / dim;
    let seed_n = ns.min(k.saturating_mul(config.seeding_points_per_centroid.max(1)));
    let mut centroids = kmeans_pp(&sample[..seed_n * dim], dim, k, &mut rng);
    let mut assign = vec![0u32; ns];
    for it in 0..config.iterations {
        let norms = row_norms(&centroids, dim);
        let (ids, dists) = nearest_centroids(&sample, &centroids, &norms, dim, 1);
        let changed = ids.iter().zip(&assign).filter(|(a, b)| a != b).count();
        assign = ids;
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (x, &c) in sample.chunks_exact(dim).zip(&assign) {
            counts[c as usize] += 1;
            for (s, v) in sums[c as usize * dim..][..dim].iter_mut().zip(x) {
                *s += f64::from(*v);
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for (dst, s) in centroids[c * dim..][..dim].iter_mut().zip(&sums[c * dim..][..dim]) {
                    *dst = (*s / counts[c] as f64) as f32;
                }
            }
        }
        let empty = split_empty_clusters(&mut centroids, &mut counts, dim, &mut rng);
        let inertia: f64 = dists.iter().map(|&d| f64::from(d)).sum();
        tracing::debug!(what, iteration = it, inertia, changed, empty, "k-means");
        if changed == 0 && empty == 0 && it > 0 {
            break;
        }
    }
    Ok(centroids)
}

/// k-means++ seeding (D^2 sampling) on `data`.
fn kmeans_pp(data: &[f32], dim: usize, k: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let n = data.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.below(n);
    centroids.extend_from_slice(&data[first * dim..][..dim]);
    let mut mind: Vec<f32> = data.par_chunks_exact(dim).map(|x| l2sq(x, &centroids[..dim])).collect();
    for _ in 1..k {
        let total: f64 = mind.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.uniform() * total;
            let mut chosen = n - 1;
            for (i, &d) in mind.iter().enumerate() {
                target -= f64::from(d);
                if target < 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            rng.below(n)
        };
        let c: Vec<f32> = data[pick * dim..][..dim].to_vec();
        mind.par_iter_mut().zip(data.par_chunks_exact(dim)).for_each(|(m, x)| *m = m.min(l2sq(x, &c)));
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// Gives each empty cluster half of a large one (the centroid is copied and both copies are nudged apart), as
/// FAISS does. Returns how many clusters were empty.
fn split_empty_clusters(centroids: &mut [f32], counts: &mut [usize], dim: usize, rng: &mut SplitMix64) -> usize {
    const EPS: f32 = 1.0 / 1024.0;
    let k = counts.len();
    let total: usize = counts.iter().sum();
    let mut empty = 0;
    for c in 0..k {
        if counts[c] != 0 {
            continue;
        }
        empty += 1;
        // Pick a donor with probability proportional to its size above one point.
        let donor = loop {
            let j = rng.below(k);
            if counts[j] > 1 && rng.uniform() * (total as f64) < (counts[j] - 1) as f64 * k as f64 {
                break j;
            }
        };
        let src: Vec<f32> = centroids[donor * dim..][..dim].to_vec();
        for (d, a) in src.iter().enumerate() {
            let sign = if d % 2 == 0 { 1.0 } else { -1.0 };
            centroids[c * dim + d] = a * (1.0 + sign * EPS);
            centroids[donor * dim + d] = a * (1.0 - sign * EPS);
        }
        counts[c] = counts[donor] / 2;
        counts[donor] -= counts[c];
    }
    empty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_well_separated_clusters_and_is_seeded() {
        let mut g = SplitMix64(11);
        let dim = 4;
        let centres: Vec<[f32; 4]> = (0..5).map(|i| [10.0 * i as f32, -5.0 * i as f32, 3.0, 0.0]).collect();
        let mut data = Vec::new();
        for _ in 0..200 {
            for c in &centres {
                data.extend(c.iter().map(|v| v + 0.1 * g.normal() as f32));
            }
        }
        let cfg = KMeansConfig::default();
        let a = train(&data, dim, 5, &cfg, "test").unwrap();
        assert_eq!(a, train(&data, dim, 5, &cfg, "test").unwrap());
        for c in &centres {
            let best = a.chunks_exact(dim).map(|x| l2sq(x, c)).fold(f32::INFINITY, f32::min);
            assert!(best < 0.01, "centre {c:?} missed: {best}");
        }
    }

    #[test]
    fn too_few_vectors_is_an_error() {
        let err = train(&[0.0; 8], 2, 5, &KMeansConfig::default(), "coarse").unwrap_err();
        assert!(matches!(err, IndexError::NotEnoughTrainingData { got: 4, needed: 5, .. }));
    }

    #[test]
    fn duplicate_points_do_not_hang_and_give_k_centroids() {
        let data = vec![1.0f32; 2 * 100];
        let c = train(&data, 2, 8, &KMeansConfig::default(), "dups").unwrap();
        assert_eq!(c.len(), 16);
    }
}
