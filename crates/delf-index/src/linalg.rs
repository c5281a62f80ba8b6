//! Dense kernels shared by training, encoding and search: squared L2 distances and batched nearest-centroid search
//! (`||x||^2 + ||c||^2 - 2 x.c` with the dot products done by a blocked SGEMM).

use rayon::prelude::*;

use crate::error::{IndexError, Result};

/// Number of whole `dim`-d vectors in `data`, or an error when the buffer is ragged or `dim` is 0.
pub fn count_vectors(data: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(IndexError::RaggedBuffer { len: data.len(), dim });
    }
    Ok(data.len() / dim)
}

/// Squared Euclidean distance. Eight independent lane sums (then summed in a fixed order), so the compiler can
/// vectorise it and the result does not depend on the target's vector width.
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        tail += d * d;
    }
    lanes.iter().sum::<f32>() + tail
}

/// Squared norms of each `dim`-d row.
pub fn row_norms(data: &[f32], dim: usize) -> Vec<f32> {
    data.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect()
}

/// Rows processed per SGEMM call: big enough to amortise packing, small enough for the distance block to stay in
/// cache (`ROWS x k` floats).
const ROWS_PER_BLOCK: usize = 256;

/// For each row of `data`, the `topn` nearest `centroids` (squared L2, ascending; ties by centroid number), as
/// `(ids, distances)` flattened `n x topn`. Parallel over row blocks with rayon's current pool; each row's answer
/// does not depend on the blocking or the number of threads.
pub fn nearest_centroids(
    data: &[f32],
    centroids: &[f32],
    centroid_norms: &[f32],
    dim: usize,
    topn: usize,
) -> (Vec<u32>, Vec<f32>) {
    let n = data.len() / dim;
    let k = centroids.len() / dim;
    let topn = topn.min(k);
    let mut ids = vec![0u32; n * topn];
    let mut dists = vec![0.0f32; n * topn];
    let argmin = ArgminKernel::detect();
    ids.par_chunks_mut(ROWS_PER_BLOCK * topn)
        .zip(dists.par_chunks_mut(ROWS_PER_BLOCK * topn))
        .enumerate()
        .for_each_init(Vec::new, |dots, (block, (ids, dists))| {
            let rows = ids.len() / topn;
            let x = &data[block * ROWS_PER_BLOCK * dim..][..rows * dim];
            // SGEMM overwrites every value (beta = 0): the buffer is reused across blocks, never cleared.
            if dots.len() < rows * k {
                dots.resize(rows * k, 0.0);
            }
            // dots = x (rows x dim) * centroids^T (dim x k)
            sgemm_xct(x, centroids, dots, rows, k, dim);
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(topn + 1);
            for r in 0..rows {
                let xn: f32 = x[r * dim..][..dim].iter().map(|v| v * v).sum();
                let row = &dots[r * k..][..k];
                if topn == 1 {
                    // The k-means and encoding case.
                    let (bc, bd) = argmin.run(row, centroid_norms);
                    ids[r] = bc;
                    dists[r] = (xn + bd).max(0.0);
                    continue;
                }
                best.clear();
                for (c, (&dot, &cn)) in row.iter().zip(centroid_norms).enumerate() {
                    let d = cn - 2.0 * dot;
                    if best.len() == topn && d >= best[topn - 1].0 {
                        continue;
                    }
                    let pos = best.partition_point(|&(bd, _)| bd <= d);
                    best.insert(pos, (d, c as u32));
                    best.truncate(topn);
                }
                for (j, &(d, c)) in best.iter().enumerate() {
                    ids[r * topn + j] = c;
                    dists[r * topn + j] = (xn + d).max(0.0);
                }
            }
        });
    (ids, dists)
}

/// Lanes of the nearest-centroid scan's running minima, kept in vector registers: a sequential `if d < best` chain
/// waits on the previous comparison at every centroid, and took as long as the SGEMM itself in k-means.
const LANES: usize = 16;

