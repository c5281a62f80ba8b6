//! The index build as parallel jobs straight to object storage (docs/operations.md, "Re-indexing"): **train**
//! once, **encode** in parallel (worker `i` of `n` builds shards `i, i + n, ...`, each from its own units only),
//! **finalize** when every shard is committed. Every step can be killed and rerun.
//!
//! ```text
//! INDEX/build.json                  the plan: features, shard count, spec, fingerprints (train, written last)
//! INDEX/codebooks.dshard            the trained codebooks, as a shard file without images (train)
//! INDEX/pca.safetensors             the index's PCA (train)
//! INDEX/shard-0003-of-0008.dshard   one shard, uploaded in one streaming multipart pass (encode)
//! INDEX/commits/shard-0003.json     its commit record: bytes, CRC-32, counts, worker (encode, put-if-absent)
//! INDEX/manifest.json               written by finalize when, and only when, every shard is committed
//! ```
//!
//! A shard is committed when its record exists; the record is created with put-if-absent, so of two workers
//! racing on a shard exactly one commits it. Shard files go straight to their final key: an upload becomes visible
//! only when complete, and the bytes are a function of the plan, the codebooks and the feature files alone (the
//! one-process build writes the same bytes), so a racing or restarted worker can only put the same object there
//! again. A killed upload leaves nothing at the key (its parts expire with the bucket's rules). Finalize checks each
//! file's size against its record; index nodes check every section's CRC when they load it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use delf_features::job::unix_now;
use delf_index::sharded::shard_file_name;
use delf_index::{Codebooks, IndexSpec, Shard, ShardInfo};
use delf_search::IndexManifest;
use delf_search::manifest::{MANIFEST_FILE, PCA_FILE};
use delf_storage::{Location, Stores, Upload};
use serde::{Deserialize, Serialize};

use crate::assignment::UnitAssignment;
use crate::encode::{EncodeInputs, encode_shard};
use crate::error::BuildError;
use crate::from_features::{ManifestParts, index_manifest};
use crate::job_rows::JobRows;
use crate::options::BuildOptions;
use crate::progress::Progress;
use crate::train::MakeReducer;

/// Format of `build.json` and the shard commit records.
pub const PLAN_FORMAT: u32 = 1;
/// The plan, written by the train step.
pub const PLAN_FILE: &str = "build.json";
/// The codebooks, written by the train step.
pub const CODEBOOKS_FILE: &str = "codebooks.dshard";
/// Folder of the shard commit records.
pub const COMMITS_DIR: &str = "commits";
/// The fail point between a shard's upload and its commit (`FAILPOINTS=build::before_commit=...` in test builds,
/// see [`fail_points_from_env`]).
pub const BEFORE_COMMIT: &str = "build::before_commit";

/// Turns on the fail points named in the `FAILPOINTS` environment variable (fail-rs syntax, e.g.
/// `build::before_commit=1*off->sleep(60000)`) in builds with the `failpoints` feature; a no-op otherwise.
pub fn fail_points_from_env() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// How images are assigned to shards ([`crate::assignment`]).
pub const ASSIGNMENT: &str = "whole units, unit u to shard u % S";

/// What the train step decided, read by every encode worker and by finalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The extraction job's prefix.
    pub features: String,
    /// Its job id (the features may not change under the build).
    pub job_id: String,
    /// Shards.
    pub shards: u32,
    /// Index structure, e.g. `IVF4096,PQ20x8r`.
    pub spec: String,
    /// Dimension of the index's descriptors.
    pub dim: usize,
    /// Fingerprint of the index's descriptors (model + PCA).
    pub descriptor_fingerprint: String,
    /// Fingerprint of `codebooks.dshard`.
    pub codebooks_fingerprint: String,
    /// [`ASSIGNMENT`].
    pub assignment: String,
    /// Cells probed per query descriptor by default.
    pub nprobe: usize,
    /// Where relative image ids resolve (empty: the folder of a local list).
    pub root: PathBuf,
    /// Recorded in the manifest as the index's source.
    pub source: String,
    /// Seconds of the train step's parts (`pca`, `train`).
    pub timings_s: Vec<(String, f64)>,
    /// When the plan was written.
    pub created_unix_s: u64,
}

