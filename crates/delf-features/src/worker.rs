//! The batch extraction worker: image URIs in, committed feature shards out.
//!
//! Per unit, a producer on the async runtime fetches images from their stores (`fetch_concurrency` requests in
//! flight) and decodes them on at most `decode_threads` CPU threads, in list order, into a bounded queue; the
//! calling thread takes batches off the queue, runs the network, and streams the rows into the unit's Parquet
//! file. The queue bound is the backpressure: a slow network stops the fetching, so memory stays at about
//! `queue` decoded images plus one row group. Per-image failures (missing, unreadable, corrupt, too large, network
//! error on that image) go to the unit's error table and do not fail the unit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use delf_core::{FeatureSet, Fingerprint};
use delf_image::{DecodeLimits, DecodedImage, RgbImage};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};

use crate::error::StoreError;
use crate::image_list::{ImageList, ListEntry};
use crate::job::{CommitOutcome, CommitRecord, FeatureStore, unix_now};
use crate::plan::{Assignment, WorkPlan};
use crate::schema::{ErrorRow, FailureKind, FeatureRow, META_JOB, META_UNIT};
use crate::shard_file::{ShardOptions, ShardWriter, write_errors};
use delf_storage::Stores;

/// The network, as the worker sees it: features of a batch of decoded images.
pub trait BatchExtractor {
    /// Fingerprint of the descriptors it produces.
    fn fingerprint(&self) -> &Fingerprint;
    /// Their dimension.
    fn dim(&self) -> usize;
    /// Images per call the worker should gather.
    fn batch_size(&self) -> usize;
    /// One result per image, in order; an error fails only that image.
    fn extract(&mut self, images: &[&RgbImage]) -> Vec<Result<FeatureSet, String>>;
}

/// Default image reads in flight.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 16;
/// Default lease of a dynamic worker on a unit, in seconds.
pub const DEFAULT_LEASE_S: u64 = 120;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Name recorded in commit records and claims (default: host name and process id).
    pub worker_id: String,
    /// Image reads in flight.
    pub fetch_concurrency: usize,
    /// CPU threads decoding at once.
    pub decode_threads: usize,
    /// Decoded images waiting for the network, at most.
    pub queue: usize,
    /// Parquet layout.
    pub shard: ShardOptions,
    /// Lease of a dynamic worker on a unit, renewed every third of it while the unit is worked on.
    pub lease_s: u64,
    /// Decoding limits (oversized files are refused before they are downloaded).
    pub limits: DecodeLimits,
    /// Interval of the throughput log lines.
    pub log_every: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            fetch_concurrency: DEFAULT_FETCH_CONCURRENCY,
            decode_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 32,
            shard: ShardOptions::default(),
            lease_s: DEFAULT_LEASE_S,
            limits: DecodeLimits::default(),
            log_every: Duration::from_secs(10),
        }
    }
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WorkerSummary {
    /// Units this worker committed.
    pub committed: usize,
    /// Units found committed already (resumed or done by others).
    pub skipped: usize,
    /// Units this worker finished but another committed first.
    pub lost_races: usize,
    /// Units left to live claims of other workers.
    pub held_by_others: usize,
    /// Images extracted in committed units.
    pub rows: usize,
    /// Images that failed in committed units.
    pub failures: usize,
    /// Descriptors in committed units.
    pub descriptors: u64,
    /// Bytes of feature files committed.
    pub bytes: u64,
    /// Images processed (including lost races), per second of run time.
    pub images_per_s: f64,
    /// Run time.
    pub seconds: f64,
    /// Whether every unit of the job is committed now.
    pub job_complete: bool,
}

type Fetched = (ListEntry, Result<DecodedImage, (FailureKind, String)>);

/// Reads and decodes one image.
async fn fetch_decode(stores: Arc<Stores>, entry: ListEntry, limits: DecodeLimits, decode: Arc<Semaphore>) -> Fetched {
    let result = async {
        let (store, path, _) = stores.resolve(&entry.uri).map_err(|e| (FailureKind::ReadFailed, e.to_string()))?;
        let got = store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => (FailureKind::NotFound, "no such object".to_string()),
            e => (FailureKind::ReadFailed, e.to_string()),
        })?;
        if got.meta.size > limits.max_file_bytes {
            let e = delf_image::ImageError::FileTooLarge { bytes: got.meta.size, limit: limits.max_file_bytes };
            return Err((FailureKind::TooLarge, e.to_string()));
        }
        let bytes = got.bytes().await.map_err(|e| (FailureKind::ReadFailed, e.to_string()))?;
        let _permit = decode.acquire_owned().await.map_err(|e| (FailureKind::ReadFailed, e.to_string()))?;
        tokio::task::spawn_blocking(move || delf_image::decode_bytes(&bytes, &limits))
            .await
            .map_err(|e| (FailureKind::ReadFailed, format!("decoder task failed: {e}")))?
            .map_err(|e| (FailureKind::of_image_error(&e), e.to_string()))
    }
    .await;
    (entry, result)
}

