//! `delf extract --list URI --out PREFIX`: a batch extraction worker. Reads the image list, joins (or creates) the
//! job at PREFIX, and extracts this worker's share of the units into Parquet feature shards, committing each unit
//! exactly once (docs/features.md). Any number of workers may run on one job; a restarted worker resumes.
//! The worker is `delf_build::ExtractionJob`, which `delf index build SOURCE` runs too (raw descriptors, into the
//! index folder) before indexing.

use std::sync::Arc;

use anyhow::{Context, Result};
use delf_build::ExtractionJob;
use delf_engine::config::{Config, ExtractSettings};
use delf_engine::model;
use delf_features::{Assignment, ImageList};
use delf_storage::Stores;

use crate::cli::ExtractArgs;
use crate::progress::StageBars;

/// Runs one worker of the job (`delf extract --list`).
pub fn run(list_uri: &str, args: &ExtractArgs, config: &Config) -> Result<()> {
    let out = args.out.as_deref().context("--list needs --out PREFIX")?;
    let assignment = Assignment::from_flags(args.shard_index, args.num_shards)?;
    let rt = delf_engine::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let list = Arc::new(rt.block_on(ImageList::load(&stores, list_uri))?);
    let settings = args.overrides(config.extract.to_config());
    let device = model::device(args.device.as_deref(), config)?;
    let pca_path = args.pca.clone().or_else(|| config.model.pca.clone());
    let extractor = model::extractor(config, settings.clone(), pca_path.as_deref(), device)?;
    if pca_path.is_none() {
        tracing::warn!(
            dim = extractor.dim(),
            "no PCA given (--pca or model.pca): descriptors keep the backbone's width"
        );
    }
    let run = ExtractionJob {
        rt: &rt,
        stores,
        list,
        out,
        extractor: &extractor,
        extract: serde_json::to_value(ExtractSettings::from_config(&settings))?,
        pca: pca_path.as_deref(),
        raw: false,
        settings: &args.batch.settings(),
        assignment,
    };
    let (_, summary) = run.run(&mut StageBars::default())?;
    println!(
        "worker done: {} units committed, {} already committed, {} lost to other workers, {} held by other \
         workers; {} images extracted, {} failed, {} descriptors, {:.1} MB of Parquet ({:.0} bytes per image); \
         {:.2} images/s over {:.0} s; job {}",
        summary.committed,
        summary.skipped,
        summary.lost_races,
        summary.held_by_others,
        summary.rows,
        summary.failures,
        summary.descriptors,
        summary.bytes as f64 / 1e6,
        summary.bytes as f64 / summary.rows.max(1) as f64,
        summary.images_per_s,
        summary.seconds,
        if summary.job_complete { "complete" } else { "not complete yet" },
    );
    if summary.failures > 0 {
        println!("failed images are listed by `delf features inspect {out} --errors`");
    }
    Ok(())
}