/// The record that commits one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardCommit {
    /// The shard.
    pub shard: u32,
    /// Shards in the index.
    pub shards: u32,
    /// Its file, relative to the index prefix.
    pub file: String,
    /// The file's size.
    pub bytes: u64,
    /// CRC-32 of the file's bytes.
    pub crc32: String,
    /// Images in the shard.
    pub images: usize,
    /// Descriptors in the shard.
    pub descriptors: usize,
    /// The worker that wrote it.
    pub worker: String,
    /// That worker's attempt id.
    pub attempt: String,
    /// Seconds the shard took (read, encode, upload).
    pub seconds: f64,
    /// When it was committed.
    pub committed_unix_s: u64,
}

/// The index prefix of a distributed build.
struct Prefix {
    loc: Location,
}

impl Prefix {
    fn new(stores: &Stores, index: &str) -> Result<Self, BuildError> {
        Ok(Self { loc: stores.location(index)? })
    }

    fn json<T: Serialize>(value: &T) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(value).expect("plain data serialises"))
    }

    fn read<T: for<'de> Deserialize<'de>>(
        &self,
        rt: &tokio::runtime::Runtime,
        rel: &str,
    ) -> Result<Option<T>, BuildError> {
        let path = self.loc.child(rel);
        match rt.block_on(self.loc.get(&path)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| BuildError::Input(format!("{} is not a valid {rel}: {e}", self.loc.uri_of(&path)))),
            Err(delf_storage::StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn plan(&self, rt: &tokio::runtime::Runtime) -> Result<BuildPlan, BuildError> {
        let plan: BuildPlan = self.read(rt, PLAN_FILE)?.ok_or_else(|| {
            BuildError::NotReady(format!("{} has no {PLAN_FILE}: run the train step first", self.loc.uri()))
        })?;
        if plan.format != PLAN_FORMAT {
            return Err(BuildError::Input(format!(
                "{PLAN_FILE} of {} has format {}, this build reads {PLAN_FORMAT}",
                self.loc.uri(),
                plan.format
            )));
        }
        Ok(plan)
    }

    fn commit_rel(shard: u32) -> String {
        format!("{COMMITS_DIR}/shard-{shard:04}.json")
    }

    fn commit(&self, rt: &tokio::runtime::Runtime, shard: u32) -> Result<Option<ShardCommit>, BuildError> {
        self.read(rt, &Self::commit_rel(shard))
    }
}

/// Checks the job under `rows` is the one the plan was made from.
fn check_job(plan: &BuildPlan, rows: &JobRows<'_>) -> Result<(), BuildError> {
    if rows.manifest.job.job_id != plan.job_id {
        return Err(BuildError::Input(format!(
            "the features at {} are job {}, the build was planned on job {}: start a new index prefix",
            plan.features, rows.manifest.job.job_id, plan.job_id
        )));
    }
    Ok(())
}

/// The train step: trains the PCA (if needed) and the codebooks on the completed job at `features`, and writes
/// them and the plan under `index`. A rerun after the plan exists does nothing and returns it (the same features
/// and shard count are required).
pub fn train(
    rt: &tokio::runtime::Runtime,
    stores: &Stores,
    features: &str,
    index: &str,
    opts: &BuildOptions,
    reducer: &MakeReducer<'_>,
    progress: &mut dyn Progress,
) -> Result<BuildPlan, BuildError> {
    opts.validate()?;
    let prefix = Prefix::new(stores, index)?;
    let rows = JobRows::open(rt, stores, features, features)?;
    if let Some(plan) = prefix.read::<BuildPlan>(rt, PLAN_FILE)? {
        check_job(&plan, &rows)?;
        if plan.shards != opts.shards {
            return Err(BuildError::Input(format!(
                "{index} was planned with {} shards, not {}: start a new index prefix",
                plan.shards, opts.shards
            )));
        }
        tracing::info!(index, "already trained: the plan exists");
        return Ok(plan);
    }
    let scratch = std::env::temp_dir().join(format!("delf-train-{}", delf_features::attempt_id()));
    std::fs::create_dir_all(&scratch).map_err(BuildError::io(&scratch))?;
    let result = train_into(rt, &prefix, &rows, features, opts, reducer, progress, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

#[allow(clippy::too_many_arguments)]
fn train_into(
    rt: &tokio::runtime::Runtime,
    prefix: &Prefix,
    rows: &JobRows<'_>,
    features: &str,
    opts: &BuildOptions,
    reducer: &MakeReducer<'_>,
    progress: &mut dyn Progress,
    scratch: &Path,
) -> Result<BuildPlan, BuildError> {
    let pca = scratch.join(PCA_FILE);
    let trained = crate::train::train(rows, opts, &pca, reducer, progress)?;
    let loc = &prefix.loc;
    let pca_bytes = std::fs::read(&pca).map_err(BuildError::io(&pca))?;
    rt.block_on(loc.put(&loc.child(PCA_FILE), Bytes::from(pca_bytes)))?;
    let info = ShardInfo { shard_id: 0, shard_count: 1, descriptor_fingerprint: trained.fingerprint.clone() };
    let mut codebooks = Vec::new();
    delf_index::file::write(&Shard::new(Arc::clone(&trained.codebooks), info), &mut codebooks)
        .map_err(BuildError::io(CODEBOOKS_FILE))?;
    rt.block_on(loc.put(&loc.child(CODEBOOKS_FILE), Bytes::from(codebooks)))?;
    let plan = BuildPlan {
        format: PLAN_FORMAT,
        features: features.to_string(),
        job_id: rows.manifest.job.job_id.clone(),
        shards: opts.shards,
        spec: trained.spec.to_string(),
        dim: trained.dim,
        descriptor_fingerprint: trained.fingerprint.clone(),
        codebooks_fingerprint: trained.codebooks.fingerprint().to_string(),
        assignment: ASSIGNMENT.to_string(),
        nprobe: opts.nprobe,
        root: PathBuf::new(),
        source: features.to_string(),
        timings_s: trained.timings,
        created_unix_s: unix_now(),
    };
    // The plan last, created once: a second trainer racing this one keeps the first plan. Training is seeded, so
    // both write the same codebooks on machines with the same thread count; if not, encode workers refuse the
    // codebooks object, whose fingerprint then differs from the plan's (run one trainer: the chart does).
    if !rt.block_on(loc.put_if_absent(&loc.child(PLAN_FILE), Prefix::json(&plan)))? {
        tracing::info!("another trainer wrote the plan first");
        return prefix.plan(rt);
    }
    tracing::info!(index = %loc.uri(), spec = %plan.spec, shards = plan.shards, "trained; plan written");
    Ok(plan)
}

/// One encode worker's identity and share.
#[derive(Debug, Clone)]
pub struct EncodeWorker {
    /// This worker's index, `0..workers` (Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX`).
    pub worker: u32,
    /// Workers sharing the shards: worker `i` builds shards `i, i + workers, ...`.
    pub workers: u32,
    /// Name in commit records (default: host name and process id).
    pub worker_id: String,
    /// Local folder where the codebooks and PCA of a remote index are cached.
    pub cache: PathBuf,
}

/// What an encode worker did, by shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodeSummary {
    /// Shards this worker committed.
    pub committed: Vec<u32>,
    /// Shards already committed when it came to them.
    pub skipped: Vec<u32>,
    /// Shards another worker committed while this one encoded them.
    pub lost: Vec<u32>,
}

/// The encode step of worker `w`: builds each of its shards that is not committed yet from its own units, uploads
/// it in one streaming pass and commits it.
pub fn encode(
    rt: &tokio::runtime::Runtime,
    stores: &Stores,
    index: &str,
    w: &EncodeWorker,
    reducer: &MakeReducer<'_>,
    progress: &mut dyn Progress,
) -> Result<EncodeSummary, BuildError> {
    if w.workers == 0 || w.worker >= w.workers {
        return Err(BuildError::Input(format!("worker {} of {} does not exist", w.worker, w.workers)));
    }
    let prefix = Prefix::new(stores, index)?;
    let plan = prefix.plan(rt)?;
    let mine: Vec<u32> = (w.worker..plan.shards).step_by(w.workers as usize).collect();
    let mut summary = EncodeSummary::default();
    let todo: Vec<u32> = mine
        .into_iter()
        .filter_map(|s| match prefix.commit(rt, s) {
            Ok(Some(_)) => {
                summary.skipped.push(s);
                None
            }
            Ok(None) => Some(Ok(s)),
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    if todo.is_empty() {
        return Ok(summary);
    }

    let rows = JobRows::open(rt, stores, &plan.features, &plan.features)?;
    check_job(&plan, &rows)?;
    let files = [CODEBOOKS_FILE.to_string(), PCA_FILE.to_string()];
    let dir = rt.block_on(delf_storage::mirror::local_folder(stores, index, &w.cache, &files))?;
    let codebooks: Arc<Codebooks> = Arc::clone(delf_index::file::load(&dir.join(CODEBOOKS_FILE))?.codebooks());
    if codebooks.fingerprint().as_str() != plan.codebooks_fingerprint {
        return Err(BuildError::Input(format!(
            "{CODEBOOKS_FILE} holds codebooks {}, the plan names {}",
            codebooks.fingerprint(),
            plan.codebooks_fingerprint
        )));
    }
    let spec: IndexSpec = plan.spec.parse()?;
    let (reduction, fingerprint, dim) =
        crate::train::reduction(&rows.manifest.job, &rows.loc.uri(), &dir.join(PCA_FILE), reducer)?;
    if fingerprint != plan.descriptor_fingerprint || dim != plan.dim || codebooks.spec != spec {
        return Err(BuildError::Input(format!(
            "this worker's model gives {dim}-d descriptors of {fingerprint}, the plan {}-d of {}: configure the same model",
            plan.dim, plan.descriptor_fingerprint
        )));
    }
    let assignment = UnitAssignment::new(&rows.manifest.units, plan.shards)?;
    let inputs = EncodeInputs {
        reduction: &reduction,
        codebooks: &codebooks,
        fingerprint: &fingerprint,
        dim,
        assignment: &assignment,
    };
    let attempt = delf_features::attempt_id();
    for s in todo {
        let started = Instant::now();
        let shard = encode_shard(&rows, &inputs, s, progress)?;
        // Committed by another worker meanwhile: nothing to upload.
        if prefix.commit(rt, s)?.is_some() {
            summary.lost.push(s);
            continue;
        }
        let file = shard_file_name(s, plan.shards);
        let path = prefix.loc.child(&file);
        let mut upload = Upload::start(rt.handle(), &prefix.loc, &path);
        if let Err(e) = delf_index::file::write(&shard, &mut upload) {
            upload.abort();
            return Err(BuildError::Io { path: PathBuf::from(prefix.loc.uri_of(&path)), source: e });
        }
        let uploaded = upload.finish()?;
        let record = ShardCommit {
            shard: s,
            shards: plan.shards,
            file,
            bytes: uploaded.bytes,
            crc32: format!("{:08x}", uploaded.crc32),
            images: shard.images().len(),
            descriptors: shard.stored_vectors(),
            worker: w.worker_id.clone(),
            attempt: attempt.clone(),
            seconds: started.elapsed().as_secs_f64(),
            committed_unix_s: unix_now(),
        };
        // Fault tests stop a worker here: its shard file is uploaded whole, its commit record not written.
        fail::fail_point!(BEFORE_COMMIT);
        let commit_path = prefix.loc.child(&Prefix::commit_rel(s));
        if rt.block_on(prefix.loc.put_if_absent(&commit_path, Prefix::json(&record)))? {
            tracing::info!(shard = s, bytes = record.bytes, secs = record.seconds, "shard committed");
            summary.committed.push(s);
        } else {
            let winner = prefix.commit(rt, s)?;
            if winner.as_ref().is_some_and(|c| c.crc32 != record.crc32 || c.bytes != record.bytes) {
                return Err(BuildError::Input(format!(
                    "shard {s} was committed with other bytes than this worker wrote (CRC {} against {}): \
                     workers of different builds raced on {index}",
                    winner.map(|c| c.crc32).unwrap_or_default(),
                    record.crc32
                )));
            }
            summary.lost.push(s);
        }
    }
    Ok(summary)
}

/// The finalize step: once every shard is committed (and each file's size matches its record), writes the index
/// manifest. Refuses, naming the missing shards, before that. A rerun after the manifest exists returns it.
pub fn finalize(rt: &tokio::runtime::Runtime, stores: &Stores, index: &str) -> Result<IndexManifest, BuildError> {
    let prefix = Prefix::new(stores, index)?;
    let plan = prefix.plan(rt)?;
    if let Some(existing) = prefix.read::<IndexManifest>(rt, MANIFEST_FILE)? {
        if existing.codebooks_fingerprint == plan.codebooks_fingerprint {
            return Ok(existing);
        }
        return Err(BuildError::Input(format!(
            "{index} already holds the manifest of another build (codebooks {})",
            existing.codebooks_fingerprint
        )));
    }
    let mut missing = Vec::new();
    let mut seconds = 0.0;
    for s in 0..plan.shards {
        let Some(record) = prefix.commit(rt, s)? else {
            missing.push(s);
            continue;
        };
        let path = prefix.loc.child(&record.file);
        let size = rt.block_on(prefix.loc.head(&path))?.map(|m| m.size);
        if size != Some(record.bytes) {
            return Err(BuildError::Input(format!(
                "{} is {} but its commit record says {} bytes",
                prefix.loc.uri_of(&path),
                size.map_or("missing".to_string(), |b| format!("{b} bytes")),
                record.bytes
            )));
        }
        seconds += record.seconds;
    }
    if !missing.is_empty() {
        return Err(BuildError::NotReady(format!(
            "{} of {} shards are not committed yet ({}): run their encode workers, then finalize again",
            missing.len(),
            plan.shards,
            missing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        )));
    }
    let rows = JobRows::open(rt, stores, &plan.features, &plan.features)?;
    check_job(&plan, &rows)?;
    let mut timings = plan.timings_s.clone();
    timings.push(("encode (summed over shards)".to_string(), seconds));
    let parts = ManifestParts {
        fingerprint: &plan.descriptor_fingerprint,
        dim: plan.dim,
        spec: plan.spec.parse()?,
        codebooks_fingerprint: &plan.codebooks_fingerprint,
        shards: plan.shards,
        nprobe: plan.nprobe,
        source: &plan.source,
        timings,
    };
    let root = (!plan.root.as_os_str().is_empty()).then(|| plan.root.clone());
    let manifest = index_manifest(rt, &rows.loc, &rows.manifest, parts, root)?;
    rt.block_on(prefix.loc.put(&prefix.loc.child(MANIFEST_FILE), Prefix::json(&manifest)))?;
    tracing::info!(index, shards = plan.shards, images = manifest.images, "finalized: manifest written");
    Ok(manifest)
}