/// A worker's name when none is given: the host name (a pod's name under Kubernetes) and the process id.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "worker".into());
    format!("{host}:{}", std::process::id())
}

/// A fresh attempt id (time, process, counter): what tells two attempts of one worker apart in commit records.
pub fn attempt_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:016x}", delf_core::rng::SplitMix64(seed).next_u64())
}

/// Running totals for the periodic throughput log.
struct Throughput {
    started: Instant,
    last_log: Instant,
    every: Duration,
    images: usize,
    failures: usize,
}

impl Throughput {
    fn tick(&mut self, failed: bool) {
        self.images += 1;
        self.failures += usize::from(failed);
        if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            let rate = self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(images = self.images, failures = self.failures, images_per_s = rate, "throughput");
        }
    }
}

/// One worker of a job.
pub struct Worker {
    store: FeatureStore,
    stores: Arc<Stores>,
    list: Arc<ImageList>,
    plan: WorkPlan,
    job_id: String,
    opts: WorkerOptions,
    rt: Handle,
}

impl Worker {
    /// A worker for the job at `store` over `list`, running its I/O on `rt`.
    pub fn new(
        store: FeatureStore,
        stores: Arc<Stores>,
        list: Arc<ImageList>,
        plan: WorkPlan,
        job_id: String,
        opts: WorkerOptions,
        rt: Handle,
    ) -> Self {
        Self { store, stores, list, plan, job_id, opts, rt }
    }

    /// Processes this worker's share: every unit of the assignment that is not committed yet. `on_image` is
    /// called once per image processed (progress bars).
    pub fn run(
        &self,
        assignment: Assignment,
        extractor: &mut dyn BatchExtractor,
        on_image: &mut dyn FnMut(),
    ) -> Result<WorkerSummary, StoreError> {
        let started = Instant::now();
        let mut summary = WorkerSummary::default();
        let mut meter = Throughput { started, last_log: started, every: self.opts.log_every, images: 0, failures: 0 };
        let committed = self.rt.block_on(self.store.committed_units())?;
        for unit in self.plan.units_for(assignment) {
            if committed.contains(&unit) || self.rt.block_on(self.store.is_committed(unit))? {
                summary.skipped += 1;
                continue;
            }
            let dynamic = assignment == Assignment::Dynamic;
            if dynamic && !self.rt.block_on(self.store.try_claim(unit, &self.opts.worker_id, self.opts.lease_s))? {
                summary.held_by_others += 1;
                continue;
            }
            let outcome = self.run_unit(unit, dynamic, extractor, on_image, &mut meter);
            if dynamic {
                self.rt.block_on(self.store.release_claim(unit))?;
            }
            match outcome? {
                (record, CommitOutcome::Committed) => {
                    summary.committed += 1;
                    summary.rows += record.rows;
                    summary.failures += record.failures;
                    summary.descriptors += record.descriptors;
                    summary.bytes += record.features_bytes;
                }
                (_, CommitOutcome::AlreadyCommitted(_)) => summary.lost_races += 1,
            }
        }
        summary.seconds = started.elapsed().as_secs_f64();
        summary.images_per_s = meter.images as f64 / summary.seconds.max(1e-9);
        summary.job_complete = self.rt.block_on(self.store.write_manifest_if_complete())?.complete;
        Ok(summary)
    }

