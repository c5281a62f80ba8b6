//! An index from the Parquet feature shards of a completed extraction job (docs/features.md), in one process and
//! in streaming passes over the committed files: the training step ([`crate::train`]: PCA when the job holds raw
//! descriptors, codebooks on an even sample), then each shard in turn from its own units ([`crate::encode`]),
//! written and dropped before the next, then the manifest. Memory is the samples, one shard's codes and one row
//! group (docs/index.md). The distributed build ([`crate::distributed`]) runs the same steps as separate jobs and
//! writes the same shard files.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use delf_features::JobManifest;
use delf_features::shard_file::read_errors;
use delf_index::sharded::shard_file_name;
use delf_index::{IndexSpec, SearchParams};
use delf_search::IndexManifest;
use delf_search::manifest::{MANIFEST_FORMAT, PCA_FILE};
use delf_storage::{Location, Stores};

use crate::assignment::UnitAssignment;
use crate::encode::{EncodeInputs, encode_shard};
use crate::error::BuildError;
use crate::job_rows::JobRows;
use crate::options::BuildOptions;
use crate::progress::Progress;
use crate::train::MakeReducer;

/// What a build from features produced.
#[derive(Debug)]
pub struct Built {
    /// The index manifest written.
    pub manifest: IndexManifest,
    /// Bytes per stored descriptor of the first shard that holds any.
    pub bytes_per_descriptor: f64,
    /// Feature shards read.
    pub units: usize,
}

/// The trained parts an index manifest records.
pub(crate) struct ManifestParts<'a> {
    pub(crate) fingerprint: &'a str,
    pub(crate) dim: usize,
    pub(crate) spec: IndexSpec,
    pub(crate) codebooks_fingerprint: &'a str,
    pub(crate) shards: u32,
    pub(crate) nprobe: usize,
    pub(crate) source: &'a str,
    pub(crate) timings: Vec<(String, f64)>,
}

/// The manifest of an index built from the job at `loc`: its counts, the images that failed at extraction, and
/// where relative image ids resolve (`root`, default: the folder of a local list).
pub(crate) fn index_manifest(
    rt: &tokio::runtime::Runtime,
    loc: &Location,
    manifest: &JobManifest,
    parts: ManifestParts<'_>,
    root: Option<PathBuf>,
) -> Result<IndexManifest, BuildError> {
    let job = &manifest.job;
    let mut skipped = Vec::new();
    for unit in manifest.units.iter().filter(|u| u.errors_file.is_some()) {
        let key = unit.errors_file.as_deref().unwrap_or_default();
        for e in rt.block_on(read_errors(loc, &loc.child(key)))? {
            skipped.push((e.image_id, format!("{}: {}", e.kind.as_str(), e.message)));
        }
    }
    let root = root.or_else(|| match delf_storage::to_url(&job.list) {
        Ok(u) if u.scheme() == "file" => u.to_file_path().ok().and_then(|p| p.parent().map(Path::to_path_buf)),
        _ => None,
    });
    Ok(IndexManifest {
        format: MANIFEST_FORMAT,
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        descriptor_fingerprint: parts.fingerprint.to_string(),
        model: format!("{} ({}-d after PCA)", job.backbone, parts.dim),
        extract: job.extract.clone(),
        pca: PCA_FILE.to_string(),
        spec: parts.spec.to_string(),
        codebooks_fingerprint: parts.codebooks_fingerprint.to_string(),
        shards: parts.shards,
        images: manifest.rows,
        descriptors: manifest.descriptors as usize,
        skipped,
        source: parts.source.to_string(),
        root: root.unwrap_or_default(),
        search: SearchParams { nprobe: parts.nprobe.min(parts.spec.nlist), ..SearchParams::default() },
        timings_s: parts.timings,
    })
}

/// Builds the index at `opts.out` from the completed job at `prefix`. `reducer` makes the PCA-applying extractor
/// when the job holds raw descriptors; `root` is where relative image ids resolve (default: the folder of a local
/// list); `source` is recorded in the manifest.
#[allow(clippy::too_many_arguments)]
pub fn build_from_features(
    rt: &tokio::runtime::Runtime,
    stores: &Stores,
    prefix: &str,
    opts: &BuildOptions,
    reducer: &MakeReducer<'_>,
    root: Option<PathBuf>,
    source: &str,
    progress: &mut dyn Progress,
) -> Result<Built, BuildError> {
    let started = Instant::now();
    opts.validate()?;
    let rows = JobRows::open(rt, stores, prefix, source)?;
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(BuildError::io(out))?;
    let trained = crate::train::train(&rows, opts, &out.join(PCA_FILE), reducer, progress)?;

    // Each shard from its own units, written and dropped before the next.
    let t = Instant::now();
    let assignment = UnitAssignment::new(&rows.manifest.units, opts.shards)?;
    let inputs = EncodeInputs {
        reduction: &trained.reduction,
        codebooks: &trained.codebooks,
        fingerprint: &trained.fingerprint,
        dim: trained.dim,
        assignment: &assignment,
    };
    let mut bytes_per_descriptor = 0.0;
    for s in 0..opts.shards {
        let shard = encode_shard(&rows, &inputs, s, progress)?;
        delf_index::file::save(&shard, &out.join(shard_file_name(s, opts.shards)))?;
        if bytes_per_descriptor == 0.0 && shard.stored_vectors() > 0 {
            bytes_per_descriptor = shard.bytes_per_descriptor();
        }
    }
    let mut timings = trained.timings;
    timings.push(("build".to_string(), t.elapsed().as_secs_f64()));

    let parts = ManifestParts {
        fingerprint: &trained.fingerprint,
        dim: trained.dim,
        spec: trained.spec,
        codebooks_fingerprint: trained.codebooks.fingerprint().as_str(),
        shards: opts.shards,
        nprobe: opts.nprobe,
        source,
        timings,
    };
    let index_manifest = index_manifest(rt, &rows.loc, &rows.manifest, parts, root)?;
    index_manifest.save(out)?;
    tracing::info!(
        images = rows.manifest.rows,
        descriptors = rows.manifest.descriptors,
        secs = started.elapsed().as_secs_f64(),
        "index built from features"
    );
    Ok(Built { bytes_per_descriptor, units: rows.manifest.units.len(), manifest: index_manifest })
}
