//! RANSAC with a deterministic seed, degenerate-sample rejection, adaptive early stop, optional local optimisation
//! (LO-RANSAC) and a final least-squares refit on the inliers. The trial loop allocates nothing.

use crate::bounds::ModelBounds;
use crate::models::GeometricModel;
use crate::point::Point;
use crate::rng::SplitMix64;

/// RANSAC settings; defaults are the reference's (`match_images.py`: residual 20 px, 1000 trials).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RansacConfig {
    /// Largest transfer error of an inlier, in database-image pixels.
    pub residual_threshold: f64,
    /// Upper bound on the number of sampled models.
    pub max_trials: u32,
    /// Stop early once a model with this probability of being the best has been seen (1.0 never stops early).
    pub confidence: f64,
    /// Seed of the sampler: same seed and input, same result.
    pub seed: u64,
    /// Refine each new best model by iterated least squares on its inliers (LO-RANSAC).
    pub local_optimization: bool,
    /// Limits that reject implausible models.
    pub bounds: ModelBounds,
    /// Scale consistency, in octaves: where the caller gives each correspondence's keypoint scale ratio (database
    /// scale / query scale; see [`ransac_scaled`]), a correspondence is an inlier only when that ratio is within
    /// this many octaves of the model's own scale change at the query point (`sqrt|det J|`). Features of a true
    /// match come from pyramid levels that agree with the geometry; chance matches between look-alike shapes
    /// often do not (docs/verification.md). `None` checks positions only.
    pub scale_tolerance: Option<f64>,
}

impl Default for RansacConfig {
    fn default() -> Self {
        Self {
            residual_threshold: 20.0,
            max_trials: 1000,
            confidence: 0.999,
            seed: 0x5EED,
            local_optimization: true,
            bounds: ModelBounds::default(),
            scale_tolerance: None,
        }
    }
}

/// The outcome of one RANSAC run.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate<M> {
    /// The best plausible model, if any sample gave one.
    pub model: Option<M>,
    /// `inliers[i]` tells whether correspondence `i` agrees with the model.
    pub inliers: Vec<bool>,
    /// Number of `true` in `inliers`.
    pub num_inliers: usize,
    /// Models sampled before stopping.
    pub trials: u32,
}

/// What makes a correspondence an inlier: its transfer error, and where scale ratios are given, its scale.
#[derive(Clone, Copy)]
struct InlierTest<'a> {
    /// Squared residual threshold.
    t2: f64,
    /// Per correspondence: squared scale ratio (database / query); NaN where unknown. Empty: no scale check.
    ratio2: &'a [f64],
    /// `4^tolerance`: the accepted factor between the squared ratio and `|det J|`, either way.
    factor: f64,
}

impl InlierTest<'_> {
    /// Whether correspondence `i`'s scale agrees with `model` at `p` (`det`: `|det J|` where it is the same
    /// everywhere).
    fn scale_agrees<M: GeometricModel>(&self, model: &M, i: usize, p: Point, det: Option<f64>) -> bool {
        let r2 = self.ratio2[i];
        if r2.is_nan() {
            return true;
        }
        let det = det.unwrap_or_else(|| abs_det(model.jacobian(p)));
        r2 <= det * self.factor && r2 * self.factor >= det
    }
}

/// `|det J|`: the area scale of a model's linear part (its linear scale change squared).
fn abs_det([[a, b], [c, d]]: [[f64; 2]; 2]) -> f64 {
    (a * d - b * c).abs()
}

/// Inliers of `model` written into `mask`; returns their count.
fn score<M: GeometricModel>(model: &M, src: &[Point], dst: &[Point], test: InlierTest, mask: &mut [bool]) -> usize {
    // Needed only with scale ratios; computed once per model where the Jacobian is the same everywhere.
    let det = (M::UNIFORM_JACOBIAN && !test.ratio2.is_empty()).then(|| abs_det(model.jacobian(Point::default())));
    let mut n = 0;
    for (i, ((p, q), m)) in src.iter().zip(dst).zip(mask.iter_mut()).enumerate() {
        *m = model.residual2(*p, *q) <= test.t2 && (test.ratio2.is_empty() || test.scale_agrees(model, i, *p, det));
        n += usize::from(*m);
    }
    n
}

/// Number of trials needed to see an all-inlier sample with probability `confidence`.
fn needed_trials(inlier_ratio: f64, sample: usize, confidence: f64, max: u32) -> u32 {
    if confidence >= 1.0 {
        return max;
    }
    let p_good = inlier_ratio.powi(sample as i32);
    if p_good <= 0.0 {
        return max;
    }
    if p_good >= 1.0 {
        return 1;
    }
    let n = (1.0 - confidence).ln() / (1.0 - p_good).ln();
    if n.is_finite() { (n.ceil() as u32).clamp(1, max) } else { max }
}

