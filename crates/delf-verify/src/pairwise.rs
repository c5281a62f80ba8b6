//! Verifying one pair of images: putative matches, one-to-one filtering, RANSAC, score. Search uses the same
//! steps on the correspondences that the index returns.

use delf_core::{FeatureError, FeatureSet};
use serde::Serialize;

use crate::correspondences::{one_to_one, points, scale_ratios};
use crate::matching::{Match, MatchConfig, putative_matches};
use crate::models::{Affine, GeometricModel, Homography};
use crate::point::Point;
use crate::ransac::{Estimate, RansacConfig, ransac_scaled};
use crate::scoring::ScoringPolicy;

/// Which geometric model verifies a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// 6 DoF, minimal sample 3 (the reference).
    #[default]
    Affine,
    /// 8 DoF, minimal sample 4 (planar scenes under strong perspective).
    Homography,
}

/// A fitted model of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FittedModel {
    /// `[a, b, c, d, e, f]`: `x' = a x + b y + c`, `y' = d x + e y + f`.
    Affine {
        /// Row-major parameters.
        m: [f64; 6],
    },
    /// Row-major 3x3 with `h[8] = 1`.
    Homography {
        /// Row-major parameters.
        h: [f64; 9],
    },
}

impl FittedModel {
    /// Maps a query point into the database image.
    pub fn map(&self, p: Point) -> Point {
        match *self {
            FittedModel::Affine { m } => Affine { m }.map(p),
            FittedModel::Homography { h } => Homography { h }.map(p),
        }
    }
}

/// All settings of pairwise verification.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VerifyConfig {
    /// Putative matching.
    pub matching: MatchConfig,
    /// Keep each keypoint and location at most once per side (see [`one_to_one`]).
    pub one_to_one: bool,
    /// The geometric model.
    pub model: ModelKind,
    /// RANSAC.
    pub ransac: RansacConfig,
    /// What counts as a match.
    pub policy: ScoringPolicy,
}

impl VerifyConfig {
    /// Default Lowe ratio (nearest < ratio x second nearest, inside one image). Measured on real photos
    /// (docs/verification.md): a ratio test at 0.9 cuts the inliers of unrelated pairs from up to 19 to at most 5.
    /// 0.85 kept every distractor of the full robustness benchmark under 15 inliers, but lost box_in_scene and
    /// two blurred views (docs/benchmarks.md), so it is not the default.
    pub const DEFAULT_RATIO: f32 = 0.9;

    /// Default scale consistency of an inlier, in octaves ([`RansacConfig::scale_tolerance`]): one and a half
    /// pyramid steps (levels are half an octave apart) either way of the model's scale change. On the robustness
    /// benchmark it cut the distractors answered from 7 to 3 of 55 with the same recall@1; 0.5 lost true matches
    /// and 1.0 kept 5 distractors (docs/verification.md).
    pub const DEFAULT_SCALE_TOLERANCE: f64 = 0.75;

    /// The delf-rs default: the reference's matching (distance <= 0.8) and RANSAC (affine, 20 px, 1000 trials),
    /// plus a ratio test at [`VerifyConfig::DEFAULT_RATIO`], one-to-one correspondences and model bounds.
    pub fn robust() -> Self {
        Self {
            matching: MatchConfig { ratio: Some(Self::DEFAULT_RATIO), ..MatchConfig::default() },
            one_to_one: true,
            ransac: RansacConfig { scale_tolerance: Some(Self::DEFAULT_SCALE_TOLERANCE), ..RansacConfig::default() },
            ..Self::default()
        }
    }
}

/// The result of verifying a pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairVerification {
    /// The correspondences RANSAC saw (after one-to-one filtering when enabled), by increasing distance.
    pub matches: Vec<Match>,
    /// Per correspondence: whether it is an inlier of `model`.
    pub inliers: Vec<bool>,
    /// Number of inliers: the score.
    pub num_inliers: usize,
    /// The fitted model, if any.
    pub model: Option<FittedModel>,
    /// RANSAC trials run.
    pub trials: u32,
    /// Whether the score passes the policy ("match" vs "no match").
    pub is_match: bool,
}

/// Verifies correspondences given as point lists (used by search, where matches come from the index), with each
/// correspondence's keypoint scale ratio (database / query; NaN where unknown, empty where none is known), which
/// `config.ransac.scale_tolerance` checks against the model.
pub fn verify_points(
    src: &[Point],
    dst: &[Point],
    scale_ratios: &[f32],
    config: &VerifyConfig,
) -> (Option<FittedModel>, Vec<bool>, u32) {
    fn finish<M: GeometricModel>(
        e: Estimate<M>,
        wrap: impl Fn(M) -> FittedModel,
    ) -> (Option<FittedModel>, Vec<bool>, u32) {
        (e.model.map(wrap), e.inliers, e.trials)
    }
    match config.model {
        ModelKind::Affine => {
            finish(ransac_scaled::<Affine>(src, dst, scale_ratios, &config.ransac), |m| FittedModel::Affine { m: m.m })
        }
        ModelKind::Homography => finish(ransac_scaled::<Homography>(src, dst, scale_ratios, &config.ransac), |h| {
            FittedModel::Homography { h: h.h }
        }),
    }
}

/// Verifies correspondences under the scoring policy: with no more than `policy.min_putative` of them nothing is
/// fitted (every flag false, 0 trials); otherwise [`verify_points`]. Pairwise matching, one-process search and
/// cluster workers all score through this function.
pub fn verify_correspondences(
    src: &[Point],
    dst: &[Point],
    scale_ratios: &[f32],
    config: &VerifyConfig,
) -> (Option<FittedModel>, Vec<bool>, u32) {
    // RANSAC leaves every inlier flag false when it finds no model.
    if src.len() > config.policy.min_putative {
        verify_points(src, dst, scale_ratios, config)
    } else {
        (None, vec![false; src.len()], 0)
    }
}

/// Matches `a` against `b` and verifies the matches geometrically.
pub fn verify_pair(a: &FeatureSet, b: &FeatureSet, config: &VerifyConfig) -> Result<PairVerification, FeatureError> {
    let mut matches = putative_matches(a, b, &config.matching)?;
    if config.one_to_one {
        matches = one_to_one(&matches, a, b);
    }
    let (src, dst) = points(&matches, a, b);
    let ratios = scale_ratios(&matches, a, b);
    let (model, inliers, trials) = verify_correspondences(&src, &dst, &ratios, config);
    let num_inliers = inliers.iter().filter(|&&m| m).count();
    Ok(PairVerification { matches, inliers, num_inliers, model, trials, is_match: config.policy.is_match(num_inliers) })
}
