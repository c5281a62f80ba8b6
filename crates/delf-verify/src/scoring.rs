//! The scoring policy shared by `delf match` and `delf search`: the score is the inlier count; below `min_inliers`
//! the answer is "no match".

/// When a verified pair counts as a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoringPolicy {
    /// Fewest inliers of a match. Default measured on real photos (docs/verification.md).
    pub min_inliers: usize,
    /// With this many putative matches or fewer, the score is 0 without running RANSAC (reference: 3).
    pub min_putative: usize,
}

impl ScoringPolicy {
    /// The default threshold; see docs/verification.md for the measurement behind it.
    pub const DEFAULT_MIN_INLIERS: usize = 15;
}

impl Default for ScoringPolicy {
    fn default() -> Self {
        Self { min_inliers: Self::DEFAULT_MIN_INLIERS, min_putative: 3 }
    }
}

impl ScoringPolicy {
    /// Whether `inliers` passes.
    pub fn is_match(&self, inliers: usize) -> bool {
        inliers >= self.min_inliers
    }
}
