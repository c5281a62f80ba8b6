//! One module per implemented subcommand, and the model setup they share.

pub mod bench;
pub mod bench_extract;
pub mod bench_index;
pub mod doctor;
pub mod extract;
pub mod matching;
pub mod model;
pub mod pca;
