//! An index from the Parquet feature shards of a completed extraction job (docs/features.md), in streaming passes
//! over the committed files: (when the job holds raw descriptors) an even sample of images fits the PCA unless one
//! is given; an even sample of descriptors trains the codebooks; then every row group is encoded into the shards.
//! Descriptors are never all in memory: memory is the samples, one row group, and the PQ codes (docs/index.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use delf_core::FeatureSet;
use delf_features::job::PCA_FILE as JOB_PCA_FILE;
use delf_features::shard_file::read_errors;
use delf_features::{FeatureFileReader, FeatureStore, JobManifest, JobSpec, StoreError};
use delf_index::{Codebooks, IndexSpec, NewImage, SearchParams, ShardedIndex, TrainConfig};
use delf_model::{Extractor, Pca};
use delf_search::IndexManifest;
use delf_search::manifest::{MANIFEST_FORMAT, PCA_FILE};
use delf_storage::{Location, Stores};

use crate::error::BuildError;
use crate::options::BuildOptions;
use crate::progress::Progress;

/// Makes the extractor that reduces a raw job's descriptors: the job's backbone and extraction settings (as the
/// job stored them) with the PCA at the given path. The caller owns the model configuration (weights, device).
pub type MakeReducer<'a> = dyn Fn(&JobSpec, &Path) -> Result<Extractor, BuildError> + 'a;

/// What a build from features produced.
#[derive(Debug)]
pub struct Built {
    /// The index manifest written.
    pub manifest: IndexManifest,
    /// Bytes per stored descriptor of the first shard.
    pub bytes_per_descriptor: f64,
    /// Feature shards read.
    pub units: usize,
}

/// The job's committed feature files, read row group by row group.
struct JobRows<'a> {
    rt: &'a tokio::runtime::Runtime,
    loc: &'a Location,
    manifest: &'a JobManifest,
}

impl JobRows<'_> {
    /// Calls `each` on every committed row group of the job, in unit order: `(image id, features)`.
    fn for_each(
        &self,
        stage: &'static str,
        progress: &mut dyn Progress,
        mut each: impl FnMut(Vec<(String, FeatureSet)>) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let (loc, manifest) = (self.loc, self.manifest);
        progress.start(stage, manifest.units.len());
        let started = Instant::now();
        for unit in &manifest.units {
            let path = loc.child(&unit.features_file);
            let mut reader = self.rt.block_on(FeatureFileReader::open(loc, &path))?;
            if reader.header.fingerprint.as_str() != manifest.job.fingerprint || reader.header.dim != manifest.job.dim {
                return Err(StoreError::Schema {
                    uri: loc.uri_of(&path),
                    reason: format!(
                        "holds {}-d descriptors of {}, the job {}-d of {}",
                        reader.header.dim, reader.header.fingerprint, manifest.job.dim, manifest.job.fingerprint
                    ),
                }
                .into());
            }
            while let Some(rows) = self.rt.block_on(reader.next_rows())? {
                each(rows.into_iter().map(|r| (r.image_id, r.features)).collect())?;
            }
            progress.advance();
        }
        progress.finish();
        tracing::info!(stage, units = manifest.units.len(), secs = started.elapsed().as_secs_f64(), "pass done");
        Ok(())
    }

    /// Fits a PCA on the raw descriptors of an even sample of `sample` of the job's images (the same images, in
    /// the same order, as an in-memory build would take) and saves it at `out`.
    fn fit_pca(&self, sample: usize, dim: i64, out: &Path, progress: &mut dyn Progress) -> Result<(), BuildError> {
        let n = self.manifest.rows.max(1);
        let take = sample.clamp(1, n);
        let wanted: std::collections::BTreeSet<usize> = (0..take).map(|i| i * n / take).collect();
        let mut flat = Vec::new();
        let mut row = 0usize;
        self.for_each("pca", progress, |rows| {
            for (_, f) in rows {
                if wanted.contains(&row) {
                    flat.extend_from_slice(&f.descriptors);
                }
                row += 1;
            }
            Ok(())
        })?;
        let channels = self.manifest.job.dim;
        let rows = flat.len() / channels.max(1);
        if (rows as i64) < dim {
            return Err(BuildError::Input(format!(
                "only {rows} descriptors to fit a {dim}-d PCA: index more (or larger) images"
            )));
        }
        let samples = tch::Tensor::from_slice(&flat).view([rows as i64, channels as i64]);
        Pca::fit(&samples, dim as usize, false, &self.manifest.job.backbone)?.save(out)?;
        tracing::info!(images = take, descriptors = rows, "fitted the PCA");
        Ok(())
    }
}

/// How the job's descriptors become the index's: as they are (the job applied the PCA), or through a PCA here.
enum Reduction {
    AsStored,
    Pca(Box<Extractor>),
}

impl Reduction {
    fn apply(&self, f: FeatureSet) -> Result<FeatureSet, BuildError> {
        match self {
            Reduction::AsStored => Ok(f),
            Reduction::Pca(x) => Ok(x.reduce(f)?),
        }
    }
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
    let loc = stores.location(prefix)?;
    let manifest = rt.block_on(FeatureStore::new(loc.clone()).manifest())?;
    let job = &manifest.job;
    if !manifest.complete {
        return Err(StoreError::Schema {
            uri: loc.uri(),
            reason: format!(
                "the job is not complete ({} of {} units committed): finish it first",
                manifest.units.len(),
                job.units
            ),
        }
        .into());
    }
    if manifest.descriptors == 0 {
        return Err(BuildError::Input(format!(
            "no features were extracted from {source} ({} images failed)",
            manifest.failures
        )));
    }
    let rows = JobRows { rt, loc: &loc, manifest: &manifest };
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(BuildError::io(out))?;
    let pca_path = out.join(PCA_FILE);
    let mut timings = Vec::new();

