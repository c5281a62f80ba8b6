use serde::{Deserialize, Serialize};

use crate::Fingerprint;

/// One local feature's geometry and attention (see the crate docs for the coordinate convention).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Keypoint {
    /// Horizontal position in original-image pixels, origin at the left edge.
    pub x: f32,
    /// Vertical position in original-image pixels, origin at the top edge.
    pub y: f32,
    /// `1 / s` for the pyramid scale `s` the feature came from.
    pub scale: f32,
    /// Attention score (higher = more useful for retrieval).
    pub score: f32,
}

/// The local features of one image: keypoints and their L2-normalised descriptors, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSet {
    /// Width of the (oriented) original image.
    pub width: u32,
    /// Height of the (oriented) original image.
    pub height: u32,
    /// Descriptor dimensionality.
    pub dim: usize,
    /// One per feature, sorted by decreasing score.
    pub keypoints: Vec<Keypoint>,
    /// `keypoints.len() * dim` values, feature after feature.
    pub descriptors: Vec<f32>,
    /// The model + PCA that produced the descriptors.
    pub fingerprint: Fingerprint,
}

/// A feature set whose parts do not fit together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// `descriptors.len()` is not `keypoints.len() * dim`.
    #[error("{descriptors} descriptor values for {keypoints} keypoints of dimension {dim}")]
    Shape {
        /// Number of keypoints.
        keypoints: usize,
        /// Declared dimension.
        dim: usize,
        /// Number of descriptor values.
        descriptors: usize,
    },
    /// Two feature sets come from different models or PCAs.
    #[error("features from different models: {0} vs {1}")]
    FingerprintMismatch(Fingerprint, Fingerprint),
}

impl FeatureSet {
    /// Appends the features of `other` (the same model and PCA; the image size stays this set's).
    pub fn extend(&mut self, other: FeatureSet) -> Result<(), FeatureError> {
        self.check_compatible(&other)?;
        self.keypoints.extend(other.keypoints);
        self.descriptors.extend(other.descriptors);
        Ok(())
    }

    /// Appends `passes` (the features of the same image extracted again, e.g. turned) one after the other, as
    /// [`FeatureSet::extend`] does, and returns how many features each held: where each pass lies in this set.
    pub fn extend_passes(&mut self, passes: impl IntoIterator<Item = FeatureSet>) -> Result<Vec<usize>, FeatureError> {
        passes
            .into_iter()
            .map(|pass| {
                let n = pass.len();
                self.extend(pass).map(|()| n)
            })
            .collect()
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.keypoints.len()
    }

    /// Whether there are no features (tiny images have none; that is not an error).
    pub fn is_empty(&self) -> bool {
        self.keypoints.is_empty()
    }

    /// Descriptor of feature `i`.
    pub fn descriptor(&self, i: usize) -> &[f32] {
        &self.descriptors[i * self.dim..(i + 1) * self.dim]
    }

    /// Checks that descriptors and keypoints agree in count and dimension.
    pub fn validate(&self) -> Result<(), FeatureError> {
        if self.descriptors.len() != self.keypoints.len() * self.dim {
            return Err(FeatureError::Shape {
                keypoints: self.keypoints.len(),
                dim: self.dim,
                descriptors: self.descriptors.len(),
            });
        }
        Ok(())
    }

    /// Fails unless `other` was made by the same model and PCA.
    pub fn check_compatible(&self, other: &FeatureSet) -> Result<(), FeatureError> {
        if self.fingerprint != other.fingerprint {
            return Err(FeatureError::FingerprintMismatch(self.fingerprint.clone(), other.fingerprint.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, dim: usize, fp: &str) -> FeatureSet {
        FeatureSet {
            width: 10,
            height: 10,
            dim,
            keypoints: vec![Keypoint { x: 1.0, y: 2.0, scale: 1.0, score: 3.0 }; n],
            descriptors: vec![0.5; n * dim],
            fingerprint: Fingerprint(fp.into()),
        }
    }

    #[test]
    fn shape_and_fingerprint_checks() {
        assert!(set(3, 4, "a").validate().is_ok());
        let mut bad = set(3, 4, "a");
        bad.descriptors.pop();
        assert!(matches!(bad.validate(), Err(FeatureError::Shape { keypoints: 3, dim: 4, descriptors: 11 })));
        assert!(set(1, 4, "a").check_compatible(&set(2, 4, "a")).is_ok());
        assert!(matches!(set(1, 4, "a").check_compatible(&set(1, 4, "b")), Err(FeatureError::FingerprintMismatch(..))));
        assert_eq!(set(2, 4, "a").descriptor(1).len(), 4);
    }

    #[test]
    fn json_round_trip() {
        let s = set(2, 3, "fp");
        let back: FeatureSet = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
