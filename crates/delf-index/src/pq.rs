//! Product quantizer: the vector (or its residual to the coarse centroid) is cut into `m` sub-vectors, each replaced
//! by the number of its nearest of 256 sub-centroids, one byte per sub-vector.

use rayon::prelude::*;

use crate::error::Result;
use crate::kmeans::{self, KMeansConfig};
use crate::linalg::l2sq;

/// Trained product quantizer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductQuantizer {
    /// Full dimensionality.
    pub dim: usize,
    /// Number of sub-vectors.
    pub m: usize,
    /// Centroids per sub-vector.
    pub ksub: usize,
    /// Sub-centroids, `m x ksub x dsub`.
    pub centroids: Vec<f32>,
}

impl ProductQuantizer {
    /// Dimensions per sub-vector.
    pub fn dsub(&self) -> usize {
        self.dim / self.m
    }

    /// Trains one k-means per sub-vector (in parallel) on the rows of `data`.
    pub fn train(data: &[f32], dim: usize, m: usize, ksub: usize, config: &KMeansConfig) -> Result<Self> {
        let n = crate::linalg::count_vectors(data, dim)?;
        let dsub = dim / m;
        let per_sub: Vec<Result<Vec<f32>>> = (0..m)
            .into_par_iter()
            .map(|j| {
                let sub: Vec<f32> = (0..n).flat_map(|i| data[i * dim + j * dsub..][..dsub].iter().copied()).collect();
                let cfg = KMeansConfig { seed: config.seed.wrapping_add(j as u64 + 1), ..*config };
                kmeans::train(&sub, dsub, ksub, &cfg, &format!("pq sub-quantizer {j}"))
            })
            .collect();
        let mut centroids = Vec::with_capacity(m * ksub * dsub);
        for c in per_sub {
            centroids.extend(c?);
        }
        Ok(Self { dim, m, ksub, centroids })
    }

    /// Sub-centroid `k` of sub-vector `j`.
    pub fn centroid(&self, j: usize, k: usize) -> &[f32] {
        let dsub = self.dsub();
        &self.centroids[(j * self.ksub + k) * dsub..][..dsub]
    }

    /// Writes the `m`-byte code of `x` into `code`: per sub-vector the nearest sub-centroid (first one on ties).
    pub fn encode_one(&self, x: &[f32], code: &mut [u8]) {
        let dsub = self.dsub();
        for (j, c) in code.iter_mut().enumerate().take(self.m) {
            let sub = &x[j * dsub..][..dsub];
            let table = &self.centroids[j * self.ksub * dsub..][..self.ksub * dsub];
            let mut best = (f32::INFINITY, 0usize);
            for (k, cent) in table.chunks_exact(dsub).enumerate() {
                let mut d = 0.0f32;
                for (a, b) in sub.iter().zip(cent) {
                    let t = a - b;
                    d += t * t;
                }
                if d < best.0 {
                    best = (d, k);
                }
            }
            *c = best.1 as u8;
        }
    }

    /// Codes of every row of `data`, `n x m` bytes, encoded in parallel.
    pub fn encode(&self, data: &[f32]) -> Vec<u8> {
        let mut codes = vec![0u8; data.len() / self.dim * self.m];
        codes.par_chunks_mut(self.m).zip(data.par_chunks_exact(self.dim)).for_each(|(c, x)| self.encode_one(x, c));
        codes
    }

    /// Reconstruction of a code.
    pub fn decode_one(&self, code: &[u8], out: &mut [f32]) {
        let dsub = self.dsub();
        for (j, &k) in code.iter().enumerate().take(self.m) {
            out[j * dsub..][..dsub].copy_from_slice(self.centroid(j, k as usize));
        }
    }

    /// `<x_j, c_jk>` for every sub-vector `j` and centroid `k`: an `m x ksub` table.
    pub fn inner_product_table(&self, x: &[f32]) -> Vec<f32> {
        let dsub = self.dsub();
        let mut t = Vec::with_capacity(self.m * self.ksub);
        for j in 0..self.m {
            let sub = &x[j * dsub..][..dsub];
            for k in 0..self.ksub {
                t.push(sub.iter().zip(self.centroid(j, k)).map(|(a, b)| a * b).sum());
            }
        }
        t
    }

    /// `||x_j - c_jk||^2` for every `j` and `k`: an `m x ksub` table.
    pub fn distance_table(&self, x: &[f32]) -> Vec<f32> {
        let dsub = self.dsub();
        let mut t = Vec::with_capacity(self.m * self.ksub);
        for j in 0..self.m {
            let sub = &x[j * dsub..][..dsub];
            for k in 0..self.ksub {
                t.push(l2sq(sub, self.centroid(j, k)));
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_core::rng::SplitMix64;

    #[test]
    fn quantisation_error_is_small_and_decode_inverts_encode() {
        let mut g = SplitMix64(5);
        let dim = 8;
        let data: Vec<f32> = (0..4000 * dim).map(|_| g.normal() as f32).collect();
        let pq = ProductQuantizer::train(&data, dim, 4, 256, &KMeansConfig::default()).unwrap();
        let codes = pq.encode(&data);
        let mut rec = vec![0.0; dim];
        let mut err = 0.0;
        let mut energy = 0.0;
        for (x, c) in data.chunks_exact(dim).zip(codes.chunks_exact(4)) {
            pq.decode_one(c, &mut rec);
            err += l2sq(x, &rec);
            energy += x.iter().map(|v| v * v).sum::<f32>();
            let mut again = [0u8; 4];
            pq.encode_one(&rec, &mut again);
            assert_eq!(&again, c);
        }
        assert!(err / energy < 0.1, "relative error {}", err / energy);
    }
}
