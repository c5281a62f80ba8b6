//! Synthetic descriptor sets shaped like DELF's: unit-norm vectors scattered around cluster centres on the sphere.
//! Used by the index tests and by `delf bench index` when no vector file is given; seeded, so a seed names a set.

use delf_core::rng::SplitMix64;

/// A fixed mixture of Gaussian blobs; draws from it share the same centres.
#[derive(Debug, Clone)]
pub struct SyntheticDescriptors {
    dim: usize,
    centres: Vec<f32>,
    spread: f32,
}

impl SyntheticDescriptors {
    /// `clusters` centres in `dim` dimensions, chosen by `seed`; `spread` is the noise's standard deviation
    /// relative to a centre's (unnormalised) scale of 1 per dimension.
    pub fn new(dim: usize, clusters: usize, spread: f32, seed: u64) -> Self {
        let mut g = SplitMix64(seed);
        let centres = (0..clusters.max(1) * dim).map(|_| g.normal() as f32).collect();
        Self { dim, centres, spread }
    }

    /// `n` unit vectors, flattened `n x dim`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut g = SplitMix64(seed);
        let clusters = self.centres.len() / self.dim;
        let mut out = Vec::with_capacity(n * self.dim);
        let mut v = vec![0.0f32; self.dim];
        for _ in 0..n {
            let c = &self.centres[g.below(clusters) * self.dim..][..self.dim];
            for (x, m) in v.iter_mut().zip(c) {
                *x = m + self.spread * g.normal() as f32;
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }
}