    // The PCA: the job's own, or a given one, or one fitted on a sample.
    let t = Instant::now();
    let (reduction, fingerprint, dim) = if job.pca {
        let pca = rt.block_on(loc.get(&loc.child(JOB_PCA_FILE)))?;
        delf_core::durable::write_atomic(&pca_path, &pca).map_err(BuildError::io(&pca_path))?;
        (Reduction::AsStored, job.fingerprint.clone(), job.dim)
    } else {
        match &opts.pca {
            Some(given) => {
                Pca::load(given)?;
                std::fs::copy(given, &pca_path).map_err(BuildError::io(&pca_path))?;
            }
            None => rows.fit_pca(opts.pca_sample, opts.dim, &pca_path, progress)?,
        }
        let x = reducer(job, &pca_path)?;
        if x.raw_fingerprint().as_str() != job.fingerprint {
            return Err(StoreError::Schema {
                uri: loc.uri(),
                reason: format!(
                    "the job holds descriptors of {} ({}), the configured model gives {}: configure the same model",
                    job.backbone,
                    job.fingerprint,
                    x.raw_fingerprint()
                ),
            }
            .into());
        }
        let (fp, dim) = (x.fingerprint().to_string(), x.dim());
        (Reduction::Pca(Box::new(x)), fp, dim)
    };
    timings.push(("pca".to_string(), t.elapsed().as_secs_f64()));

    // Codebooks on an even sample of the descriptors, as many as k-means uses (all of them for small corpora).
    let t = Instant::now();
    let total = manifest.descriptors as usize;
    let spec = opts.spec.unwrap_or_else(|| IndexSpec::auto(total, dim));
    let train = TrainConfig::default();
    let wanted =
        (spec.nlist * train.coarse.max_points_per_centroid).max(spec.ksub() * train.pq.max_points_per_centroid);
    let stride = total.div_ceil(wanted).max(1);
    let mut sample: Vec<f32> = Vec::with_capacity(total.div_ceil(stride) * dim);
    let mut seen = 0usize;
    rows.for_each("sample", progress, |rows| {
        for (_, f) in rows {
            let f = reduction.apply(f)?;
            for i in 0..f.len() {
                if seen.is_multiple_of(stride) {
                    sample.extend_from_slice(f.descriptor(i));
                }
                seen += 1;
            }
        }
        Ok(())
    })?;
    let codebooks = Arc::new(Codebooks::train(&sample, dim, spec, &train)?);
    drop(sample);
    timings.push(("train".to_string(), t.elapsed().as_secs_f64()));

    // Every image into its shard, numbered in job order.
    let t = Instant::now();
    let mut index = ShardedIndex::new(Arc::clone(&codebooks), &fingerprint, opts.shards)?;
    let mut number: u32 = 0;
    rows.for_each("encode", progress, |rows| {
        let reduced: Vec<(String, FeatureSet)> =
            rows.into_iter().map(|(id, f)| Ok((id, reduction.apply(f)?))).collect::<Result<_, BuildError>>()?;
        let keypoints: Vec<(Vec<[f32; 2]>, Vec<f32>)> = reduced
            .iter()
            .map(|(_, f)| {
                (f.keypoints.iter().map(|k| [k.x, k.y]).collect(), f.keypoints.iter().map(|k| k.scale).collect())
            })
            .collect();
        let batch: Vec<NewImage<'_>> = reduced
            .iter()
            .zip(&keypoints)
            .enumerate()
            .map(|(i, ((id, f), (kp, scales)))| NewImage {
                number: number + i as u32,
                name: id,
                descriptors: &f.descriptors,
                keypoints: kp,
                scales,
            })
            .collect();
        index.add_images(&batch, dim)?;
        number += reduced.len() as u32;
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
    let root = root.or_else(|| match delf_storage::to_url(&job.list) {
        Ok(u) if u.scheme() == "file" => u.to_file_path().ok().and_then(|p| p.parent().map(Path::to_path_buf)),
        _ => None,
    });
    let index_manifest = IndexManifest {
        format: MANIFEST_FORMAT,
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        descriptor_fingerprint: fingerprint,
        model: format!("{} ({dim}-d after PCA)", job.backbone),
        extract: job.extract.clone(),
        pca: PCA_FILE.to_string(),
        spec: spec.to_string(),
        codebooks_fingerprint: codebooks.fingerprint().to_string(),
        shards: opts.shards,
        images: manifest.rows,
        descriptors: total,
        skipped,
        source: source.to_string(),
        root: root.unwrap_or_default(),
        search: SearchParams { nprobe: opts.nprobe.min(spec.nlist), ..SearchParams::default() },
        timings_s: timings,
    };
    index_manifest.save(out)?;
    tracing::info!(
        images = manifest.rows,
        descriptors = total,
        secs = started.elapsed().as_secs_f64(),
        "index built from features"
    );
    Ok(Built {
        bytes_per_descriptor: index.shards()[0].bytes_per_descriptor(),
        units: manifest.units.len(),
        manifest: index_manifest,
    })
}
