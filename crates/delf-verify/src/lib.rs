//! Matching local features between two images and verifying them geometrically.
//!
//! - [`matching`]: exact putative matches (1-NN under a distance threshold, optional ratio test and mutual check).
//!
//! RANSAC (affine, homography) and the scoring policy arrive with issue 4.

pub mod matching;

pub use matching::{Match, MatchConfig, putative_matches};
