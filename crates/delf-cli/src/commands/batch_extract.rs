//! `delf extract --list URI --out PREFIX`: a batch extraction worker. Reads the image list, joins (or creates) the
//! job at PREFIX, and extracts this worker's share of the units into Parquet feature shards, committing each unit
//! exactly once (docs/features.md). Any number of workers may run on one job; a restarted worker resumes.
//! `delf index build SOURCE` runs the same job (raw descriptors, into the index folder) before indexing.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use delf_core::Fingerprint;
use delf_features::job::{JOB_FORMAT, PCA_FILE};
use delf_features::schema::SCHEMA_VERSION;
use delf_features::{
    Assignment, BatchExtractor, FeatureStore, ImageList, JobSpec, ShardOptions, Stores, WorkPlan, Worker,
    WorkerOptions, WorkerSummary,
};
use delf_image::RgbImage;
use delf_model::{ExtractConfig, Extractor};

use crate::cli::{BatchJobArgs, ExtractArgs};
use crate::commands::model;
use crate::config::{Config, ExtractSettings};
use crate::progress::Progress;

/// The network behind the worker: batched extraction of same-size images.
struct ModelBatches<'a> {
    extractor: &'a Extractor,
    batch: usize,
    raw: bool,
}

impl BatchExtractor for ModelBatches<'_> {
    fn fingerprint(&self) -> &Fingerprint {
        if self.raw { self.extractor.raw_fingerprint() } else { self.extractor.fingerprint() }
    }

    fn dim(&self) -> usize {
        if self.raw { self.extractor.backbone().channels() as usize } else { self.extractor.dim() }
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    fn extract(&mut self, images: &[&RgbImage]) -> Vec<Result<delf_core::FeatureSet, String>> {
        let results = if self.raw {
            self.extractor.extract_raw_batch(images, self.batch)
        } else {
            self.extractor.extract_batch(images, self.batch)
        };
        results.into_iter().map(|r| r.map_err(|e| e.to_string())).collect()
    }
}

/// One batch job to run with the model.
pub struct JobRun<'a> {
    /// The async runtime of the I/O.
    pub rt: &'a tokio::runtime::Runtime,
    /// Object stores.
    pub stores: Arc<Stores>,
    /// The images.
    pub list: Arc<ImageList>,
    /// Output prefix.
    pub out: &'a str,
    /// The extractor (its PCA, if any, is applied unless `raw`).
    pub extractor: &'a Extractor,
    /// The extraction settings it was built with.
    pub settings: &'a ExtractConfig,
    /// The PCA file of the extractor, copied next to the features.
    pub pca: Option<&'a Path>,
    /// Write raw (pre-PCA) descriptors.
    pub raw: bool,
    /// Worker settings.
    pub job: &'a BatchJobArgs,
    /// Which units.
    pub assignment: Assignment,
}

impl JobRun<'_> {
    /// The job's specification.
    fn spec(&self, plan: &WorkPlan) -> Result<JobSpec> {
        let x = self.extractor;
        let (fingerprint, dim) = if self.raw {
            (x.raw_fingerprint().to_string(), x.backbone().channels() as usize)
        } else {
            (x.fingerprint().to_string(), x.dim())
        };
        let reduced = self.pca.is_some() && !self.raw;
        Ok(JobSpec {
            format: JOB_FORMAT,
            job_id: JobSpec::id_of(&self.list.checksum, plan.unit_size, &fingerprint),
            list: self.list.uri.clone(),
            list_checksum: self.list.checksum.clone(),
            images: self.list.len(),
            unit_size: plan.unit_size,
            units: plan.units(),
            fingerprint,
            dim,
            schema_version: SCHEMA_VERSION,
            backbone: x.backbone().name(),
            model: format!("{} ({dim}-d{})", x.backbone().name(), if reduced { " after PCA" } else { "" }),
            extract: serde_json::to_value(ExtractSettings::from_config(self.settings))?,
            pca: reduced,
            delf_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix_s: delf_features::job::unix_now(),
        })
    }

    /// Creates or joins the job and runs this worker's share; returns the job and what the worker did.
    pub fn run(&self) -> Result<(JobSpec, WorkerSummary)> {
        let rt = self.rt;
        let plan = WorkPlan::new(self.list.len(), self.job.unit_size)?;
        let store = FeatureStore::new(self.stores.location(self.out)?);
        let job = rt.block_on(store.open_or_create(&self.spec(&plan)?))?;
        if let (Some(p), false) = (self.pca, self.raw) {
            let bytes = std::fs::read(p).with_context(|| format!("reading PCA {}", p.display()))?;
            let loc = store.location();
            rt.block_on(loc.put_if_absent(&loc.child(PCA_FILE), Bytes::from(bytes)))?;
        }
        let committed = rt.block_on(store.committed_units())?;
        let todo: usize = plan
            .units_for(self.assignment)
            .into_iter()
            .filter(|u| !committed.contains(u))
            .map(|u| plan.range(u).len())
            .sum();
        let device = self.extractor.device();
        tracing::info!(
            job = %job.job_id, list = %self.list.uri, images = self.list.len(), units = plan.units(),
            committed = committed.len(), assignment = ?self.assignment, todo,
            device = %delf_model::device::describe(device), "worker started"
        );
        let job_args = self.job;
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
        let worker = Worker::new(
            store,
            Arc::clone(&self.stores),
            Arc::clone(&self.list),
            plan,
            job.job_id.clone(),
            opts,
            rt.handle().clone(),
        );
        let mut bar = Progress::new("extract", todo);
        let mut network = ModelBatches { extractor: self.extractor, batch, raw: self.raw };
        let summary = worker.run(self.assignment, &mut network, &mut || bar.inc())?;
        bar.finish();
        Ok((job, summary))
    }
}

/// Runs one worker of the job (`delf extract --list`).
pub fn run(list_uri: &str, args: &ExtractArgs, config: &Config) -> Result<()> {
    let out = args.out.as_deref().context("--list needs --out PREFIX")?;
    let assignment = Assignment::from_flags(args.shard_index, args.num_shards)?;
    let rt = crate::commands::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let list = Arc::new(rt.block_on(ImageList::load(&stores, list_uri))?);
    let settings = crate::commands::extract::settings(args, config);
    let device = model::device(args.device.as_deref(), config)?;
    let pca_path = args.pca.clone().or_else(|| config.model.pca.clone());
    let extractor = model::extractor(config, settings.clone(), pca_path.as_deref(), device)?;
    if pca_path.is_none() {
        tracing::warn!(
            dim = extractor.dim(),
            "no PCA given (--pca or model.pca): descriptors keep the backbone's width"
        );
    }
    let run = JobRun {
        rt: &rt,
        stores,
        list,
        out,
        extractor: &extractor,
        settings: &settings,
        pca: pca_path.as_deref(),
        raw: false,
        job: &args.batch,
        assignment,
    };
    let (_, summary) = run.run()?;
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
