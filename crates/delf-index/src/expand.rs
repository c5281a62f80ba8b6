//! Growing a set of real descriptors to a benchmark size that no photo collection at hand reaches, without making
//! the search easier or harder than at that size for real: how close a query's nearest neighbour is must follow
//! the curve the real data draws as it grows.
//!
//! The method (`delf bench vectors`, docs/benchmarks.md): measure the median query-to-nearest-neighbour distance
//! over real subsets of the base (1/8, 1/4, 1/2, all), fit a power law `d(n) = a n^-b` to those points and
//! extrapolate it to the target size; then give every real vector near-duplicate children (points on the way
//! towards a nearby real vector, L2-normalised again, see [`Expansion`]) with how far they go chosen so that the
//! median measured on the expanded set lands on the extrapolated value. The expanded set is a pure function of the base, the size and
//! [`Expansion`], so it is made in memory by every benchmark run instead of being stored.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use delf_core::rng::SplitMix64;

use crate::error::{IndexError, Result};
use crate::search::exact_search;

/// Median over the queries of the distance (L2, not squared) to their nearest row of `base`.
pub fn median_nn_distance(base: &[f32], queries: &[f32], dim: usize) -> f64 {
    let labels = row_labels(base.len() / dim);
    let mut nn: Vec<f64> = exact_search(base, &labels, queries, dim, 1)
        .iter()
        .filter_map(|n| n.first().map(|n| f64::from(n.distance).sqrt()))
        .collect();
    median(&mut nn)
}

/// Features per pseudo-image of [`row_labels`] (about what a real query image has).
pub const FEATURES_PER_LABEL: usize = 1000;

/// `(image, feature)` labels that number rows 0, 1, 2, ... ([`FEATURES_PER_LABEL`] features per image).
pub fn row_labels(n: usize) -> Vec<(u32, u16)> {
    (0..n).map(|r| ((r / FEATURES_PER_LABEL) as u32, (r % FEATURES_PER_LABEL) as u16)).collect()
}

fn too_small(n: usize, total: usize) -> IndexError {
    IndexError::InvalidParameter {
        name: "expansion size",
        value: total.to_string(),
        reason: format!("must be at least the {n} real vectors (and there must be some)"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) }
}

/// `d(n) = a n^-b`, fitted by least squares on `ln d` against `ln n`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    /// The value at n = 1.
    pub a: f64,
    /// The decay exponent.
    pub b: f64,
}

impl PowerLaw {
    /// The fit through `(n, d)` points (at least two distinct sizes, positive values).
    pub fn fit(points: &[(usize, f64)]) -> Option<Self> {
        let logs: Vec<(f64, f64)> = points
            .iter()
            .filter(|(n, d)| *n > 0 && *d > 0.0 && d.is_finite())
            .map(|&(n, d)| ((n as f64).ln(), d.ln()))
            .collect();
        let k = logs.len() as f64;
        let (mx, my) = (logs.iter().map(|p| p.0).sum::<f64>() / k, logs.iter().map(|p| p.1).sum::<f64>() / k);
        let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if logs.len() < 2 || sxx <= 0.0 {
            return None;
        }
        let slope = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
        Some(Self { a: (my - slope * mx).exp(), b: -slope })
    }

    /// The value at `n`.
    pub fn at(&self, n: usize) -> f64 {
        self.a * (n as f64).powf(-self.b)
    }
}

/// How a base of real vectors is grown: row `r` of the expanded set is child `r / n` of real vector `r % n`
/// (child 0 is the real vector itself), so any prefix gives every real vector the same number of children, give
/// or take one. A child lies on the way from its real vector towards a nearby real vector (the closest of a few
/// drawn from the same k-means cell), a random fraction of up to `reach` of the way, L2-normalised: children stay
/// on the data's own surface and fill the gaps between real neighbours, as more real photos would, instead of
/// scattering in directions real descriptors never take.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Expansion {
    /// Rows of the expanded set.
    pub total: usize,
    /// Largest fraction of the way to its partner that a child goes.
    pub reach: f32,
    /// Seed of the cells and of every child.
    pub seed: u64,
}

