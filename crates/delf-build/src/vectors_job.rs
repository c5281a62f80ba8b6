//! A completed extraction job made from descriptors already at hand (no images, no network): what benchmarks of
//! the index build (`delf bench build`, on real descriptors) and tests of its storage protocol read, through the
//! same commit records and Parquet feature shards as a job the extraction workers wrote.

use bytes::Bytes;
use delf_core::{FeatureSet, Fingerprint, Keypoint};
use delf_features::job::{JOB_FORMAT, PCA_FILE, unix_now};
use delf_features::{
    CommitRecord, FeatureRow, FeatureStore, JobManifest, JobSpec, ShardOptions, ShardWriter, WorkPlan, attempt_id,
};
use delf_storage::Stores;

use crate::error::BuildError;

/// Pseudo-images of `per_image` descriptors each (the last one shorter) from flat `dim`-wide `descriptors`, with
/// keypoints on a 16-pixel grid of 40 columns, named `pseudo/0000000`, `pseudo/0000001`, ...
pub fn pseudo_images(
    descriptors: &[f32],
    dim: usize,
    per_image: usize,
    fingerprint: &str,
) -> Vec<(String, FeatureSet)> {
    descriptors
        .chunks(per_image.max(1) * dim)
        .enumerate()
        .map(|(i, d)| {
            let n = d.len() / dim;
            let keypoints = (0..n)
                .map(|k| Keypoint { x: (k % 40) as f32 * 16.0, y: (k / 40) as f32 * 16.0, scale: 1.0, score: 1.0 })
                .collect();
            let f = FeatureSet {
                width: 640,
                height: (n.div_ceil(40) * 16).max(16) as u32,
                dim,
                keypoints,
                descriptors: d.to_vec(),
                fingerprint: Fingerprint(fingerprint.to_string()),
            };
            (format!("pseudo/{i:07}"), f)
        })
        .collect()
}

/// The job to write.
pub struct VectorsJob<'a> {
    /// Output prefix (path or URI).
    pub prefix: &'a str,
    /// Descriptor fingerprint recorded in the job (the model + PCA that made them).
    pub fingerprint: &'a str,
    /// Descriptor dimension.
    pub dim: usize,
    /// Images per unit (one feature file each).
    pub unit_size: usize,
    /// The PCA the descriptors went through (`pca.safetensors` bytes), recorded as the job's.
    pub pca: Bytes,
}

/// Writes `images` (id and features, all of `job.dim`) as a complete job at `job.prefix`: one feature file and
/// commit record per unit, then the manifest.
pub fn write_vectors_job(
    rt: &tokio::runtime::Runtime,
    stores: &Stores,
    job: &VectorsJob<'_>,
    images: &[(String, FeatureSet)],
) -> Result<JobManifest, BuildError> {
    let loc = stores.location(job.prefix)?;
    let plan = WorkPlan::new(images.len(), job.unit_size)?;
    let ids: Vec<&str> = images.iter().map(|(id, _)| id.as_str()).collect();
    let checksum = format!("{:08x}", crc32fast::hash(ids.join("\n").as_bytes()));
    let spec = JobSpec {
        format: JOB_FORMAT,
        job_id: JobSpec::id_of(&checksum, job.unit_size, job.fingerprint),
        list: format!("{}/list.txt", loc.uri()),
        list_checksum: checksum,
        images: images.len(),
        unit_size: job.unit_size,
        units: plan.units(),
        fingerprint: job.fingerprint.to_string(),
        dim: job.dim,
        schema_version: delf_features::schema::SCHEMA_VERSION,
        backbone: "vectors".into(),
        model: format!("given {}-d descriptors", job.dim),
        extract: serde_json::Value::Null,
        pca: true,
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: unix_now(),
    };
    let store = FeatureStore::new(loc.clone());
    rt.block_on(loc.put(&loc.child(PCA_FILE), job.pca.clone()))?;
    let spec = rt.block_on(store.open_or_create(&spec))?;
    let fp = Fingerprint(job.fingerprint.to_string());
    for unit in 0..plan.units() {
        let range = plan.range(unit);
        let attempt = attempt_id();
        let key = FeatureStore::features_key(unit, &attempt);
        let mut writer = ShardWriter::create(&loc, &loc.child(&key), job.dim, &fp, &[], &ShardOptions::default())?;
        let rows: Vec<FeatureRow> = images[range.clone()]
            .iter()
            .map(|(id, f)| FeatureRow { image_id: id.clone(), uri: id.clone(), features: f.clone() })
            .collect();
        let descriptors = rows.iter().map(|r| r.features.len() as u64).sum();
        rt.block_on(writer.write(&rows))?;
        let written = rt.block_on(writer.finish())?;
        let record = CommitRecord {
            unit,
            first: range.start,
            images: range.len(),
            rows: rows.len(),
            failures: 0,
            descriptors,
            features_file: key,
            features_bytes: written.bytes,
            features_crc32: written.crc32,
            errors_file: None,
            errors_crc32: None,
            worker: "vectors".into(),
            attempt,
            seconds: 0.0,
            committed_unix_s: unix_now(),
        };
        rt.block_on(store.commit(&record))?;
    }
    let manifest = rt.block_on(store.write_manifest_if_complete())?;
    if manifest.job != spec {
        return Err(BuildError::Input(format!("{} already holds another job", job.prefix)));
    }
    Ok(manifest)
}
