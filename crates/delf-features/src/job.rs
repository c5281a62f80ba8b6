//! A batch job's output prefix, and the commit protocol that makes each unit's shard appear exactly once.
//!
//! ```text
//! PREFIX/job.json                               the job: list, checksum, unit size, fingerprint (created once)
//! PREFIX/pca.safetensors                        the PCA the descriptors went through, when there is one
//! PREFIX/features/unit-000012-<attempt>.parquet one unit's feature rows (uploaded whole, then committed)
//! PREFIX/errors/unit-000012-<attempt>.parquet   the images of that unit that failed, with the reason
//! PREFIX/commits/unit-000012.json               the commit record: which attempt won, counts, checksums
//! PREFIX/claims/unit-000012.json                a dynamic worker's lease on a unit it is working on
//! PREFIX/manifest.json                          every commit record, written once all units are committed
//! ```
//!
//! A unit is committed when its commit record exists; the record is created with put-if-absent (S3
//! `If-None-Match: *`, an exclusive create on local disks), so of two workers racing on a unit exactly one wins,
//! and readers only ever read the files a record names. Feature files are uploaded whole (multipart, completed
//! only at the end) under an attempt-specific key before the record is written: a killed worker leaves at most an
//! unreferenced file, which the unit's eventual winner deletes.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use delf_storage::{Location, StorageError};

/// Format of `job.json`, commit records and the manifest.
pub const JOB_FORMAT: u32 = 1;
/// The job file.
pub const JOB_FILE: &str = "job.json";
/// The manifest, written when every unit is committed.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The PCA copied next to the features.
pub const PCA_FILE: &str = "pca.safetensors";
/// Folder of feature files.
pub const FEATURES_DIR: &str = "features";
/// Folder of error tables.
pub const ERRORS_DIR: &str = "errors";
/// Folder of commit records.
pub const COMMITS_DIR: &str = "commits";
/// Folder of dynamic workers' claims.
pub const CLAIMS_DIR: &str = "claims";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a job extracts and how; fixed when the job is created, checked by every worker that joins or resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// [`JOB_FORMAT`].
    pub format: u32,
    /// Hash of the list checksum, unit size and fingerprint.
    pub job_id: String,
    /// The image list.
    pub list: String,
    /// CRC-32 of the list's bytes.
    pub list_checksum: String,
    /// Images in the list.
    pub images: usize,
    /// Images per unit.
    pub unit_size: usize,
    /// Number of units.
    pub units: usize,
    /// Descriptor fingerprint (model + PCA).
    pub fingerprint: String,
    /// Descriptor dimension.
    pub dim: usize,
    /// Feature-shard schema version.
    pub schema_version: u32,
    /// Backbone (and feature layer) that produced the descriptors, e.g. `efficientnet-lite0:block10`.
    pub backbone: String,
    /// Model description (backbone, dimension), for people.
    pub model: String,
    /// Extraction settings (the `[extract]` configuration section of `delf`), so that queries can be extracted
    /// the same way.
    pub extract: serde_json::Value,
    /// Whether `pca.safetensors` holds the PCA the descriptors went through.
    pub pca: bool,
    /// The `delf` version that created the job.
    pub delf_version: String,
    /// When the job was created.
    pub created_unix_s: u64,
}

impl JobSpec {
    /// The job id of a list, unit size and fingerprint.
    pub fn id_of(list_checksum: &str, unit_size: usize, fingerprint: &str) -> String {
        delf_core::Fingerprint::of(
            "job",
            &[list_checksum.as_bytes(), &(unit_size as u64).to_le_bytes(), fingerprint.as_bytes()],
        )
        .to_string()
    }

    /// The first setting in which `other` differs from this job (list, unit size, fingerprint, dimension).
    fn mismatch(&self, other: &JobSpec) -> Option<(&'static str, String, String)> {
        let fields: [(&'static str, String, String); 4] = [
            ("list checksum", self.list_checksum.clone(), other.list_checksum.clone()),
            ("unit size", self.unit_size.to_string(), other.unit_size.to_string()),
            ("descriptor fingerprint", self.fingerprint.clone(), other.fingerprint.clone()),
            ("dimension", self.dim.to_string(), other.dim.to_string()),
        ];
        fields.into_iter().find(|(_, a, b)| a != b)
    }
}

/// The record that commits one unit: which attempt's files hold it, and what they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The unit.
    pub unit: usize,
    /// Index of its first list entry.
    pub first: usize,
    /// List entries in the unit.
    pub images: usize,
    /// Rows in the feature file (images extracted).
    pub rows: usize,
    /// Images that failed (rows of the error table).
    pub failures: usize,
    /// Descriptors in the feature file.
    pub descriptors: u64,
    /// Feature file, relative to the prefix.
    pub features_file: String,
    /// Its size in bytes.
    pub features_bytes: u64,
    /// CRC-32 of its bytes.
    pub features_crc32: String,
    /// Error table, relative to the prefix (absent when nothing failed).
    pub errors_file: Option<String>,
    /// Its CRC-32.
    pub errors_crc32: Option<String>,
    /// The worker that wrote it.
    pub worker: String,
    /// That worker's attempt id.
    pub attempt: String,
    /// Seconds the unit took.
    pub seconds: f64,
    /// When it was committed.
    pub committed_unix_s: u64,
}

