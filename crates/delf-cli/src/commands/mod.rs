//! One module per implemented subcommand, and the model setup they share.

pub mod batch_extract;
pub mod bench;
pub mod bench_cluster;
pub mod bench_extract;
pub mod bench_index;
pub mod cluster_admin;
pub mod doctor;
pub mod eval;
pub mod eval_report;
pub mod extract;
pub mod features;
pub mod index_build;
pub mod index_from_features;
pub mod matching;
pub mod model;
pub mod pca;
pub mod query;
pub mod search;
pub mod search_report;
pub mod serve;
pub mod train;

use anyhow::Result;

/// The async runtime of a command's object-store I/O (two threads: the work is waiting on the network and disks;
/// decoding runs on its own blocking threads).
pub fn io_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

use crate::cli::IndexCommand;
use crate::config::Config;

/// `delf index ...`.
pub fn index(command: &IndexCommand, config: &Config) -> Result<()> {
    match command {
        IndexCommand::Build(args) => index_build::run(args, config),
        IndexCommand::Inspect { index } => inspect(index),
    }
}

/// `delf index inspect DIR`: the manifest and what the shards hold.
fn inspect(dir: &std::path::Path) -> Result<()> {
    let manifest = delf_search::IndexManifest::load(dir)?;
    let index = manifest.open_index(dir)?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    for shard in index.shards() {
        println!(
            "shard {}/{}: {} live images, {} live descriptors, {} stored, {:.1} bytes per descriptor",
            shard.info().shard_id,
            shard.info().shard_count,
            shard.live_images(),
            shard.live_vectors(),
            shard.stored_vectors(),
            shard.bytes_per_descriptor()
        );
    }
    Ok(())
}