    /// Extracts one unit into a fresh attempt's files and commits it.
    fn run_unit(
        &self,
        unit: usize,
        leased: bool,
        extractor: &mut dyn BatchExtractor,
        on_image: &mut dyn FnMut(),
        meter: &mut Throughput,
    ) -> Result<(CommitRecord, CommitOutcome), StoreError> {
        let started = Instant::now();
        let range = self.plan.range(unit);
        let attempt = attempt_id();
        let loc = self.store.location();
        let features_file = FeatureStore::features_key(unit, &attempt);
        let features_path = loc.child(&features_file);
        let extra = [(META_JOB, self.job_id.clone()), (META_UNIT, unit.to_string())];
        let (fingerprint, dim) = (extractor.fingerprint().clone(), extractor.dim());
        let mut writer = ShardWriter::create(loc, &features_path, dim, &fingerprint, &extra, &self.opts.shard)?;
        tracing::debug!(unit, attempt, images = range.len(), "unit started");

        let (tx, mut rx) = mpsc::channel::<Fetched>(self.opts.queue.max(1));
        let entries: Vec<ListEntry> = self.list.entries[range.clone()].to_vec();
        let (stores, limits) = (Arc::clone(&self.stores), self.opts.limits);
        let decode = Arc::new(Semaphore::new(self.opts.decode_threads.max(1)));
        let concurrency = self.opts.fetch_concurrency.max(1);
        let producer = self.rt.spawn(async move {
            let mut fetched = futures::stream::iter(entries)
                .map(|e| tokio::spawn(fetch_decode(Arc::clone(&stores), e, limits, Arc::clone(&decode))))
                .buffered(concurrency);
            while let Some(joined) = fetched.next().await {
                let Ok(item) = joined else { continue };
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });

        let batch_size = extractor.batch_size().max(1);
        let mut errors: Vec<ErrorRow> = Vec::new();
        let mut pending: Vec<(ListEntry, DecodedImage)> = Vec::with_capacity(batch_size);
        let (mut rows, mut descriptors) = (0usize, 0u64);
        let mut seen = 0usize;
        let mut last_renewal = Instant::now();
        loop {
            let next = rx.blocking_recv();
            let done = next.is_none();
            if let Some((entry, result)) = next {
                seen += 1;
                match result {
                    Ok(img) => pending.push((entry, img)),
                    Err((kind, message)) => {
                        tracing::warn!(image = %entry.image_id, uri = %entry.uri, kind = kind.as_str(), %message, "image failed");
                        errors.push(ErrorRow { image_id: entry.image_id, uri: entry.uri, kind, message });
                        meter.tick(true);
                        on_image();
                    }
                }
            }
            if pending.len() >= batch_size || (done && !pending.is_empty()) {
                let batch: Vec<(ListEntry, DecodedImage)> = std::mem::take(&mut pending);
                let refs: Vec<&RgbImage> = batch.iter().map(|(_, d)| &d.rgb).collect();
                let results = extractor.extract(&refs);
                if results.len() != batch.len() {
                    return Err(StoreError::Extractor(format!("{} results for {} images", results.len(), batch.len())));
                }
                let mut out = Vec::with_capacity(batch.len());
                for ((entry, _), result) in batch.into_iter().zip(results) {
                    match result {
                        Ok(features) if features.fingerprint == fingerprint && features.dim == dim => {
                            descriptors += features.len() as u64;
                            out.push(FeatureRow { image_id: entry.image_id, uri: entry.uri, features });
                            meter.tick(false);
                        }
                        Ok(f) => {
                            return Err(StoreError::Extractor(format!(
                                "features of {} have fingerprint {} ({}-d), the job {fingerprint} ({dim}-d)",
                                entry.image_id, f.fingerprint, f.dim
                            )));
                        }
                        Err(message) => {
                            tracing::warn!(image = %entry.image_id, %message, "extraction failed");
                            let kind = FailureKind::ExtractFailed;
                            errors.push(ErrorRow { image_id: entry.image_id, uri: entry.uri, kind, message });
                            meter.tick(true);
                        }
                    }
                    on_image();
                }
                rows += out.len();
                self.rt.block_on(writer.write(&out))?;
                if leased && last_renewal.elapsed().as_secs() * 3 >= self.opts.lease_s {
                    last_renewal = Instant::now();
                    if !self.rt.block_on(self.store.try_claim(unit, &self.opts.worker_id, self.opts.lease_s))? {
                        tracing::warn!(
                            unit,
                            "lease lost to another worker (this unit is slower than the lease); the first commit wins"
                        );
                    }
                }
            }
            if done {
                break;
            }
        }
        self.rt.block_on(producer).map_err(|e| StoreError::Extractor(format!("image reader failed: {e}")))?;
        if seen != range.len() {
            return Err(StoreError::Extractor(format!("read {seen} of the unit's {} images", range.len())));
        }
        let written = self.rt.block_on(writer.finish())?;
        let (errors_file, errors_crc32) = if errors.is_empty() {
            (None, None)
        } else {
            let key = FeatureStore::errors_key(unit, &attempt);
            let file = self.rt.block_on(write_errors(loc, &loc.child(&key), &errors))?;
            (Some(key), Some(file.crc32))
        };
        let record = CommitRecord {
            unit,
            first: range.start,
            images: range.len(),
            rows,
            failures: errors.len(),
            descriptors,
            features_file,
            features_bytes: written.bytes,
            features_crc32: written.crc32,
            errors_file,
            errors_crc32,
            worker: self.opts.worker_id.clone(),
            attempt,
            seconds: started.elapsed().as_secs_f64(),
            committed_unix_s: unix_now(),
        };
        let outcome = self.rt.block_on(self.store.commit(&record))?;
        match &outcome {
            CommitOutcome::Committed => {
                let removed = self.rt.block_on(self.store.remove_orphans(unit, &record))?;
                tracing::info!(
                    unit,
                    rows,
                    failures = record.failures,
                    bytes = record.features_bytes,
                    removed,
                    "unit committed"
                );
            }
            CommitOutcome::AlreadyCommitted(winner) => {
                tracing::info!(unit, winner = %winner.worker, "unit committed by another worker first; discarding ours");
                self.rt.block_on(loc.delete(&loc.child(&record.features_file)))?;
                if let Some(e) = &record.errors_file {
                    self.rt.block_on(loc.delete(&loc.child(e)))?;
                }
            }
        }
        Ok((record, outcome))
    }
}
