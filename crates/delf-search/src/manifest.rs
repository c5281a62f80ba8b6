//! `manifest.json` of an index folder: how the index was built and what it must be searched with. The folder holds
//! the manifest, the PCA (`pca.safetensors`), the shard files and, for an index built from images, the extraction
//! job (`extraction/`: raw Parquet feature shards, so a rebuild resumes).

use std::path::{Path, PathBuf};

use delf_index::{SearchParams, ShardedIndex};
use serde::{Deserialize, Serialize};

use crate::error::SearchError;

/// Manifest format written by this build.
pub const MANIFEST_FORMAT: u32 = 1;
/// File name of the manifest inside an index folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the PCA inside an index folder.
pub const PCA_FILE: &str = "pca.safetensors";
/// Folder of the extraction job inside an index folder.
pub const EXTRACTION_DIR: &str = "extraction";

/// What an index folder holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    /// Manifest format version.
    pub format: u32,
    /// `delf` version that built it.
    pub delf_version: String,
    /// Creation time, seconds since the Unix epoch (UTC).
    pub created_unix_s: u64,
    /// Fingerprint of the model + PCA + extraction settings of every indexed descriptor.
    pub descriptor_fingerprint: String,
    /// Model description (backbone, layer, attention) for people reading the manifest.
    pub model: String,
    /// Extraction settings used, as configured (for people and for rebuilding).
    pub extract: serde_json::Value,
    /// PCA file name inside the folder.
    pub pca: String,
    /// Index structure, e.g. `IVF1024,PQ20x8r`.
    pub spec: String,
    /// Fingerprint of the codebooks shared by all shards.
    pub codebooks_fingerprint: String,
    /// Number of shards.
    pub shards: u32,
    /// Images indexed.
    pub images: usize,
    /// Descriptors indexed.
    pub descriptors: usize,
    /// Images that could not be read and were skipped, with the reason.
    pub skipped: Vec<(String, String)>,
    /// What was indexed (folder or list file), as given.
    pub source: String,
    /// Folder that relative image ids are resolved against.
    pub root: PathBuf,
    /// Default search parameters.
    pub search: SearchParams,
    /// Seconds per build stage, for people reading the manifest.
    pub timings_s: Vec<(String, f64)>,
}

impl IndexManifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, SearchError> {
        let path = dir.join(MANIFEST_FILE);
        if !dir.is_dir() || !path.is_file() {
            return Err(SearchError::MissingManifest(dir.to_path_buf()));
        }
        let text = std::fs::read_to_string(&path).map_err(|source| SearchError::Io { path: path.clone(), source })?;
        let m: Self = serde_json::from_str(&text)
            .map_err(|e| SearchError::BadManifest { path: path.clone(), reason: e.to_string() })?;
        if m.format != MANIFEST_FORMAT {
            return Err(SearchError::BadManifest {
                path,
                reason: format!("format {} (this build reads {MANIFEST_FORMAT})", m.format),
            });
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json` atomically and durably (fsynced, folder too): the manifest is what makes an
    /// index complete, so it must not be lost or half-written after its shards are.
    pub fn save(&self, dir: &Path) -> Result<(), SearchError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| SearchError::BadManifest { path: path.clone(), reason: e.to_string() })?;
        delf_core::durable::write_atomic(&path, text.as_bytes()).map_err(|source| SearchError::Io { path, source })
    }

    /// Loads the shards and checks them against the manifest.
    pub fn open_index(&self, dir: &Path) -> Result<ShardedIndex, SearchError> {
        let index = ShardedIndex::load(dir, self.shards)?;
        let shard = &index.shards()[0];
        let bad = |reason: String| SearchError::BadManifest { path: dir.join(MANIFEST_FILE), reason };
        if shard.codebooks().fingerprint().as_str() != self.codebooks_fingerprint {
            return Err(bad(format!(
                "shards hold codebooks {}, the manifest names {}",
                shard.codebooks().fingerprint(),
                self.codebooks_fingerprint
            )));
        }
        if shard.info().descriptor_fingerprint != self.descriptor_fingerprint {
            return Err(bad(format!(
                "shards hold descriptors {}, the manifest names {}",
                shard.info().descriptor_fingerprint,
                self.descriptor_fingerprint
            )));
        }
        Ok(index)
    }

    /// Path or URI of an indexed image id.
    pub fn image_path(&self, id: &str) -> PathBuf {
        let p = Path::new(id);
        if p.is_absolute() { p.to_path_buf() } else { self.root.join(p) }
    }
}
