//! One module per implemented subcommand: each turns its flags into library calls and prints what they return.

pub mod batch_extract;
pub mod cluster_admin;
pub mod doctor;
pub mod eval;
pub mod eval_report;
pub mod extract;
pub mod features;
pub mod index_build;
pub mod index_distributed;
pub mod matching;
pub mod pca;
pub mod query;
pub mod search;
pub mod search_report;
pub mod serve;
pub mod train;

use anyhow::Result;
use delf_engine::Config;

use crate::cli::IndexCommand;

/// `delf index ...`.
pub fn index(command: &IndexCommand, config: &Config) -> Result<()> {
    match command {
        IndexCommand::Build(args) => index_build::run(args, config),
        IndexCommand::Train(args) => index_distributed::train(args, config),
        IndexCommand::Encode(args) => index_distributed::encode(args, config),
        IndexCommand::Finalize { index, wait_s } => index_distributed::finalize(index, *wait_s),
        IndexCommand::Inspect { index } => inspect(index),
        IndexCommand::Push { index, uri } => push(index, uri),
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

/// `delf index push DIR URI`: the files the cluster reads, checked against the manifest first, manifest last.
fn push(dir: &std::path::Path, uri: &str) -> Result<()> {
    use delf_search::manifest::{MANIFEST_FILE, PCA_FILE};
    let manifest = delf_search::IndexManifest::load(dir)?;
    let mut files: Vec<String> =
        (0..manifest.shards).map(|s| delf_index::sharded::shard_file_name(s, manifest.shards)).collect();
    if dir.join(PCA_FILE).is_file() {
        files.push(PCA_FILE.to_string());
    }
    files.push(MANIFEST_FILE.to_string());
    let rt = delf_engine::io_runtime()?;
    let stores = delf_storage::Stores::new();
    let location = stores.location(uri)?;
    let mut bytes_total = 0u64;
    for name in &files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        bytes_total += bytes.len() as u64;
        rt.block_on(location.put(&location.child(name), bytes::Bytes::from(bytes)))?;
        tracing::info!(file = %name, "pushed");
    }
    println!("pushed {} files ({bytes_total} bytes) of {} to {uri}", files.len(), dir.display());
    Ok(())
}
