//! Matching local features between two images and verifying them geometrically (DELF.md section 2).
//!
//! - [`matching`]: exact putative matches (1-NN under a distance threshold, optional ratio test, mutual check).
//! - [`correspondences`]: one-to-one filtering against collapsed, many-to-one "explanations".
//! - [`models`]: affine and homography estimation; [`bounds`]: rejection of implausible models.
//! - [`ransac`]: seeded, adaptive, LO-RANSAC with a final least-squares refit.
//! - [`pairwise`]: the whole pipeline for one pair; [`scoring`]: inliers as score, "no match" below a threshold.
//! - [`settings`]: the same settings as one flat list (configuration files, the cluster's protocol).
//! - [`draw`]: the side-by-side picture of inlier correspondences.
//! - [`synthetic`]: correspondences from known maps, for tests and benchmarks.

pub mod bounds;
pub mod correspondences;
pub mod draw;
pub mod matching;
pub mod models;
pub mod pairwise;
mod point;
pub mod ransac;
pub use delf_core::rng;
pub mod scoring;
pub mod settings;
pub mod synthetic;

pub use bounds::ModelBounds;
pub use matching::{Match, MatchConfig, putative_matches};
pub use models::{Affine, GeometricModel, Homography};
pub use pairwise::{
    FittedModel, ModelKind, PairVerification, VerifyConfig, verify_correspondences, verify_pair, verify_points,
};
pub use point::Point;
pub use ransac::{Estimate, RansacConfig, ransac, ransac_scaled};
pub use scoring::ScoringPolicy;
pub use settings::VerifySettings;
