//! Retrieval on one index, shared by the single-process `delf search` and (later) the cluster coordinator, with no
//! dependency on libtorch: the caller extracts the query's features.
//!
//! - [`manifest`]: what an index folder holds and how it was built (fingerprints, parameters, counts).
//! - [`source`]: the images to index, from a folder or a list file, with stable ids.
//! - [`synthetic`]: a synthetic index with matching queries, for cluster tests and benchmarks.
//! - [`retrieval`]: ANN neighbours -> votes per database image -> geometric verification of the best candidates
//!   -> ranked results scored by inliers, or "no match".

pub mod error;
pub mod manifest;
pub mod retrieval;
pub mod source;
pub mod synthetic;

pub use error::SearchError;
pub use manifest::IndexManifest;
pub use retrieval::{
    Retrieval, RetrievalConfig, VerifiedImage, candidate_points, check_passes, correspondences, pass_of, rank,
    retrieve, retrieve_extending, vote,
};
pub use source::{ImageSource, SourceImage};
