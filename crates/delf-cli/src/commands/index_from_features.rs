//! `delf index build --features PREFIX --out DIR`: an index from the Parquet feature shards of a completed batch
//! extraction job (docs/features.md), in two streaming passes over the committed files: an even sample of
//! descriptors trains the codebooks, then every row group is encoded into the shards. Raw descriptors are never all
//! in memory: memory is the sample, one row group, and the PQ codes (docs/index.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use delf_features::job::PCA_FILE as JOB_PCA_FILE;
use delf_features::shard_file::read_errors;
use delf_features::{FeatureFileReader, FeatureRow, FeatureStore, JobManifest, Location, Stores};
use delf_index::{Codebooks, IndexSpec, NewImage, SearchParams, ShardedIndex, TrainConfig};
use delf_search::IndexManifest;
use delf_search::manifest::{MANIFEST_FORMAT, PCA_FILE};

use crate::cli::IndexBuildArgs;
use crate::progress::Progress;

/// Calls `each` on every committed row group of the job, in unit order.
fn for_each_rows(
    rt: &tokio::runtime::Runtime,
    loc: &Location,
    manifest: &JobManifest,
    stage: &'static str,
    mut each: impl FnMut(&[FeatureRow]) -> Result<()>,
) -> Result<()> {
    let mut bar = Progress::new(stage, manifest.units.len());
    for unit in &manifest.units {
        let path = loc.child(&unit.features_file);
        let mut reader = rt.block_on(FeatureFileReader::open(loc, &path))?;
        if reader.header.fingerprint.as_str() != manifest.job.fingerprint || reader.header.dim != manifest.job.dim {
            bail!(delf_features::StoreError::Schema {
                uri: loc.uri_of(&path),
                reason: format!(
                    "holds {}-d descriptors of {}, the job {}-d of {}",
                    reader.header.dim, reader.header.fingerprint, manifest.job.dim, manifest.job.fingerprint
                ),
            });
        }
        while let Some(rows) = rt.block_on(reader.next_rows())? {
            each(&rows)?;
        }
        bar.inc();
    }
    bar.finish();
    Ok(())
}

/// Runs the build.
pub fn run(prefix: &str, opts: &IndexBuildArgs) -> Result<()> {
    let started = Instant::now();
    let spec: Option<IndexSpec> = opts.spec.as_deref().map(str::parse).transpose()?;
    if opts.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let loc = Stores::new().location(prefix)?;
    let manifest = rt.block_on(FeatureStore::new(loc.clone()).manifest())?;
    let job = &manifest.job;
    if !manifest.complete {
        bail!(delf_features::StoreError::Schema {
            uri: loc.uri(),
            reason: format!(
                "the job is not complete ({} of {} units committed): finish it first",
                manifest.units.len(),
                job.units
            ),
        });
    }
    if !job.pca {
        bail!(delf_features::StoreError::Schema {
            uri: loc.uri(),
            reason: format!("the job's descriptors are {}-d without PCA: extract with --pca for an index", job.dim),
        });
    }
    if manifest.descriptors == 0 {
        bail!("the job at {prefix} holds no descriptors");
    }
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let pca = rt.block_on(loc.get(&loc.child(JOB_PCA_FILE)))?;
    std::fs::write(out.join(PCA_FILE), &pca).with_context(|| format!("writing {}", out.join(PCA_FILE).display()))?;
    let dim = job.dim;
    let spec = spec.unwrap_or_else(|| IndexSpec::auto(manifest.descriptors as usize, dim));
    let mut timings = Vec::new();

    // Pass 1: an even sample of descriptors, as many as k-means will use.
    let t = Instant::now();
    let train = TrainConfig::default();
    let wanted =
        (spec.nlist * train.coarse.max_points_per_centroid).max(spec.ksub() * train.pq.max_points_per_centroid);
    let stride = (manifest.descriptors as usize).div_ceil(wanted).max(1);
    let mut sample: Vec<f32> = Vec::with_capacity(wanted.min(manifest.descriptors as usize) * dim);
    let mut seen = 0usize;
    for_each_rows(&rt, &loc, &manifest, "sample", |rows| {
        for r in rows {
            for i in 0..r.features.len() {
                if seen.is_multiple_of(stride) {
                    sample.extend_from_slice(r.features.descriptor(i));
                }
                seen += 1;
            }
        }
        Ok(())
    })?;
    let codebooks = Arc::new(Codebooks::train(&sample, dim, spec, &train)?);
    drop(sample);
    timings.push(("train".to_string(), t.elapsed().as_secs_f64()));

    // Pass 2: every image into its shard.
    let t = Instant::now();
    let mut index = ShardedIndex::new(Arc::clone(&codebooks), &job.fingerprint, opts.shards)?;
    let mut number: u32 = 0;
    for_each_rows(&rt, &loc, &manifest, "encode", |rows| {
        let keypoints: Vec<Vec<[f32; 2]>> =
            rows.iter().map(|r| r.features.keypoints.iter().map(|k| [k.x, k.y]).collect()).collect();
        let batch: Vec<NewImage<'_>> = rows
            .iter()
            .zip(&keypoints)
            .enumerate()
            .map(|(i, (r, kp))| NewImage {
                number: number + i as u32,
                name: &r.image_id,
                descriptors: &r.features.descriptors,
                keypoints: kp,
            })
            .collect();
        index.add_images(&batch, dim)?;
        number += rows.len() as u32;
        Ok(())
    })?;
    index.save(out)?;
    timings.push(("build".to_string(), t.elapsed().as_secs_f64()));

    let mut skipped = Vec::new();
    for unit in manifest.units.iter().filter(|u| u.errors_file.is_some()) {
        let key = unit.errors_file.as_deref().unwrap_or_default();
        for e in rt.block_on(read_errors(&loc, &loc.child(key)))? {
            skipped.push((e.image_id, format!("{}: {}", e.kind.as_str(), e.message)));
        }
    }
    // Relative image ids of a local list are relative to the list's folder.
    let root = match delf_features::location::to_url(&job.list) {
        Ok(u) if u.scheme() == "file" => u.to_file_path().ok().and_then(|p| p.parent().map(Path::to_path_buf)),
        _ => None,
    };
    let index_manifest = IndexManifest {
        format: MANIFEST_FORMAT,
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        descriptor_fingerprint: job.fingerprint.clone(),
        model: job.model.clone(),
        extract: job.extract.clone(),
        pca: PCA_FILE.to_string(),
        spec: spec.to_string(),
        codebooks_fingerprint: codebooks.fingerprint().to_string(),
        shards: opts.shards,
        images: manifest.rows,
        descriptors: manifest.descriptors as usize,
        skipped,
        source: loc.uri(),
        root: root.unwrap_or_else(PathBuf::new),
        search: SearchParams { nprobe: opts.nprobe.min(spec.nlist), ..SearchParams::default() },
        timings_s: timings,
    };
    index_manifest.save(out)?;
    println!(
        "indexed {} images ({} descriptors, {} failed at extraction) from {} feature shards into {}: {spec}, {} \
         shard(s), {:.1} bytes per descriptor, {:.0} s",
        index_manifest.images,
        index_manifest.descriptors,
        index_manifest.skipped.len(),
        manifest.units.len(),
        out.display(),
        opts.shards,
        index.shards()[0].bytes_per_descriptor(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