/// Real vectors grouped by k-means cell, where children find their partners.
struct Neighbourhoods {
    cell_of: Vec<u32>,
    members: Vec<Vec<u32>>,
}

/// Partners drawn from the cell per child; the closest one is taken.
const DRAWS: usize = 8;

impl Neighbourhoods {
    fn of(base: &[f32], dim: usize, seed: u64) -> Result<Self> {
        let n = base.len() / dim;
        let cells = (n / 256).clamp(1, 4096);
        let config =
            crate::kmeans::KMeansConfig { iterations: 10, max_points_per_centroid: 64, seed, ..Default::default() };
        let centroids = crate::kmeans::train(base, dim, cells, &config, "expansion cells")?;
        let norms = crate::linalg::row_norms(&centroids, dim);
        let (cell_of, _) = crate::linalg::nearest_centroids(base, &centroids, &norms, dim, 1);
        let mut members = vec![Vec::new(); cells];
        for (row, &c) in cell_of.iter().enumerate() {
            members[c as usize].push(row as u32);
        }
        Ok(Self { cell_of, members })
    }
}

impl Expansion {
    /// Writes child `j` (>= 1) of real vector `p` into `out`.
    fn child(&self, base: &[f32], dim: usize, hoods: &Neighbourhoods, p: usize, j: usize, out: &mut [f32]) {
        let mut g = SplitMix64(
            self.seed ^ (p as u64).wrapping_mul(0xA24B_AED4_963E_E407) ^ (j as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25),
        );
        g.next_u64();
        let parent = &base[p * dim..][..dim];
        let cell = &hoods.members[hoods.cell_of[p] as usize];
        let mut partner = parent;
        let mut closest = f32::INFINITY;
        for _ in 0..DRAWS {
            let r = cell[g.below(cell.len())] as usize;
            let other = &base[r * dim..][..dim];
            let d = crate::linalg::l2sq(parent, other);
            if r != p && d < closest {
                (partner, closest) = (other, d);
            }
        }
        let t = self.reach * g.uniform() as f32;
        let mut norm = 0.0f32;
        for ((o, &a), &b) in out.iter_mut().zip(parent).zip(partner) {
            *o = a + t * (b - a);
            norm += *o * *o;
        }
        let inv = 1.0 / norm.sqrt().max(1e-12);
        out.iter_mut().for_each(|o| *o *= inv);
    }

    /// The expanded set (`total` rows of `dim`), made in parallel.
    pub fn expand(&self, base: &[f32], dim: usize) -> Result<Vec<f32>> {
        let n = crate::linalg::count_vectors(base, dim)?;
        if n == 0 || self.total < n {
            return Err(too_small(n, self.total));
        }
        let hoods = Neighbourhoods::of(base, dim, self.seed)?;
        let mut out = vec![0.0f32; self.total * dim];
        out.par_chunks_mut(dim * 4096).enumerate().for_each(|(block, rows)| {
            for (i, row) in rows.chunks_mut(dim).enumerate() {
                let r = block * 4096 + i;
                let (p, j) = (r % n, r / n);
                if j == 0 {
                    row.copy_from_slice(&base[p * dim..][..dim]);
                } else {
                    self.child(base, dim, &hoods, p, j, row);
                }
            }
        });
        Ok(out)
    }

    /// The median nearest-neighbour distance the expanded set would give `queries`, computed from each query's
    /// `near` nearest real vectors and their children only (children stay close to their parent, so the nearest
    /// row of the expanded set is almost always among them; [`median_nn_distance`] on the expanded set checks it).
    fn estimate(&self, base: &[f32], dim: usize, hoods: &Neighbourhoods, near: &[Vec<u32>], queries: &[f32]) -> f64 {
        let n = base.len() / dim;
        let mut nn: Vec<f64> = near
            .par_iter()
            .zip(queries.par_chunks(dim))
            .map(|(parents, q)| {
                let mut child = vec![0.0f32; dim];
                let mut best = f32::INFINITY;
                for &p in parents {
                    let p = p as usize;
                    best = best.min(crate::linalg::l2sq(q, &base[p * dim..][..dim]));
                    for j in (1..).take_while(|j| j * n + p < self.total) {
                        self.child(base, dim, hoods, p, j, &mut child);
                        best = best.min(crate::linalg::l2sq(q, &child));
                    }
                }
                f64::from(best).sqrt()
            })
            .collect();
        median(&mut nn)
    }

