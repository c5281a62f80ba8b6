//! One module per implemented subcommand.

pub mod doctor;
