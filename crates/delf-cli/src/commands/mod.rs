//! One module per implemented subcommand, and the model setup they share.

pub mod bench;
pub mod doctor;
pub mod extract;
pub mod matching;
pub mod model;
pub mod pca;
