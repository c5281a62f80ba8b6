//! One worker of an extraction job run with the network: the job created or joined at its prefix, this worker's
//! share of the units extracted and committed exactly once (docs/features.md). `delf extract --list` runs it with
//! the PCA applied; an index build runs it with raw descriptors into the index folder, so a rerun resumes.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use delf_core::Fingerprint;
use delf_features::job::{JOB_FORMAT, PCA_FILE};
use delf_features::schema::SCHEMA_VERSION;
use delf_features::{
    Assignment, BatchExtractor, FeatureStore, ImageList, JobSpec, ShardOptions, WorkPlan, Worker, WorkerOptions,
    WorkerSummary,
};
use delf_image::RgbImage;
use delf_model::Extractor;
use delf_storage::Stores;

use crate::error::BuildError;
use crate::progress::Progress;

/// How a worker runs: unit size (fixed when the job is created), batching, I/O concurrency, leases.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Images per work unit (one Parquet feature shard each).
    pub unit_size: usize,
    /// Images per forward pass (default: 8 on CUDA, 1 on CPU).
    pub batch: Option<usize>,
    /// Image reads in flight.
    pub fetch_concurrency: usize,
    /// CPU threads decoding images (default: all cores).
    pub decode_threads: Option<usize>,
    /// Images per Parquet row group.
    pub row_group: usize,
    /// Name of this worker in commit records and leases (default: host name and process id).
    pub worker_id: Option<String>,
    /// Seconds a dynamic worker's lease on a unit lasts unless renewed.
    pub lease_s: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            unit_size: 1000,
            batch: None,
            fetch_concurrency: delf_features::DEFAULT_FETCH_CONCURRENCY,
            decode_threads: None,
            row_group: ShardOptions::DEFAULT_ROW_GROUP_IMAGES,
            worker_id: None,
            lease_s: delf_features::DEFAULT_LEASE_S,
        }
    }
}

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

/// One worker of a batch job, run with the model.
pub struct ExtractionJob<'a> {
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
    /// The extraction settings it was built with, as the job records them (`JobSpec::extract`).
    pub extract: serde_json::Value,
    /// The PCA file of the extractor, copied next to the features.
    pub pca: Option<&'a Path>,
    /// Write raw (pre-PCA) descriptors.
    pub raw: bool,
    /// Worker settings.
    pub settings: &'a JobSettings,
    /// Which units.
    pub assignment: Assignment,
}

impl ExtractionJob<'_> {
    /// The job's specification.
    fn spec(&self, plan: &WorkPlan) -> JobSpec {
        let x = self.extractor;
        let (fingerprint, dim) = if self.raw {
            (x.raw_fingerprint().to_string(), x.backbone().channels() as usize)
        } else {
            (x.fingerprint().to_string(), x.dim())
        };
        let reduced = self.pca.is_some() && !self.raw;
        JobSpec {
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
            extract: self.extract.clone(),
            pca: reduced,
            delf_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix_s: delf_features::job::unix_now(),
        }
    }

    /// Creates or joins the job and runs this worker's share; returns the job and what the worker did.
    pub fn run(&self, progress: &mut dyn Progress) -> Result<(JobSpec, WorkerSummary), BuildError> {
        let rt = self.rt;
        let plan = WorkPlan::new(self.list.len(), self.settings.unit_size)?;
        let store = FeatureStore::new(self.stores.location(self.out)?);
        let job = rt.block_on(store.open_or_create(&self.spec(&plan)))?;
        if let (Some(p), false) = (self.pca, self.raw) {
            let bytes = std::fs::read(p).map_err(BuildError::io(p))?;
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
        let s = self.settings;
        let mut opts = WorkerOptions {
            fetch_concurrency: s.fetch_concurrency,
            lease_s: s.lease_s,
            shard: ShardOptions { row_group_images: s.row_group, ..ShardOptions::default() },
            ..WorkerOptions::default()
        };
        if let Some(id) = &s.worker_id {
            opts.worker_id = id.clone();
        }
        if let Some(n) = s.decode_threads {
            opts.decode_threads = n;
        }
        let batch = s.batch.unwrap_or(if device.is_cuda() { 8 } else { 1 });
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
        progress.start("extract", todo);
        let mut network = ModelBatches { extractor: self.extractor, batch, raw: self.raw };
        let summary = worker.run(self.assignment, &mut network, &mut || progress.advance())?;
        progress.finish();
        Ok((job, summary))
    }
}