/// Least-squares fit on the points selected by `mask`, gathered into the scratch buffers.
fn refit<M: GeometricModel>(
    src: &[Point],
    dst: &[Point],
    mask: &[bool],
    bs: &mut Vec<Point>,
    bd: &mut Vec<Point>,
) -> Option<M> {
    bs.clear();
    bd.clear();
    for ((p, q), &m) in src.iter().zip(dst).zip(mask) {
        if m {
            bs.push(*p);
            bd.push(*q);
        }
    }
    M::fit_least_squares(bs, bd)
}

/// Estimates a model mapping `src[i]` to `dst[i]` for as many `i` as possible.
///
/// Fewer correspondences than a minimal sample, or no plausible model, gives `model: None` and no inliers:
/// a clear answer, never a panic.
pub fn ransac<M: GeometricModel>(src: &[Point], dst: &[Point], config: &RansacConfig) -> Estimate<M> {
    ransac_scaled(src, dst, &[], config)
}

/// [`ransac`] with each correspondence's keypoint scale ratio (`scale_ratios[i]`: database keypoint scale / query
/// keypoint scale, NaN where unknown; empty: none known), checked against the model's scale change when
/// `config.scale_tolerance` is set.
pub fn ransac_scaled<M: GeometricModel>(
    src: &[Point],
    dst: &[Point],
    scale_ratios: &[f32],
    config: &RansacConfig,
) -> Estimate<M> {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &dst[..n]);
    let mut best = Estimate { model: None, inliers: vec![false; n], num_inliers: 0, trials: 0 };
    if n < M::SAMPLE_SIZE {
        return best;
    }
    let ratio2: Vec<f64> = match config.scale_tolerance {
        Some(_) if scale_ratios.len() >= n => scale_ratios[..n].iter().map(|&r| f64::from(r).powi(2)).collect(),
        _ => Vec::new(),
    };
    let test = InlierTest {
        t2: config.residual_threshold * config.residual_threshold,
        ratio2: &ratio2,
        factor: 4f64.powf(config.scale_tolerance.unwrap_or(0.0)),
    };
    let centre = {
        let (sx, sy) = src.iter().fold((0.0, 0.0), |(a, b), p| (a + p.x, b + p.y));
        Point::new(sx / n as f64, sy / n as f64)
    };
    let plausible = |m: &M| config.bounds.accepts(m, centre);
    // Scratch space, allocated once: candidate mask, sample, and least-squares buffers.
    let mut mask = vec![false; n];
    let mut lo_mask = vec![false; n];
    let (mut bs, mut bd) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut sample_idx = [0usize; 8];
    let (mut ss, mut sd) = ([Point::default(); 8], [Point::default(); 8]);
    let k = M::SAMPLE_SIZE;
    let mut rng = SplitMix64(config.seed);
    let mut limit = config.max_trials;

    while best.trials < limit {
        best.trials += 1;
        // Draw k distinct indices.
        let mut drawn = 0;
        while drawn < k {
            let i = rng.below(n);
            if !sample_idx[..drawn].contains(&i) {
                sample_idx[drawn] = i;
                ss[drawn] = src[i];
                sd[drawn] = dst[i];
                drawn += 1;
            }
        }
        let Some(model) = M::fit_minimal(&ss[..k], &sd[..k]) else { continue };
        if !plausible(&model) {
            continue;
        }
        let count = score(&model, src, dst, test, &mut mask);
        if count <= best.num_inliers {
            continue;
        }
        let (mut model, mut count) = (model, count);
        if config.local_optimization {
            // Iterated least squares on the inliers while the count grows.
            for _ in 0..4 {
                let Some(m) = refit::<M>(src, dst, &mask, &mut bs, &mut bd).filter(plausible) else { break };
                let c = score(&m, src, dst, test, &mut lo_mask);
                if c <= count {
                    break;
                }
                std::mem::swap(&mut mask, &mut lo_mask);
                (model, count) = (m, c);
            }
        }
        best.model = Some(model);
        best.num_inliers = count;
        best.inliers.copy_from_slice(&mask);
        limit = limit.min(needed_trials(count as f64 / n as f64, k, config.confidence, config.max_trials));
    }

    // Final least-squares refit on all inliers; kept only when it does not lose inliers.
    if best.model.is_some()
        && best.num_inliers > k
        && let Some(m) = refit::<M>(src, dst, &best.inliers, &mut bs, &mut bd).filter(plausible)
    {
        let c = score(&m, src, dst, test, &mut mask);
        if c >= best.num_inliers {
            best.model = Some(m);
            best.num_inliers = c;
            best.inliers.copy_from_slice(&mask);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_trial_count() {
        assert_eq!(needed_trials(1.0, 3, 0.999, 1000), 1);
        assert_eq!(needed_trials(0.0, 3, 0.999, 1000), 1000);
        // 30 % inliers, samples of 3: log(0.001) / log(1 - 0.027) = 252.4.
        assert_eq!(needed_trials(0.3, 3, 0.999, 1000), 253);
        assert_eq!(needed_trials(0.3, 3, 1.0, 1000), 1000);
    }
}
