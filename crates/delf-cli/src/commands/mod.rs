//! One module per implemented subcommand, and the model setup they share.

pub mod doctor;
pub mod extract;
pub mod model;
pub mod pca;
