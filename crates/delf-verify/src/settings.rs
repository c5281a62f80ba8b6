//! [`VerifySettings`]: the verification settings as one flat list, the shape users write (`[verify]` in the
//! configuration, `DELF_VERIFY__*`) and the cluster sends to workers (`worker.proto`'s `VerifySettings`), with the
//! one mapping to and from the library's nested [`VerifyConfig`] and the one check of their values.

use serde::{Deserialize, Serialize};

use crate::{MatchConfig, ModelBounds, ModelKind, RansacConfig, ScoringPolicy, VerifyConfig};

/// Matching, RANSAC, model bounds and the match threshold as one flat list (docs/verification.md). Its default is
/// [`VerifyConfig::robust`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySettings {
    /// `affine` or `homography`.
    pub model: ModelKind,
    /// Largest descriptor distance of a putative match (reference 0.8; infinite = no limit).
    pub max_distance: f64,
    /// Lowe ratio test (unset = off).
    pub ratio: Option<f64>,
    /// Keep only mutual nearest neighbours.
    pub mutual: bool,
    /// Keep each keypoint and location at most once per side.
    pub one_to_one: bool,
    /// Inlier residual, pixels (reference 20).
    pub residual_threshold: f64,
    /// RANSAC trials at most (reference 1000).
    pub max_trials: u32,
    /// Early-stop confidence.
    pub confidence: f64,
    /// RANSAC seed.
    pub seed: u64,
    /// LO-RANSAC refinement.
    pub local_optimization: bool,
    /// Largest scale change either way.
    pub max_scale: f64,
    /// Largest singular-value ratio of the local linear map.
    pub max_anisotropy: f64,
    /// Accept mirrored models.
    pub allow_reflection: bool,
    /// Scale consistency of an inlier, octaves (0 = positions only).
    pub scale_tolerance: f64,
    /// Fewest inliers of a match; below it the answer is "no match".
    pub min_inliers: usize,
    /// With this many correspondences or fewer, nothing is fitted (score 0).
    pub min_putative: usize,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self::from_config(&VerifyConfig::robust())
    }
}

/// The shortest decimal of an `f32` as an `f64`, so that a configuration shows 0.8 and not 0.800000011920929.
fn f64_of(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

impl VerifySettings {
    /// The flat list of a library configuration.
    pub fn from_config(c: &VerifyConfig) -> Self {
        Self {
            model: c.model,
            max_distance: c.matching.max_distance.map_or(f64::INFINITY, f64_of),
            ratio: c.matching.ratio.map(f64_of),
            mutual: c.matching.mutual,
            one_to_one: c.one_to_one,
            residual_threshold: c.ransac.residual_threshold,
            max_trials: c.ransac.max_trials,
            confidence: c.ransac.confidence,
            seed: c.ransac.seed,
            local_optimization: c.ransac.local_optimization,
            max_scale: c.ransac.bounds.max_scale,
            max_anisotropy: c.ransac.bounds.max_anisotropy,
            allow_reflection: c.ransac.bounds.allow_reflection,
            scale_tolerance: c.ransac.scale_tolerance.unwrap_or(0.0),
            min_inliers: c.policy.min_inliers,
            min_putative: c.policy.min_putative,
        }
    }

    /// As the library's configuration.
    pub fn to_config(&self) -> VerifyConfig {
        VerifyConfig {
            matching: MatchConfig {
                max_distance: self.max_distance.is_finite().then_some(self.max_distance as f32),
                ratio: self.ratio.map(|r| r as f32),
                mutual: self.mutual,
            },
            one_to_one: self.one_to_one,
            model: self.model,
            ransac: RansacConfig {
                residual_threshold: self.residual_threshold,
                max_trials: self.max_trials,
                confidence: self.confidence,
                seed: self.seed,
                local_optimization: self.local_optimization,
                bounds: ModelBounds {
                    max_scale: self.max_scale,
                    max_anisotropy: self.max_anisotropy,
                    allow_reflection: self.allow_reflection,
                },
                scale_tolerance: (self.scale_tolerance > 0.0).then_some(self.scale_tolerance),
            },
            policy: ScoringPolicy { min_inliers: self.min_inliers, min_putative: self.min_putative },
        }
    }

    /// Checks every value, naming the first one out of range (`<name> <value> is ...`): what a worker answers a
    /// coordinator with bad settings, and what a configuration gets told.
    pub fn check(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 { Ok(()) } else { Err(format!("{name} {v} is not a positive number")) }
        };
        positive("residual_threshold", self.residual_threshold)?;
        positive("max_scale", self.max_scale)?;
        positive("max_anisotropy", self.max_anisotropy)?;
        if !(self.scale_tolerance.is_finite() && self.scale_tolerance >= 0.0) {
            return Err(format!("scale_tolerance {} is not 0 or a positive number", self.scale_tolerance));
        }
        if self.max_distance.is_nan() || self.max_distance <= 0.0 {
            return Err(format!("max_distance {} is not positive", self.max_distance));
        }
        if let Some(r) = self.ratio.filter(|r| !(r.is_finite() && *r > 0.0 && *r <= 1.0)) {
            return Err(format!("ratio {r} is outside (0, 1]"));
        }
        if self.max_trials == 0 || self.max_trials > 1_000_000 {
            return Err(format!("max_trials {} is outside 1..=1000000", self.max_trials));
        }
        if !(self.confidence > 0.0 && self.confidence <= 1.0) {
            return Err(format!("confidence {} is outside (0, 1]", self.confidence));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_list_and_the_library_configuration_map_both_ways() {
        let robust = VerifyConfig::robust();
        let flat = VerifySettings::from_config(&robust);
        assert_eq!(flat.to_config(), robust);
        assert_eq!(flat.ratio, Some(0.9), "shortest decimal, not 0.899999976158142");
        assert!(flat.check().is_ok());
        let reference = VerifyConfig::default();
        assert_eq!(VerifySettings::from_config(&reference).to_config(), reference);
    }

    #[test]
    fn values_out_of_range_are_named() {
        let bad = |f: fn(&mut VerifySettings)| {
            let mut s = VerifySettings::default();
            f(&mut s);
            s.check().unwrap_err()
        };
        assert!(bad(|s| s.residual_threshold = -1.0).contains("residual_threshold"));
        assert!(bad(|s| s.max_scale = f64::NAN).contains("max_scale"));
        assert!(bad(|s| s.max_trials = 0).contains("max_trials"));
        assert!(bad(|s| s.confidence = 1.5).contains("confidence"));
        assert!(bad(|s| s.ratio = Some(2.0)).contains("ratio"));
        assert!(bad(|s| s.scale_tolerance = -0.5).contains("scale_tolerance"));
    }
}
