//! Retrieval evaluation, implemented exactly as the published protocols compute it, free of the model and the index
//! (the binary runs the searches and hands rankings here):
//!
//! - [`revisitop`]: Revisited Oxford / Paris (Radenovic et al. 2018): the original ground-truth pickle, Easy /
//!   Medium / Hard, junk removed from the ranking, AP by the trapezoidal rule over recall steps, mAP and mP@k.
//! - [`gldv2`]: Google Landmarks v2 Kaggle metrics: retrieval mAP@100 and recognition GAP (micro-AP), from the
//!   competition's CSV formats.
//! - [`pairs`]: our own ground truth for real-photo sets (queries with their positives, distractor queries with
//!   none): mAP, recall@k, and the distractor false-positive rate against the true-positive rate across score
//!   thresholds.
//! - [`views`]: the robustness benchmark: hard views of real photos (rotations over the whole circle, scale,
//!   perspective, blur, JPEG, tone, noise, occlusion) rendered from a seed, and their scores per transformation.

pub mod error;
pub mod gldv2;
pub mod pairs;
pub mod revisitop;
pub mod views;

pub use error::EvalError;
