//! One module per implemented subcommand, and the model setup they share.

pub mod bench;
pub mod bench_extract;
pub mod bench_index;
pub mod doctor;
pub mod extract;
pub mod index_build;
pub mod matching;
pub mod model;
pub mod pca;
pub mod search;
pub mod search_report;

use anyhow::Result;

use crate::cli::{IndexCommand, SearchArgs};
use crate::config::Config;

/// `delf index ...`.
pub fn index(command: &IndexCommand, config: &Config) -> Result<()> {
    match command {
        IndexCommand::Build { source, out, shards, spec, pca, pca_sample, dim, nprobe, device } => index_build::run(
            &index_build::BuildOptions {
                source: source.clone(),
                out: out.clone(),
                shards: *shards,
                spec: spec.as_deref().map(str::parse).transpose()?,
                pca: pca.clone(),
                pca_sample: *pca_sample,
                dim: *dim,
                nprobe: *nprobe,
                device: device.clone(),
            },
            config,
        ),
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

/// `delf search`.
pub fn search(args: &SearchArgs, config: &Config) -> Result<()> {
    search::run(
        &search::SearchOptions {
            index: args.index.clone(),
            queries: args.queries.clone(),
            top: args.top,
            candidates: args.candidates,
            nprobe: args.nprobe,
            min_inliers: args.min_inliers,
            json: args.json,
            html: args.html.clone(),
            device: args.device.clone(),
        },
        config,
    )
}
