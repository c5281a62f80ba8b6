//! `delf extract --list URI --out PREFIX`: a batch extraction worker. Reads the image list, joins (or creates) the
//! job at PREFIX, and extracts this worker's share of the units into Parquet feature shards, committing each unit
//! exactly once (docs/features.md). Any number of workers may run on one job; a restarted worker resumes.

use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use delf_core::Fingerprint;
use delf_features::job::{JOB_FORMAT, PCA_FILE};
use delf_features::schema::SCHEMA_VERSION;
use delf_features::{
    Assignment, BatchExtractor, FeatureStore, ImageList, JobSpec, ShardOptions, Stores, WorkPlan, Worker, WorkerOptions,
};
use delf_image::RgbImage;
use delf_model::Extractor;

use crate::cli::ExtractArgs;
use crate::commands::model;
use crate::config::{Config, ExtractSettings};
use crate::progress::Progress;

/// The network behind the worker: batched extraction of same-size images.
struct ModelBatches<'a> {
    extractor: &'a Extractor,
    batch: usize,
}

impl BatchExtractor for ModelBatches<'_> {
    fn fingerprint(&self) -> &Fingerprint {
        self.extractor.fingerprint()
    }

    fn dim(&self) -> usize {
        self.extractor.dim()
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn extract(&mut self, images: &[&RgbImage]) -> Vec<Result<delf_core::FeatureSet, String>> {
        self.extractor.extract_batch(images, self.batch).into_iter().map(|r| r.map_err(|e| e.to_string())).collect()
    }
}

/// Runs one worker of the job.
pub fn run(list_uri: &str, args: &ExtractArgs, config: &Config) -> Result<()> {
    let out = args.out.as_deref().context("--list needs --out PREFIX")?;
    let assignment = Assignment::from_flags(args.shard_index, args.num_shards)?;
    let job_args = &args.batch;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stores = Arc::new(Stores::new());
    let list = Arc::new(rt.block_on(ImageList::load(&stores, list_uri))?);
    let plan = WorkPlan::new(list.len(), job_args.unit_size)?;

    let mut settings = config.extract.to_config();
    if let Some(n) = args.max_features {
        settings.max_features = n;
    }
    if let Some(m) = args.max_side {
        settings.max_side = (m > 0).then_some(m);
    }
    let device = model::device(args.device.as_deref(), config)?;
    let pca_path = args.pca.clone().or_else(|| config.model.pca.clone());
    let extractor = model::extractor(config, settings.clone(), pca_path.as_deref(), device)?;
    if pca_path.is_none() {
        tracing::warn!(
            dim = extractor.dim(),
            "no PCA given (--pca or model.pca): descriptors keep the backbone's width"
        );
    }
    let fingerprint = extractor.fingerprint().to_string();
    let spec = JobSpec {
        format: JOB_FORMAT,
        job_id: JobSpec::id_of(&list.checksum, plan.unit_size, &fingerprint),
        list: list_uri.to_string(),
        list_checksum: list.checksum.clone(),
        images: list.len(),
        unit_size: plan.unit_size,
        units: plan.units(),
        fingerprint,
        dim: extractor.dim(),
        schema_version: SCHEMA_VERSION,
        model: format!(
            "{} ({}-d{})",
            extractor.backbone().name(),
            extractor.dim(),
            if pca_path.is_some() { " after PCA" } else { "" }
        ),
        extract: serde_json::to_value(ExtractSettings {
            scales: settings.scales.clone(),
            max_side: settings.max_side.unwrap_or(0),
            max_features: settings.max_features,
            score_threshold: settings.score_threshold,
            half_precision: settings.half_precision,
        })?,
        pca: pca_path.is_some(),
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: delf_features::job::unix_now(),
    };
    let store = FeatureStore::new(stores.location(out)?);
    let job = rt.block_on(store.open_or_create(&spec))?;
    if let Some(p) = &pca_path {
        let bytes = std::fs::read(p).with_context(|| format!("reading PCA {}", p.display()))?;
        let loc = store.location();
        rt.block_on(loc.put_if_absent(&loc.child(PCA_FILE), Bytes::from(bytes)))?;
    }

    let committed = rt.block_on(store.committed())?;
    let todo: usize = plan
        .units_for(assignment)
        .into_iter()
        .filter(|u| !committed.contains_key(u))
        .map(|u| plan.range(u).len())
        .sum();
    tracing::info!(
        job = %job.job_id, list = list_uri, images = list.len(), units = plan.units(), committed = committed.len(),
        ?assignment, todo, device = %delf_model::device::describe(device), "worker started"
    );
    let mut opts = WorkerOptions {
        fetch_concurrency: job_args.fetch_concurrency,
        lease_s: job_args.lease_s,
        shard: ShardOptions { row_group_images: job_args.row_group, ..ShardOptions::default() },
        ..WorkerOptions::default()
    };
    if let Some(id) = &job_args.worker_id {
        opts.worker_id = id.clone();
    }
    if let Some(n) = job_args.decode_threads {
        opts.decode_threads = n;
    }
    let batch = job_args.batch.unwrap_or(if device.is_cuda() { 8 } else { 1 });
    opts.queue = opts.queue.max(2 * batch);
    let worker = Worker::new(store, stores, list, plan, job.job_id.clone(), opts, rt.handle().clone());
    let mut bar = Progress::new("extract", todo);
    let summary = worker.run(assignment, &mut ModelBatches { extractor: &extractor, batch }, &mut || bar.inc())?;
    bar.finish();
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