    /// The expansion of `base` to `total` rows whose median query-to-nearest-neighbour distance is `target`: the
    /// smallest reach that gets there, found on a grid, then refined by bisection; where no reach gets there, the
    /// one that comes closest (measure the expanded set with [`median_nn_distance`] to know how close).
    pub fn calibrate(base: &[f32], queries: &[f32], dim: usize, total: usize, target: f64, seed: u64) -> Result<Self> {
        let n = crate::linalg::count_vectors(base, dim)?;
        if n == 0 || total < n {
            return Err(too_small(n, total));
        }
        let hoods = Neighbourhoods::of(base, dim, seed)?;
        let near: Vec<Vec<u32>> = exact_search(base, &row_labels(n), queries, dim, 64)
            .into_iter()
            .map(|l| l.iter().map(|nb| nb.image * FEATURES_PER_LABEL as u32 + u32::from(nb.feature)).collect())
            .collect();
        let at = |reach: f64| Self { total, reach: reach as f32, seed }.estimate(base, dim, &hoods, &near, queries);
        let mut lo = (0.0f64, at(0.0));
        let mut closest = lo;
        for step in 1..=20 {
            let reach = 0.05 * f64::from(step);
            let d = at(reach);
            if d <= target {
                let mut hi = reach;
                for _ in 0..20 {
                    let mid = 0.5 * (lo.0 + hi);
                    if at(mid) <= target { hi = mid } else { lo = (mid, 0.0) }
                }
                return Ok(Self { total, reach: hi as f32, seed });
            }
            if (d - target).abs() < (closest.1 - target).abs() {
                closest = (reach, d);
            }
            lo = (reach, d);
        }
        // Out of reach: the closest the children get (the caller measures and reports the gap).
        Ok(Self { total, reach: closest.0 as f32, seed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyntheticDescriptors;

    #[test]
    fn a_power_law_is_recovered() {
        let law = PowerLaw { a: 2.0, b: 0.25 };
        let points: Vec<(usize, f64)> = [1000, 2000, 4000, 8000].iter().map(|&n| (n, law.at(n))).collect();
        let fit = PowerLaw::fit(&points).unwrap();
        assert!((fit.a - 2.0).abs() < 1e-9 && (fit.b - 0.25).abs() < 1e-12, "{fit:?}");
        assert!(PowerLaw::fit(&points[..1]).is_none());
    }

    #[test]
    fn the_expansion_keeps_its_parents_and_continues_the_measured_curve() {
        let dim = 16;
        let mixture = SyntheticDescriptors::new(dim, 64, 0.5, 7);
        let base = mixture.sample(8000, 1);
        let queries = mixture.sample(300, 2);
        let points: Vec<(usize, f64)> = [1000, 2000, 4000, 8000]
            .iter()
            .map(|&n| (n, median_nn_distance(&base[..n * dim], &queries, dim)))
            .collect();
        let law = PowerLaw::fit(&points).unwrap();
        let target = law.at(40_000);
        assert!(target < points[3].1, "{points:?} {law:?}");
        let e = Expansion::calibrate(&base, &queries, dim, 40_000, target, 11).unwrap();
        let grown = e.expand(&base, dim).unwrap();
        assert_eq!(grown.len(), 40_000 * dim);
        assert_eq!(&grown[..base.len()], &base[..], "child 0 of every vector is the vector");
        assert_eq!(grown, e.expand(&base, dim).unwrap(), "the same set every time");
        let measured = median_nn_distance(&grown, &queries, dim);
        assert!((measured / target - 1.0).abs() < 0.05, "measured {measured}, target {target}, curve {points:?}");
        let norms = crate::linalg::row_norms(&grown, dim);
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4));
    }
}