/// How the smallest `norms[c] - 2 dots[c]` of a row is found: one portable loop, compiled a second time for AVX2.
#[derive(Debug, Clone, Copy)]
enum ArgminKernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl ArgminKernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// The centroid minimising `norms[c] - 2 dots[c]` (its squared distance less the row's own norm) and that
    /// value: the first such centroid on ties, as a sequential scan finds it; `(0, inf)` when none is below inf.
    #[inline]
    fn run(self, dots: &[f32], norms: &[f32]) -> (u32, f32) {
        match self {
            Self::Portable => argmin_shifted(dots, norms),
            // SAFETY: Avx2 is only chosen when the CPU has AVX2 (detect).
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            Self::Avx2 => unsafe { argmin_shifted_avx2(dots, norms) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn argmin_shifted_avx2(dots: &[f32], norms: &[f32]) -> (u32, f32) {
    argmin_shifted(dots, norms)
}

/// Two passes, both free of a loop-carried comparison chain: the minimum value over independent lanes, then the
/// first centroid that has it, a whole lane block at a time (the values are computed the same way both times, so
/// they compare equal bit for bit). Tracking the index inside the first pass does not vectorise (the compiler
/// extracts each lane's mask), and measured 2.7x slower at 4096 centroids.
#[inline(always)]
fn argmin_shifted(dots: &[f32], norms: &[f32]) -> (u32, f32) {
    let n = dots.len().min(norms.len());
    let (dots, norms) = (&dots[..n], &norms[..n]);
    let shifted = |c: usize| norms[c] - 2.0 * dots[c];
    let mut lanes = [f32::INFINITY; LANES];
    for (d, c) in dots.chunks_exact(LANES).zip(norms.chunks_exact(LANES)) {
        for l in 0..LANES {
            let v = c[l] - 2.0 * d[l];
            lanes[l] = if v < lanes[l] { v } else { lanes[l] };
        }
    }
    let tail = n - n % LANES;
    let mut min = f32::INFINITY;
    for v in lanes.into_iter().chain((tail..n).map(shifted)) {
        if v < min {
            min = v;
        }
    }
    if min == f32::INFINITY {
        return (0, min);
    }
    for (j, (d, c)) in dots.chunks_exact(LANES).zip(norms.chunks_exact(LANES)).enumerate() {
        let mut hit = false;
        for l in 0..LANES {
            hit |= c[l] - 2.0 * d[l] == min;
        }
        if hit {
            let c = (j * LANES..(j + 1) * LANES).find(|&c| shifted(c) == min).unwrap_or(j * LANES);
            return (c as u32, shifted(c));
        }
    }
    let c = (tail..n).find(|&c| shifted(c) == min).unwrap_or(0);
    (c as u32, shifted(c))
}

/// `out (rows x k) = x (rows x dim) * c^T` where `c` is `k x dim`, row-major.
#[allow(unsafe_code)]
pub(crate) fn sgemm_xct(x: &[f32], c: &[f32], out: &mut [f32], rows: usize, k: usize, dim: usize) {
    assert!(x.len() >= rows * dim && c.len() >= k * dim && out.len() >= rows * k);
    // SAFETY: the assert above bounds every index sgemm touches: x is rows x dim (row stride dim), c^T is read as
    // dim x k with strides (1, dim) over a k x dim buffer, out is rows x k (row stride k).
    unsafe {
        matrixmultiply::sgemm(
            rows,
            dim,
            k,
            1.0,
            x.as_ptr(),
            dim as isize,
            1,
            c.as_ptr(),
            1,
            dim as isize,
            0.0,
            out.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_core::rng::SplitMix64;

    #[test]
    fn nearest_centroids_agree_with_brute_force() {
        let mut g = SplitMix64(3);
        let dim = 12;
        let data: Vec<f32> = (0..600 * dim).map(|_| g.normal() as f32).collect();
        let cents: Vec<f32> = (0..37 * dim).map(|_| g.normal() as f32).collect();
        let norms = row_norms(&cents, dim);
        let (ids, dists) = nearest_centroids(&data, &cents, &norms, dim, 3);
        for (r, x) in data.chunks_exact(dim).enumerate() {
            let mut all: Vec<(f32, usize)> =
                cents.chunks_exact(dim).enumerate().map(|(c, v)| (l2sq(x, v), c)).collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(ids[r * 3] as usize, all[0].1);
            assert!((dists[r * 3] - all[0].0).abs() < 1e-3 * (1.0 + all[0].0));
            assert!(dists[r * 3] <= dists[r * 3 + 1] && dists[r * 3 + 1] <= dists[r * 3 + 2]);
        }
    }

    #[test]
    fn lane_argmin_equals_a_sequential_scan_including_ties() {
        let mut g = SplitMix64(5);
        for k in [1, 7, 16, 17, 100, 4096] {
            for trial in 0..20 {
                // Coarse values make ties frequent; the sequential scan keeps the first minimum.
                let dots: Vec<f32> = (0..k).map(|_| (g.below(8) as f32) / 4.0).collect();
                let mut norms: Vec<f32> = (0..k).map(|_| (g.below(8) as f32) / 2.0).collect();
                if trial == 0 {
                    norms.iter_mut().for_each(|v| *v = f32::INFINITY);
                }
                let (mut bd, mut bc) = (f32::INFINITY, 0u32);
                for (c, (&d, &cn)) in dots.iter().zip(&norms).enumerate() {
                    let v = cn - 2.0 * d;
                    if v < bd {
                        (bd, bc) = (v, c as u32);
                    }
                }
                for kernel in [ArgminKernel::Portable, ArgminKernel::detect()] {
                    let (c, d) = kernel.run(&dots, &norms);
                    assert_eq!((c, d.to_bits()), (bc, bd.to_bits()), "k {k}, trial {trial}, {kernel:?}");
                }
            }
        }
    }

    #[test]
    fn ragged_buffers_are_rejected() {
        assert!(count_vectors(&[0.0; 7], 2).is_err());
        assert!(count_vectors(&[0.0; 8], 0).is_err());
        assert_eq!(count_vectors(&[0.0; 8], 2).unwrap(), 4);
    }
}
