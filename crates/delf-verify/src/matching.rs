//! Exact putative matching between two feature sets (reference: `match_images.py`, 1-NN with Euclidean distance
//! <= 0.8). Descriptors are unit-norm, so the squared distance is `2 - 2 * dot`.

use delf_core::{FeatureError, FeatureSet};

/// How candidate correspondences are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchConfig {
    /// Keep a match only when the Euclidean distance is at most this (reference: 0.8); `None` keeps all.
    pub max_distance: Option<f32>,
    /// Lowe's ratio test: keep when `d1 < ratio * d2` for the two nearest neighbours; `None` disables it.
    pub ratio: Option<f32>,
    /// Keep only pairs that are each other's nearest neighbour.
    pub mutual: bool,
}

impl Default for MatchConfig {
    /// The reference setting: 1-NN within distance 0.8, no ratio test, no mutual check.
    fn default() -> Self {
        Self { max_distance: Some(0.8), ratio: None, mutual: false }
    }
}

/// One correspondence: feature `query` of the first set, feature `train` of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Index in the first feature set.
    pub query: u32,
    /// Index in the second feature set.
    pub train: u32,
    /// Euclidean distance between the descriptors.
    pub distance: f32,
}

/// Nearest and second-nearest neighbour of every row of `a` among the rows of `b`, by dot product.
fn nearest(a: &FeatureSet, b: &FeatureSet) -> Vec<(u32, f32, f32)> {
    (0..a.len())
        .map(|i| {
            let q = a.descriptor(i);
            let (mut best, mut best_dot, mut second_dot) = (0u32, f32::NEG_INFINITY, f32::NEG_INFINITY);
            for j in 0..b.len() {
                let dot: f32 = q.iter().zip(b.descriptor(j)).map(|(x, y)| x * y).sum();
                if dot > best_dot {
                    second_dot = best_dot;
                    best_dot = dot;
                    best = j as u32;
                } else if dot > second_dot {
                    second_dot = dot;
                }
            }
            (best, best_dot, second_dot)
        })
        .collect()
}

fn distance(dot: f32) -> f32 {
    (2.0 - 2.0 * dot).max(0.0).sqrt()
}

/// Putative matches from `a` to `b`, at most one per feature of `a`, in `a`'s order.
pub fn putative_matches(a: &FeatureSet, b: &FeatureSet, config: &MatchConfig) -> Result<Vec<Match>, FeatureError> {
    a.validate()?;
    b.validate()?;
    a.check_compatible(b)?;
    if a.is_empty() || b.is_empty() {
        return Ok(Vec::new());
    }
    let forward = nearest(a, b);
    let backward = config.mutual.then(|| nearest(b, a));
    let mut out = Vec::new();
    for (i, &(j, dot1, dot2)) in forward.iter().enumerate() {
        let d1 = distance(dot1);
        if config.max_distance.is_some_and(|t| d1 > t) {
            continue;
        }
        if config.ratio.is_some_and(|r| dot2.is_finite() && d1 >= r * distance(dot2)) {
            continue;
        }
        if backward.as_ref().is_some_and(|back| back[j as usize].0 != i as u32) {
            continue;
        }
        out.push(Match { query: i as u32, train: j, distance: d1 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use delf_core::{Fingerprint, Keypoint};

    use super::*;

    fn set(vectors: &[[f32; 2]], fp: &str) -> FeatureSet {
        FeatureSet {
            width: 1,
            height: 1,
            dim: 2,
            keypoints: vec![Keypoint { x: 0.0, y: 0.0, scale: 1.0, score: 1.0 }; vectors.len()],
            descriptors: vectors
                .iter()
                .flat_map(|v| {
                    let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
                    [v[0] / n, v[1] / n]
                })
                .collect(),
            fingerprint: Fingerprint(fp.into()),
        }
    }

    #[test]
    fn threshold_ratio_and_mutual() {
        let a = set(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "m");
        let b = set(&[[1.0, 0.05], [-1.0, 0.0], [0.05, 1.0]], "m");
        let all = putative_matches(&a, &b, &MatchConfig { max_distance: None, ratio: None, mutual: false }).unwrap();
        assert_eq!(all.iter().map(|m| (m.query, m.train)).collect::<Vec<_>>(), [(0, 0), (1, 2), (2, 0)]);
        // [1,1] is 45 degrees from both neighbours: the ratio test drops it, the mutual check too.
        let ratio =
            putative_matches(&a, &b, &MatchConfig { max_distance: None, ratio: Some(0.8), mutual: false }).unwrap();
        assert_eq!(ratio.len(), 2);
        let mutual = putative_matches(&a, &b, &MatchConfig { max_distance: None, ratio: None, mutual: true }).unwrap();
        assert_eq!(mutual.iter().map(|m| (m.query, m.train)).collect::<Vec<_>>(), [(0, 0), (1, 2)]);
        // 45 degrees is a distance of 0.765: inside the reference 0.8, outside 0.5.
        assert_eq!(putative_matches(&a, &b, &MatchConfig::default()).unwrap().len(), 3);
        let strict = MatchConfig { max_distance: Some(0.5), ..MatchConfig::default() };
        assert_eq!(putative_matches(&a, &b, &strict).unwrap().len(), 2);
    }

    #[test]
    fn empty_sets_and_mismatched_models() {
        let a = set(&[[1.0, 0.0]], "m");
        assert!(putative_matches(&a, &set(&[], "m"), &MatchConfig::default()).unwrap().is_empty());
        assert!(matches!(
            putative_matches(&a, &set(&[[1.0, 0.0]], "other"), &MatchConfig::default()),
            Err(FeatureError::FingerprintMismatch(..))
        ));
    }
}