/// Every committed unit of a job, with totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobManifest {
    /// The job.
    pub job: JobSpec,
    /// Whether every unit is committed.
    pub complete: bool,
    /// Images extracted, over committed units.
    pub rows: usize,
    /// Images that failed, over committed units.
    pub failures: usize,
    /// Descriptors, over committed units.
    pub descriptors: u64,
    /// Bytes of feature files.
    pub features_bytes: u64,
    /// Commit records by unit.
    pub units: Vec<CommitRecord>,
}

/// A dynamic worker's lease on a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The worker.
    pub worker: String,
    /// When the lease ends.
    pub expires_unix_s: u64,
}

/// How a commit went.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// This record is the unit's.
    Committed,
    /// Another worker committed the unit first; its record.
    AlreadyCommitted(Box<CommitRecord>),
}

/// The output prefix of a job.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    loc: Location,
}

fn unit_name(unit: usize) -> String {
    format!("unit-{unit:06}")
}

impl FeatureStore {
    /// The job at `loc`.
    pub fn new(loc: Location) -> Self {
        Self { loc }
    }

    /// The prefix.
    pub fn location(&self) -> &Location {
        &self.loc
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::BadJobObject { uri: self.loc.uri_of(path), reason: e.to_string() })
    }

    fn json<T: Serialize>(value: &T) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_default())
    }

    /// Creates the job, or joins the one already at the prefix if it has the same list, unit size and
    /// fingerprint ([`StoreError::JobMismatch`] otherwise).
    pub async fn open_or_create(&self, spec: &JobSpec) -> Result<JobSpec, StoreError> {
        let path = self.loc.child(JOB_FILE);
        if self.loc.put_if_absent(&path, Self::json(spec)).await? {
            return Ok(spec.clone());
        }
        let existing = self.job().await?;
        if let Some((field, existing, requested)) = existing.mismatch(spec) {
            return Err(StoreError::JobMismatch { prefix: self.loc.uri(), field, existing, requested });
        }
        Ok(existing)
    }

    /// The job at the prefix.
    pub async fn job(&self) -> Result<JobSpec, StoreError> {
        let path = self.loc.child(JOB_FILE);
        let bytes = self.loc.get(&path).await?;
        self.parse(&path, &bytes)
    }

    /// The key of a unit's feature file for one attempt.
    pub fn features_key(unit: usize, attempt: &str) -> String {
        format!("{FEATURES_DIR}/{}-{attempt}.parquet", unit_name(unit))
    }

    /// The key of a unit's error table for one attempt.
    pub fn errors_key(unit: usize, attempt: &str) -> String {
        format!("{ERRORS_DIR}/{}-{attempt}.parquet", unit_name(unit))
    }

    fn commit_path(&self, unit: usize) -> Path {
        self.loc.child(&format!("{COMMITS_DIR}/{}.json", unit_name(unit)))
    }

    /// The commit record of a unit, if it is committed.
    pub async fn commit_record(&self, unit: usize) -> Result<Option<CommitRecord>, StoreError> {
        let path = self.commit_path(unit);
        match self.loc.get(&path).await {
            Ok(bytes) => Ok(Some(self.parse(&path, &bytes)?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a unit is committed (one HEAD; the record is not read).
    pub async fn is_committed(&self, unit: usize) -> Result<bool, StoreError> {
        Ok(self.loc.head(&self.commit_path(unit)).await?.is_some())
    }

    /// The committed units, from one LIST of the commit records' names (no record is read).
    pub async fn committed_units(&self) -> Result<std::collections::BTreeSet<usize>, StoreError> {
        let units = self.loc.list(COMMITS_DIR).await?.into_iter().filter_map(|meta| {
            let name = meta.location.filename()?.strip_prefix("unit-")?.strip_suffix(".json")?.to_string();
            name.parse().ok()
        });
        Ok(units.collect())
    }

    /// Every commit record, by unit (one LIST, then one GET per record).
    pub async fn committed(&self) -> Result<BTreeMap<usize, CommitRecord>, StoreError> {
        let mut out = BTreeMap::new();
        for meta in self.loc.list(COMMITS_DIR).await? {
            let bytes = self.loc.get(&meta.location).await?;
            let record: CommitRecord = self.parse(&meta.location, &bytes)?;
            out.insert(record.unit, record);
        }
        Ok(out)
    }

    /// Commits a unit: creates its record unless another worker's is there already.
    pub async fn commit(&self, record: &CommitRecord) -> Result<CommitOutcome, StoreError> {
        let path = self.commit_path(record.unit);
        if self.loc.put_if_absent(&path, Self::json(record)).await? {
            return Ok(CommitOutcome::Committed);
        }
        match self.commit_record(record.unit).await? {
            Some(existing) => Ok(CommitOutcome::AlreadyCommitted(Box::new(existing))),
            None => Err(StoreError::BadJobObject {
                uri: self.loc.uri_of(&path),
                reason: "the store refused to create the record but has none".into(),
            }),
        }
    }

    /// Deletes the files of `unit` that its commit record does not name (losers of a race, killed attempts).
    pub async fn remove_orphans(&self, unit: usize, keep: &CommitRecord) -> Result<usize, StoreError> {
        let mut removed = 0;
        let stem = format!("{}-", unit_name(unit));
        for dir in [FEATURES_DIR, ERRORS_DIR] {
            for meta in self.loc.list(dir).await? {
                let name = meta.location.filename().unwrap_or_default().to_string();
                let rel = format!("{dir}/{name}");
                let named = rel == keep.features_file || Some(&rel) == keep.errors_file.as_ref();
                if name.starts_with(&stem) && !named {
                    self.loc.delete(&meta.location).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Takes the lease on a unit for `lease_s` seconds: if no one holds it, it has expired, or `worker` holds it
    /// already. Two workers taking over one expired lease at once both proceed; the commit still admits one.
    pub async fn try_claim(&self, unit: usize, worker: &str, lease_s: u64) -> Result<bool, StoreError> {
        let path = self.loc.child(&format!("{CLAIMS_DIR}/{}.json", unit_name(unit)));
        let claim = Claim { worker: worker.to_string(), expires_unix_s: unix_now() + lease_s };
        if self.loc.put_if_absent(&path, Self::json(&claim)).await? {
            return Ok(true);
        }
        let current: Claim = match self.loc.get(&path).await {
            Ok(bytes) => self.parse(&path, &bytes)?,
            Err(StorageError::NotFound { .. }) => return Ok(self.loc.put_if_absent(&path, Self::json(&claim)).await?),
            Err(e) => return Err(e.into()),
        };
        if current.worker == worker || current.expires_unix_s <= unix_now() {
            self.loc.put(&path, Self::json(&claim)).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Gives a unit's lease back.
    pub async fn release_claim(&self, unit: usize) -> Result<(), StoreError> {
        self.loc.delete(&self.loc.child(&format!("{CLAIMS_DIR}/{}.json", unit_name(unit)))).await?;
        Ok(())
    }

    /// Re-reads a committed unit's feature file and holds it against its commit record: size, checksum, rows and
    /// descriptors. A file that differs is a [`StoreError::Schema`] saying how.
    pub async fn verify_unit(&self, record: &CommitRecord) -> Result<(), StoreError> {
        let path = self.loc.child(&record.features_file);
        let uri = self.loc.uri_of(&path);
        let bytes = self.loc.get(&path).await?;
        let (crc, size) = (crate::shard_file::crc32_hex(&bytes), bytes.len() as u64);
        let (_, rows) = crate::shard_file::decode_features(&uri, bytes)?;
        let descriptors: u64 = rows.iter().map(|r| r.features.len() as u64).sum();
        if crc == record.features_crc32
            && size == record.features_bytes
            && rows.len() == record.rows
            && descriptors == record.descriptors
        {
            return Ok(());
        }
        Err(StoreError::Schema {
            uri,
            reason: format!(
                "the file has crc32 {crc}, {size} bytes, {} rows, {descriptors} descriptors; its commit record says \
                 {}, {}, {}, {}",
                rows.len(),
                record.features_crc32,
                record.features_bytes,
                record.rows,
                record.descriptors
            ),
        })
    }

    /// The job and its committed units.
    pub async fn manifest(&self) -> Result<JobManifest, StoreError> {
        let job = self.job().await?;
        let units: Vec<CommitRecord> = self.committed().await?.into_values().collect();
        Ok(JobManifest {
            complete: units.len() == job.units,
            rows: units.iter().map(|u| u.rows).sum(),
            failures: units.iter().map(|u| u.failures).sum(),
            descriptors: units.iter().map(|u| u.descriptors).sum(),
            features_bytes: units.iter().map(|u| u.features_bytes).sum(),
            job,
            units,
        })
    }

    /// Writes `manifest.json` when every unit is committed (any worker may; commit records never change, so every
    /// writer writes the same bytes). Returns the manifest, complete or not.
    pub async fn write_manifest_if_complete(&self) -> Result<JobManifest, StoreError> {
        let manifest = self.manifest().await?;
        if manifest.complete {
            self.loc.put(&self.loc.child(MANIFEST_FILE), Self::json(&manifest)).await?;
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_storage::Stores;

    pub(crate) fn spec(checksum: &str, unit_size: usize) -> JobSpec {
        JobSpec {
            format: JOB_FORMAT,
            job_id: JobSpec::id_of(checksum, unit_size, "delf/fp"),
            list: "list.txt".into(),
            list_checksum: checksum.into(),
            images: 10,
            unit_size,
            units: 10usize.div_ceil(unit_size),
            fingerprint: "delf/fp".into(),
            dim: 40,
            schema_version: 1,
            backbone: "test".into(),
            model: "test".into(),
            extract: serde_json::Value::Null,
            pca: false,
            delf_version: "test".into(),
            created_unix_s: 0,
        }
    }

    fn record(unit: usize, attempt: &str) -> CommitRecord {
        CommitRecord {
            unit,
            first: unit * 5,
            images: 5,
            rows: 4,
            failures: 1,
            descriptors: 400,
            features_file: FeatureStore::features_key(unit, attempt),
            features_bytes: 10,
            features_crc32: "00000000".into(),
            errors_file: Some(FeatureStore::errors_key(unit, attempt)),
            errors_crc32: Some("00000000".into()),
            worker: "w".into(),
            attempt: attempt.into(),
            seconds: 1.0,
            committed_unix_s: 0,
        }
    }

    #[tokio::test]
    async fn a_job_is_joined_only_with_the_same_settings() {
        let store = FeatureStore::new(Stores::new().location("memory:///job").unwrap());
        let created = store.open_or_create(&spec("aaaa", 5)).await.unwrap();
        assert_eq!(store.open_or_create(&spec("aaaa", 5)).await.unwrap(), created);
        match store.open_or_create(&spec("aaaa", 3)).await {
            Err(StoreError::JobMismatch { field: "unit size", .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(store.open_or_create(&spec("bbbb", 5)).await, Err(StoreError::JobMismatch { .. })));
    }

    #[tokio::test]
    async fn the_first_commit_wins_and_orphans_are_removed() {
        let loc = Stores::new().location("memory:///job").unwrap();
        let store = FeatureStore::new(loc.clone());
        store.open_or_create(&spec("aaaa", 5)).await.unwrap();
        for attempt in ["a1", "a2"] {
            loc.put(&loc.child(&FeatureStore::features_key(0, attempt)), Bytes::from_static(b"x")).await.unwrap();
            loc.put(&loc.child(&FeatureStore::errors_key(0, attempt)), Bytes::from_static(b"x")).await.unwrap();
        }
        loc.put(&loc.child(&FeatureStore::features_key(1, "a1")), Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(store.commit(&record(0, "a2")).await.unwrap(), CommitOutcome::Committed);
        match store.commit(&record(0, "a1")).await.unwrap() {
            CommitOutcome::AlreadyCommitted(r) => assert_eq!(r.attempt, "a2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.remove_orphans(0, &record(0, "a2")).await.unwrap(), 2);
        let left: Vec<String> = loc.list("").await.unwrap().iter().map(|m| m.location.to_string()).collect();
        assert!(left.contains(&"job/features/unit-000000-a2.parquet".to_string()), "{left:?}");
        assert!(left.contains(&"job/features/unit-000001-a1.parquet".to_string()), "other units untouched");
        assert!(!left.iter().any(|p| p.contains("unit-000000-a1")));

        let m = store.write_manifest_if_complete().await.unwrap();
        assert!(!m.complete);
        assert!(loc.head(&loc.child(MANIFEST_FILE)).await.unwrap().is_none());
        store.commit(&record(1, "a1")).await.unwrap();
        let m = store.write_manifest_if_complete().await.unwrap();
        assert!(m.complete);
        assert_eq!((m.rows, m.failures, m.descriptors), (8, 2, 800));
        assert!(loc.head(&loc.child(MANIFEST_FILE)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn claims_are_exclusive_until_they_expire() {
        let store = FeatureStore::new(Stores::new().location("memory:///job").unwrap());
        assert!(store.try_claim(3, "w1", 600).await.unwrap());
        assert!(store.try_claim(3, "w1", 600).await.unwrap(), "a worker renews its own lease");
        assert!(!store.try_claim(3, "w2", 600).await.unwrap());
        assert!(store.try_claim(4, "w2", 0).await.unwrap());
        assert!(store.try_claim(4, "w1", 600).await.unwrap(), "an expired lease is taken over");
        store.release_claim(3).await.unwrap();
        assert!(store.try_claim(3, "w2", 600).await.unwrap());
    }
}
