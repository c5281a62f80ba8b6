//! Training for delf-rs from image-level labels only (DELF paper section 4.2, `../shared/reference/DELF.md`).
//!
//! - [`labels`]: label files (Google-Landmarks style CSV), the validation split.
//! - [`augment`]: seeded training views (crop, scale, rotation, colour, blur).
//! - [`loader`]: images fetched and decoded on CPU threads, batches prepared ahead of the network.
//! - [`net`]: stage 1 (backbone + classifier) and stage 2 (frozen backbone + attention + classifier).
//! - [`sgd`]: SGD with momentum whose state is checkpointed.
//! - [`trainer`]: the loop, metrics, validation, checkpoints and resume, the exported result.

pub mod augment;
mod error;
pub mod labels;
pub mod loader;
pub mod net;
pub mod sgd;
pub mod trainer;

pub use augment::AugmentConfig;
pub use error::TrainError;
pub use labels::{LabelSet, Sample};
pub use net::{Stage, TrainNet};
pub use trainer::{RunOptions, Summary, TrainConfig, train};
